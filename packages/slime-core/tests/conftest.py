"""Small fixtures shared by slime.core's tests: tiny shapes, the torch kernel, seeded generators."""

from __future__ import annotations

import pytest
import torch
from slime.kernels import TorchKernel


@pytest.fixture
def kernel():
    return TorchKernel()


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
