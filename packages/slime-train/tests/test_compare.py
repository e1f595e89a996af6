"""The comparison script runs end to end on a tiny configuration and reports every ratio."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from slime.train import compare
from slime.train.loader import load_config


def test_compare_prints_the_table_and_writes_json(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config("tiny").replace(
        data={"name": "shakespeare"},
        lifecycle={
            "medium_interval": 5,
            "slow_interval": 10,
            "warmup_steps": 5,
            "gentle_steps": 10,
            "observe_steps": 2,
        },
    )
    config = tmp_path / "tiny-shakespeare.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    argv = [
        "--data-dir",
        str(data_dir),
        "--seconds",
        "1",
        "--out",
        str(tmp_path / "out"),
        "--config",
        str(config),
        "--device",
        "cpu",
        "--profile-steps",
        "3",
        "--eval-interval",
        "2",
        "--profile-repeats",
        "2",
    ]
    assert compare.main(argv) == 0
    table = capsys.readouterr().out
    assert "val loss" in table and "lifecycle time / slime step" in table
    results = json.loads((tmp_path / "out" / "compare.json").read_text())["modes"]["eager"]
    assert results["slime"]["profile"]["params"] == results["baseline"]["profile"]["params"]
    assert results["slime"]["profile"]["medium_births"][0] > 0  # refills the warm-up's culls
    assert sum(results["slime"]["profile"]["slow_deaths"]) > 0
    assert results["slime"]["profile"]["medium_first_ms"] > 0
    prof = results["slime"]["profile"]
    for kind in ("free", "plain"):  # the median of the timed windows
        windows = prof[f"{kind}_step_ms_windows"]
        assert len(windows) == 2 and prof[f"{kind}_step_ms"] == pytest.approx(sum(windows) / 2)
    # births are charged one per culled pod and slow interval, at their timed cost apiece
    assert prof["birth_ms"] > 0 and prof["births_per_slow_interval"] > 0
    assert 0 < prof["medium_rest_ms"] < prof["medium_event_ms"]
    lc = cfg.lifecycle
    amortised = (
        prof["medium_rest_ms"] / lc.medium_interval
        + (prof["births_per_slow_interval"] * prof["birth_ms"] + prof["slow_event_ms"])
        / lc.slow_interval
    )
    # the observation cost: an observed step's extra time over a plain one (the median of
    # 3 x --profile-repeats paired windows), at the share of steps that observe
    pairs = prof["observed_step_extra_ms_pairs"]
    assert len(pairs) == 6 and prof["observed_step_extra_ms"] == statistics.median(pairs)
    observed = max(0.0, statistics.median(pairs) * lc.observe_steps / lc.medium_interval)
    assert prof["observation_ms_per_step"] == pytest.approx(observed)
    assert prof["lifecycle_ms_per_step"] == pytest.approx(observed + amortised)
    for kind in ("slime", "baseline"):
        trained = results[kind]["train"]
        assert trained["best_val"] <= trained["val_loss"] and trained["best_step"] >= 1
    assert "best val loss" in table
    for name, value in results["ratios"].items():
        if "peak memory" not in name:  # no CUDA allocator on the CPU
            assert value is not None and value > 0, name
    ratios, s, b = results["ratios"], results["slime"]["profile"], results["baseline"]["profile"]
    rounds = [x / y for x, y in zip(s["free_step_ms_windows"], b["free_step_ms_windows"])]
    assert len(rounds) == 2  # --profile-repeats 2
    assert ratios["  per round, lowest"] == pytest.approx(min(rounds))
    assert ratios["  per round, highest"] == pytest.approx(max(rounds))


@pytest.mark.parametrize(("observe", "n"), [(3, 3), (7, 3)])
def test_observation_pairs_time_observed_against_plain_steps_in_alternating_order(
    observe: int, n: int
) -> None:
    cfg = load_config("tiny").replace(
        lifecycle={"medium_interval": 10, "slow_interval": 20, "observe_steps": observe}
    )

    class Recorder:  # what a Trainer's step counter and observation rule do
        step = 4
        windows: list[list[bool]] = []

        def train_step(self) -> None:
            if not self.windows or len(self.windows[-1]) == n:
                self.windows.append([])
            self.windows[-1].append((-(self.step + 1)) % 10 < observe)

    recorder = Recorder()
    extra = compare._observation_pairs(recorder, cfg, torch.device("cpu"), pairs=3)
    assert len(extra) == 3  # one difference per pair
    # n steps each (the window, or the steps between windows if fewer), all observed or none,
    # the order alternating: observed first, then plain first, then observed first
    kinds = [set(window) for window in recorder.windows]
    assert [len(w) for w in recorder.windows] == [n] * 6
    assert kinds == [{True}, {False}, {False}, {True}, {True}, {False}]


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--modes", "fast"),
        ("--profile-repeats", "0"),
        ("--profile-steps", "-3"),
        ("--pod-capacity", "2"),  # below the preset's 6 pods
        ("--config", "no-such-preset"),
        ("--device", "cuda:99"),
        ("--device", "gpu0"),
    ],
)
def test_compare_refuses_bad_arguments_naming_them(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    with pytest.raises(SystemExit):
        compare.main(["--data-dir", str(data_dir), "--out", str(tmp_path / "o"), flag, value])
    assert value in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_pod_capacity_overrides_the_slime_models_slots_only(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = {}

    def record(base_cfg, mode, dataset, device, args, out):
        seen["capacity"] = base_cfg.model.pod_capacity
        return {}

    monkeypatch.setattr(compare, "_compare", record)
    monkeypatch.setattr(compare, "_table", lambda results: "")
    argv = ["--data-dir", str(data_dir), "--out", str(tmp_path / "o"), "--device", "cpu"]
    compare.main([*argv, "--pod-capacity", "6"])
    assert seen["capacity"] == 6 == load_config("shakespeare").model.n_pods
    compare.main(argv)
    assert seen["capacity"] == load_config("shakespeare").model.pod_capacity == 8


def test_compare_sweeps_lrs_and_reports_both_budgets_and_time_to_target(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config("tiny").replace(data={"name": "shakespeare"})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    argv = [
        "--data-dir", str(data_dir), "--seconds", "0.5", "--out", str(tmp_path / "out"),
        "--config", str(config), "--device", "cpu", "--profile-steps", "2",
        "--eval-interval", "2", "--lr-sweep", "1e-3,3e-3,1e-2", "--sweep-seconds", "0.3",
        "--steps", "6", "--target-loss", "100",
    ]  # fmt: skip
    assert compare.main(argv) == 0
    table = capsys.readouterr().out
    assert "peak lr (swept)" in table and "equal steps (6): best val" in table
    results = json.loads((tmp_path / "out" / "compare.json").read_text())["modes"]["eager"]
    for kind in ("slime", "baseline"):
        sweep = results[kind]["sweep"]
        assert [s["lr"] for s in sweep["scores"]] == [1e-3, 3e-3, 1e-2]
        assert sweep["lr"] == min(sweep["scores"], key=lambda s: s["loss"])["lr"]
        assert results[kind]["config"]["train"]["lr"] == sweep["lr"]
        steps = results[kind]["train_steps"]
        assert steps["steps"] == 6 and steps["best_val"] <= steps["val_loss"]
        for run in (results[kind]["train"], steps):  # a loss of 100 is reached at the first eval
            assert run["target_reached"] and run["target_step"] == 2


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--lr-sweep", "1e-3,abc,1e-2"), ("--lr-sweep", "1e-3,3e-3"), ("--steps", "0"),
     ("--target-loss", "-1")],
)  # fmt: skip
def test_compare_refuses_bad_protocol_values_by_name(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    with pytest.raises(SystemExit):
        compare.main(["--data-dir", str(data_dir), "--out", str(tmp_path), flag, value])
    assert flag in capsys.readouterr().err


def test_profile_models_times_the_models_windows_in_turn(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slime.train.build import build_dataset

    cfg = load_config("tiny").replace(data={"name": "shakespeare"})
    dataset = build_dataset(cfg.data, cfg.model.block_size, str(data_dir))
    cfgs = {"baseline": cfg.replace(model={"kind": "baseline"}), "slime": cfg}
    order = []
    timed = compare._time_windows

    def recorded(trainer, run_cfg, device, steps):
        order.append(run_cfg.model.kind)
        return timed(trainer, run_cfg, device, steps)

    monkeypatch.setattr(compare, "_time_windows", recorded)
    profiles = compare.profile_models(cfgs, dataset, torch.device("cpu"), 2, warmup=1, repeats=3)
    # the order reverses every round, so a slow spell of the host hits both models alike
    assert order == ["baseline", "slime", "slime", "baseline", "baseline", "slime"]
    for kind in cfgs:
        assert len(profiles[kind]["free_step_ms_windows"]) == 3
        assert profiles[kind]["free_step_ms"] > 0 and profiles[kind]["params"] > 0
    assert (
        "lifecycle_overhead" in profiles["slime"]
        and "lifecycle_overhead" not in profiles["baseline"]
    )
