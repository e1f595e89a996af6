"""The benchmark script runs end to end on a tiny stream, with and without pyribs."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from slime.memory import bench

TINY = ["--items", "200", "--batches", "100", "--dims", "4", "--repeats", "1", "--threads", "0"]


def test_bench_without_pyribs_prints_only_our_numbers(capsys: pytest.CaptureFixture) -> None:
    bench.main([*TINY, "--no-ribs", "--archives", "grid"])
    out = capsys.readouterr().out
    assert "ribs not installed" in out
    row = next(line for line in out.splitlines() if line.startswith("| grid"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["grid (10000 cells)", "4", "100", "200"]
    assert float(cells[4].replace(",", "")) > 0  # columns rate
    assert cells[6:] == ["n/a", "n/a", "n/a"]


def test_bench_when_ribs_cannot_be_found(monkeypatch, capsys) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ribs" else real(name, *a)
    )
    bench.main([*TINY, "--archives", "cvt", "--no-payloads"])
    assert "ribs not installed" in capsys.readouterr().out


def test_bench_with_pyribs_reports_a_ratio(capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("ribs")
    bench.main([*TINY, "--archives", "grid"])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| grid"))
    assert row.rstrip(" |").endswith("x")


def test_pipelined_timing_feeds_every_archive_the_whole_stream() -> None:
    rng = np.random.default_rng(0)
    stream = [(rng.normal(size=(50, 3)), rng.normal(size=50), rng.uniform(-1, 1, (50, 2)))] * 3
    columns, payloads = bench._ours("grid", "cpu", None), bench._ours("grid", "cpu", None)
    rates = bench._pipelined(stream, "cpu", columns, payloads, None)
    assert set(rates) == {"columns", "payloads"} and min(rates.values()) > 0
    assert columns.stats == payloads.stats and len(columns) > 0
    expected = bench._ours("grid", "cpu", None)
    for solutions, objectives, descriptors in stream:
        expected.add(
            {"s": torch.from_numpy(solutions)}, *map(torch.from_numpy, (objectives, descriptors))
        )
    assert columns.stats == expected.stats


def test_cuda_graph_rows_need_a_cuda_device(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        bench.main([*TINY, "--cuda-graph"])
    assert "--cuda-graph needs --device cuda" in capsys.readouterr().err


def test_graph_columns_are_printed_only_when_asked() -> None:
    row = bench.Row("grid (4 cells)", 2, 10, 20, 6.0, None, 2.0, graphed=5.0)
    assert bench._format([row], "cuda", True).splitlines()[-1].endswith("| 5 | 2.50x |")
    assert bench._format([row], "cuda").splitlines()[-1].endswith("| 3.00x | n/a |")


@pytest.mark.gpu
def test_bench_on_cuda_with_graph_replays_prints_every_column(capsys) -> None:
    bench.main([*TINY, "--device", "cuda", "--cuda-graph", "--archives", "grid", "cvt"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    for row in rows[-2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 11 and float(cells[9].replace(",", "")) > 0
