"""Planning and sizing of the suite: shared arms run once, calibrated steps respect the budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from slime.proto import ConfigError
from slime.train.ablations import GROUPS, PROFILES, run_suite, write_outputs
from slime.train.ablations.calibration import calibrate_steps
from slime.train.ablations.groups import groups
from slime.train.ablations.runner import default_data_dir, plan
from slime.train.build import build_dataset


def test_plan_runs_each_arm_once_per_task_even_when_groups_share_it() -> None:
    work = plan(PROFILES["cpu-small"], GROUPS)
    for task, arms in work.items():
        assert len(arms) == len(set(arms)), task
    assert work["shakespeare"].count("slime") == 1
    assert set(work["recall"]) == {"slime", "baseline"}  # group 1 only on the toy tasks


def test_plan_for_one_group_holds_only_its_arms() -> None:
    work = plan(PROFILES["cpu-small"], groups(["archive"]))
    assert work == {"shakespeare": ["slime", "no_archive"]}


def test_calibrated_steps_fit_the_budget_within_the_profile_bounds() -> None:
    profile = dataclasses.replace(
        PROFILES["cpu-small"],
        steps=2000,
        min_steps=50,
        time_budget_s=40.0,
        baseline_tasks=("recall",),
        ablation_tasks=("recall",),
    )
    work = plan(profile, groups(["baseline"]))
    data = {"recall": build_dataset(profile.run_config("recall", 10, 0, None).data, 32)}
    result = calibrate_steps(profile, work, 3, data, profile.device, None)
    assert 50 <= result["steps"] <= 2000 and result["steps"] % 50 == 0
    assert result["runs"] == {"slime": 3, "baseline": 3}
    if result["steps"] > profile.min_steps:
        assert result["planned_s"] <= profile.time_budget_s


def test_data_dir_prefers_the_argument_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLIME_DATA_DIR", str(tmp_path / "env"))
    assert default_data_dir(str(tmp_path)) == str(tmp_path)
    assert default_data_dir(None) == str(tmp_path / "env")


def test_a_suite_past_its_deadline_starts_no_run_and_reports_itself_incomplete(
    tmp_path: Path,
) -> None:
    profile = dataclasses.replace(PROFILES["cpu-small"], deadline_s=0.0)
    results = run_suite(profile, groups(["archive"]), tasks=("recall",), log=lambda line: None)
    assert results["runs"] == [] and results["runs_not_started"] == 6
    analysis = write_outputs(results, tmp_path)
    assert all(row["outcome"] == "not measured" for row in analysis["archive"]["checks"])
    assert "**Incomplete:**" in (tmp_path / "REPORT.md").read_text()


def test_every_finished_run_is_handed_over_before_the_suite_ends() -> None:
    seen: list[int] = []
    results = run_suite(
        PROFILES["cpu-small"],
        groups(["archive"]),
        seed_indices=(0, 4),  # a part of a suite whose seeds are split over commands
        steps=10,
        tasks=("recall",),
        log=lambda line: None,
        on_run=lambda partial: seen.append(len(partial["runs"])),
    )
    assert seen == [1, 2, 3, 4]
    assert len(results["runs"]) == 4 and results["runs_not_started"] == 0
    assert results["seeds"] == [1337, 1341]
    assert sorted({r["seed"] for r in results["runs"]}) == [1337, 1341]


def test_a_corpus_with_no_offline_copy_is_left_out_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh clone has no data folder: shakespeare runs on the copy slime.train ships, and
    WikiText-2 is left out with its reason (an explicitly named folder must hold it)."""
    from slime.proto import DataError
    from slime.train.ablations import runner

    monkeypatch.delenv("SLIME_DATA_DIR", raising=False)
    monkeypatch.setattr(runner, "default_data_dir", lambda explicit: explicit)
    profile = dataclasses.replace(PROFILES["cpu-small"], deadline_s=0.0)
    tasks = ("shakespeare", "wikitext2")
    results = run_suite(profile, groups(["baseline"]), tasks=tasks, log=lambda line: None)
    assert results["tasks"]["baseline"] == ["shakespeare"]
    assert "no data folder" in results["tasks_left_out"]["wikitext2"]
    write_outputs(results, tmp_path)
    assert "**wikitext2 left out**" in (tmp_path / "REPORT.md").read_text()
    with pytest.raises(DataError, match="is missing"):
        run_suite(profile, groups(["baseline"]), tasks=tasks, data_dir=str(tmp_path))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed_indices": (3, 3)}, "seed indices"),
        ({"seed_indices": (-1,)}, "seed indices"),
        ({"seed_indices": ()}, "seed indices"),
        ({"seed_indices": (0,), "seeds": 3}, "both"),
    ],
)
def test_bad_seed_indices_are_refused_by_name(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        run_suite(PROFILES["cpu-small"], groups(["baseline"]), **kwargs)
