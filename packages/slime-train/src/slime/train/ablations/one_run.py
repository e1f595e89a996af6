"""One run of one arm on one task and seed: the Trainer it uses and the record it returns.

Each run is an ordinary :class:`~slime.train.trainer.Trainer` run; :class:`AblationTrainer` adds the
arm's injected parts and the diagnostics by composition (public attributes and the public
``evaluate``), so the training loop measured here is the shipped one.
"""

from __future__ import annotations

import gc
from typing import Any

import torch
from slime.train.ablations.diagnostics import (
    BirthLedger,
    RecordingFitness,
    RecordingLifecycle,
    Stopwatch,
)
from slime.train.ablations.probes import head_similarity, heldout_eval
from slime.train.ablations.profiles import Profile
from slime.train.ablations.variants import Arm, pod_latency_costs
from slime.train.profile import live_parameter_count
from slime.train.trainer import Trainer

__all__ = ["HELDOUT_SEED", "SEED_BASE", "AblationTrainer", "run_one"]

SEED_BASE = 1337
HELDOUT_SEED = 99_991  # the held-out batches of a task are the same for every arm and seed
DIAGNOSTIC_BATCH = 16  # sequences of the held-out batch used for per-pod contributions in training


class AblationTrainer(Trainer):
    """A Trainer running one arm, with QD diagnostics and the validation-loss curve recorded."""

    def __init__(self, cfg, dataset, arm: Arm, *, heldout, device: torch.device) -> None:
        super().__init__(cfg, dataset, device=device)
        self.arm = arm
        self.curve: list[dict[str, float]] = []
        self.stopwatch = Stopwatch(self.device)
        self.ledger: BirthLedger | None = None
        if not self.is_slime:
            return
        arm.inject(self.model)
        self.ledger = BirthLedger(self.model, uses_archive=arm.births != "fresh")
        idx, targets = heldout[0]
        self.fitness = RecordingFitness(
            cfg.fitness,
            heldout=(idx[:DIAGNOSTIC_BATCH], targets[:DIAGNOSTIC_BATCH]),
            stopwatch=self.stopwatch,
            cost_fn=pod_latency_costs if arm.cost == "latency" else None,
        )
        if self.lifecycle is not None:
            self.lifecycle = RecordingLifecycle(
                self.model,
                cfg.lifecycle,
                self.fitness,
                ledger=self.ledger,
                stopwatch=self.stopwatch,
                timer=self.lifecycle.timer,
            )

    def evaluate(self) -> dict[str, float]:
        out = super().evaluate()
        self.curve.append({"step": self.step, **out})
        return out


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def run_one(
    profile: Profile,
    task: str,
    arm_: Arm,
    seed: int,
    steps: int,
    dataset,
    heldout,
    device: torch.device,
    data_dir: str | None,
) -> dict[str, Any]:
    """Train one arm on one task with one seed; returns its plain-data record."""
    cfg = arm_.configure(profile.run_config(task, steps, seed, data_dir))
    gc.collect()  # earlier trainers hold reference cycles (slot listeners); free them first
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    trainer = AblationTrainer(cfg, dataset, arm_, heldout=heldout, device=device)
    params_init = live_parameter_count(trainer.model)
    summary = trainer.fit()
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    final = heldout_eval(trainer.model, heldout)
    train_s = summary["elapsed_s"] - summary["timings_s"].get("eval", 0.0)
    train_s -= trainer.stopwatch.seconds
    record: dict[str, Any] = {
        "task": task,
        "arm": arm_.name,
        "seed": seed,
        "status": summary["status"],
        "steps": summary["steps"],
        "params_init": params_init,
        "params_final": live_parameter_count(trainer.model),  # live pods only, as params_init
        "val_loss": final["loss"],
        "val_acc": final["accuracy"],
        "val_loss_auc": _mean([p["val_loss"] for p in trainer.curve]),
        "tokens_per_s": summary["tokens_seen"] / train_s,
        "wall_s": train_s,
        "peak_memory_mb": peak,
        "diagnostics_s": trainer.stopwatch.seconds,
        "head_similarity": head_similarity(trainer.model, heldout[0][0]),
        "curve": trainer.curve,
        "nonfinite_steps": summary["nonfinite_steps"],
    }
    if trainer.is_slime:
        record.update(_slime_record(trainer, summary))
    return record


def _slime_record(trainer: AblationTrainer, summary: dict[str, Any]) -> dict[str, Any]:
    events = trainer.fitness.events
    timeline = trainer.lifecycle.timeline if trainer.lifecycle is not None else []
    survival = trainer.ledger.summary()
    last = timeline[-1] if timeline else {}
    return {
        "live_pods": summary["pool_size"],
        "births": summary.get("births", 0),
        "deaths": summary.get("deaths", 0),
        "timeline": timeline,
        "fitness_events": events,
        "survival": survival,
        "newborn_survival": survival["survival_rate"],
        "bootstrapped_survival": survival["bootstrapped_survival_rate"],
        "descriptor_variance": last.get("descriptor_variance"),
        "coverage": last.get("coverage"),
        "qd_score": last.get("qd_score"),
        "spearman_fitness": _mean([e["fitness"] for e in events]),
        "spearman_task": _mean([e["task"] for e in events]),
        "spearman_grad": _mean([e["grad"] for e in events]),
        "spearman_blend": _mean([e["blend"] for e in events]),
        "spearman_taylor": _mean([e["taylor"] for e in events]),
        "distinct_costs": max((e["distinct_costs"] for e in events), default=None),
    }
