"""Runs the arms of the selected groups over tasks and seeds and collects per-seed numbers.

Each run is :func:`~slime.train.ablations.one_run.run_one`. Arms that several groups
share (``slime``) run once per task and seed. Runs go seed by seed (every task and arm of the first
seed, then the second, ...), so slow drift of a shared machine spreads over every arm, and a suite
stopped by the profile's deadline still holds whole seeds of every comparison.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from slime.proto import ConfigError, DataError
from slime.train.ablations.calibration import calibrate_steps, warm_up
from slime.train.ablations.groups import Group
from slime.train.ablations.hypernet import check_matched, install_hypernet
from slime.train.ablations.nas import Architecture
from slime.train.ablations.one_run import HELDOUT_SEED, SEED_BASE, AblationTrainer, run_one
from slime.train.ablations.probes import heldout_batches
from slime.train.ablations.profiles import Profile
from slime.train.ablations.protocol import lr_sweep, run_equal_time
from slime.train.ablations.variants import arm
from slime.train.build import build_dataset, build_model, resolve_device
from slime.train.profile import live_parameter_count

__all__ = ["AblationTrainer", "default_data_dir", "plan", "run_one", "run_suite"]

CORPUS_TASKS = ("shakespeare", "wikitext2", "tinystories")


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
    sweep: dict[str, Any] | None = None,
    seed_indices: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Run every arm the ``selected`` groups need; returns the raw results (``results.json``).

    Args:
        seeds: runs per arm and task (default: the profile's; at least 2 for a confidence
            interval).
        seed_indices: run exactly these seeds (``1337 + i``) instead: one part of a suite whose
            seeds are split over several commands (``--merge`` joins them; a part may hold one
            seed, the merged suite needs two). Excludes ``seeds``.
        steps: fixes the steps per run (default: the profile's, or calibrated to its time budget).
        tasks: restricts both task lists of the profile to these tasks.
        on_run: called after every run with the results so far (same form as the return value),
            so a suite cut short by its caller's time limit still leaves its finished runs.
        sweep: the ``sweep`` of an earlier suite's results: its learning rates and targets are
            kept and only the (task, arm) pairs and tasks it lacks are swept, so parts of one
            suite run in separate commands share one sweep.
    """
    if seed_indices is not None:
        if seeds is not None:
            raise ConfigError("expected --seeds or --seed-indices, got both", "--seed-indices")
        indices = tuple(seed_indices)
        if (
            not indices
            or len(set(indices)) != len(indices)
            or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 10**6 for i in indices
            )
        ):
            raise ConfigError(
                f"expected distinct seed indices in [0, 1000000), got {list(indices)}",
                "--seed-indices",
            )
    else:
        n_seeds = profile.seeds if seeds is None else seeds
        if n_seeds < 2:
            raise ConfigError(
                f"expected at least 2 seeds for an interval, got {n_seeds}", "--seeds"
            )
        indices = tuple(range(n_seeds))
    n_seeds = len(indices)
    if tasks is not None:
        profile = _restrict(profile, tasks)
    device = resolve_device(profile.device)
    t_suite = time.perf_counter()
    work = plan(profile, selected)
    needs_data = [t for t in work if t in CORPUS_TASKS]
    explicit = data_dir
    data_dir = default_data_dir(data_dir) if needs_data else data_dir
    datasets = {}
    left_out: dict[str, str] = {}
    for task in work:
        data_cfg = profile.run_config(task, 10, SEED_BASE, data_dir).data
        try:
            datasets[task] = build_dataset(data_cfg, profile.model["block_size"])
        except DataError as exc:
            if task not in CORPUS_TASKS or explicit is not None:
                raise
            # No data folder was named and this corpus has no offline copy here (only
            # tiny-shakespeare ships with slime-train): run the rest and say so.
            left_out[task] = str(exc)
            log(f"{task}: left out of this suite: {exc}")
    if left_out:
        profile = dataclasses.replace(
            profile,
            baseline_tasks=tuple(t for t in profile.baseline_tasks if t not in left_out),
            ablation_tasks=tuple(t for t in profile.ablation_tasks if t not in left_out),
        )
        work = plan(profile, selected)
        if not work:
            raise DataError(f"no task of the selected groups has data: {left_out}")
    calibration = None
    if steps is None and profile.time_budget_s is not None:
        calibration = calibrate_steps(
            profile, work, n_seeds, datasets, device, data_dir, sweeping=sweep is None
        )
        steps = calibration["steps"]
        log(f"calibrated: {calibration}")
    steps = profile.steps if steps is None else steps
    params = _check_equal_params(profile, work, datasets, device, data_dir, log)
    runs: list[dict[str, Any]] = []
    schedule = [(i, task, name) for i in indices for task, arms in work.items() for name in arms]
    heldout = {
        task: heldout_batches(
            datasets[task], profile.heldout_batches, profile.batch_size, HELDOUT_SEED, device
        )
        for task in work
    }
    warmup_s = warm_up(profile, work, datasets, heldout, device, data_dir)
    past_deadline = (
        profile.deadline_s is not None and time.perf_counter() - t_suite > profile.deadline_s
    )
    if sweep is None and past_deadline:  # no run will start: no sweep either
        sweep = {"lrs": {}, "scores": {}, "targets": {}, "seconds": 0.0, "skipped": "deadline"}
    else:
        known = _check_sweep(sweep, work) if sweep is not None else None
        sweep = lr_sweep(profile, work, steps, datasets, device, data_dir, log, known=known)
        if known is not None:
            sweep["reused"] = True
        log(f"lr sweep: {sweep['seconds']:.1f} s, targets {sweep['targets']}")

    def snapshot(skipped: int) -> dict[str, Any]:
        return {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "profile": profile.to_dict(),
            "groups": [g.key for g in selected],
            "steps": steps,
            "seeds": [SEED_BASE + i for i in indices],
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
            "tasks_left_out": left_out,
            "warmup_s": warmup_s,
            "sweep": sweep,
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
        lr, target = sweep["lrs"][task][name], sweep["targets"][task]
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
            lr=lr,
            target=target,
        )
        architecture = record.get("architecture")
        record.update(
            run_equal_time(
                profile, task, name, SEED_BASE + i, profile.equal_time_s,
                record["wall_s"] / record["steps"], lr, datasets[task], heldout[task], device,
                data_dir, target,
                architecture=None if architecture is None else Architecture(
                    tuple(architecture["heads"]), tuple(architecture["widths"])
                ),
            )
        )  # fmt: skip
        record["run_s"] = time.perf_counter() - t0
        runs.append(record)
        if on_run is not None:
            on_run(snapshot(len(schedule) - len(runs)))
        log(
            f"[{len(runs)}/{len(schedule)}] {task} {name} seed {record['seed']}: "
            f"lr {lr:g}, best val_loss {record['best_val_loss']:.4f} (equal steps), "
            f"{record['best_val_loss_time']:.4f} (equal time), "
            f"{record['tokens_per_s']:,.0f} tok/s, "
            f"{record['run_s']:.1f} s"
        )
    return snapshot(skipped)


