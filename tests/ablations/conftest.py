"""Tiny models shared by the ablation tests."""

from __future__ import annotations

import pytest
import torch
from slime.core import SlimeConfig, SlimeModel


@pytest.fixture
def tiny_slime() -> SlimeModel:
    """One layer, width 16, two live pods of 8 in four slots, torch kernel, seeded."""
    config = SlimeConfig(
        vocab_size=8,
        block_size=8,
        n_layer=1,
        n_embd=16,
        n_pods=2,
        pod_capacity=4,
        head_dim=8,
        kernel_backend="torch",
    )
    return SlimeModel(config, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def tokens() -> torch.Tensor:
    """A ``(4, 8)`` batch of token ids."""
    return torch.randint(0, 8, (4, 8), generator=torch.Generator().manual_seed(1))
