"""The benchmark runs end to end on the CPU (a smoke run: tables printed, no times asserted)."""

from __future__ import annotations

import json

from slime.kernels import bench

SHAPE = (1, 2, 16, 16)


def test_cpu_smoke_run_prints_every_attention_row_and_writes_markdown(tmp_path, capsys):
    md, rows = tmp_path / "bench.md", tmp_path / "rows.json"
    argv = ["--device", "cpu", "--shape", "1,2,16,16", "--markdown", str(md), "--json", str(rows)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    for impl in ("slime-auto", "slime-auto, alive mask", "slime-triton", "sdpa-flash"):
        assert f"| {impl} | {SHAPE} |" in out
    assert "vs_best_sdpa" in out
    assert md.read_text().strip() in out  # the file holds the printed tables, for BENCHMARKS.md
    timed = {r["impl"]: r for r in json.loads(rows.read_text())["attention"] if "error" not in r}
    assert {"slime-auto", "slime-triton", "sdpa-flash"} <= set(timed)
    for row in timed.values():
        assert row["rel_err"] < 1e-5  # fp32 on the CPU: every implementation computes the same
        assert row["fwd_bwd_ms"] > 0 and row["vs_best_sdpa"] > 0


def test_vs_best_sdpa_divides_the_fastest_sdpa_time_by_each_rows():
    rows = [
        {"impl": "slime-auto", "shape": SHAPE, "ms": 2.0},
        {"impl": "sdpa-flash", "shape": SHAPE, "ms": 3.0},
        {"impl": "sdpa-cudnn", "shape": SHAPE, "ms": 1.0},
        {"impl": "sdpa-efficient", "shape": SHAPE, "error": "not on this card"},
        {"impl": "slime-auto", "shape": (2, 2, 16, 16), "ms": 1.0},  # no SDPA row at this shape
    ]
    bench.vs_best_sdpa(rows, "ms", "ratio")
    assert [r.get("ratio") for r in rows] == [0.5, 1 / 3, 1.0, None, None]


def test_summary_joins_eager_and_graph_rows_by_impl_and_shape():
    eager = [
        {"impl": "slime-auto", "shape": SHAPE, "fwd_bwd_ms": 1.0, "vs_best_sdpa": 1.1},
        {"impl": "sdpa-cudnn", "shape": SHAPE, "error": "not on this card"},
    ]
    graph = [{"impl": "slime-auto", "shape": SHAPE, "graph_fwd_bwd_ms": 0.5,
              "graph_vs_best_sdpa": 0.9}]  # fmt: skip
    (row,) = bench.summary_rows(eager, graph)
    assert row == {"impl": "slime-auto", "shape": SHAPE, "fwd_bwd_ms": 1.0, "vs_best_sdpa": 1.1,
                   "graph_fwd_bwd_ms": 0.5, "graph_vs_best_sdpa": 0.9}  # fmt: skip
