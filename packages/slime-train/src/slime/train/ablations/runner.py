"""Runs the arms of the selected groups over tasks and seeds and collects per-seed numbers.

Each run is an ordinary :class:`~slime.train.trainer.Trainer` run; :class:`AblationTrainer` adds the
arm's injected parts and the diagnostics by composition (public attributes and the public
``evaluate``), so the training loop measured here is the shipped one. Arms that several groups
share (``slime``) run once per task and seed. Runs go seed by seed (every task and arm of the first
seed, then the second, ...), so slow drift of a shared machine spreads over every arm, and a suite
stopped by the profile's deadline still holds whole seeds of every comparison.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from slime.proto import ConfigError
from slime.train.ablations.diagnostics import (
    BirthLedger,
    RecordingFitness,
    RecordingLifecycle,
    Stopwatch,
)
from slime.train.ablations.groups import Group
from slime.train.ablations.probes import head_similarity, heldout_batches, heldout_eval
from slime.train.ablations.profiles import Profile
from slime.train.ablations.variants import Arm, arm, pod_latency_costs
from slime.train.build import build_dataset, build_model, resolve_device
from slime.train.trainer import Trainer

__all__ = ["AblationTrainer", "default_data_dir", "plan", "run_one", "run_suite", "warm_up"]

SEED_BASE = 1337
HELDOUT_SEED = 99_991  # the held-out batches of a task are the same for every arm and seed
DIAGNOSTIC_BATCH = 16  # sequences of the held-out batch used for per-pod contributions in training
CORPUS_TASKS = ("shakespeare", "wikitext2", "tinystories")


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
    gc.collect()  # earlier trainers hold reference cycles (pool listeners); free them first
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    trainer = AblationTrainer(cfg, dataset, arm_, heldout=heldout, device=device)
    params_init = sum(p.numel() for p in trainer.model.parameters())
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
        "params_final": summary["params"],
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


def default_data_dir(explicit: str | None) -> str | None:
    """``explicit``, else ``$SLIME_DATA_DIR``, else ``<repo>/../shared/data`` when it exists."""
    if explicit is not None:
        return explicit
    if os.environ.get("SLIME_DATA_DIR"):
        return os.environ["SLIME_DATA_DIR"]
    here = Path(__file__).resolve()
    if len(here.parents) > 6 and (here.parents[5].name == "packages"):
        shared = here.parents[6].parent / "shared" / "data"
        if shared.is_dir():
            return str(shared)
    return None


def plan(profile: Profile, selected: tuple[Group, ...]) -> dict[str, list[str]]:
    """``{task: [arm names]}`` every selected group needs, in run order, each arm once."""
    out: dict[str, list[str]] = {}
    for group in selected:
        tasks = profile.baseline_tasks if group.scope == "baseline" else profile.ablation_tasks
        for task in tasks:
            arms = out.setdefault(task, [])
            arms.extend(a for a in group.arms if a not in arms)
    return out


def _seconds(device: torch.device, fn: Callable[[], object]) -> float:
    """Wall seconds of ``fn()``, the device synchronised before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _run_parts(profile: Profile, task: str, dataset, heldout, device, data_dir, name: str) -> dict:
    """Measured seconds of each part of one run of arm ``name``: setup, a training step, one
    evaluation, the final held-out probes and (slime) one medium and one slow lifecycle event."""
    arm_ = arm(name)
    cfg = arm_.configure(profile.run_config(task, profile.steps, SEED_BASE, data_dir))
    t0 = time.perf_counter()
    trainer = AblationTrainer(cfg, dataset, arm_, heldout=heldout, device=device)
    parts = {"setup": time.perf_counter() - t0}
    for _ in range(3):  # warm-up: allocator, kernels, autotuning
        loss, _ = trainer.train_step()
    parts["step"] = _seconds(device, lambda: [trainer.train_step() for _ in range(10)]) / 10
    parts["eval"] = _seconds(device, trainer.evaluate)
    parts["final"] = _seconds(
        device,
        lambda: (
            heldout_eval(trainer.model, heldout),
            head_similarity(trainer.model, heldout[0][0]),
        ),
    )
    if trainer.lifecycle is not None:
        lc, lifecycle = cfg.lifecycle, trainer.lifecycle
        lifecycle.gate.observe(loss)
        lifecycle.medium(lc.warmup_steps, loss, trainer.probe)  # first event: empty archive
        parts["medium"] = _seconds(
            device, lambda: lifecycle.medium(lc.warmup_steps, loss, trainer.probe)
        )
        parts["slow"] = _seconds(device, lambda: lifecycle.slow(lc.gentle_steps))
    return parts


