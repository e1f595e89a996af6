"""Data-parallel training with real processes: two ranks on the CPU, gloo, launched by torchrun.

Three launches (~25 s each on two cores): the worker training the tiny preset (shared by the loss,
lockstep and checkpoint tests), the worker resuming checkpoints onto two ranks, and ``slime train``
itself under torchrun. The one-process runs they are compared with run in this process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from slime.train import RunDir, Trainer, build_dataset, load_checkpoint
from slime.train.cli import main
from slime.train.distributed import data_seed

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("dp_worker", HERE / "worker.py")
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

WORLD = 2
# DDP averages two half-batch gradients where one process takes the mean over the whole batch:
# the same sum in another order. Over 12 steps of the tiny model the curves agree to ~1e-6.
RTOL, ATOL = 1e-5, 1e-6
TIMING = {"tokens_per_s", "timings_s", "elapsed_s", "slo", "time_s", "best_time_s"}  # wall clock


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    torch.set_num_threads(1)  # as each rank (cpu_threads: 1): the same kernels, and no contention


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(WORLD),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, (
        f"torchrun failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    )
    return done


def ranks(out: Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """The worker trained the test config on two ranks: its folder and each rank's record."""
    out = tmp_path_factory.mktemp("two-ranks")
    torchrun(str(HERE / "worker.py"), "train", str(out))
    return out, ranks(out)


class GlobalBatch:
    """The dataset as one process sees a two-rank run's data: each draw from ``stream`` (the
    trainer's data generator) is what the ranks draw from their own streams, concatenated."""

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.streams = [torch.Generator().manual_seed(data_seed(seed, r)) for r in range(WORLD)]
        self.stream: torch.Generator | None = None
        self.vocab_size, self.block_size = dataset.vocab_size, dataset.block_size

    def batch(self, split: str, batch_size: int, generator: torch.Generator):
        if generator is not self.stream:  # evaluation and the probe: as every rank draws them
            return self.dataset.batch(split, batch_size, generator)
        parts = [self.dataset.batch(split, batch_size // WORLD, g) for g in self.streams]
        return tuple(torch.cat(p) for p in zip(*parts))


def _records(path: Path) -> list[dict[str, Any]]:
    return RunDir(path).read_metrics()


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)


def _agree(a: Any, b: Any) -> bool:
    """Equal, floats within the tolerance. Decisions (births, deaths, pool sizes, phases, the
    gate) are compared exactly; the behavioural analysis of a near-degenerate pool may find it
    undefined for another reason (KMO vs Bartlett) on values a rounding apart."""
    if isinstance(a, float) and isinstance(b, float):
        return _close(a, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_agree(x, y) for x, y in zip(a, b))
    if isinstance(a, str) and isinstance(b, str) and a.startswith("undefined: "):
        return b.startswith("undefined: ")
    return a == b


def test_loss_curve_matches_one_process_with_the_same_global_batch(two_ranks, tmp_path) -> None:
    out, _ = two_ranks
    cfg = worker.config()
    data = GlobalBatch(build_dataset(cfg.data, cfg.model.block_size), cfg.train.seed)
    trainer = Trainer(cfg, data, run_dir=RunDir(tmp_path / "one"))
    data.stream = trainer.data_gen
    trainer.fit()
    two, one = _records(out / "run"), _records(tmp_path / "one")
    assert [(r["step"], r["kind"]) for r in two] == [(r["step"], r["kind"]) for r in one]
    train = [(a, b) for a, b in zip(two, one) if a["kind"] == "train"]
    assert len(train) == worker.STEPS  # log_interval 1: one record per step
    for a, b in train:
        for key in ("loss", "grad_norm", "lr"):
            assert _close(a[key], b[key]), (a["step"], key, a[key], b[key])
        assert a["pool_size"] == b["pool_size"]
    events = [(a, b) for a, b in zip(two, one) if a["kind"] in ("medium", "slow", "eval")]
    for a, b in events:
        assert a.keys() == b.keys()
        for key in a.keys() - TIMING:
            assert _agree(a[key], b[key]), (a["step"], a["kind"], key, a[key], b[key])
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert summary["tokens_seen"] == trainer.tokens_seen  # counted over the global batch
    assert summary["births"] == trainer.lifecycle.births > 0
    assert summary["deaths"] == trainer.lifecycle.deaths > 0


def test_lifecycle_in_lockstep_on_every_rank(two_ranks) -> None:
    _, (first, second) = two_ranks
    assert first["summary"] == second["summary"]
    assert first["summary"]["births"] > 0 and first["summary"]["deaths"] > 0
    # a digest after every medium and slow event: parameters and buffers, optimizer moments,
    # fitness averages and archive files bit-identical on both ranks, same live slots
    assert [e["event"] for e in first["events"]] == ["medium", "medium", "slow"] * 2
    assert first["events"] == second["events"]
    assert first["final"] == second["final"]
    assert max(first["final"]["archive_sizes"]) > 0
    assert len({e["model"] for e in first["events"]}) > 1  # the digests do follow the training

    def logged(rank: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in r.items() if k not in TIMING}
            for r in rank["records"]
            if r["kind"] != "summary"  # rank 0 logs it inside the block that writes the run
        ]

    assert logged(first) == logged(second)  # the same losses, births, deaths and analysis


