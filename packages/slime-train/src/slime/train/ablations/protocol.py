"""The comparison protocol of issue 16 item 2: one budget stated two ways, a per-arm LR sweep, best
checkpoints and time to a target.

- **LR sweep** (:func:`lr_sweep`, before any main run): every arm of every task trains once per
  learning rate of ``profile.lr_sweep`` (the same list for every arm), ``profile.sweep_steps``
  steps (None: the main runs' steps), ``profile.sweep_seeds`` seeds, the same step-based schedule
  shape as the main runs (warmup, cosine to ``min_lr / lr`` of the peak). Each is scored by its best
  loss on *selection* batches (validation data drawn with :data:`SELECTION_SEED`, not the final
  held-out batches) over its evaluations; the arm's peak LR is the one with the lowest mean score
  (:func:`pick_lr`).
- **Target loss** per task, fixed before the main runs: ``profile.targets[task]`` when the profile
  states one, else the reference arm's (``baseline`` if it was swept on the task, otherwise
  ``slime``) median best selection loss over the sweep's LRs times ``1 + profile.target_margin``
  (:func:`sweep_target`). A median over LRs includes the worse ones, so the target is reachable
  by a well-tuned run, not only by the best one.
- **Equal steps**: each main run trains the suite's step count with its arm's LR; the curve holds
  the held-out loss on the fixed held-out batches at each of the profile's evaluations, so the
  best checkpoint's loss, step and training seconds (:func:`best_of`) and the first evaluation at
  or under the target (:func:`time_to_target`) come from it.
- **Equal time**: each run is paired with one of ``profile.equal_time_s`` training seconds
  (evaluation and diagnostics left out, as for ``wall_s``), the cosine decay following that clock
  as :func:`slime.train.compare.train_for` does (:func:`run_equal_time`).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from slime.proto import ConfigError
from slime.train.ablations.curves import best_of, time_to_target
from slime.train.ablations.nas import Architecture
from slime.train.ablations.one_run import (
    SEED_BASE,
    SELECTION_SEED,
    AblationTrainer,
    lr_config,
)
from slime.train.ablations.probes import heldout_batches
from slime.train.ablations.profiles import Profile
from slime.train.ablations.variants import arm
from slime.train.optim import learning_rate, pick_lr

__all__ = [
    "best_of",
    "lr_sweep",
    "pick_lr",
    "run_equal_time",
    "sweep_target",
    "time_to_target",
]


def sweep_target(scores: Sequence[dict[str, Any]], margin: float) -> float:
    """The median of the finite sweep losses ``scores`` times ``1 + margin``."""
    losses = [s["loss"] for s in scores if math.isfinite(s["loss"])]
    if not losses:
        raise ConfigError("expected a finite sweep loss to derive a target from", "targets")
    return statistics.median(losses) * (1.0 + margin)


def _selection_score(
    profile: Profile, task: str, name: str, lr: float, steps: int, dataset, device, data_dir
) -> float:
    """Best selection loss over the evaluations of ``profile.sweep_seeds`` short runs (mean)."""
    selection = heldout_batches(
        dataset, profile.heldout_batches, profile.batch_size, SELECTION_SEED, device
    )
    arm_ = arm(name)
    losses = []
    for i in range(profile.sweep_seeds):
        cfg = lr_config(profile, arm_, task, steps, SEED_BASE + i, data_dir, lr)
        architecture = None
        if arm_.kind == "nas":  # the search is the NAS arm's own: sweep the baseline's shape
            m = cfg.model
            architecture = Architecture((m.n_pods,) * m.n_layer, (m.head_dim,) * m.n_layer)
        trainer = AblationTrainer(
            cfg, dataset, arm_, heldout=selection, device=device, architecture=architecture
        )
        trainer.fit()
        best = best_of(trainer.curve)["best_val_loss"]
        losses.append(math.inf if best is None else best)
    return sum(losses) / len(losses)


def lr_sweep(
    profile: Profile,
    work: dict[str, list[str]],
    steps: int,
    datasets,
    device: torch.device,
    data_dir: str | None,
    log: Callable[[str], None] = print,
    known: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pick each (task, arm)'s peak LR and each task's target loss (see the module docstring).
    ``known``: an earlier sweep (another part of the suite) whose learning rates, scores and
    targets are kept as they are; only what it lacks is swept.

    Returns ``{"lrs": {task: {arm: lr}}, "scores": {task: {arm: [{"lr", "loss"}]}},
    "targets": {task: loss}, "target_source": {task: text}, "steps", "seeds", "seconds"}``.
    """
    t0 = time.perf_counter()
    sweep_steps = profile.sweep_steps if profile.sweep_steps is not None else steps
    known = known or {}
    lrs = {t: dict(v) for t, v in known.get("lrs", {}).items()}
    scores = {t: dict(v) for t, v in known.get("scores", {}).items()}
    targets = dict(known.get("targets", {}))
    source = dict(known.get("target_source", {}))
    for task, arms in work.items():
        for name in arms:
            if name in lrs.get(task, {}):
                continue
            picked = pick_lr(
                profile.lr_sweep,
                lambda lr, task=task, name=name: _selection_score(
                    profile, task, name, lr, sweep_steps, datasets[task], device, data_dir
                ),
            )
            lrs.setdefault(task, {})[name] = picked["lr"]
            scores.setdefault(task, {})[name] = picked["scores"]
            log(f"lr sweep {task} {name}: {picked['scores']} -> lr {picked['lr']:g}")
        if task in targets:
            continue
        if task in profile.targets:
            targets[task] = float(profile.targets[task])
            source[task] = "stated in the profile"
        else:
            swept = scores.get(task, {})
            ref = "baseline" if "baseline" in swept else "slime" if "slime" in swept else arms[0]
            targets[task] = sweep_target(scores[task][ref], profile.target_margin)
            source[task] = (
                f"{ref}'s median best selection loss over the sweep x "
                f"(1 + {profile.target_margin:g})"
            )
    return {
        "lrs": lrs,
        "scores": scores,
        "targets": targets,
        "target_source": source,
        "steps": sweep_steps,
        "seeds": profile.sweep_seeds,
        "seconds": time.perf_counter() - t0,
    }


