"""Head-sharded training: bytes moved and step time per step, behavioural vs random placement.

    torchrun --standalone --nproc-per-node 2 -m slime.train.heads_bench [--steps 40] [--warmup 20]

Each placement (``train.placement``: ``behaviour``, ``random``) trains the same model from the same
seed with ``train.parallel: heads``: ``--warmup`` steps (lifecycle events included, so pods are
measured, born, culled and placed again), then ``--steps`` measured steps. Per step it reports the
payload of every collective the sharding issues (:attr:`HeadSharding.bytes`: activations forward,
activation gradients backward, slot gradients; the tube merge at medium events amortised), the
step time (forward + backward + gradient norms + optimizer, the slowest rank's mean), the live pods
each rank computes at the end, and how many live pods changed rank at a re-placement. Under one
process (``--nproc-per-node 1``) it reports the one-process step time of the same model.

Rank 0 prints a markdown table and, with ``--json PATH``, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch
from slime.proto import SlimeError
from slime.train.build import build_dataset
from slime.train.distributed import launch, shutdown
from slime.train.loader import load_config
from slime.train.trainer import Trainer

__all__ = ["main", "measure"]

STEP_PHASES = ("forward", "backward", "grad_norms", "optimizer")


def bench_config(placement: str, steps: int) -> Any:
    """A model with more pods than the tiny preset (2 layers, 8 pods of width 16 in 12 slots,
    width 64, 64 tokens, batch 16), lifecycle events every 10 and 20 steps."""
    return load_config("tiny").replace(
        model={
            "n_layer": 2,
            "n_embd": 64,
            "n_pods": 8,
            "pod_capacity": 12,
            "head_dim": 16,
            "block_size": 64,
        },
        train={
            "steps": steps,
            "batch_size": 16,
            "log_interval": 10,
            "eval_interval": 10_000,
            "checkpoint_interval": 10_000,
            "parallel": "heads",
            "placement": placement,
            "cpu_threads": 1,
        },
        lifecycle={
            "medium_interval": 10,
            "slow_interval": 20,
            "warmup_steps": 10,
            "gentle_steps": 20,
        },
    )


def _step_seconds(trainer: Trainer) -> float:
    return sum(trainer.timings.get(name, 0.0) for name in STEP_PHASES)


def measure(placement: str, warmup: int, steps: int, device: torch.device, ctx: Any) -> dict:
    """Train ``warmup`` then ``steps`` steps with ``placement``; the measured steps' numbers."""
    cfg = bench_config(placement, warmup + steps)
    dataset = build_dataset(cfg.data, cfg.model.block_size)
    trainer = Trainer(cfg, dataset, device=device, distributed=ctx)
    trainer.fit(steps=warmup)
    sharding = trainer.sharding
    before = dict(sharding.bytes) if sharding else {}
    seconds, moves = _step_seconds(trainer), sharding.moves if sharding else 0
    trainer.fit(steps=warmup + steps)
    seconds = torch.tensor([_step_seconds(trainer) - seconds])
    if ctx.active:  # the step waits for the slowest rank
        torch.distributed.all_reduce(seconds, op=torch.distributed.ReduceOp.MAX)
    after = dict(sharding.bytes) if sharding else {}
    per_step = {k: (after[k] - before.get(k, 0)) / steps for k in after}
    return {
        "placement": placement if sharding else "one process",
        "world_size": ctx.world_size,
        "bytes_per_step": per_step,
        "total_bytes_per_step": sum(per_step.values()),
        "step_ms": 1e3 * seconds.item() / steps,
        "live_per_rank": sharding.live_per_rank() if sharding else None,
        "moves": (sharding.moves - moves) if sharding else 0,
        "births": trainer.lifecycle.births,
        "deaths": trainer.lifecycle.deaths,
        "ddp_gradient_bytes": 4 * sum(p.numel() for p in trainer.model.parameters()),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| placement | ranks | bytes/step (act fwd + act bwd + slot grads + tubes) | total "
        "bytes/step | step ms (slowest rank) | live pods per rank, per layer | pods moved |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        parts = row["bytes_per_step"]
        split = " + ".join(
            f"{parts.get(k, 0) / 1e3:,.1f} kB"
            for k in ("activations", "activation_grads", "gradients", "tubes")
        )
        lines.append(
            f"| {row['placement']} | {row['world_size']} | {split if parts else '-'} | "
            f"{row['total_bytes_per_step'] / 1e3:,.1f} kB | {row['step_ms']:.1f} | "
            f"{row['live_per_rank'] or '-'} | {row['moves']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slime.train.heads_bench")
    parser.add_argument("--steps", type=int, default=40, help="measured steps (default 40)")
    parser.add_argument("--warmup", type=int, default=20, help="steps before (default 20)")
    parser.add_argument("--placements", default="behaviour,random", help="comma-separated")
    parser.add_argument("--json", type=Path, help="write the numbers here (rank 0)")
    args = parser.parse_args(argv)
    try:
        if args.steps < 1 or args.warmup < 0:
            raise SlimeError(
                f"expected --steps >= 1 and --warmup >= 0, got {args.steps}, {args.warmup}"
            )
        ctx, device = launch("cpu")
        torch.set_num_threads(1)
        try:
            placements = args.placements.split(",") if ctx.active else ["behaviour"]
            rows = [measure(p, args.warmup, args.steps, device, ctx) for p in placements]
        finally:
            shutdown()
    except SlimeError as exc:
        print(f"heads_bench: error: {exc}", file=sys.stderr)
        return 2
    if ctx.is_main:
        print(
            f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}"
        )
        print(table(rows))
        if args.json is not None:
            args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