def test_sharded_checkpoint_is_written_by_both_ranks(two_ranks) -> None:
    out, (first, _) = two_ranks
    folder = out / "run" / "checkpoints" / "step_00000006"
    manifest = json.loads((folder / "state.json").read_text())
    assert manifest["format"] == "slime-checkpoint-dcp/1" and manifest["world_size"] == WORLD
    for rank in range(WORLD):  # each rank wrote its share of the replicated tensors
        assert (folder / "dcp" / f"__{rank}_0.distcp").stat().st_size > 0
    assert not (folder / "tensors.safetensors").exists()
    state = load_checkpoint(folder, rank=1)
    assert state["step"] == 6 and state["world_size"] == WORLD
    assert not torch.equal(state["data_rng"], load_checkpoint(folder)["data_rng"])  # per rank


def _resumable_copy(run: Path, to: Path, step: int) -> Path:
    """A copy of ``run`` whose latest checkpoint is that of ``step``."""
    shutil.copytree(run, to)
    for ckpt in (to / "checkpoints").iterdir():
        if int(ckpt.name.removeprefix("step_")) > step:
            shutil.rmtree(ckpt)
    return to


def test_reshard_two_ranks_to_one_process(two_ranks, tmp_path) -> None:
    out, (first, _) = two_ranks
    run = _resumable_copy(out / "run", tmp_path / "run", 6)
    cfg = worker.config()
    dataset = build_dataset(cfg.data, cfg.model.block_size)
    trainer = Trainer.resume(RunDir(run), dataset, cfg)
    assert trainer.step == 6
    saved = next(e for e in first["events"] if e["event"] == "slow" and e["step"] == 6)
    saved = {k: v for k, v in saved.items() if k != "event"}
    assert worker.digests(trainer) == saved  # every tensor, moment and archive as the ranks held
    summary = trainer.fit()
    assert summary["status"] == "completed" and summary["steps"] == worker.STEPS
    final = run / "checkpoints" / "step_00000012"
    assert (final / "tensors.safetensors").is_file()  # one process writes the one-process format


def test_reshard_one_process_to_two_ranks_and_resume_exactly(two_ranks, tmp_path) -> None:
    out, (first, _) = two_ranks
    cfg = worker.config()
    dataset = build_dataset(cfg.data, cfg.model.block_size)
    one = Trainer(cfg, dataset, run_dir=RunDir(tmp_path / "one"))
    one.fit(steps=6)  # its checkpoint of step 6, in the one-process format
    at_six = worker.digests(one)
    same = _resumable_copy(out / "run", tmp_path / "two", 6)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    torchrun(str(HERE / "worker.py"), "resume", str(resumed), str(tmp_path / "one"), str(same))
    first_rank, second_rank = ranks(resumed)
    (one_to_two, two_to_two), other = first_rank["runs"], second_rank["runs"]
    # 1 -> 2: both ranks load the one-process checkpoint and stay in lockstep to the end
    assert one_to_two["loaded"] == other[0]["loaded"] == at_six
    assert one_to_two["final"] == other[0]["final"] and one_to_two["final"]["step"] == 12
    manifest = json.loads((tmp_path / "one/checkpoints/step_00000012/state.json").read_text())
    assert manifest["format"] == "slime-checkpoint-dcp/1" and manifest["world_size"] == WORLD
    # 2 -> 2: resuming the sharded checkpoint replays the uninterrupted run bit for bit
    assert two_to_two["final"] == other[1]["final"] == first["final"]


def test_slime_train_under_torchrun(tmp_path, capsys) -> None:
    slime = shutil.which("slime", path=str(Path(sys.executable).parent)) or "slime"
    done = torchrun("--no-python", slime, "train", "--config", "tiny", "--out", str(tmp_path))
    (run,) = tmp_path.iterdir()  # rank 0 made the one run directory
    assert done.stdout.count("completed: slime on recall, 12 steps") == 1  # rank 0 alone prints
    assert done.stderr.count("] 12/12 loss") == 1  # and draws the progress bar
    assert "(2 processes)" in done.stdout
    records = RunDir(run).read_metrics()
    keys = [(r["step"], r["kind"]) for r in records]
    assert len(keys) == len(set(keys)) and keys[-1] == (12, "summary")  # logged once
    manifest = json.loads((run / "checkpoints/step_00000012/state.json").read_text())
    assert manifest["world_size"] == WORLD
    assert (run / "model" / "config.json").is_file()
    # and one process carries the run on from the two ranks' checkpoint
    assert main(["train", "--resume", str(run), "--steps", "15", "--quiet"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 15
    assert "completed: slime on recall, 15 steps" in capsys.readouterr().out
