"""Training stays stable with the lifecycle on; the loss gate freezes it during a loss spike.

The spike is injected where the lifecycle reads the loss: :class:`SpikedTrainer` reports a loss 100
times the real one at chosen steps, which is what the trainer feeds the gate's moving average and
the medium-timescale check. The real optimisation is untouched, so the test isolates the gate.
"""

from __future__ import annotations

import math
from pathlib import Path

from slime.train.rundir import RunDir
from slime.train.trainer import Trainer

SPIKE = 100.0


class SpikedTrainer(Trainer):
    """A Trainer whose reported loss is multiplied by ``SPIKE`` at the steps in ``spikes``."""

    def __init__(self, *args, spikes: set[int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.spikes = spikes

    def train_step(self) -> tuple[float, float]:
        loss, grad_norm = super().train_step()
        if self.step + 1 in self.spikes:  # fit() counts the step after train_step returns
            loss *= SPIKE
        return loss, grad_norm


def _events(run: Path, kind: str) -> dict[int, dict]:
    return {r["step"]: r for r in RunDir(run).read_metrics() if r["kind"] == kind}


def test_a_loss_spike_freezes_births_and_the_next_medium_event_resumes_them(
    tmp_path: Path, dataset, tiny_config
) -> None:
    cfg = tiny_config()  # gentle phase from step 3 to the end: births only
    SpikedTrainer(cfg, dataset, run_dir=RunDir(tmp_path), spikes={9}).fit()
    medium = _events(tmp_path, "medium")
    assert not medium[6]["frozen"] and medium[6]["births"] == 1
    assert medium[9]["frozen"] and medium[9]["births"] == 0
    assert not medium[12]["frozen"] and medium[12]["births"] == 1


def test_a_loss_spike_at_a_cull_step_skips_the_cull_and_culls_resume_after(
    tmp_path: Path, dataset, tiny_config
) -> None:
    cfg = tiny_config(lifecycle={"gentle_steps": 6, "cull_fraction": 0.5})  # full from step 6
    SpikedTrainer(cfg, dataset, run_dir=RunDir(tmp_path), spikes={12}).fit()
    slow = _events(tmp_path, "slow")
    assert slow[6]["deaths"] >= 1
    assert slow[12]["deaths"] == 0
    assert slow[18]["deaths"] >= 1


def test_a_spike_between_medium_events_does_not_freeze_the_lifecycle(
    tmp_path: Path, dataset, tiny_config
) -> None:
    SpikedTrainer(tiny_config(), dataset, run_dir=RunDir(tmp_path), spikes={10}).fit()
    assert not any(r["frozen"] for r in _events(tmp_path, "medium").values())


def test_loss_stays_finite_and_falls_while_pods_are_born_and_culled(dataset, tiny_config) -> None:
    cfg = tiny_config(train={"steps": 48}, lifecycle={"gentle_steps": 12, "cull_fraction": 0.5})
    trainer = Trainer(cfg, dataset)
    before = trainer.evaluate()["val_loss"]
    summary = trainer.fit()
    assert summary["status"] == "completed" and summary["nonfinite_steps"] == 0
    assert summary["births"] >= 2 and summary["deaths"] >= 2
    assert math.isfinite(summary["val_loss"]) and summary["val_loss"] < before
