"""One run of one arm on one task and seed: the Trainer it uses and the record it returns.

Each run is an ordinary :class:`~slime.train.trainer.Trainer` run; :class:`AblationTrainer` adds the
arm's injected parts and the diagnostics by composition (public attributes and the public
``evaluate``), so the training loop measured here is the shipped one. The hypernetwork and NAS arms
are baseline runs whose GPT gets other attentions right after it is built (the optimizer and the
gradient monitor are then built again over its parameters); the NAS arm first runs its search
(:func:`nas_search`). After training, every run measures head diversity and the degradation
curves (:mod:`slime.train.ablations.degradation`) on the held-out batches.
"""

from __future__ import annotations

import gc
import math
import time
from typing import Any

import torch
from slime.proto import ConfigError
from slime.train.ablations.curves import best_of, time_to_target
from slime.train.ablations.degradation import (
    degradation_area,
    degradation_curves,
    head_importance,
)
from slime.train.ablations.diagnostics import (
    BirthLedger,
    RecordingFitness,
    RecordingLifecycle,
    Stopwatch,
)
from slime.train.ablations.hypernet import hypernet_sizes
from slime.train.ablations.nas import (
    Architecture,
    SearchResult,
    random_search,
    sample_architectures,
)
from slime.train.ablations.probes import head_similarity, heldout_batches, heldout_eval
from slime.train.ablations.profiles import Profile
from slime.train.ablations.variants import Arm, pod_latency_costs
from slime.train.build import build_model
from slime.train.optim import PoolOptimizer
from slime.train.profile import live_parameter_count
from slime.train.stability import GradientMonitor
from slime.train.trainer import Trainer

__all__ = [
    "HELDOUT_SEED",
    "SEED_BASE",
    "SELECTION_SEED",
    "AblationTrainer",
    "lr_config",
    "nas_search",
    "run_one",
]

SEED_BASE = 1337
HELDOUT_SEED = 99_991  # the held-out batches of a task are the same for every arm and seed
SELECTION_SEED = (
    55_511  # the NAS arm's selection batches: validation data, not the held-out batches
)
DIAGNOSTIC_BATCH = 16  # sequences of the held-out batch used for per-pod contributions in training


class AblationTrainer(Trainer):
    """A Trainer running one arm, with QD diagnostics and the validation-loss curve recorded."""

    def __init__(
        self,
        cfg,
        dataset,
        arm: Arm,
        *,
        heldout,
        device: torch.device,
        architecture: Architecture | None = None,
        lr_schedule=None,
    ) -> None:
        super().__init__(cfg, dataset, device=device, lr_schedule=lr_schedule)
        self.arm = arm
        self.curve: list[dict[str, float]] = []
        self.heldout = heldout
        self.heldout_s = 0.0  # seconds of the held-out evaluations in the curve
        self._t_fit: float | None = None  # start of the first fit call
        self.stopwatch = Stopwatch(self.device)
        self.ledger: BirthLedger | None = None
        if arm.kind in ("hypernet", "nas"):
            arm.install(self.model, generator=self.model_gen, architecture=architecture)
            self.optimizer = PoolOptimizer(self.model, cfg.train)
            self.gradients = GradientMonitor(self.model, cfg.train.grad_clip)
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

    def fit(self, steps: int | None = None, *, max_seconds: float | None = None):
        if self._t_fit is None:
            self._t_fit = time.perf_counter()
        return super().fit(steps, max_seconds=max_seconds)

    def train_seconds(self) -> float:
        """Seconds since the first ``fit`` call less evaluation (the trainer's and the held-out
        one) and diagnostics: the clock of ``wall_s``, the equal-time budget and the curve."""
        if self._t_fit is None:
            return 0.0
        spent = time.perf_counter() - self._t_fit
        return spent - self.timings.get("eval", 0.0) - self.heldout_s - self.stopwatch.seconds

    def evaluate(self) -> dict[str, float]:
        """The trainer's evaluation plus the loss on the fixed held-out batches (``heldout_loss``)
        and the training seconds so far (``time_s``), appended to ``curve``."""
        seconds = self.train_seconds()
        out = super().evaluate()
        t0 = time.perf_counter()
        heldout = heldout_eval(self.model, self.heldout)["loss"]
        self.heldout_s += time.perf_counter() - t0
        self.curve.append({"step": self.step, **out, "heldout_loss": heldout, "time_s": seconds})
        return out


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def lr_config(
    profile: Profile, arm_: Arm, task: str, steps: int, seed: int, data_dir, lr: float | None
):
    """The arm's RunConfig of one run with peak learning rate ``lr`` (None: the profile's); the
    floor keeps the profile's ``min_lr / lr`` ratio, so the schedule's shape is the same."""
    cfg = arm_.configure(profile.run_config(task, steps, seed, data_dir))
    if lr is None:
        return cfg
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"expected a positive finite learning rate, got {lr!r}", "lr")
    return cfg.replace(train={"lr": float(lr), "min_lr": profile.min_lr * lr / profile.lr})


