"""Benchmark: one training step of SlimeModel against the baseline GPT, eager and compiled.

``python -m slime.train.step_bench [--config shakespeare] [--steps 30] [--modes eager,compiled]``

Both models are built from the same preset (slime at ``pod_capacity = n_pods`` and at
``n_pods + 2``) and timed in the same process on the same device: forward under bf16 autocast
(CUDA), backward, gradient clipping and a fused AdamW step, on random tokens. The step is
free-running (the device is synchronised only around each timed block), after warm-up steps that
also pay compilation. Every row of a mode is built and warmed up first; then ``--rounds`` rounds
each time ``--steps`` steps of every row in turn, so rows are compared side by side rather than
minutes apart (an eager step is bound by the host, whose speed drifts). The table gives the
median ms per step over the rounds, its ratio to the baseline's, the lowest and highest ratio
of one round, tokens per second and peak memory. This isolates the architecture's cost; ``slime.train.compare``
times whole trainer steps with the lifecycle.

``--ddp`` adds each model wrapped in ``DistributedDataParallel`` in a process group of one (NCCL on
CUDA, gloo on the CPU), the wrapper a data-parallel run puts around the model, and prints its
overhead against the same model unwrapped: the price of the wrapper itself (gradient hooks,
buckets, a one-rank all-reduce), which a run with several ranks pays on top of communication.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from typing import Any

import torch
from slime.proto import ConfigError
from slime.train.build import build_model, resolve_device
from slime.train.config import ModelConfig, RunConfig
from slime.train.distributed import Distributed, data_parallel, shutdown
from slime.train.loader import load_config

__all__ = ["MODES", "main"]

MODES = ("eager", "compiled", "graphs")


class _Timed:
    """One row's model ready to step: its forward (wrapped, compiled), optimizer and tokens.

    ``mode``: ``eager``, ``compiled`` (``torch.compile(fullgraph=True)``) or ``graphs`` (the same
    with ``mode="reduce-overhead"``: CUDA graphs replay forward and backward). ``ddp``: the model
    runs under ``DistributedDataParallel`` in the initialised default process group (compiled
    without ``fullgraph``: dynamo splits the graph at the gradient buckets, as in a trainer).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: ModelConfig,
        batch_size: int,
        device: torch.device,
        *,
        steps: int,
        warmup: int,
        mode: str,
        ddp: bool = False,
    ) -> None:
        self.model, self.device, self.steps, self.warmup = model, device, steps, warmup
        self.graphs = mode == "graphs"
        self.tokens = batch_size * cfg.block_size
        forward = model
        if ddp:
            forward = data_parallel(model, device, Distributed.current())
        if mode != "eager":
            options = {"mode": "reduce-overhead"} if mode == "graphs" else {}
            forward = torch.compile(forward, fullgraph=not ddp, **options)
        self.forward = forward
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        gen = torch.Generator(device=device).manual_seed(0)
        self.data = torch.randint(
            0,
            cfg.vocab_size,
            (warmup + steps, batch_size, cfg.block_size + 1),
            generator=gen,
            device=device,
        )
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if device.type == "cuda"
            else contextlib.nullcontext()
        )

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self, chunk: torch.Tensor) -> None:
        if self.graphs:  # rows replay their graphs in turn; nothing reads a step's outputs
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast:
            _, loss = self.forward(chunk[:, :-1], chunk[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0, foreach=True)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def warm(self, *, held: int = 0, profile: bool = False) -> dict[str, Any]:
        """The first step (which pays compilation) and the rest of the warm-up; then one timed
        window whose peak allocation is reported less ``held``, the bytes other rows held on the
        device before this row's model was built."""
        if profile:
            self._profile()
        began = time.perf_counter()
        self.step(self.data[0])
        self.sync()
        first_s = time.perf_counter() - began
        for i in range(1, self.warmup):
            self.step(self.data[i])
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.time()
        peak = None
        if self.device.type == "cuda":
            peak = (torch.cuda.max_memory_allocated(self.device) - held) / 2**20
        return {"first_step_s": first_s, "peak_mb": peak}

    def time(self) -> float:
        """Mean ms per step over ``steps`` free-running steps (synchronised at the ends only)."""
        self.sync()
        began = time.perf_counter()
        for i in range(self.warmup, self.warmup + self.steps):
            self.step(self.data[i])
        self.sync()
        return (time.perf_counter() - began) / self.steps * 1e3

    def _profile(self) -> None:
        for i in range(self.warmup):
            self.step(self.data[i])
        self.sync()
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            for i in range(self.warmup, self.warmup + self.steps):
                self.step(self.data[i])
            self.sync()
        key = "cuda_time_total" if self.device.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=40), file=sys.stderr)


