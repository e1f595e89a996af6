"""The README's usage example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def run_example(index: int) -> dict:
    """Execute the README's ``index``-th python block; its namespace."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 2, "the README's examples changed: update this test"
    namespace: dict = {"print": lambda *args: None}
    exec(compile(blocks[index], str(README), "exec"), namespace)
    return namespace


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace = run_example(0)
    assert namespace["again"].stats == namespace["archive"].stats
    assert (tmp_path / "qd-archive" / "archive.json").exists()


def test_readme_search_example_runs() -> None:
    namespace = run_example(1)
    stats = namespace["archive"].stats
    assert namespace["solutions"].shape == (15 * 36 + 60, namespace["dim"])
    # 20 iterations of 600 sphere evaluations fill a few hundred of the 10,000 cells.
    assert stats.num_elites > 100 and stats.qd_score > 0
