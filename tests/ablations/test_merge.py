"""Merging suite parts: one setup only, every run kept once, duplicates reported not pooled."""

from __future__ import annotations

import copy
import json

import pytest
from slime.proto import ConfigError
from slime.train.ablations.analysis import analyse
from slime.train.ablations.groups import groups
from slime.train.ablations.merge import merge_results
from slime.train.ablations.profiles import profile
from slime.train.ablations.report import render_report

SEEDS = [1337, 1338, 1339]


def _run(task: str, arm: str, seed: int, loss: float) -> dict:
    return {
        "task": task, "arm": arm, "seed": seed, "val_loss": loss, "tokens_per_s": 1e5,
        "best_val_loss": loss - 0.05, "best_val_loss_time": loss - 0.02,
    }  # fmt: skip


def _part(groups: list[str], tasks: list[str], arms: list[str], offset: float = 0.0) -> dict:
    runs = [
        _run(t, a, s, 2.0 + 0.1 * i + 0.01 * j + offset)
        for t in tasks
        for i, a in enumerate(arms)
        for j, s in enumerate(SEEDS)
    ]
    return {
        "created": "2026-11-25T21:00:00+00:00",
        "profile": {
            "name": "gpu-full",
            "lr": 1e-3,
            "baseline_tasks": tasks,
            "ablation_tasks": tasks,
        },
        "groups": groups,
        "steps": 400,
        "seeds": SEEDS,
        "device": "NVIDIA H100 80GB HBM3",
        "torch": "2.11.0",
        "calibration": None,
        "params": {t: {"slime": 10, "baseline": 10} for t in tasks},
        "tasks": {"baseline": tasks, "ablation": tasks},
        "vocab": {t: 65 for t in tasks},
        "runs": runs,
        "runs_not_started": 0,
        "suite_wall_s": 100.0,
    }


def test_parts_merge_into_one_suite_with_each_run_once() -> None:
    a = _part(["baseline", "archive"], ["shakespeare"], ["slime", "baseline", "no_archive"])
    b = _part(["baseline"], ["recall"], ["slime", "baseline"])
    merged = merge_results([a, b])
    assert merged["groups"] == ["baseline", "archive"]
    assert merged["tasks"]["baseline"] == ["shakespeare", "recall"]
    assert merged["tasks"]["ablation"] == ["shakespeare"]  # b ran no ablation group
    assert len(merged["runs"]) == len(a["runs"]) + len(b["runs"])
    assert {r["part"] for r in merged["runs"] if r["task"] == "recall"} == {1}
    assert merged["duplicates"] == []
    assert merged["suite_wall_s"] == 200.0 and len(merged["parts"]) == 2
    assert "recall" not in analyse(merged)["archive"]["verdict"]
    checks = analyse(merged)["baseline"]["checks"]
    assert {c["task"] for c in checks if c["outcome"] != "not measured"} == {
        "shakespeare",
        "recall",
    }


def test_a_run_made_by_two_parts_is_kept_once_and_reported() -> None:
    a = _part(["archive"], ["shakespeare"], ["slime", "no_archive"])
    c = _part(["births"], ["shakespeare"], ["slime", "uniform"], offset=0.5)
    merged = merge_results([a, c])
    slime = [r for r in merged["runs"] if r["arm"] == "slime"]
    assert sorted(r["seed"] for r in slime) == SEEDS  # never six seeds
    assert all(r["part"] == 0 for r in slime)
    assert len(merged["duplicates"]) == 3
    dup = merged["duplicates"][0]
    assert dup["part"] == 1 and dup["kept_part"] == 0
    assert dup["val_loss"] == pytest.approx(dup["kept_val_loss"] + 0.5)


@pytest.mark.parametrize(
    ("key", "change"),
    [
        ("steps", lambda r: r.update(steps=500)),
        ("profile", lambda r: r["profile"].update(lr=3e-4)),
        ("params", lambda r: r["params"]["shakespeare"].update(slime=11)),
    ],
)
def test_parts_of_different_setups_are_refused_by_name(key, change) -> None:
    a = _part(["archive"], ["shakespeare"], ["slime", "no_archive"])
    b = copy.deepcopy(a)
    change(b)
    with pytest.raises(ConfigError, match=key):
        merge_results([a, b])


def test_an_unknown_group_is_refused_by_name() -> None:
    a = _part(["archive"], ["shakespeare"], ["slime", "no_archive"])
    b = _part(["chemotaxis"], ["shakespeare"], ["slime", "uniform"])
    with pytest.raises(ConfigError, match="chemotaxis"):
        merge_results([a, b])