def _without_tubes(model: torch.nn.Module) -> None:
    """Training forwards feed no tube ring (what a trainer does between measurements)."""
    model.feed_tubes(False)


def _rows(args: argparse.Namespace, run: RunConfig) -> list[tuple[str, ModelConfig, Any]]:
    """``(label, config, edit)``: the baseline, slime at capacity = live with and without tubes,
    and slime with two dead slots (with ``--ddp``, also the baseline and slime at capacity = live
    under the wrapper), from the preset ``run``."""
    fields = {**run.model.to_dict(), "vocab_size": args.vocab}
    if args.kernel_backend is not None:
        fields["kernel_backend"] = args.kernel_backend
    live = fields["n_pods"]

    def cfg(kind: str, capacity: int) -> ModelConfig:
        return ModelConfig(**{**fields, "kind": kind, "pod_capacity": capacity})

    rows = [
        ("baseline", cfg("baseline", live), None),
        (f"slime cap={live}", cfg("slime", live), None),
        (f"slime cap={live} no tubes", cfg("slime", live), _without_tubes),
        (f"slime cap={live + 2}", cfg("slime", live + 2), None),
    ]
    if args.ddp:
        rows += [(f"{label}{_DDP}", c, e) for label, c, e in rows[:2]]
    return rows


_DDP = " DDP(1)"  # the label suffix of rows run under DistributedDataParallel


