"""The QD benchmark script runs end to end on a tiny configuration, with and without pyribs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from slime.memory import qd_bench

TINY = ["--dims", "6", "--iterations", "3", "--seeds", "2", "--grid", "8", "--checkpoints", "2"]


def table_rows(out: str) -> list[list[str]]:
    lines = out.split("\n\n")[-1].splitlines()[2:]  # the final table, past its header
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if line]


def test_qd_bench_prints_both_sides_and_writes_json(tmp_path: Path, capsys) -> None:
    pytest.importorskip("ribs")
    out_file = tmp_path / "qd.json"
    # --eigen-device cpu adds a CMA-ME variant only where our device is not already the CPU.
    argv = [*TINY, "--algorithms", "cma_me", "map_elites", "--eigen-device", "cpu"]
    qd_bench.main([*argv, "--json", str(out_file)])
    rows = table_rows(capsys.readouterr().out)
    assert [(r[2], r[3]) for r in rows] == [
        ("cma_me", "pyribs (cpu)"),
        ("cma_me", "ours (cpu)"),
        ("map_elites", "pyribs (cpu)"),
        ("map_elites", "ours (cpu)"),
    ]
    for row in rows:
        assert row[4] == "2" and row[5] == f"{3 * 540:,}"  # seeds, evaluations
    ours = rows[1]
    assert float(ours[8]) > 0  # QD ratio to pyribs
    assert ours[12].endswith("x")  # speed-up column filled for our rows only
    assert rows[0][12] == "–"
    saved = json.loads(out_file.read_text())
    assert len(saved["traces"]) == 8  # 2 algorithms x 2 seeds x 2 sides
    assert saved["traces"][0]["evaluations"] == [1080, 1620]  # checkpoints at iterations 2 and 3


def test_qd_bench_without_pyribs_prints_only_our_rows(monkeypatch, capsys) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ribs" else real(name, *a)
    )
    qd_bench.main([*TINY, "--algorithms", "line_map_elites", "--problem", "rastrigin"])
    out = capsys.readouterr().out
    assert "ribs not installed" in out
    (row,) = table_rows(out)
    assert row[:4] == ["rastrigin", "6", "line_map_elites", "ours (cpu)"]
    assert row[8] == row[11] == row[12] == "–"  # nothing to compare with
