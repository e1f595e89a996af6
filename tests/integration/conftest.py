"""A tiny in-process run configuration shared by the integration tests."""

from __future__ import annotations

import pytest
from slime.train.build import build_dataset
from slime.train.config import (
    DataConfig,
    LifecycleConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)


def _tiny_config(**sections: dict) -> RunConfig:
    """One layer of width 16 on associative recall; every timescale a few steps long."""
    cfg = RunConfig(
        model=ModelConfig(
            block_size=16,
            n_layer=1,
            n_embd=16,
            n_pods=2,
            pod_capacity=6,
            head_dim=8,
            kernel_backend="torch",
            archive_dims=(16, 16),
        ),
        train=TrainConfig(
            steps=24,
            batch_size=8,
            lr=3e-3,
            warmup_iters=2,
            eval_interval=1000,
            eval_iters=1,
            log_interval=3,
            checkpoint_interval=1000,
            device="cpu",
        ),
        lifecycle=LifecycleConfig(
            medium_interval=3, slow_interval=6, warmup_steps=3, gentle_steps=24
        ),
        data=DataConfig(name="recall", task_vocab=8),
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
