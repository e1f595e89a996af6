"""Head-sharded training (``train.parallel: heads``) with real processes on the CPU, gloo, torchrun.

Three launches (~25 s each on two cores): two ranks training the test config (shared by the
equality, determinism and re-placement tests), three ranks of which one SIGKILLs itself after the
checkpoint of step 6, and two ranks resuming that run. The one-process runs they are compared with
run in this process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from slime.core import placement
from slime.train import RunDir, Trainer, build_dataset

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("heads_worker", HERE / "heads_worker.py")
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

# Each rank sums its own pods' outputs, then the ranks' partials are summed: the one-process sum
# in another order. Over one step the gradients agree to ~1e-8; over 12 steps the losses to ~1e-7.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    torch.set_num_threads(1)


def torchrun(world: int, *args: str, check: bool = True, env: dict[str, str] | None = None):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", str(world), str(HERE / "heads_worker.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    if check:
        assert done.returncode == 0, f"torchrun failed:\n{done.stdout}\n{done.stderr}"
    return done


def ranks(out: Path, world: int) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("heads")
    torchrun(2, "train", str(out))
    return out, ranks(out, 2)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same config trained by one process (which ignores parallel: heads)."""
    out = tmp_path_factory.mktemp("one")
    cfg = worker.config()
    Trainer(cfg, build_dataset(cfg.data, cfg.model.block_size), run_dir=RunDir(out)).fit()
    return out


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)


def _train_losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in RunDir(run).read_metrics() if r["kind"] == "train"}


def test_sharded_forward_backward_equals_one_process(two_ranks) -> None:
    out, (first, second) = two_ranks
    # the pods really are split: before any measurement the founders' cells are those of zero
    # descriptors, so the behaviour hash may put them together; every slot has exactly one owner
    owned = [set(first["step_owned"][0]), set(second["step_owned"][0])]
    assert owned[0] | owned[1] == set(range(4)) and not owned[0] & owned[1]
    cfg = worker.config()
    dataset = build_dataset(cfg.data, cfg.model.block_size)
    expected = worker.forward_backward(Trainer(cfg, dataset), dataset)
    for rank in range(2):
        got = torch.load(out / f"step{rank}.pt")
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=RTOL, atol=ATOL, msg=name)
    grads = [k for k in expected if k.startswith("grad/") and "qkv_weight" in k]
    assert grads and all(expected[k].abs().sum() > 0 for k in grads)  # a real gradient compared


def test_head_sharded_training_follows_one_process(two_ranks, one_process) -> None:
    out, (first, second) = two_ranks
    two, one = _train_losses(out / "run"), _train_losses(one_process)
    assert sorted(two) == list(range(1, worker.STEPS + 1)) and two.keys() == one.keys()
    for step in one:
        assert _close(two[step], one[step]), (step, two[step], one[step])
    summary = json.loads((out / "run" / "summary.json").read_text())
    reference = json.loads((one_process / "summary.json").read_text())
    for key in ("births", "deaths", "pool_size", "tokens_seen", "steps"):
        assert summary[key] == reference[key], key
    assert summary["births"] > 0 and summary["deaths"] > 0
    # every rank holds the same model, optimizer, fitness and archives after every event
    assert first["events"] == second["events"] and first["final"] == second["final"]
    # and the collectives moved what the design says: activations both ways, slot gradients
    assert first["bytes"].keys() >= {"activations", "activation_grads", "gradients", "tubes"}


def _check_placement(record: dict[str, Any]) -> None:
    """``record``'s ranks are the behaviour hash of each live pod's cell, ``slot % N`` for an
    empty slot, and ``owned`` is this rank's share."""
    world = record["world_size"]
    for layer, slot_ranks in enumerate(record["ranks"]):
        live = record["live"][layer]
        cells = dict(zip(live, record["cells"][layer]))
        for slot, rank in enumerate(slot_ranks):
            expected = placement((cells[slot],), world) if slot in live else slot % world
            assert rank == expected, (record["step"], layer, slot, rank, expected)


def test_placement_is_the_behaviour_hash_on_every_rank(two_ranks) -> None:
    _, (first, second) = two_ranks
    events = sorted({e["step"] for e in first["events"]})
    assert [p["step"] for p in first["placements"]] == events  # placed again after each event
    # the same ranks, computed from the same descriptors, on both ranks
    drop = lambda p: {k: v for k, v in p.items() if k != "owned"}  # noqa: E731
    assert list(map(drop, first["placements"])) == list(map(drop, second["placements"]))
    for mine, theirs in zip(first["placements"], second["placements"]):
        _check_placement(mine)
        for layer in range(len(mine["ranks"])):
            own = set(mine["owned"][layer]), set(theirs["owned"][layer])
            assert own[0] | own[1] == set(range(len(mine["ranks"][layer])))
            assert not own[0] & own[1]
            assert own[0] == {s for s, r in enumerate(mine["ranks"][layer]) if r == 0}


def test_replacement_after_births_and_culls(two_ranks) -> None:
    _, (first, _) = two_ranks
    records = first["placements"]
    changed = [
        (a, b) for a, b in zip(records, records[1:]) if a["live"] != b["live"]
    ]  # births or culls between two placements
    assert changed and records[-1]["births"] > 0 and records[-1]["deaths"] > 0
    for before, after in changed:
        _check_placement(after)  # newborns placed by their cells, freed slots by slot % N
        born = set(after["live"][0]) - set(before["live"][0])
        died = set(before["live"][0]) - set(after["live"][0])
        assert born or died
        for slot in died - born:
            assert after["ranks"][0][slot] == slot % 2


def test_lost_rank_resumes_from_checkpoint_on_the_remaining_processes(two_ranks, tmp_path) -> None:
    three = tmp_path / "three"
    three.mkdir()
    # rank 2 vanishes before step 9, after the checkpoint of step 6 was committed
    done = torchrun(3, "train", str(three), check=False, env={"SLIME_TEST_KILL": "2:8"})
    assert done.returncode != 0
    assert "failed (exitcode: -9) local_rank: 2" in done.stderr, done.stderr[-2000:]  # SIGKILL
    run = three / "run"
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept[-1] == "step_00000006"
    manifest = json.loads((run / "checkpoints" / kept[-1] / "state.json").read_text())
    assert manifest["world_size"] == 3
    # the job restarts on the two processes left (torchrun --nproc-per-node 2 ... --resume)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    torchrun(2, "resume", str(resumed), str(run))
    first, second = ranks(resumed, 2)
    for rank in (first, second):
        loaded = rank["loaded"]
        assert loaded["step"] == 6 and loaded["world_size"] == 2  # no retraining: from step 6
        _check_placement(loaded)  # re-placed over two ranks by the same hash
        for record in rank["placements"]:
            _check_placement(record)
    assert first["loaded"]["ranks"] == second["loaded"]["ranks"]
    assert first["final"] == second["final"] and first["summary"]["steps"] == worker.STEPS
    # and the run carries on where it was: one record per step, the 3-rank steps 1..6 kept,
    # and the losses those of an uninterrupted head-sharded run (two_ranks) within tolerance
    losses = _train_losses(run)
    metrics = [r for r in RunDir(run).read_metrics() if r["kind"] == "train"]
    assert [r["step"] for r in metrics] == list(range(1, worker.STEPS + 1))
    out, _ = two_ranks
    for step, loss in _train_losses(out / "run").items():
        assert _close(losses[step], loss), (step, losses[step], loss)
