"""Fixtures shared by slime-train's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def data_dir() -> Path:
    """The offline corpora: $SLIME_DATA_DIR, else <repo>/../shared/data; skip when neither exists."""
    env = os.environ.get("SLIME_DATA_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not (path / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip(f"offline corpora not found at {path} (set SLIME_DATA_DIR)")
    return path


def tiny_config(**sections: dict):
    """A RunConfig small enough for CPU tests: 1-2 layers, width 16, recall task of 8 tokens."""
    from slime.train.config import RunConfig

    base = {
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
            "lr": 3e-3,
            "warmup_iters": 2,
            "eval_interval": 6,
            "eval_iters": 1,
            "log_interval": 3,
            "checkpoint_interval": 6,
            "device": "cpu",
        },
        "lifecycle": {
            "medium_interval": 3,
            "slow_interval": 6,
            "warmup_steps": 3,
            "gentle_steps": 6,
            "probe_batch_size": 4,
        },
        "data": {"name": "recall", "task_vocab": 8},
    }
    for name, changes in sections.items():
        base.setdefault(name, {}).update(changes)
    return RunConfig().replace(**base)
