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


@pytest.fixture(autouse=True, scope="session")
def _one_cpu_thread() -> None:
    """Tiny models gain nothing from intra-op threads; on a shared 2-core machine they cost ~50x."""
    import torch

    torch.set_num_threads(1)
