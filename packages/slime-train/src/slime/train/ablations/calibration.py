"""Sizing a time-budgeted suite, and the untimed warm-up before its timed runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from slime.train.ablations.one_run import HELDOUT_SEED, SEED_BASE, AblationTrainer, run_one
from slime.train.ablations.probes import head_similarity, heldout_batches, heldout_eval
from slime.train.ablations.profiles import Profile
from slime.train.ablations.variants import arm

__all__ = ["calibrate_steps", "warm_up"]


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
        kinds = dict.fromkeys("slime" if arm(a).kind == "slime" else "baseline" for a in arms)
        for kind in kinds:
            run_one(profile, task, arm(kind), SEED_BASE, 10, datasets[task], heldout[task],
                    device, data_dir)  # fmt: skip
    return time.perf_counter() - t0


def calibrate_steps(
    profile: Profile,
    work: dict[str, list[str]],
    seeds: int,
    datasets,
    device,
    data_dir,
    sweeping: bool = True,
) -> dict[str, Any]:
    """The largest step count (multiple of 50) whose planned suite fits ``time_budget_s``.

    One slime and one baseline run of the first task are taken apart and each part timed: setup,
    a training step, an evaluation, the final probes, a medium and a slow event (with the
    diagnostics). A run of ``s`` steps then costs ``fixed + s * step``, where ``fixed`` counts the
    events a run holds whatever its length (the lifecycle's intervals are fractions of the run)
    and, for the NAS arm, its search (``nas_candidates`` short runs of ``nas_steps`` steps).
    Each run's equal-time partner costs ``fixed + equal_time_s``; with ``sweeping``, the LR sweep
    costs ``len(lr_sweep) * sweep_seeds`` runs of ``sweep_steps`` steps (the planned steps when
    None) per task and arm.
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
    # The hypernetwork and NAS arms are GPTs: timed as the baseline. Each NAS run first trains
    # nas_candidates architectures for nas_steps steps (a fixed cost whatever the run's steps).
    slime_kind = [arm(a).kind == "slime" for arms in work.values() for a in arms]
    runs = {"slime": sum(slime_kind) * seeds, "baseline": slime_kind.count(False) * seeds}
    nas_runs = sum(a == "nas" for arms in work.values() for a in arms) * seeds
    search = profile.nas_candidates * (
        parts["baseline"]["setup"] + parts["baseline"]["final"]
        + profile.nas_steps * per_step["baseline"]
    )  # fmt: skip
    fixed_total = sum(runs[k] * fixed[k] for k in runs) + nas_runs * search
    per_unit = sum(runs[k] * per_step[k] for k in runs)
    # equal-time partners: one per run, the same fixed parts plus their training seconds
    equal_time = sum(runs[k] * (fixed[k] + profile.equal_time_s) for k in runs)
    fixed_total += equal_time
    sweep_runs = {"slime": 0, "baseline": 0}
    if sweeping:
        tries = len(profile.lr_sweep) * profile.sweep_seeds
        sweep_runs = {"slime": sum(slime_kind) * tries, "baseline": slime_kind.count(False) * tries}
        fixed_total += sum(sweep_runs[k] * fixed[k] for k in runs)
        if profile.sweep_steps is None:
            per_unit += sum(sweep_runs[k] * per_step[k] for k in runs)
        else:
            fixed_total += sum(sweep_runs[k] * profile.sweep_steps * per_step[k] for k in runs)
    budget = profile.time_budget_s - fixed_total
    fit = int(budget / per_unit) // 50 * 50 if budget > 0 else 0
    steps = max(profile.min_steps, min(profile.steps, fit))
    return {
        "parts_s": parts,
        "seconds_per_step": per_step,
        "runs": runs,
        "nas_search_s": search,
        "equal_time_s": equal_time,
        "sweep_runs": sweep_runs,
        "budget_s": profile.time_budget_s,
        "steps_fitting_budget": fit,
        "steps": steps,
        "planned_s": fixed_total + per_unit * steps,
    }