def test_parts_may_differ_in_their_deadlines() -> None:
    a = _part(["archive"], ["shakespeare"], ["slime", "no_archive"])
    b = _part(["baseline"], ["recall"], ["slime", "baseline"])
    a["profile"]["deadline_s"], b["profile"]["deadline_s"] = 470.0, 250.0
    merged = merge_results([a, b])
    assert [p["deadline_s"] for p in merged["parts"]] == [470.0, 250.0]


def test_merging_needs_two_parts() -> None:
    with pytest.raises(ConfigError, match="at least 2"):
        merge_results([_part(["archive"], ["shakespeare"], ["slime"])])


def test_a_benefit_verdict_without_runs_says_not_measured() -> None:
    (archive,) = groups(["archive"])
    verdict = archive.decide(lambda task, check: "not measured", ("recall",))
    assert "NOT MEASURED" in verdict and "NO CLEAR BENEFIT" not in verdict


def test_merging_a_file_that_is_not_suite_results_names_it(tmp_path, capsys) -> None:
    from slime.train.ablations import main

    good = tmp_path / "a.json"
    good.write_text(json.dumps(_part(["archive"], ["shakespeare"], ["slime"])))
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"runs": []}))
    assert main(["--merge", str(good), str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "b.json is not a suite results file" in err and "profile" in err


NAS_FIELDS = {"nas_candidates": 8, "nas_steps": 150, "nas_tolerance": 0.05}


def _blueprint_part(offset: float = 0.0) -> dict:
    part = _part(["blueprint"], ["shakespeare"], ["slime", "baseline", "hypernet", "nas"], offset)
    part["profile"].update(NAS_FIELDS)
    part["params"]["shakespeare"].update(hypernet=8, hypernet_shortfall=2)
    return part


def test_a_group_7_part_merges_with_an_older_part_that_predates_its_fields() -> None:
    old = _part(["archive"], ["shakespeare"], ["slime", "no_archive"])  # no nas_* fields at all
    merged = merge_results([old, _blueprint_part()])
    assert merged["groups"] == ["archive", "blueprint"]
    assert merged["params"]["shakespeare"] == {
        "slime": 10, "baseline": 10, "hypernet": 8, "hypernet_shortfall": 2,
    }  # fmt: skip
    assert {k: merged["profile"][k] for k in NAS_FIELDS} == NAS_FIELDS
    verdict = analyse(merged)["blueprint"]["verdict"]
    assert "slime vs hypernet" in verdict and "NOT MEASURED" not in verdict


@pytest.mark.parametrize(
    ("key", "change"),
    [
        ("profile", lambda r: r["profile"].update(nas_steps=100)),
        ("params", lambda r: r["params"]["shakespeare"].update(hypernet=9)),
    ],
)
def test_group_7_parts_of_different_searches_or_counts_are_refused(key, change) -> None:
    a, b = _blueprint_part(), _blueprint_part(0.5)
    change(b)
    with pytest.raises(ConfigError, match=key):
        merge_results([a, b])


def test_parts_that_split_the_seeds_merge_into_one_interval() -> None:
    a = _part(["baseline"], ["shakespeare"], ["slime", "baseline"])
    b = copy.deepcopy(a)
    b["seeds"] = [1340, 1341]  # --seed-indices 3 4 in a second command
    b["runs"] = [{**r, "seed": r["seed"] + 3} for r in b["runs"] if r["seed"] != 1339]
    merged = merge_results([a, b])
    assert merged["seeds"] == [1337, 1338, 1339, 1340, 1341]
    slime = [r for r in merged["runs"] if r["arm"] == "slime"]
    assert sorted(r["seed"] for r in slime) == merged["seeds"] and merged["duplicates"] == []


def test_the_report_of_merged_seed_parts_names_their_seed_count(tmp_path) -> None:
    a = _part(["baseline"], ["shakespeare"], ["slime", "baseline"])
    a["profile"] = profile("gpu-full").to_dict()  # the real profile: the report reads all of it
    a["runs"] = [
        {**r, "params_final": 10, "status": "completed", "nonfinite_steps": 0} for r in a["runs"]
    ]
    b = copy.deepcopy(a)
    b["seeds"] = [1340, 1341]
    b["runs"] = [{**r, "seed": r["seed"] + 3} for r in b["runs"] if r["seed"] != 1339]
    merged = merge_results([a, b])
    report = render_report(merged, analyse(merged), tmp_path / "REPORT.md", []).read_text()
    assert "With 5 seed(s) an interval is wide" in report
