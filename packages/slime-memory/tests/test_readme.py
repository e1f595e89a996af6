"""The README's usage example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"print": lambda *args: None}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["again"].stats == namespace["archive"].stats
    assert (tmp_path / "qd-archive" / "archive.json").exists()
