"""The comparison protocol: LR sweep, best checkpoints, time to target, equal-time runs, merging."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from slime.proto import ConfigError
from slime.train.ablations import PROFILES
from slime.train.ablations.analysis import analyse
from slime.train.ablations.curves import best_of, time_to_target
from slime.train.ablations.groups import ACCURACY, Check, groups
from slime.train.ablations.merge import merge_results
from slime.train.ablations.one_run import HELDOUT_SEED, run_one
from slime.train.ablations.probes import heldout_batches
from slime.train.ablations.protocol import lr_sweep, pick_lr, run_equal_time, sweep_target
from slime.train.ablations.variants import arm
from slime.train.build import build_dataset

CPU = torch.device("cpu")
CURVE = [
    {"step": 10, "time_s": 1.0, "heldout_loss": 3.0},
    {"step": 20, "time_s": 2.0, "heldout_loss": 2.5},
    {"step": 30, "time_s": 3.0, "heldout_loss": 2.7},  # the final step is not the best
]


@pytest.fixture(scope="module")
def recall():
    profile = dataclasses.replace(PROFILES["cpu-small"], baseline_tasks=("recall",))
    data = build_dataset(profile.run_config("recall", 10, 0, None).data, 32)
    held = heldout_batches(data, profile.heldout_batches, profile.batch_size, HELDOUT_SEED, CPU)
    return profile, data, held


def test_the_sweep_picks_the_lr_with_the_best_selection_loss() -> None:
    losses = {1e-3: 2.0, 3e-3: 1.5, 1e-2: 1.7}
    picked = pick_lr(list(losses), lambda lr: losses[lr])
    assert picked["lr"] == 3e-3
    assert picked["scores"] == [{"lr": k, "loss": v} for k, v in losses.items()]
    diverged = {1e-3: 2.0, 3e-3: math.nan, 1e-2: math.inf}
    assert pick_lr(list(diverged), lambda lr: diverged[lr])["lr"] == 1e-3
    assert pick_lr([1e-3, 3e-3, 1e-2], lambda lr: 1.0)["lr"] == 1e-3  # ties: first listed


def test_a_sweep_that_cannot_pick_names_the_problem() -> None:
    with pytest.raises(ConfigError, match="diverged"):
        pick_lr([1e-3, 3e-3, 1e-2], lambda lr: math.nan)
    with pytest.raises(ConfigError, match=r"-0\.1"):
        pick_lr([1e-3, -0.1, 1e-2], lambda lr: 1.0)
    with pytest.raises(ConfigError, match="lr_sweep"):
        dataclasses.replace(PROFILES["cpu-small"], lr_sweep=(1e-3, 3e-3))
    with pytest.raises(ConfigError, match="equal_time_s"):
        dataclasses.replace(PROFILES["cpu-small"], equal_time_s=0.0)


def test_best_checkpoint_is_the_minimum_over_evaluations_and_targets_may_go_unreached() -> None:
    assert best_of(CURVE) == {"best_val_loss": 2.5, "best_step": 20, "best_time_s": 2.0}
    assert time_to_target(CURVE, 2.8) == {"target_step": 20, "target_time_s": 2.0}
    assert time_to_target(CURVE, 2.0) == {"target_step": None, "target_time_s": None}
    assert time_to_target(CURVE, None) == {"target_step": None, "target_time_s": None}
    assert best_of([{"step": 1, "time_s": 0.1, "heldout_loss": math.nan}])["best_val_loss"] is None
    assert sweep_target([{"loss": 2.0}, {"loss": 3.0}, {"loss": math.nan}], 0.1) == 2.75


def test_a_run_records_its_best_held_out_evaluation_and_its_time_to_target(recall) -> None:
    profile, data, held = recall
    run = lambda target: run_one(  # noqa: E731
        profile, "recall", arm("baseline"), 1337, 30, data, held, CPU, None, lr=3e-3, target=target
    )
    record = run(target=0.0)  # no loss reaches 0
    losses = [p["heldout_loss"] for p in record["curve"]]
    assert len(losses) == profile.evals and record["lr"] == 3e-3
    assert record["best_val_loss"] == min(losses)
    best = record["curve"][losses.index(min(losses))]
    assert (record["best_step"], record["best_time_s"]) == (best["step"], best["time_s"])
    assert record["target_step"] is None and record["target_time_s"] is None
    assert record["curve"][-1]["heldout_loss"] == pytest.approx(record["val_loss"])
    times = [p["time_s"] for p in record["curve"]]
    assert times == sorted(times) and times[-1] <= record["wall_s"] + 1e-6
    reached = run(target=100.0)
    first = reached["curve"][0]
    assert (reached["target_step"], reached["target_time_s"]) == (first["step"], first["time_s"])


def test_an_equal_time_run_respects_its_budget(recall) -> None:
    profile, data, held = recall
    step_s = 0.01
    out = run_equal_time(
        profile, "recall", "slime", 1337, 0.6, step_s, 3e-3, data, held, CPU, None, 100.0
    )
    assert out["time_budget_s"] == 0.6
    # stops at the first step boundary past the budget: one step (plus a lifecycle event) over
    assert 0.6 <= out["time_train_s"] <= 0.6 + 0.5
    assert out["time_steps"] >= 1 and out["time_curve"][-1]["step"] == out["time_steps"]
    assert out["best_val_loss_time"] == min(p["heldout_loss"] for p in out["time_curve"])
    assert out["time_target_step"] == out["time_curve"][0]["step"]
    with pytest.raises(ConfigError, match="-1"):
        run_equal_time(profile, "recall", "slime", 1337, -1, step_s, 3e-3, data, held, CPU, None, 1)


def test_the_sweep_picks_each_arms_lr_and_fixes_targets_before_the_runs(recall) -> None:
    profile, data, _ = recall
    profile = dataclasses.replace(profile, sweep_steps=10, lr_sweep=(1e-3, 3e-3, 1e-2))
    work = {"recall": ["slime", "baseline"]}
    sweep = lr_sweep(profile, work, 10, {"recall": data}, CPU, None, log=lambda line: None)
    for name in work["recall"]:
        scores = sweep["scores"]["recall"][name]
        assert [s["lr"] for s in scores] == list(profile.lr_sweep)
        assert sweep["lrs"]["recall"][name] == min(scores, key=lambda s: s["loss"])["lr"]
    expected = sweep_target(sweep["scores"]["recall"]["baseline"], profile.target_margin)
    assert sweep["targets"]["recall"] == expected
    stated = dataclasses.replace(profile, targets={"recall": 1.25})
    only = {"recall": ["baseline"]}
    again = lr_sweep(stated, only, 10, {"recall": data}, CPU, None, log=lambda line: None)
    assert again["targets"]["recall"] == 1.25 and "profile" in again["target_source"]["recall"]
    known = {"lrs": {"recall": {"baseline": 5.0}}, "targets": {"recall": 9.0}}  # another part's
    partial = lr_sweep(profile, work, 10, {"recall": data}, CPU, None, lambda line: None, known)
    assert partial["lrs"]["recall"] == {"baseline": 5.0, "slime": sweep["lrs"]["recall"]["slime"]}
    assert partial["targets"] == {"recall": 9.0} and "baseline" not in partial["scores"]["recall"]


def test_decision_rules_use_best_loss_at_both_budgets_and_time_to_target() -> None:
    (baseline,) = groups(["baseline"])
    metrics = {c.metric for c in baseline.checks}
    assert {"best_val_loss", "best_val_loss_time", "target_time_s"} <= metrics
    assert "val_loss" not in metrics  # the final step is a secondary column only
    for group in groups():
        assert "val_loss" not in {c.metric for c in group.checks}, group.key

    def only(metric: str):
        return lambda task, check: "better" if check.metric == metric else "no clear difference"

    for metric in (*ACCURACY, "target_time_s"):
        assert "PASSES" in baseline.decide(only(metric), ("recall",)), metric
    assert "NOT SHOWN" in baseline.decide(only("val_loss"), ("recall",))
    (archive,) = groups(["archive"])
    assert "HELPS (best_val_loss_time better)" in archive.decide(
        only("best_val_loss_time"), ("recall",)
    )
    assert Check("slime", "baseline", "target_time_s").better == "lower"


def _new_run(arm_: str, seed: int, best: float, target_s: float | None) -> dict:
    return {
        "task": "recall", "arm": arm_, "seed": seed, "val_loss": best + 0.1, "lr": 3e-3,
        "best_val_loss": best, "best_val_loss_time": best + 0.05, "target_loss": 2.0,
        "target_time_s": target_s, "tokens_per_s": 1e5,
    }  # fmt: skip


def _part(runs: list[dict], protocol: bool, lrs: dict | None = None) -> dict:
    profile = {"name": "cpu-small", "lr": 3e-3, "baseline_tasks": ["recall"],
               "ablation_tasks": ["recall"]}  # fmt: skip
    part = {
        "created": "2026-11-25T21:00:00+00:00", "profile": profile, "groups": ["baseline"],
        "steps": 120, "seeds": [1, 2, 3], "device": "cpu", "torch": "2.11.0",
        "calibration": None, "params": {"recall": {"slime": 10, "baseline": 10}},
        "tasks": {"baseline": ["recall"], "ablation": ["recall"]}, "vocab": {"recall": 16},
        "runs": runs, "runs_not_started": 0, "suite_wall_s": 10.0,
    }  # fmt: skip
    if protocol:
        profile.update(lr_sweep=[1e-3, 3e-3, 1e-2], sweep_steps=20, sweep_seeds=1, targets={},
                       target_margin=0.05, equal_time_s=0.25)  # fmt: skip
        part["sweep"] = {"lrs": {"recall": lrs or {"slime": 3e-3, "baseline": 1e-2}},
                         "targets": {"recall": 2.0}, "seconds": 4.0}  # fmt: skip
    return part


def test_old_results_without_the_new_fields_merge_with_new_ones() -> None:
    old = _part([{"task": "recall", "arm": a, "seed": s, "val_loss": 2.0, "tokens_per_s": 1e5}
                 for a in ("slime", "baseline") for s in (1, 2, 3)], protocol=False)  # fmt: skip
    new = _part([_new_run("slime", 4, 1.9, 1.0), _new_run("baseline", 4, 2.0, None)], protocol=True)
    new["seeds"] = old["seeds"]
    merged = merge_results([old, new])
    assert merged["sweep"]["lrs"] == {"recall": {"slime": 3e-3, "baseline": 1e-2}}
    assert merged["profile"]["equal_time_s"] == 0.25
    rows = {r["metric"]: r for r in analyse(merged)["baseline"]["checks"]}
    assert rows["best_val_loss"]["comparison"]["a"]["n"] == 1  # only the new run has it
    assert rows["target_time_s"]["reached"] == {"a": "1/1", "b": "0/1"}
    assert rows["target_time_s"]["outcome"] == "not measured"
    assert merge_results([old, copy.deepcopy(old)])["sweep"] is None


def test_parts_whose_sweeps_picked_different_lrs_are_refused_by_name() -> None:
    a = _part([_new_run("slime", 1, 1.9, 1.0)], protocol=True)
    b = _part([_new_run("slime", 2, 1.9, 1.0)], protocol=True, lrs={"slime": 1e-3})
    with pytest.raises(ConfigError, match="picked lr 0.001 for slime on recall"):
        merge_results([a, b])
    c = copy.deepcopy(a)
    c["profile"]["equal_time_s"] = 1.0
    with pytest.raises(ConfigError, match="profile"):
        merge_results([a, c])


def test_a_patience_stops_the_equal_steps_run_at_its_plateau_but_not_the_equal_time_run(
    recall,
) -> None:
    profile, data, held = recall
    patient = dataclasses.replace(profile, patience=1)
    # An LR far too large: the held-out loss stops improving at once, and one evaluation without
    # a new best ends the run long before its 40 steps.
    record = run_one(patient, "recall", arm("baseline"), 1337, 40, data, held, CPU, None, lr=2.0)
    assert record["status"] == "early_stopped" and record["steps"] < 40
    assert record["best_time_s"] is not None
    timed = run_equal_time(
        patient, "recall", "baseline", 1337, 0.5, 0.01, 2.0, data, held, CPU, None, None
    )
    assert timed["time_train_s"] >= 0.5  # the clock, not the patience, ended it
    with pytest.raises(ConfigError, match="patience"):
        dataclasses.replace(profile, patience=0)
    with pytest.raises(ConfigError, match="patience"):
        dataclasses.replace(profile, patience=True)


def test_the_report_states_the_plateau_rule_and_how_many_runs_met_it() -> None:
    from slime.train.ablations.report import _steps_budget

    runs = [{"status": "early_stopped"}, {"status": "completed"}, {"status": "early_stopped"}]
    fixed = {"profile": {"patience": None}, "steps": 500, "runs": runs}
    assert _steps_budget(fixed) == "500 steps"
    line = _steps_budget({**fixed, "profile": {"patience": 4}})
    assert "at most 500 steps" in line and "after 4 evaluations" in line
    assert "2 of 3 runs stopped at their plateau" in line
