"""A training process killed with SIGKILL resumes to exactly the weights of an uninterrupted run."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from slime.train.build import build_dataset
from slime.train.checkpoint import checkpoint_steps, load_checkpoint
from slime.train.loader import load_config
from slime.train.rundir import RunDir
from slime.train.trainer import Trainer

STEPS = 40


def _config(tmp_path: Path) -> Path:
    cfg = load_config("tiny").replace(
        train={"steps": STEPS, "checkpoint_interval": 5, "eval_interval": 10},
        model={"dropout": 0.1},  # dropout draws from the global RNG: it must be restored too
        lifecycle={"cull_fraction": 0.5},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-exact equality in which NaN equals NaN (empty tube entries hold NaN)."""
    if not a.is_floating_point():
        return torch.equal(a, b)
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


def _slime(*args: str) -> list[str]:
    return [sys.executable, "-m", "slime.train.cli", "train", "--quiet", *args]


def _run_dir(out: Path) -> Path:
    (run,) = out.iterdir()
    return run


def _uninterrupted(config: Path, out: Path) -> Path:
    """The reference run, in this process (the killed subprocess also used one CPU thread)."""
    cfg = load_config(config)
    run = RunDir(out)
    Trainer(cfg, build_dataset(cfg.data, cfg.model.block_size), run_dir=run).fit()
    return run.path


def test_sigkilled_run_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    config = _config(tmp_path)
    kill_after = random.Random().choice([5, 10, 15, 20])
    victim = subprocess.Popen(_slime("--config", str(config), "--out", str(tmp_path / "killed")))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and victim.poll() is None:
        runs = list((tmp_path / "killed").glob("*"))
        if runs and any(s >= kill_after for s in checkpoint_steps(runs[0])):
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL, f"the run ended before the kill ({kill_after=})"
    killed = _run_dir(tmp_path / "killed")
    assert checkpoint_steps(killed)[-1] < STEPS, "the kill must interrupt the run"

    cfg = load_config(killed / "config.yaml")
    dataset = build_dataset(cfg.data, cfg.model.block_size)
    Trainer.resume(RunDir(killed), dataset, cfg).fit()  # `slime train --resume` does this
    whole = _uninterrupted(config, tmp_path / "whole")
    a, b = load_checkpoint(whole), load_checkpoint(killed)
    assert a["step"] == b["step"] == STEPS
    assert a["model"].keys() == b["model"].keys()
    differing = [k for k in a["model"] if not _same(a["model"][k], b["model"][k])]
    assert not differing, f"killed after checkpoint {kill_after}; differing tensors: {differing}"
    # the organisms' fitness, birth steps and tubes are model buffers, compared above
    assert {"blocks.0.attn.fitness", "blocks.0.attn.born_step"} <= a["model"].keys()
    moments_a, moments_b = a["optimizer"]["adamw"]["state"], b["optimizer"]["adamw"]["state"]
    assert moments_a.keys() == moments_b.keys()
    for i, entry in moments_a.items():
        assert all(torch.equal(v, moments_b[i][k]) for k, v in entry.items()), i
    assert torch.equal(a["fitness"]["ema"], b["fitness"]["ema"])
    assert a["lifecycle"] == b["lifecycle"]