def warm_up(
    profile: Profile, work: dict[str, list[str]], datasets, heldout, device, data_dir
) -> float:
    """Seconds spent on one short untimed run per task and model kind, before any timed run.

    Without it the first slime run of a process on a GPU pays for compiling its Triton kernels
    (fwd, bwd, effective rank: seen on the H100 as 75 s against 22 s for the same run later),
    which biases that arm's tokens/s. Lifecycle events happen in it, so their kernels compile too.
    """
    t0 = time.perf_counter()
    for task, arms in work.items():
        kinds = dict.fromkeys("baseline" if a == "baseline" else "slime" for a in arms)
        for kind in kinds:
            run_one(profile, task, arm(kind), SEED_BASE, 10, datasets[task], heldout[task],
                    device, data_dir)  # fmt: skip
    return time.perf_counter() - t0


def calibrate_steps(
    profile: Profile, work: dict[str, list[str]], seeds: int, datasets, device, data_dir
) -> dict[str, Any]:
    """The largest step count (multiple of 50) whose planned suite fits ``time_budget_s``.

    One slime and one baseline run of the first task are taken apart and each part timed: setup,
    a training step, an evaluation, the final probes, a medium and a slow event (with the
    diagnostics). A run of ``s`` steps then costs ``fixed + s * step``, where ``fixed`` counts the
    events a run holds whatever its length (the lifecycle's intervals are fractions of the run).
    """
    device = torch.device(device)
    task = next(iter(work))
    heldout = heldout_batches(
        datasets[task], profile.heldout_batches, profile.batch_size, HELDOUT_SEED, device
    )
    frac = profile.lifecycle
    parts, fixed, per_step = {}, {}, {}
    for kind in ("slime", "baseline"):
        p = _run_parts(profile, task, datasets[task], heldout, device, data_dir, kind)
        parts[kind] = p
        events = p.get("medium", 0.0) / frac["medium"] + p.get("slow", 0.0) / frac["slow"]
        fixed[kind] = p["setup"] + p["final"] + (profile.evals + 1) * p["eval"] + events
        per_step[kind] = p["step"]
    runs = {
        "slime": sum(a != "baseline" for arms in work.values() for a in arms) * seeds,
        "baseline": sum(a == "baseline" for arms in work.values() for a in arms) * seeds,
    }
    fixed_total = sum(runs[k] * fixed[k] for k in runs)
    per_unit = sum(runs[k] * per_step[k] for k in runs)
    budget = profile.time_budget_s - fixed_total
    fit = int(budget / per_unit) // 50 * 50 if budget > 0 else 0
    steps = max(profile.min_steps, min(profile.steps, fit))
    return {
        "parts_s": parts,
        "seconds_per_step": per_step,
        "runs": runs,
        "budget_s": profile.time_budget_s,
        "steps_fitting_budget": fit,
        "steps": steps,
        "planned_s": fixed_total + per_unit * steps,
    }


