"""One rank of the head-sharded tests, launched by torchrun (see test_head_parallel.py).

    python -m torch.distributed.run --standalone --nproc-per-node N heads_worker.py train OUT
    python -m torch.distributed.run --standalone --nproc-per-node N heads_worker.py resume OUT RUN

``train`` first runs one forward/backward of a fixed batch through a head-sharded model (its loss,
logits and synchronised gradients go to ``OUT/step{r}.pt``), then trains the data-parallel test
config with ``train.parallel: heads`` into ``OUT/run``, recording after every lifecycle event the
placement every rank computed. ``resume`` resumes ``RUN`` to its configured steps (recording the
placement at load). Each rank writes ``OUT/rank{r}.json``.

Test hook (this file only): ``SLIME_TEST_KILL=RANK:STEP`` makes rank ``RANK`` SIGKILL itself when it
is about to take step ``STEP + 1``, as a lost device would vanish.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from slime.train import RunDir, Trainer, build_dataset
from slime.train.distributed import launch, shutdown

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("dp_worker", HERE / "worker.py")
dp_worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dp_worker)

STEPS = dp_worker.STEPS
STEP_SEED = 7  # the fixed batch of the forward/backward check


def config():
    """The data-parallel tests' config (12 steps, births and culls, checkpoints at 6 and 12),
    head-sharded."""
    return dp_worker.config().replace(train={"parallel": "heads"})


def fixed_batch(dataset: Any, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return dataset.batch("train", cfg.train.batch_size, torch.Generator().manual_seed(STEP_SEED))


def forward_backward(trainer: Trainer, dataset: Any) -> dict[str, torch.Tensor]:
    """One training forward/backward of the fixed batch: loss, logits and every gradient (slot
    gradients summed over the ranks, as the trainer does)."""
    idx, targets = fixed_batch(dataset, trainer.cfg)
    trainer.model.train()
    logits, loss = trainer.model(idx, targets)
    loss.backward()
    if trainer.sharding is not None:
        trainer.sharding.sync_gradients()
    out = {"loss": loss.detach(), "logits": logits.detach()}
    for name, param in trainer.model.named_parameters():
        if param.grad is not None:
            out[f"grad/{name}"] = param.grad.detach().clone()
    return out


def placement_record(trainer: Trainer) -> dict[str, Any]:
    """What this rank computed: the rank of every slot, the slots it owns, and the inputs of the
    hash (live slots, their archive cells, their birth steps)."""
    sharding = trainer.sharding
    organisms = trainer.model.organisms
    return {
        "step": trainer.step,
        "world_size": trainer.dist.world_size,
        "ranks": sharding.ranks,
        "owned": sharding.owned(),
        "live": [o.live_slots() for o in organisms],
        "cells": [
            o.archive.cell_index(o.live_descriptors()).tolist() if o.live_slots() else []
            for o in organisms
        ],
        "born": [o.born_step.tolist() for o in organisms],
        "moves": sharding.moves,
        "births": trainer.lifecycle.births,
        "deaths": trainer.lifecycle.deaths,
    }


def observe(trainer: Trainer, out: dict[str, list]) -> None:
    """Record every logged record, and the digests and the placement after every lifecycle event
    (the trainer places the pods again right after its lifecycle work)."""
    dp_worker.observe(trainer, out)
    place = trainer.sharding.place

    def placed() -> list[list[int]]:
        ranks = place()
        out["placements"].append(placement_record(trainer))
        return ranks

    trainer.sharding.place = placed


def kill_hook(trainer: Trainer, rank: int) -> None:
    spec = os.environ.get("SLIME_TEST_KILL")
    if not spec:
        return
    victim, at = (int(part) for part in spec.split(":"))
    if rank != victim:
        return
    step = trainer.train_step

    def train_step() -> Any:
        if trainer.step == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return step()

    trainer.train_step = train_step


def main(mode: str, out: Path, runs: list[str]) -> None:
    ctx, device = launch("cpu")
    torch.set_num_threads(1)
    cfg = config()
    dataset = build_dataset(cfg.data, cfg.model.block_size)
    result: dict[str, Any] = {"rank": ctx.rank, "world_size": ctx.world_size, "placements": []}
    try:
        if mode == "train":
            check = Trainer(cfg, dataset, device=device, distributed=ctx)
            result["step_owned"] = check.sharding.owned()
            torch.save(forward_backward(check, dataset), out / f"step{ctx.rank}.pt")
            check.sharding.remove()
            trainer = Trainer(
                cfg, dataset, run_dir=RunDir(out / "run"), device=device, distributed=ctx
            )
            result.update(records=[], events=[], bytes_at_start=dict(trainer.sharding.bytes))
            observe(trainer, result)
            kill_hook(trainer, ctx.rank)
            summary = trainer.fit()
        else:
            (path,) = runs
            trainer = Trainer.resume(RunDir(path), dataset, cfg, device=device, distributed=ctx)
            result["loaded"] = {**dp_worker.digests(trainer), **placement_record(trainer)}
            result.update(records=[], events=[])
            observe(trainer, result)
            summary = trainer.fit()
        result["summary"] = {k: summary[k] for k in ("status", "steps", "births", "deaths")}
        result["final"] = dp_worker.digests(trainer)
        result["bytes"] = dict(trainer.sharding.bytes)
    finally:
        (out / f"rank{ctx.rank}.json").write_text(json.dumps(result, default=str))
        shutdown()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])