def _check_sweep(sweep: dict[str, Any], work: dict[str, list[str]]) -> dict[str, Any]:
    """``sweep`` when it has learning rates and targets (arms and tasks it lacks are swept)."""
    if not isinstance(sweep, dict) or not {"lrs", "targets"} <= set(sweep):
        raise ConfigError(
            f"expected a sweep with lrs and targets, got {sweep!r:.80}", "--sweep-from"
        )
    return sweep


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
    """Parameter counts at initialisation for every task with the baseline or the hypernetwork
    arm: slime and the baseline (a SlimeModel's empty slots left out:
    :func:`~slime.train.profile.live_parameter_count`), and the hypernetwork arm where it runs
    (``hypernet``, with its ``hypernet_shortfall``: see :mod:`slime.train.ablations.hypernet`).

    Raises:
        ConfigError: slime's and the baseline's counts differ, or the hypernetwork's differs from
            the baseline's by more than its stated shortfall.
    """
    out = {}
    for task, arms in work.items():
        if "baseline" not in arms and "hypernet" not in arms:
            continue
        counts = {}
        model_cfg = profile.run_config(task, 10, SEED_BASE, data_dir).model
        for kind in ("slime", "baseline"):
            cfg = type(model_cfg)(**{**model_cfg.to_dict(), "kind": kind})
            model = build_model(
                cfg, datasets[task].vocab_size, device=device, generator=torch.Generator()
            )
            counts[kind] = live_parameter_count(model)
            if kind == "baseline" and "hypernet" in arms:
                install_hypernet(model, generator=torch.Generator())
                counts["hypernet"] = live_parameter_count(model)
                counts["hypernet_shortfall"] = check_matched(
                    counts["hypernet"], counts["baseline"], model.config
                )
        log(
            f"parameters at initialisation on {task}: "
            + ", ".join(f"{k} {v:,}" for k, v in counts.items())
        )
        if counts["slime"] != counts["baseline"]:
            raise ConfigError(
                f"slime has {counts['slime']} parameters and the baseline {counts['baseline']} on "
                f"{task}; expected equal counts",
                "model",
            )
        out[task] = counts
    return out