def _join_group_of_one(device: torch.device) -> bool:
    """Join a default process group of this one process (for ``--ddp``); False if one exists."""
    import tempfile

    import torch.distributed as dist

    if dist.is_initialized():
        return False
    store = tempfile.NamedTemporaryFile(prefix="step-bench-store-", delete=False)
    store.close()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{store.name}", rank=0, world_size=1)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slime.train.step_bench", description=__doc__)
    parser.add_argument("--config", default="shakespeare", help="preset or YAML file")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of --steps steps per row, the rows stepping in turn (median reported)",
    )
    parser.add_argument(
        "--vocab", type=int, default=65, help="vocabulary size of the random tokens"
    )
    parser.add_argument("--batch-size", type=int, help="default: the preset's")
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--rows", help="comma-separated row names to run (default: all)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--kernel-backend",
        choices=("auto", "torch", "triton"),
        help="slime's attention kernel (default: the preset's)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print torch.profiler's top operators per row"
    )
    parser.add_argument(
        "--ddp",
        action="store_true",
        help="also time the baseline and slime under DistributedDataParallel at world size 1",
    )
    args = parser.parse_args(argv)
    for flag in ("steps", "warmup", "rounds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    try:
        device = resolve_device(args.device)
        run = load_config(args.config)
        batch = args.batch_size or run.train.batch_size
        rows = _rows(args, run)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # process-wide, at the script's edge
    modes = args.modes.split(",")
    bad = sorted(set(modes) - set(MODES))
    if bad:
        parser.error(f"unknown modes {bad}; expected some of {', '.join(MODES)}")
    if args.rows:
        wanted = set(args.rows.split(","))
        rows = [r for r in rows if r[0] in wanted or r[0] == "baseline"]
    joined = args.ddp and _join_group_of_one(device)
    try:
        return _run(args, device, rows, modes, batch)
    finally:
        if joined:
            shutdown()


def _run(
    args: argparse.Namespace,
    device: torch.device,
    rows: list[tuple[str, ModelConfig, Any]],
    modes: list[str],
    batch: int,
) -> int:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; config {args.config}; batch {batch}")
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for mode in modes:
        results.update(_time_mode(args, device, rows, mode, batch))
    print()
    print(
        "| mode | model | ms/step | vs baseline | per round | tokens/s | peak MB | vs baseline "
        "| first step s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for mode in modes:
        base = results[(mode, "baseline")]
        for label, _, _ in rows:
            if (mode, label) not in results:
                continue
            r = results[(mode, label)]
            mem = (
                f"{r['peak_mb']:.0f} | {r['peak_mb'] / base['peak_mb']:.3f}x"
                if r["peak_mb"]
                else "- | -"
            )
            ratios = [m / b for m, b in zip(r["rounds_ms"], base["rounds_ms"], strict=True)]
            print(
                f"| {mode} | {label} | {r['ms']:.2f} | {r['ms'] / base['ms']:.3f}x | "
                f"{min(ratios):.3f}-{max(ratios):.3f}x | {r['tokens_per_s'] / 1e6:.3f}M | {mem} | "
                f"{r['first_step_s']:.1f} |"
            )
    wrapped = [label for label, _, _ in rows if label.endswith(_DDP)]
    if wrapped:
        print()
        print("| mode | model | unwrapped ms | DDP(1) ms | wrapper overhead |")
        print("|---|---|---:|---:|---:|")
        for mode in modes:
            for label in wrapped:
                bare = label.removesuffix(_DDP)
                if (mode, label) not in results or (mode, bare) not in results:
                    continue
                plain, ddp = results[(mode, bare)]["ms"], results[(mode, label)]["ms"]
                print(f"| {mode} | {bare} | {plain:.2f} | {ddp:.2f} | {ddp / plain - 1:+.1%} |")
    return 0


def _time_mode(
    args: argparse.Namespace,
    device: torch.device,
    rows: list[tuple[str, ModelConfig, Any]],
    mode: str,
    batch: int,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Every row of one mode: built and warmed up one after the other (first-step seconds and
    peak memory), then timed in ``args.rounds`` rounds of ``args.steps`` steps, each round
    stepping every row in turn, starting one row later each round. A row's ms/step is the median
    of its rounds: the host of an eager step drifts by more from minute to minute than the
    differences measured here, so only rows timed side by side compare."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    timed: dict[str, _Timed] = {}
    warm: dict[str, dict[str, Any]] = {}
    for label, cfg, edit in rows:
        if mode == "graphs" and label.endswith(_DDP):
            continue  # the wrapper is timed eager and compiled only
        held = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        gen = torch.Generator().manual_seed(0)
        model = build_model(cfg, args.vocab, device=device, generator=gen)
        if edit is not None:
            edit(model)
        model.train()
        timed[label] = _Timed(
            model, cfg, batch, device, steps=args.steps, warmup=args.warmup, mode=mode,
            ddp=label.endswith(_DDP),
        )  # fmt: skip
        warm[label] = timed[label].warm(held=held, profile=args.profile)
    labels = list(timed)
    rounds: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(args.rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            rounds[label].append(timed[label].time())
    out = {}
    for label in labels:
        ms = statistics.median(rounds[label])
        out[(mode, label)] = {
            "ms": ms,
            "rounds_ms": rounds[label],
            "first_step_s": warm[label]["first_step_s"],
            "tokens_per_s": timed[label].tokens / ms * 1e3,
            "peak_mb": warm[label]["peak_mb"],
        }
        shown = " / ".join(f"{m:.2f}" for m in rounds[label])
        print(f"  {mode:8s} {label:14s} rounds {shown} ms", file=sys.stderr)
    timed.clear()
    gc.collect()
    return out


if __name__ == "__main__":
    sys.exit(main())
