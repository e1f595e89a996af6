"""Benchmark: how much of a training step the data path costs once batches are drawn ahead.

``python -m slime.train.data_bench [--config shakespeare] [--modes eager,graphs] [--steps 200]``

The trainer draws each batch (random windows of the memory-mapped token file, sent to the device)
right after queueing the previous step's work, so the draw overlaps the device's work whenever the
device runs behind the host. This script measures what remains: the same trainer (the baseline
GPT, no lifecycle, so nothing else differs) runs free-running steps on a text corpus tokenised with
``--tokenizers`` and on a dataset that hands out one pre-made device batch (no data work at all);
the difference is the data path's exposed cost. It also times the draw alone. The corpus is
``--text`` (default: the tiny-shakespeare copy slime.train ships), its tokens cached under
``--cache-dir``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from typing import Any

import torch
from slime.proto import ConfigError
from slime.train.build import resolve_device
from slime.train.datasets import BUNDLED, CORPORA
from slime.train.loader import load_config
from slime.train.text import load_text
from slime.train.trainer import Trainer
from torch import Tensor

__all__ = ["main", "measure"]


class _OneBatch:
    """A dataset that always returns the same batch, already on the device: no data work."""

    def __init__(self, idx: Tensor, targets: Tensor, vocab_size: int) -> None:
        self.idx, self.targets = idx, targets
        self.vocab_size, self.block_size = vocab_size, idx.shape[1]

    def batch(
        self, split: str, batch_size: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        return self.idx, self.targets


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_ms(trainer: Trainer, device: torch.device, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        trainer.train_step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    _sync(device)
    return (time.perf_counter() - t0) / steps * 1e3


def measure(
    config: str,
    text: str,
    tokenizer: str,
    mode: str,
    device: torch.device,
    *,
    steps: int,
    warmup: int,
    cache_dir: str,
) -> dict[str, Any]:
    """Step ms on the text corpus and on one fixed batch, and the draw's own ms, for one mode."""
    cfg = load_config(config)
    dataset = load_text(
        text, cfg.model.block_size, tokenizer=tokenizer, cache_dir=cache_dir, progress=None
    )
    run = cfg.replace(
        model={"kind": "baseline", "vocab_size": dataset.vocab_size},
        lifecycle={"enabled": False},
        train={"device": str(device), "compile": mode != "eager", "cuda_graphs": mode == "graphs"},
    )
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        for tensor in dataset.batch("train", cfg.train.batch_size, gen):
            tensor.to(device, non_blocking=True)
    _sync(device)
    draw_ms = (time.perf_counter() - start) / steps * 1e3
    idx, targets = (t.to(device) for t in dataset.batch("train", cfg.train.batch_size, gen))
    fixed = _OneBatch(idx, targets, dataset.vocab_size)
    timings = {}
    for name, data in (("text", dataset), ("fixed", fixed)):  # both compile the same graphs
        torch._dynamo.reset()
        trainer = Trainer(run, data, device=device)
        timings[name] = _step_ms(trainer, device, steps, warmup)
    exposed = timings["text"] - timings["fixed"]
    return {
        "tokenizer": tokenizer,
        "vocab": dataset.vocab_size,
        "mode": mode,
        "draw_ms": draw_ms,
        "step_ms_text": timings["text"],
        "step_ms_fixed": timings["fixed"],
        "exposed_ms": exposed,
        "exposed_share": exposed / timings["text"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slime.train.data_bench", description=__doc__)
    parser.add_argument("--config", default="shakespeare", help="preset or YAML (its model shape)")
    parser.add_argument("--text", help="a .txt file or folder (default: bundled tiny-shakespeare)")
    parser.add_argument("--tokenizers", default="char,bpe:4096")
    parser.add_argument("--modes", default="eager,graphs", help="eager, compiled, graphs")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache-dir", help="token cache (default: a temporary folder)")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ConfigError as exc:
        parser.error(str(exc))
    text = args.text or str(BUNDLED / CORPORA["shakespeare"]["all"].relpath)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for tokenizer in args.tokenizers.split(","):
            for mode in args.modes.split(","):
                rows.append(
                    measure(
                        args.config,
                        text,
                        tokenizer,
                        mode,
                        device,
                        steps=args.steps,
                        warmup=args.warmup,
                        cache_dir=args.cache_dir or scratch,
                    )
                )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; config {args.config}; text {text}")
    print(
        "\n| tokenizer | mode | draw ms | step ms (text) | step ms (one fixed batch) "
        "| exposed ms | share of step |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['tokenizer']} | {r['mode']} | {r['draw_ms']:.3f} | {r['step_ms_text']:.2f} "
            f"| {r['step_ms_fixed']:.2f} | {r['exposed_ms']:+.3f} | {r['exposed_share']:+.1%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
