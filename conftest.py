"""Shared pytest setup for every test folder of the workspace.

Runs before any test module imports slime.kernels: without a CUDA device, Triton kernels must run in
the interpreter, and TRITON_INTERPRET has to be set before their @triton.jit decorators execute.
"""

from __future__ import annotations

import os

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # slime-proto's tests run without torch
        return False
    return torch.cuda.is_available()


CUDA = _cuda_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
