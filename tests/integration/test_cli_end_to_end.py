"""End-to-end training on the CPU through the public command line.

One run goes through the installed ``slime`` console script in a subprocess (each subprocess pays
~15 s of imports, so there is only one); resuming and a bad config go through the same entry point,
``slime.train.cli.main``, in-process. The tiny run config below exercises every timescale within
12 steps (births, culls, evaluation, checkpoints); the tests check what a user finds afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from slime.train.checkpoint import checkpoint_steps
from slime.train.cli import main
from slime.train.loader import load_config

CONFIG = {
    "model": {
        "block_size": 16,
        "n_layer": 1,
        "n_embd": 16,
        "n_pods": 2,
        "pod_capacity": 4,
        "head_dim": 8,
        "kernel_backend": "torch",
    },
    "train": {
        "steps": 12,
        "batch_size": 8,
        "lr": 0.003,
        "warmup_iters": 2,
        "eval_interval": 6,
        "eval_iters": 1,
        "log_interval": 3,
        "checkpoint_interval": 6,
        "device": "cpu",
        "cpu_threads": 1,
    },
    "lifecycle": {
        "medium_interval": 3,
        "slow_interval": 6,
        "warmup_steps": 3,
        "gentle_steps": 6,
        "cull_fraction": 0.5,
    },
    "data": {"name": "recall", "task_vocab": 8},
}


def _slime_command() -> str:
    """The installed ``slime`` console script of this environment."""
    beside = Path(sys.executable).with_name("slime")
    found = str(beside) if beside.is_file() else shutil.which("slime")
    if found is None:
        pytest.fail("the `slime` console script is not installed in this environment")
    return found


def _slime(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [_slime_command(), *args], capture_output=True, text=True, timeout=240, env=env
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    done = _slime("train", "--config", str(config), "--out", str(root / "runs"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "completed: slime on recall, 12 steps" in done.stdout
    (path,) = (root / "runs").iterdir()
    return path


def _metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_run_directory_holds_config_metrics_summary_plots_and_checkpoints(run_dir: Path) -> None:
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "loss.png", "pool.png"):
        assert (run_dir / name).is_file(), name
    assert checkpoint_steps(run_dir) == [6, 12]


def test_saved_config_is_the_resolved_input_config(run_dir: Path) -> None:
    cfg = load_config(run_dir / "config.yaml")
    assert cfg.model.n_embd == 16 and cfg.train.steps == 12 and cfg.data.name == "recall"
    assert cfg.lifecycle.cull_fraction == 0.5 and cfg.model.kind == "slime"


def test_metrics_log_every_timescale(run_dir: Path) -> None:
    kinds = {}
    for record in _metrics(run_dir):
        kinds.setdefault(record["kind"], []).append(record["step"])
    assert kinds["train"] == [3, 6, 9, 12]
    assert kinds["eval"] == [6, 12]
    assert kinds["medium"] == [3, 6, 9, 12]
    assert kinds["slow"] == [6, 12]
    assert kinds["summary"] == [12]


def test_summary_reports_a_completed_run_with_lifecycle_events(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 12
    assert summary["births"] >= 1 and summary["deaths"] >= 1
    assert summary["nonfinite_steps"] == 0 and summary["val_loss"] > 0


def test_resume_continues_the_run_from_its_latest_checkpoint(run_dir: Path) -> None:
    assert main(["train", "--resume", str(run_dir), "--steps", "18", "--quiet"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 18 and summary["status"] == "completed"
    assert checkpoint_steps(run_dir)[-1] == 18
    train_steps = [r["step"] for r in _metrics(run_dir) if r["kind"] == "train"]
    assert train_steps == [3, 6, 9, 12, 15, 18]


def test_bad_config_exits_with_status_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"model": {"n_layer": 0}}))
    assert main(["train", "--config", str(config), "--out", str(tmp_path), "--quiet"]) == 2
    assert "model.n_layer" in capsys.readouterr().err
