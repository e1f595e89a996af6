"""Small fixtures shared by slime.core's tests: tiny shapes, the torch kernel, seeded generators."""

from __future__ import annotations

import pytest
import torch
from slime.kernels import TorchKernel

# Tiny shapes on shared cores: intra-op threads only contend (measured: 9 ms vs 900 ms per step of
# the learning test's model with 1 vs 2 threads while other processes ran).
torch.set_num_threads(1)


@pytest.fixture
def kernel():
    return TorchKernel()


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