def run_equal_time(
    profile: Profile,
    task: str,
    name: str,
    seed: int,
    seconds: float,
    seconds_per_step: float,
    lr: float,
    dataset,
    heldout,
    device: torch.device,
    data_dir: str | None,
    target: float | None,
    architecture: Architecture | None = None,
) -> dict[str, Any]:
    """Train arm ``name`` for ``seconds`` of training time (evaluation and diagnostics left out),
    the cosine decay following that clock; returns the ``time_*`` fields of the run's record.

    The lifecycle's fractions and the ``profile.evals`` evaluation points are laid over the steps
    the budget is expected to hold (``seconds / seconds_per_step``, from the paired equal-steps
    run). Training stops at the first step boundary past the budget; a final evaluation follows.
    """
    if not seconds > 0:
        raise ConfigError(f"expected a positive time budget, got {seconds!r}", "equal_time_s")
    expected = max(10, round(seconds / max(seconds_per_step, 1e-9)))
    arm_ = arm(name)
    # The clock is this run's budget: a patience (the equal-steps runs' plateau rule) would end
    # some runs before it and compare them at unequal times.
    cfg = lr_config(profile, arm_, task, expected, seed, data_dir, lr).replace(
        train={"patience": None}
    )
    holder: list[AblationTrainer] = []

    def by_time(step: int) -> float:
        spent = holder[0].train_seconds() if holder else 0.0
        return learning_rate(step, cfg.train, progress=spent / seconds)

    trainer = AblationTrainer(
        cfg, dataset, arm_, heldout=heldout, device=device, architecture=architecture,
        lr_schedule=by_time,
    )  # fmt: skip
    holder.append(trainer)
    interval = cfg.train.eval_interval
    while trainer.status in ("running", "completed"):
        spent = trainer.train_seconds()
        if spent >= seconds:
            break
        before = trainer.step
        trainer.fit(trainer.step + interval - trainer.step % interval, max_seconds=seconds - spent)
        if trainer.step == before:  # fit's clock (evaluation included) ran out before a step:
            trainer.fit(trainer.step + 1)  # one step takes the run past the training budget
        if trainer.step == before:
            break
    # The training clock where the run stopped. The curve's last point may be older: an
    # evaluation inside the last fit reads the clock before fit's own wall-time limit (which
    # counts evaluation too) ends it, so it can sit just under the budget the loop has reached.
    stopped = trainer.train_seconds()
    if not trainer.curve or trainer.curve[-1]["step"] != trainer.step:
        trainer.evaluate()
    curve = trainer.curve
    best, reached = best_of(curve), time_to_target(curve, target)
    return {
        "time_budget_s": seconds,
        "time_steps": trainer.step,
        "time_train_s": max(stopped, curve[-1]["time_s"]),
        "time_lr": lr,
        "time_val_loss": curve[-1]["heldout_loss"],
        "best_val_loss_time": best["best_val_loss"],
        "time_best_step": best["best_step"],
        "time_best_time_s": best["best_time_s"],
        "time_target_step": reached["target_step"],
        "time_target_time_s": reached["target_time_s"],
        "time_curve": curve,
    }
