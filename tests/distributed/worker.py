"""One rank of the data-parallel tests, launched by torchrun (see test_data_parallel.py).

    python -m torch.distributed.run --standalone --nproc-per-node 2 worker.py train OUT
    python -m torch.distributed.run --standalone --nproc-per-node 2 worker.py resume OUT RUN...

``train`` trains the test config into ``OUT/run`` and records, on every rank, every record the
trainer logs and a digest of the whole training state after each lifecycle event and at the end.
``resume`` resumes each ``RUN`` to its configured steps, recording digests at load and at the end.
Each rank writes ``OUT/rank{r}.json``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from slime.train import RunDir, Trainer, build_dataset, load_config
from slime.train.distributed import launch, shutdown

STEPS = 12


def config():
    """The tiny preset, logging every step, checkpointing at 6 and 12, lifecycle events at 3, 6,
    9, 12 (births from 3, culls at 6 and 12)."""
    return load_config("tiny").replace(
        train={"steps": STEPS, "log_interval": 1, "checkpoint_interval": 6, "cpu_threads": 1}
    )


def _hash_tensors(items: list[tuple[str, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    for name, tensor in items:
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def digests(trainer: Trainer) -> dict[str, Any]:
    """sha256 of the model's state (parameters and the organisms' buffers), the optimizer's
    moments, the fitness averages and each layer's archive files; plus the live slots and the
    lifecycle's counters."""
    model = sorted(trainer.model.state_dict().items())
    optimizer = [
        (f"{i}.{key}", value)
        for i, (_, state) in enumerate(
            sorted(trainer.optimizer.optimizer.state_dict()["state"].items())
        )
        for key, value in sorted(state.items())
    ]
    ema = trainer.fitness.ema
    archives = []
    for organism in trainer.model.organisms:
        with tempfile.TemporaryDirectory() as tmp:
            organism.archive.save(Path(tmp) / "archive")
            h = hashlib.sha256()
            for file in sorted((Path(tmp) / "archive").iterdir()):
                h.update(file.name.encode())
                h.update(file.read_bytes())
            archives.append(h.hexdigest())
    lc = trainer.lifecycle
    return {
        "step": trainer.step,
        "model": _hash_tensors(model),
        "optimizer": _hash_tensors(optimizer),
        "fitness": _hash_tensors([("ema", ema)]) if ema is not None else None,
        "archives": archives,
        "archive_sizes": [len(o.archive) for o in trainer.model.organisms],
        "live": [o.live_slots() for o in trainer.model.organisms],
        "births": lc.births if lc else None,
        "deaths": lc.deaths if lc else None,
        "tokens_seen": trainer.tokens_seen,
    }


def observe(trainer: Trainer, out: dict[str, list]) -> None:
    """Record every logged record and a digest after every lifecycle event, on this rank."""
    log = trainer._log

    def logged(**record: Any) -> None:
        out["records"].append({"step": trainer.step, **record})
        log(**record)

    trainer._log = logged
    for name in ("medium", "slow"):
        method = getattr(trainer.lifecycle, name)

        def event(*args: Any, _method=method, _name=name, **kwargs: Any) -> dict:
            result = _method(*args, **kwargs)
            out["events"].append({"event": _name, **digests(trainer)})
            return result

        setattr(trainer.lifecycle, name, event)


def main(mode: str, out: Path, runs: list[str]) -> None:
    ctx, device = launch("cpu")
    torch.set_num_threads(1)
    cfg = config()
    dataset = build_dataset(cfg.data, cfg.model.block_size)
    result: dict[str, Any] = {"rank": ctx.rank, "world_size": ctx.world_size}
    try:
        if mode == "train":
            run = RunDir(out / "run")
            trainer = Trainer(cfg, dataset, run_dir=run, device=device, distributed=ctx)
            result.update(records=[], events=[])
            observe(trainer, result)
            summary = trainer.fit()
            result["summary"] = {k: summary[k] for k in ("status", "steps", "births", "deaths")}
            result["final"] = digests(trainer)
        else:
            result["runs"] = []
            for path in runs:
                trainer = Trainer.resume(RunDir(path), dataset, cfg, device=device, distributed=ctx)
                loaded = digests(trainer)
                trainer.fit()
                result["runs"].append({"loaded": loaded, "final": digests(trainer)})
    finally:
        (out / f"rank{ctx.rank}.json").write_text(json.dumps(result, default=str))
        shutdown()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])