def run_suite(
    profile: Profile,
    selected: tuple[Group, ...],
    *,
    seeds: int | None = None,
    steps: int | None = None,
    tasks: tuple[str, ...] | None = None,
    data_dir: str | None = None,
    log: Callable[[str], None] = print,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every arm the ``selected`` groups need; returns the raw results (``results.json``).

    Args:
        seeds: runs per arm and task (default: the profile's; at least 3 for a confidence interval).
        steps: fixes the steps per run (default: the profile's, or calibrated to its time budget).
        tasks: restricts both task lists of the profile to these tasks.
        on_run: called after every run with the results so far (same form as the return value),
            so a suite cut short by its caller's time limit still leaves its finished runs.
    """
    n_seeds = profile.seeds if seeds is None else seeds
    if n_seeds < 2:
        raise ConfigError(f"expected at least 2 seeds for an interval, got {n_seeds}", "--seeds")
    if tasks is not None:
        profile = _restrict(profile, tasks)
    device = resolve_device(profile.device)
    t_suite = time.perf_counter()
    work = plan(profile, selected)
    needs_data = [t for t in work if t in CORPUS_TASKS]
    data_dir = default_data_dir(data_dir) if needs_data else data_dir
    datasets = {}
    for task in work:
        data_cfg = profile.run_config(task, 10, SEED_BASE, data_dir).data
        datasets[task] = build_dataset(data_cfg, profile.model["block_size"])
    calibration = None
    if steps is None and profile.time_budget_s is not None:
        calibration = calibrate_steps(profile, work, n_seeds, datasets, device, data_dir)
        steps = calibration["steps"]
        log(f"calibrated: {calibration}")
    steps = profile.steps if steps is None else steps
    params = _check_equal_params(profile, work, datasets, device, data_dir, log)
    runs: list[dict[str, Any]] = []
    schedule = [
        (i, task, name) for i in range(n_seeds) for task, arms in work.items() for name in arms
    ]
    heldout = {
        task: heldout_batches(
            datasets[task], profile.heldout_batches, profile.batch_size, HELDOUT_SEED, device
        )
        for task in work
    }
    warmup_s = warm_up(profile, work, datasets, heldout, device, data_dir)

    def snapshot(skipped: int) -> dict[str, Any]:
        return {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "profile": profile.to_dict(),
            "groups": [g.key for g in selected],
            "steps": steps,
            "seeds": [SEED_BASE + i for i in range(n_seeds)],
            "device": _device_name(device),
            "torch": torch.__version__,
            "calibration": calibration,
            "params": params,
            "tasks": {
                "baseline": list(profile.baseline_tasks),
                "ablation": list(profile.ablation_tasks),
            },
            "vocab": {t: d.vocab_size for t, d in datasets.items()},
            "runs": runs,
            "runs_not_started": skipped,
            "warmup_s": warmup_s,
            "suite_wall_s": time.perf_counter() - t_suite,
        }

    log(f"warm-up (compiles kernels outside the timed runs): {warmup_s:.1f} s")
    skipped = 0
    for i, task, name in schedule:
        elapsed = time.perf_counter() - t_suite
        longest = max((r["run_s"] for r in runs), default=0.0)
        if profile.deadline_s is not None and elapsed + longest > profile.deadline_s:
            skipped = len(schedule) - len(runs)
            log(f"deadline: {elapsed:.0f} s spent, {skipped} runs not started")
            break
        t0 = time.perf_counter()
        record = run_one(
            profile,
            task,
            arm(name),
            SEED_BASE + i,
            steps,
            datasets[task],
            heldout[task],
            device,
            data_dir,
        )
        record["run_s"] = time.perf_counter() - t0
        runs.append(record)
        if on_run is not None:
            on_run(snapshot(len(schedule) - len(runs)))
        log(
            f"[{len(runs)}/{len(schedule)}] {task} {name} seed {record['seed']}: "
            f"val_loss {record['val_loss']:.4f}, {record['tokens_per_s']:,.0f} tok/s, "
            f"{record['run_s']:.1f} s"
        )
    return snapshot(skipped)


def _restrict(profile: Profile, tasks: tuple[str, ...]) -> Profile:
    return dataclasses.replace(
        profile,
        baseline_tasks=tuple(t for t in profile.baseline_tasks if t in tasks) or tasks,
        ablation_tasks=tuple(t for t in profile.ablation_tasks if t in tasks) or tasks,
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} torch thread(s)"


def _check_equal_params(
    profile, work, datasets, device, data_dir, log
) -> dict[str, dict[str, int]]:
    """Parameter counts of both model kinds at initialisation for every task that has both.

    Raises:
        ConfigError: the counts differ (the comparison would not be at equal parameters).
    """
    out = {}
    for task, arms in work.items():
        if "baseline" not in arms:
            continue
        counts = {}
        for kind in ("slime", "baseline"):
            model_cfg = profile.run_config(task, 10, SEED_BASE, data_dir).model
            model_cfg = type(model_cfg)(**{**model_cfg.to_dict(), "kind": kind})
            model = build_model(
                model_cfg, datasets[task].vocab_size, device=device, generator=torch.Generator()
            )
            counts[kind] = sum(p.numel() for p in model.parameters())
        log(
            f"parameters at initialisation on {task}: slime {counts['slime']:,}, baseline {counts['baseline']:,}"
        )
        if counts["slime"] != counts["baseline"]:
            raise ConfigError(
                f"slime has {counts['slime']} parameters and the baseline {counts['baseline']} on "
                f"{task}; expected equal counts",
                "model",
            )
        out[task] = counts
    return out
