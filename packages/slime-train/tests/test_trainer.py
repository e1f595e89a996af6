"""The trainer: timescales, phases, optimizer/pool sync, stability policies, run directory, resume."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from slime.core import SlimeModel
from slime.train.baseline import GPT
from slime.train.build import build_dataset
from slime.train.config import RunConfig
from slime.train.loader import load_config
from slime.train.rundir import RunDir
from slime.train.trainer import Trainer


def _config(**sections: dict) -> RunConfig:
    return load_config("tiny").replace(**sections)


def _trainer(tmp_path: Path | None = None, **sections: dict) -> Trainer:
    cfg = _config(**sections)
    run = RunDir(tmp_path) if tmp_path is not None else None
    return Trainer(cfg, build_dataset(cfg.data, cfg.model.block_size), run_dir=run)


def _records(tmp_path: Path, kind: str) -> list[dict]:
    return [r for r in RunDir(tmp_path).read_metrics() if r["kind"] == kind]


def test_slime_learns_the_recall_task() -> None:
    trainer = _trainer(train={"steps": 40, "lr": 1e-2})
    before = trainer.evaluate()["val_loss"]
    summary = trainer.fit()
    assert summary["status"] == "completed"
    assert summary["val_loss"] < before - 0.1


def test_the_same_loop_trains_the_baseline_without_a_lifecycle(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, model={"kind": "baseline"})
    assert isinstance(trainer.model, GPT) and trainer.lifecycle is None
    summary = trainer.fit()
    assert summary["status"] == "completed"
    assert not _records(tmp_path, "medium") and "pool_size" not in summary


def test_medium_and_slow_work_run_on_their_intervals(tmp_path: Path) -> None:
    _trainer(tmp_path).fit()
    assert [r["step"] for r in _records(tmp_path, "medium")] == [3, 6, 9, 12]
    assert [r["step"] for r in _records(tmp_path, "slow")] == [6, 12]


def test_births_wait_for_the_gentle_phase_and_deaths_for_the_full_phase(tmp_path: Path) -> None:
    _trainer(tmp_path, lifecycle={"cull_fraction": 0.5}).fit()
    medium = {r["step"]: r for r in _records(tmp_path, "medium")}
    slow = {r["step"]: r for r in _records(tmp_path, "slow")}
    assert medium[3]["births"] == 1 and medium[3]["phase"] == "gentle"  # warmup_steps=3
    assert slow[6]["phase"] == "full" and slow[6]["deaths"] >= 1  # gentle_steps=6


def test_optimizer_holds_exactly_the_live_parameters_after_births_and_deaths() -> None:
    trainer = _trainer(lifecycle={"cull_fraction": 0.5})
    trainer.fit()
    assert trainer.lifecycle.births > 0 and trainer.lifecycle.deaths > 0
    live = {id(p) for p in trainer.model.parameters()}
    assert {id(p) for p in trainer.optimizer.params()} == live
    assert {id(p) for p in trainer.optimizer.optimizer.state} <= live


def _poison(trainer: Trainer, at_step: int) -> None:
    """Make the forward of step ``at_step`` return a NaN loss."""
    forward = trainer.model.forward

    def poisoned(idx, targets=None):
        logits, loss = forward(idx, targets)
        return (logits, loss * math.nan) if trainer.step + 1 == at_step else (logits, loss)

    trainer.model.forward = poisoned


def test_skip_policy_leaves_weights_untouched_on_a_non_finite_step() -> None:
    trainer = _trainer(train={"nonfinite": "skip"})
    trainer.fit(steps=2)
    _poison(trainer, at_step=3)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    loss, _ = trainer.train_step()
    assert math.isnan(loss)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_skip_policy_counts_and_continues(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, train={"nonfinite": "skip"})
    _poison(trainer, at_step=5)
    summary = trainer.fit()
    assert summary["status"] == "completed"
    assert summary["nonfinite_steps"] == 1
    assert [r["step"] for r in _records(tmp_path, "nonfinite")] == [5]


def test_stop_policy_ends_the_run_with_a_clear_status() -> None:
    trainer = _trainer(train={"nonfinite": "stop"})
    _poison(trainer, at_step=5)
    summary = trainer.fit()
    assert summary["status"] == "stopped: non-finite loss or gradient at step 5"
    assert summary["steps"] == 5


def test_run_directory_holds_config_metrics_plots_summary_and_checkpoints(tmp_path: Path) -> None:
    _trainer(tmp_path).fit()
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "summary.json", "loss.png", "pool.png"} <= names
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_00000006",
        "step_00000012",
    ]


def test_time_budget_stops_the_run_with_a_final_eval_and_checkpoint(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, train={"steps": 10_000})
    summary = trainer.fit(max_seconds=0.0)
    assert summary["steps"] == 0 and summary["status"] == "completed"
    assert "val_loss" in summary
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000000"]


def test_resumed_run_ends_with_exactly_the_uninterrupted_weights(tmp_path: Path) -> None:
    sections = {"lifecycle": {"cull_fraction": 0.5}, "model": {"dropout": 0.1}}
    whole = _trainer(tmp_path / "whole", **sections)
    whole.fit()
    part = _trainer(tmp_path / "part", **sections)
    part.fit(steps=6)  # checkpoint at 6, then "crash"
    cfg = _config(**sections)
    resumed = Trainer.resume(
        RunDir(tmp_path / "part"), build_dataset(cfg.data, cfg.model.block_size), cfg
    )
    assert resumed.step == 6
    resumed.fit()
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_slo_reports_use_core_slo_machinery() -> None:
    trainer = _trainer(slo={"max_forward_ms": 1e6, "max_peak_memory_mb": 1e-3})
    summary = trainer.fit()
    reports = {r["name"]: r for r in summary["slo"]}
    assert reports["forward_latency"]["met"] is True
    assert reports["peak_memory"]["met"] is False


def test_model_is_a_slime_model_by_default() -> None:
    assert isinstance(_trainer().model, SlimeModel)


def test_an_injected_lr_schedule_replaces_the_configured_one() -> None:
    cfg = _config(lifecycle={"enabled": False})
    seen: list[int] = []
    trainer = Trainer(
        cfg,
        build_dataset(cfg.data, cfg.model.block_size),
        lr_schedule=lambda step: seen.append(step) or 0.0,
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit(steps=3)
    assert seen == [1, 2, 3]
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_a_loss_spike_freezes_the_lifecycle_until_the_loss_recovers(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    forward = trainer.model.forward

    def spiking(idx, targets=None):
        logits, loss = forward(idx, targets)
        return (logits, loss * 1000.0) if trainer.step + 1 == 9 else (logits, loss)

    trainer.model.forward = spiking
    trainer.fit()
    medium = {r["step"]: r for r in _records(tmp_path, "medium")}
    assert medium[9]["frozen"] and medium[9]["births"] == 0
    assert not medium[12]["frozen"] and medium[12]["births"] > 0


def test_a_slime_run_exports_its_final_model_for_slime_tools(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, lifecycle={"cull_fraction": 0.5})
    trainer.fit()
    loaded = SlimeModel.from_pretrained(tmp_path / "model")
    idx, _ = trainer.dataset.batch("val", 2, torch.Generator().manual_seed(0))
    trainer.model.eval()
    loaded.eval()
    with torch.no_grad():
        expected, _ = trainer.model(idx)
        got, _ = loaded(idx)
    assert torch.equal(got, expected)
    assert [o.live_slots() for o in loaded.organisms] == [
        o.live_slots() for o in trainer.model.organisms
    ]
    assert not (tmp_path / "model.partial").exists()


def test_a_baseline_run_has_no_slime_model_export(tmp_path: Path) -> None:
    _trainer(tmp_path, model={"kind": "baseline"}).fit()
    assert not (tmp_path / "model").exists()


def test_a_step_after_evaluation_or_a_probe_trains_every_module() -> None:
    trainer = _trainer()
    trainer.evaluate()
    trainer.model.measure_behaviour(trainer.probe[0])
    trainer.model.eval()  # as a caller's own probe might leave it
    trainer.train_step()
    assert all(m.training for m in trainer.model.modules())