def baseline_params(cfg, vocab_size: int, device: torch.device) -> int:
    """Parameters of the baseline GPT of ``cfg`` (a RunConfig) at initialisation."""
    model_cfg = type(cfg.model)(**{**cfg.model.to_dict(), "kind": "baseline"})
    model = build_model(model_cfg, vocab_size, device=device, generator=torch.Generator())
    return live_parameter_count(model)


def nas_search(
    profile: Profile,
    task: str,
    arm_: Arm,
    seed: int,
    dataset,
    device: torch.device,
    data_dir,
    lr: float | None = None,
) -> tuple[SearchResult, int]:
    """The NAS arm's search for one run: ``profile.nas_candidates`` architectures within
    ``profile.nas_tolerance`` of the baseline's parameters (drawn with ``seed``), each trained
    ``profile.nas_steps`` steps from the run's seed and scored by its loss on selection batches
    (validation data drawn with :data:`SELECTION_SEED`, not the final held-out batches). Returns
    the search and the baseline's parameter count. ``lr``: the arm's peak learning rate."""
    cfg = lr_config(profile, arm_, task, profile.nas_steps, seed, data_dir, lr)
    base = baseline_params(cfg, dataset.vocab_size, device)
    candidates = sample_architectures(
        cfg.model, base, profile.nas_candidates, profile.nas_tolerance, seed
    )
    selection = heldout_batches(
        dataset, profile.heldout_batches, profile.batch_size, SELECTION_SEED, device
    )

    def score(arch: Architecture) -> float:
        trainer = AblationTrainer(
            cfg, dataset, arm_, heldout=selection, device=device, architecture=arch
        )
        for _ in range(profile.nas_steps):
            trainer.train_step()
        return heldout_eval(trainer.model, selection)["loss"]

    return random_search(candidates, score), base


def _degradation(trainer: AblationTrainer, heldout) -> dict[str, Any]:
    t0 = time.perf_counter()
    curves = degradation_curves(
        trainer.model, heldout, head_importance(trainer.model, trainer.probe)
    )
    curves["importance"] = "fitness" if trainer.is_slime else "single-ablation loss increase"
    return {
        "degradation": curves,
        "degradation_auc_most": degradation_area(curves["most_first"]),
        "degradation_auc_least": degradation_area(curves["least_first"]),
        "degradation_s": time.perf_counter() - t0,
    }


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
    lr: float | None = None,
    target: float | None = None,
) -> dict[str, Any]:
    """Train one arm on one task with one seed; returns its plain-data record.

    ``lr``: the arm's peak learning rate (None: the profile's). The record holds the best
    held-out evaluation (``best_val_loss``, ``best_step``, ``best_time_s``) and the first at or
    under ``target`` (``target_step``, ``target_time_s``; None when not reached or no target).

    Raises:
        ConfigError: the NAS arm's retrained architecture is outside the profile's tolerance.
    """
    cfg = lr_config(profile, arm_, task, steps, seed, data_dir, lr)
    gc.collect()  # earlier trainers hold reference cycles (slot listeners); free them first
    search = None
    if arm_.kind == "nas":
        search, base = nas_search(profile, task, arm_, seed, dataset, device, data_dir, lr)
        gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    trainer = AblationTrainer(
        cfg,
        dataset,
        arm_,
        heldout=heldout,
        device=device,
        architecture=search.best if search is not None else None,
    )
    params_init = live_parameter_count(trainer.model)
    if search is not None and abs(params_init - base) > profile.nas_tolerance * base:
        raise ConfigError(
            f"the NAS arm's {search.best} has {params_init} parameters, the baseline {base}; "
            f"expected them within {profile.nas_tolerance:.0%}",
            "nas_tolerance",
        )
    summary = trainer.fit()
    peak = trainer.stopwatch.peak_bytes()  # diagnostics left out, as from the time
    peak = None if peak is None else peak / 2**20
    final = heldout_eval(trainer.model, heldout)
    train_s = summary["elapsed_s"] - summary["timings_s"].get("eval", 0.0)
    train_s -= trainer.stopwatch.seconds + trainer.heldout_s
    best, reached = best_of(trainer.curve), time_to_target(trainer.curve, target)
    record: dict[str, Any] = {
        "task": task,
        "arm": arm_.name,
        "seed": seed,
        "status": summary["status"],
        "steps": summary["steps"],
        "params_init": params_init,
        "params_final": live_parameter_count(trainer.model),  # live pods only, as params_init
        "lr": cfg.train.lr,
        "val_loss": final["loss"],
        **best,
        "target_loss": target,
        **reached,
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
    record.update(_degradation(trainer, heldout))
    if trainer.is_slime:
        record.update(_slime_record(trainer, summary))
    if arm_.kind == "hypernet":
        m = cfg.model
        embed, hidden, shortfall = hypernet_sizes(m.n_layer, m.n_pods, m.n_embd, m.head_dim, m.bias)
        record["hypernet"] = {"embed": embed, "hidden": hidden, "shortfall": shortfall}
    if search is not None:
        record.update(
            {
                "architecture": search.best.to_dict(),
                "search": search.to_dict(),
                "baseline_params": base,
                "search_s": search.seconds,
                "retrain_s": summary["elapsed_s"],
                "nas_total_s": search.seconds + summary["elapsed_s"],
            }
        )
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
