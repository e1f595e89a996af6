"""CI smoke test of the whole suite: cpu-small, every group, 3 seeds, 20 steps, the recall task.

Asserts only that the report is complete and sane (every group, finite intervals, verdicts,
plots, raw numbers); never which arm wins.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from slime.train.ablations import GROUPS, main

SEEDS = 3


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ablations")
    argv = ["--profile", "cpu-small", "--out", str(out), "--seeds", str(SEEDS)]
    assert main([*argv, "--steps", "20", "--tasks", "recall"]) == 0
    return out


@pytest.fixture(scope="module")
def results(suite: Path) -> dict:
    return json.loads((suite / "results.json").read_text())


@pytest.fixture(scope="module")
def report(suite: Path) -> str:
    return (suite / "REPORT.md").read_text()


def test_every_group_has_a_section_and_a_verdict(report: str, results: dict) -> None:
    for group in GROUPS:
        assert f"## {group.number}. {group.title}" in report
        assert f"{group.number}. **{group.title}.**" in report
        assert results["analysis"][group.key]["verdict"].strip()
    assert report.count("**Verdict:**") == len(GROUPS)


def test_decision_rules_are_stated_in_the_report(report: str) -> None:
    assert "## Decision rules (fixed in code before the runs)" in report
    for group in GROUPS:
        assert f"Group {group.number} ({group.key}): {group.rule}" in report


def test_kernels_compile_in_an_untimed_warm_up_before_the_first_run(results: dict) -> None:
    assert results["warmup_s"] > 0


def test_the_partial_results_file_is_gone_once_the_suite_finishes(suite: Path) -> None:
    assert (suite / "results.json").exists()
    assert not (suite / "results.partial.json").exists()


def test_every_arm_ran_every_seed(results: dict) -> None:
    arms = {a for g in GROUPS for a in g.arms}
    seen = {(r["arm"], r["seed"]) for r in results["runs"]}
    assert seen == {(a, s) for a in arms for s in results["seeds"]}
    assert len(results["seeds"]) == SEEDS
    assert all(r["status"] == "completed" and r["steps"] == 20 for r in results["runs"])


def test_measured_comparisons_have_finite_intervals(results: dict) -> None:
    measured = 0
    for entry in results["analysis"].values():
        for row in entry["checks"]:
            if row["outcome"] == "not measured":
                assert row["metric"] == "peak_memory_mb"  # CUDA only
                continue
            comparison = row["comparison"]
            for side in ("a", "b"):
                ci = comparison[side]
                if row["metric"].startswith("target_"):  # runs that never reached it are out
                    assert ci["n"] == int(row["reached"][side].split("/")[0]) <= SEEDS
                    if ci["n"] < 2:
                        continue
                else:
                    assert ci["n"] == SEEDS
                assert all(math.isfinite(ci[k]) for k in ("mean", "low", "high"))
                assert ci["low"] <= ci["mean"] <= ci["high"]
            assert row["outcome"] in ("better", "worse", "no clear difference", "undefined")
            measured += 1
    assert measured > 0


def test_equal_parameters_are_recorded_for_the_baseline_comparison(results: dict) -> None:
    counts = results["params"]["recall"]
    assert counts["slime"] == counts["baseline"] > 0
    initial = {r["params_init"] for r in results["runs"] if r["arm"] not in ("hypernet", "nas")}
    assert initial == {counts["slime"]}
    hyper = {r["params_init"] for r in results["runs"] if r["arm"] == "hypernet"}
    assert hyper == {counts["hypernet"]} == {counts["baseline"] - counts["hypernet_shortfall"]}
    tolerance = results["profile"]["nas_tolerance"]
    for run in (r for r in results["runs"] if r["arm"] == "nas"):
        assert abs(run["params_init"] - counts["baseline"]) <= tolerance * counts["baseline"]


def test_nas_runs_record_their_budget_and_pick_their_best_candidate(results: dict) -> None:
    profile = results["profile"]
    nas = [r for r in results["runs"] if r["arm"] == "nas"]
    assert len(nas) == SEEDS
    for run in nas:
        candidates = run["search"]["candidates"]
        assert len(candidates) == profile["nas_candidates"]
        best = min(candidates, key=lambda c: c["loss"])
        assert run["architecture"] == {"heads": best["heads"], "widths": best["widths"]}
        assert run["nas_total_s"] == pytest.approx(run["search_s"] + run["retrain_s"])
        assert run["search_s"] > 0 and run["retrain_s"] > 0


def test_every_run_has_degradation_curves_and_group_7_summarises_them(
    results: dict, report: str
) -> None:
    for run in results["runs"]:
        curves = run["degradation"]
        top = max(curves["heads"])
        assert curves["k"] == list(range(top + 1))
        assert curves["most_first"][0] == curves["least_first"][0] == run["val_loss"]
        assert math.isfinite(run["degradation_auc_most"])
    summary = results["analysis"]["blueprint"]["degradation"]["recall"]
    assert set(summary) == {"slime", "baseline", "hypernet", "nas"}
    assert "Graceful degradation" in report and "![degradation](degradation.png)" in report


def test_slime_runs_carry_quality_diversity_diagnostics(results: dict) -> None:
    slime_runs = [r for r in results["runs"] if r["arm"] not in ("baseline", "hypernet", "nas")]
    for run in slime_runs:
        assert run["timeline"], f"{run['arm']} recorded no medium event"
        for point in run["timeline"]:
            assert 0.0 <= point["coverage"] <= 1.0 and point["pool_size"] >= 1
            assert math.isfinite(point["qd_score"])
        assert run["fitness_events"], f"{run['arm']} recorded no fitness assessment"
        born = run["survival"]["births"]
        assert born == 0 if run["arm"] == "static" else born >= 1, run["arm"]
    assert any(r["head_similarity"] is not None for r in slime_runs)


def test_plots_are_written(suite: Path) -> None:
    names = ["loss_baseline", "loss_ablations", "pool_size", "coverage", "qd_score"]
    names += ["descriptor_variance", "degradation"]
    names += [f"bars_{g.number}_{g.key}" for g in GROUPS]
    for name in names:
        png = suite / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_suite_split_into_parts_merges_back_to_the_same_verdicts(
    results: dict, tmp_path: Path
) -> None:
    split = [
        ("baseline", "archive", "lifecycle"),
        ("efficiency", "fitness", "births"),
        ("blueprint",),
    ]
    paths = []
    for i, keys in enumerate(split):
        arms = {a for g in GROUPS if g.key in keys for a in g.arms}
        part = {
            **results,
            "groups": list(keys),
            "runs": [r for r in results["runs"] if r["arm"] in arms],
        }
        part.pop("analysis")
        paths.append(tmp_path / f"part{i}.json")
        paths[-1].write_text(json.dumps(part))
    out = tmp_path / "merged"
    assert main(["--merge", *map(str, paths), "--out", str(out)]) == 0
    merged = json.loads((out / "results.json").read_text())
    for key, entry in results["analysis"].items():
        assert merged["analysis"][key]["verdict"] == entry["verdict"]
        outcomes = [(c["task"], c["a"], c["b"], c["metric"], c["outcome"]) for c in entry["checks"]]
        assert [
            (c["task"], c["a"], c["b"], c["metric"], c["outcome"])
            for c in merged["analysis"][key]["checks"]
        ] == outcomes
    # slime ran in all three parts, the baseline in the first and the third
    assert len(merged["duplicates"]) == 3 * SEEDS
    assert merged["params"] == results["params"]
    assert "## Parts" in (out / "REPORT.md").read_text()


def test_one_results_file_renders_its_report_and_plots_again(results: dict, tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    out = tmp_path / "again"
    assert main(["--merge", str(path), "--out", str(out)]) == 0
    assert (out / "REPORT.md").exists() and list(out.glob("*.png"))
    assert json.loads((out / "results.json").read_text())["runs"] == results["runs"]


def test_a_part_without_group_1_links_only_the_plots_it_has(results: dict, tmp_path: Path) -> None:
    keys = ("fitness", "births")
    arms = {a for g in GROUPS if g.key in keys for a in g.arms}
    part = {
        **results,
        "groups": list(keys),
        "runs": [r for r in results["runs"] if r["arm"] in arms],
    }
    part.pop("analysis")
    path = tmp_path / "part.json"
    path.write_text(json.dumps(part))
    out = tmp_path / "rendered"
    assert main(["--merge", str(path), "--out", str(out)]) == 0
    report = (out / "REPORT.md").read_text()
    linked = re.findall(r"\]\(([\w.]+\.png)\)", report)
    assert linked and all((out / name).is_file() for name in linked)
    assert "loss_baseline.png" not in linked and "bars_5_fitness.png" in linked
    assert "- Tasks: groups 5, 6 on recall." in report


def test_every_run_uses_its_arms_swept_lr_and_reports_both_budgets(
    results: dict, report: str
) -> None:
    sweep = results["sweep"]
    assert set(sweep["lrs"]["recall"]) == {a for g in GROUPS for a in g.arms}
    for run in results["runs"]:
        assert run["lr"] == run["time_lr"] == sweep["lrs"]["recall"][run["arm"]]
        assert run["best_val_loss"] == min(p["heldout_loss"] for p in run["curve"])
        assert run["best_val_loss_time"] == min(p["heldout_loss"] for p in run["time_curve"])
        assert run["target_loss"] == sweep["targets"]["recall"]
        assert run["time_train_s"] >= results["profile"]["equal_time_s"]
    assert "## Protocol: LR sweep, targets, budgets" in report
    assert "**equal steps**" in report and "**equal time**" in report
