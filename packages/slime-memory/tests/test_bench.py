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


def test_op_counts_on_meta_tensors_are_those_of_the_tensor_path_on_the_cpu() -> None:
    # The grid has no device-dependent branch: meta must dispatch exactly what the CPU does.
    on_meta = bench.count_ops("grid", 3, 50, evicting=True, device="meta")
    on_cpu = bench.count_ops("grid", 3, 50, evicting=True, device="cpu")
    assert on_meta[1] == on_cpu[1]
    assert on_meta[0].ops == sum(on_meta[1].values()) > on_meta[0].views > 0


def test_the_common_device_add_stays_a_few_dozen_operations() -> None:
    # A regression guard: each operation is a dispatch and a kernel launch per add on a GPU
    # (68 for the grid before the scratch-row rewrite, 37 after, torch 2.15).
    plain, _ = bench.count_ops("grid", 10, 1000)
    evicting, _ = bench.count_ops("grid", 10, 1000, evicting=True)
    cma_mae, _ = bench.count_ops("grid", 10, 1000, cma_mae=True)
    assert plain.ops <= 45 < cma_mae.ops < evicting.ops


def test_count_ops_prints_each_configuration(capsys: pytest.CaptureFixture) -> None:
    bench.main(["--count-ops", "--batches", "20", "--dims", "3", "--archives", "cvt"])
    out = capsys.readouterr().out
    assert "aten ops (meta)" in out
    rows = [line for line in out.splitlines() if line.startswith("| cvt")]
    assert [row.split("|")[4:6] for row in rows] == [
        [" max_size >= cells ", " MAP-Elites "],
        [" max_size 500 ", " MAP-Elites "],
        [" max_size >= cells ", " CMA-MAE "],
    ]
