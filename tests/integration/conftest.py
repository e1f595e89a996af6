"""A tiny in-process run configuration shared by the integration tests."""

from __future__ import annotations

import pytest
from slime.train.build import build_dataset
from slime.train.config import RunConfig
from slime.train.loader import load_config


def _tiny_config(**sections: dict) -> RunConfig:
    """The shipped ``tiny`` preset (one layer of width 16 on associative recall, every timescale a
    few steps long), run for 24 steps with room for births (6 slots, a 16x16 archive) and no
    evaluation or checkpoints getting in the way."""
    cfg = load_config("tiny").replace(
        model={"pod_capacity": 6, "archive_dims": (16, 16)},
        train={"steps": 24, "eval_interval": 1000, "checkpoint_interval": 1000},
        lifecycle={"gentle_steps": 24},
    )
    return cfg.replace(**sections)


@pytest.fixture
def tiny_config():
    """``tiny_config(**sections)``: the tiny RunConfig with some fields of some sections changed."""
    return _tiny_config


@pytest.fixture
def dataset():
    """The recall task of the tiny config (windows of 16 tokens)."""
    return build_dataset(_tiny_config().data, 16)
