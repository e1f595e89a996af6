"""Profiles: how big the models are, how long the runs last and which tasks each group uses.

``cpu-small`` is a smoke profile for CI (2 CPU cores, the whole suite in a few minutes): its numbers
show that the machinery works, not how the architecture performs. ``gpu-full`` is meant for one H100
and sizes its runs to a time budget: a short calibration measures the seconds per step of both
models, and the step count (the same for every arm: equal compute) is the largest that fits the
budget, between ``min_steps`` and ``steps``.

Lifecycle timescales are fractions of the run, so that warmup, gentle and full phases (and the
births and culls in them) happen whatever the step count.

Group 7 (blueprint arms) adds, per seed and task, a hypernetwork run and a NAS run. The NAS run's
search trains ``nas_candidates`` architectures for ``nas_steps`` steps each before retraining the
best: cpu-small 3 x 20 steps (a toy search that only exercises the code), gpu-full 8 x 150 steps
(1,200 search steps, about three runs' worth at the calibrated step count; calibration plans for
it). At gpu-full sizes the hypernetwork has embeddings of width 2,184, a hidden layer of 14 and 2
parameters fewer than the baseline's 3.2 M; at cpu-small 341, 2 and an exact match.

The comparison protocol (:mod:`slime.train.ablations.protocol`): an LR sweep over ``lr_sweep``
per arm and task before the main runs (cpu-small: 3 x 20 steps, 1 seed, a smoke version; gpu-full:
3 x the main runs' steps, 1 seed), an equal-time partner of ``equal_time_s`` training seconds per
run (cpu-small 0.25 s, gpu-full 20 s) and targets from the sweep (``targets`` empty: the
reference arm's median best selection loss x 1.05).

gpu-full device time (an estimate from the plan, not a measurement): with R main runs of s
seconds each (the calibration sizes s), a part costs about warm-up + 3 R/5 s (sweep: 3 LRs, one
seed, per task and arm, i.e. R/5 arm-task pairs at 5 seeds) + R s + R (20 s + setup and evals);
every run also pays setup, evaluations and diagnostics. Group 1 alone on three tasks is 6 pairs,
R = 30: with s = 6 s that is ~110 + 180 + 700 s, over one 10-minute call. Split it so that each
call stays under 10 minutes (``--budget-s`` sizes s to what is left; ``--deadline-s`` stops a call
cleanly and the report counts the runs not started): one command per (group, task) slice, e.g.
``--groups baseline --tasks shakespeare``, then ``--tasks recall``, ``--tasks wikitext2``, then
``--groups archive lifecycle``, ``--groups efficiency fitness``, ``--groups births``,
``--groups blueprint``; pass ``--steps N`` (the first part's calibrated steps: merge checks the
steps are equal) and ``--sweep-from`` the first part's results.json to every later part (it keeps
the picked LRs and targets and sweeps only the arms it lacks), then ``--merge`` all results.json
files. About 8-10 calls of <= 10 minutes: 80-100 device minutes for the whole suite at 5 seeds.

To convergence (issue 16 item 3): ``--steps N --patience P`` makes N a limit; each equal-steps run
stops after P evaluations (``evals`` per N steps) without a new best held-out loss, and
``best_time_s`` is its training time to convergence. The equal-time partners ignore the patience:
their clock is their budget. Runs that long fit a 10-minute call a few seeds at a time:
``--seed-indices 0 1``, then ``2 3``, then ``4`` (seeds 1337 + i), each with ``--sweep-from`` the
first part, joined by ``--merge``. The first 1000-step slice (ablations/gpu-2026-12-02) was still
improving at its last step for both arms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slime.proto import ConfigError
from slime.train.config import (
    DataConfig,
    FitnessConfig,
    LifecycleConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)

__all__ = ["PROFILES", "Profile", "profile"]


@dataclass(frozen=True)
class Profile:
    """One sizing of the whole suite.

    Args:
        name: ``cpu-small`` or ``gpu-full``.
        model: ModelConfig fields shared by every arm (both model kinds read the same section).
        steps: steps per run (``time_budget_s`` set: the most steps per run).
        min_steps: the fewest steps a calibrated run may get.
        batch_size, lr, min_lr, warmup_iters: optimisation, the same for every arm.
        evals: evaluation points per run (the loss curves' resolution).
        eval_iters: batches per split at each evaluation point.
        heldout_batches: fixed validation batches of the final held-out evaluation.
        baseline_tasks: tasks of group 1 (slime against the baseline).
        ablation_tasks: tasks of groups 2 to 6.
        seeds: independent runs per arm and task.
        device: ``cpu`` or ``auto``.
        time_budget_s: total seconds for the suite (None: fixed ``steps``, no calibration).
        deadline_s: no run starts once the suite has spent this many seconds minus its longest
            run so far (None: no deadline); the report then says how many runs were not started.
        threads: torch CPU threads (None: torch's default).
        lifecycle: fractions of the run: ``warmup``, ``gentle`` phase ends, ``medium`` and ``slow``
            intervals.
        task_vocab: vocabulary of the copy and recall tasks.
        nas_candidates: architectures the NAS arm's random search trains (its budget, with
            ``nas_steps``).
        nas_steps: training steps of each candidate (the winner is retrained with the run's steps).
        nas_tolerance: candidates hold within this fraction of the baseline's parameters.
        lr_sweep: peak learning rates every arm is tried with before the main runs (at least 3,
            the same for every arm); each arm's runs use the one with the best selection loss
            (:mod:`slime.train.ablations.protocol`). ``lr`` and ``min_lr`` give the schedule's
            shape: the floor is ``min_lr / lr`` of the chosen peak.
        sweep_steps: steps of each sweep run (None: the main runs' steps).
        sweep_seeds: sweep runs per arm and learning rate (their selection losses are averaged).
        targets: target held-out loss per task, stated before the runs; a task not listed gets
            its reference arm's median best selection loss over the sweep times
            ``1 + target_margin``, fixed by the sweep before any main run.
        target_margin: see ``targets``.
        equal_time_s: training seconds of each equal-time run (one per main run: same arm, task,
            seed and learning rate; evaluation and diagnostics not counted).
        patience: a run stops after this many evaluations in a row without a new best
            (``train.patience``): ``steps`` is then a limit and each run trains to its plateau
            (None: every run trains its ``steps``). ``best_time_s`` is then the training time to
            convergence; the report counts the runs that stopped before the limit.
    """

    name: str
    model: dict[str, Any]
    steps: int
    min_steps: int
    batch_size: int
    lr: float
    min_lr: float
    warmup_iters: int
    evals: int
    eval_iters: int
    heldout_batches: int
    baseline_tasks: tuple[str, ...]
    ablation_tasks: tuple[str, ...]
    seeds: int = 3
    device: str = "cpu"
    time_budget_s: float | None = None
    deadline_s: float | None = None
    threads: int | None = None
    lifecycle: dict[str, float] = field(
        default_factory=lambda: {"warmup": 0.15, "gentle": 0.4, "medium": 1 / 15, "slow": 0.2}
    )
    task_vocab: int = 16
    nas_candidates: int = 8
    nas_steps: int = 150
    nas_tolerance: float = 0.05
    lr_sweep: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    sweep_steps: int | None = None
    sweep_seeds: int = 1
    targets: dict[str, float] = field(default_factory=dict)
    target_margin: float = 0.05
    equal_time_s: float = 10.0
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.patience is not None and (
            isinstance(self.patience, bool)
            or not isinstance(self.patience, int)
            or self.patience < 1
        ):
            raise ConfigError(
                f"expected no patience or an int >= 1 evaluations, got {self.patience!r}",
                "patience",
            )
        lrs = self.lr_sweep
        if len(set(lrs)) < 3 or any(not (isinstance(v, int | float) and v > 0) for v in lrs):
            raise ConfigError(
                f"expected at least 3 distinct positive learning rates, got {lrs!r}", "lr_sweep"
            )
        if self.sweep_steps is not None and self.sweep_steps < 10:
            raise ConfigError(
                f"expected at least 10 sweep steps, got {self.sweep_steps!r}", "sweep_steps"
            )
        if self.sweep_seeds < 1:
            raise ConfigError(
                f"expected at least 1 sweep seed, got {self.sweep_seeds!r}", "sweep_seeds"
            )
        if not self.equal_time_s > 0:
            raise ConfigError(
                f"expected a positive equal-time budget, got {self.equal_time_s!r}", "equal_time_s"
            )
        if not self.target_margin >= 0:
            raise ConfigError(
                f"expected a non-negative margin, got {self.target_margin!r}", "target_margin"
            )

    def run_config(self, task: str, steps: int, seed: int, data_dir: str | None) -> RunConfig:
        """The shared RunConfig of one run (an arm then applies its own switches)."""
        if steps < 10:
            raise ConfigError(f"expected at least 10 steps per run, got {steps}", "steps")
        frac = self.lifecycle
        medium = max(1, round(frac["medium"] * steps))
        slow = max(medium, round(frac["slow"] * steps) // medium * medium)
        warmup = round(frac["warmup"] * steps)
        return RunConfig(
            model=ModelConfig(**self.model),
            train=TrainConfig(
                steps=steps,
                batch_size=self.batch_size,
                lr=self.lr,
                min_lr=self.min_lr,
                warmup_iters=min(self.warmup_iters, steps // 2),
                eval_interval=max(1, steps // self.evals),
                eval_iters=self.eval_iters,
                log_interval=max(1, steps // self.evals),
                checkpoint_interval=steps,
                seed=seed,
                device=self.device,
                patience=self.patience,
            ),
            lifecycle=LifecycleConfig(
                medium_interval=medium,
                slow_interval=slow,
                warmup_steps=warmup,
                gentle_steps=max(warmup, round(frac["gentle"] * steps)),
            ),
            fitness=FitnessConfig(),
            data=DataConfig(name=task, dir=data_dir, task_vocab=self.task_vocab),
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}


_CPU_SMALL = Profile(
    name="cpu-small",
    model={
        "block_size": 32,
        "n_layer": 2,
        "n_embd": 32,
        "n_pods": 2,
        "pod_capacity": 4,
        "head_dim": 16,
        "kernel_backend": "torch",
    },
    steps=120,
    min_steps=120,
    batch_size=16,
    lr=3e-3,
    min_lr=3e-4,
    warmup_iters=10,
    evals=6,
    eval_iters=2,
    heldout_batches=4,
    baseline_tasks=("shakespeare", "wikitext2", "recall", "copy"),
    ablation_tasks=("shakespeare",),
    device="cpu",
    threads=1,
    lifecycle={"warmup": 0.15, "gentle": 0.4, "medium": 0.1, "slow": 0.2},
    nas_candidates=3,
    nas_steps=20,
    lr_sweep=(1e-3, 3e-3, 1e-2),
    sweep_steps=20,  # a cheap sweep: 3 x 20 steps per arm and task, 1 seed
    sweep_seeds=1,
    equal_time_s=0.25,
)

_GPU_FULL = Profile(
    name="gpu-full",
    model={
        "block_size": 128,
        "n_layer": 4,
        "n_embd": 256,
        "n_pods": 4,
        "pod_capacity": 8,
        "head_dim": 64,
        "dropout": 0.0,
    },
    steps=2000,
    min_steps=200,
    batch_size=32,
    lr=1e-3,
    min_lr=1e-4,
    warmup_iters=50,
    evals=10,
    eval_iters=8,
    heldout_batches=16,
    baseline_tasks=("shakespeare", "wikitext2", "recall"),
    ablation_tasks=("shakespeare",),
    seeds=5,
    device="auto",
    time_budget_s=360.0,
    deadline_s=510.0,
    nas_candidates=8,  # 8 x 150 steps of search: 3 runs' worth of steps per NAS run
    nas_steps=150,
    # 2026-12-02 (H200, 1000 steps, 5 seeds): both arms picked the top of (3e-4, 1e-3, 3e-3); a
    # sweep whose best is its edge has not found the best, so the range moves up one step.
    lr_sweep=(1e-3, 3e-3, 1e-2),
    sweep_steps=None,  # the sweep runs the main runs' steps: the schedule it picks for is theirs
    sweep_seeds=1,
    equal_time_s=20.0,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (_CPU_SMALL, _GPU_FULL)}


def profile(name: str) -> Profile:
    """The profile called ``name``. Raises ConfigError for an unknown name."""
    if name not in PROFILES:
        raise ConfigError(
            f"unknown profile {name!r}; expected one of {sorted(PROFILES)}", "profile"
        )
    return PROFILES[name]
