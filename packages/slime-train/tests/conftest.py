"""Fixtures shared by slime-train's tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
# Helper modules beside the tests (prose_text) import by name; pytest's importlib mode does not
# put this folder on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _corpora() -> Path:
    env = os.environ.get("SLIME_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture
def data_dir() -> Path:
    """A data folder holding tiny-shakespeare: $SLIME_DATA_DIR, else <repo>/../shared/data, else
    the copy that ships with slime.train (a fresh clone has nothing beside it)."""
    from slime.train.datasets import BUNDLED

    path = _corpora()
    return path if (path / "tinyshakespeare" / "input.txt").is_file() else BUNDLED


@pytest.fixture
def all_corpora() -> Path:
    """The offline copies of every corpus (WikiText-2 and TinyStories are not bundled); skip
    when $SLIME_DATA_DIR or <repo>/../shared/data does not hold them."""
    path = _corpora()
    if not all((path / d).is_dir() for d in ("tinyshakespeare", "wikitext-2", "tinystories")):
        pytest.skip(f"offline corpora not found at {path} (set SLIME_DATA_DIR)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _one_cpu_thread() -> None:
    """Tiny models gain nothing from intra-op threads; on a shared 2-core machine they cost ~50x."""
    import torch

    torch.set_num_threads(1)
