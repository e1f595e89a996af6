"""Slime vs the equal-parameter baseline on tiny-shakespeare, same wall time, one device.

The corpus comes from ``--data-dir`` or ``$SLIME_DATA_DIR``, else the copy slime.train ships.

Usage::

    PYTHONPATH=$(ls -d packages/*/src | paste -sd:) \\
        python -m slime.train.compare --seconds 300 --out runs/compare

For each mode (``--modes eager,compiled,graphs``: ``compiled`` sets ``train.compile``, ``graphs``
also ``train.cuda_graphs``) it profiles each model over ``--profile-steps`` training steps with the
device synchronised around every phase (where the time goes); then both models, side by side in
the process, time free-running windows in turn (``--profile-repeats`` rounds, the order reversed
each round; medians reported): whole medium intervals (the step time a run sees) and the steps
between observation windows. Then each model's medium- and slow-timescale events are timed in the
phases where births and deaths happen, and each model trains a fresh copy for ``--seconds`` of
wall time, the cosine decay following the clock (so both models use the whole budget and finish
their schedule), and evaluates. It prints one table per mode and writes ``compare.json`` (results
under ``modes``) plus each run's directory (metrics, plots, final checkpoint) under ``--out/<mode>``.

One protocol with the ablation suite (issue 16 item 2): ``--lr-sweep 3e-4,1e-3,3e-3`` first trains
each model briefly at each peak LR (``--sweep-seconds``, on other seeds: their evaluation batches
are selection batches, not the final runs') and runs it at the best; ``--steps N`` adds the
equal-steps budget (N steps, cosine over them) beside the equal-time one; ``--target-loss X``
reports each run's time and steps to held-out loss X. Both budgets report the best held-out loss
(the best checkpoint) and when it was reached.

Overhead ratios (the blueprint claims <= 2% of step time, <= 1% of memory):

- lifecycle time per step = observation cost (tubes and per-slot gradient statistics: an
  observed step's extra time over a plain one, the median over ``3 x --profile-repeats`` pairs
  of short adjacent windows, times the share of steps that observe) + medium event
  apart from its births / medium_interval + (births + slow event) / slow_interval, over the
  free-running slime step. Births are counted at the rate a run at capacity has them: one for
  each pod the slow event culls (a full pool has no room for more), each at the mean cost of
  the births in the timed medium events;
- step ratio = slime step / baseline step, free-running (architecture cost: pool attention over
  ``pod_capacity`` slots, the alive mask, the observation window): the ratio of the two medians,
  then the lowest and highest ratio of one round's windows (slime's window over the baseline's
  of the same round), a spread to read it with;
- memory: archive genome bytes over the model's parameter + optimizer bytes, and slime's peak over
  the baseline's peak.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from slime.proto import ConfigError
from slime.train.build import build_dataset, resolve_device
from slime.train.config import RunConfig
from slime.train.datasets import Dataset
from slime.train.loader import load_config
from slime.train.optim import learning_rate, pick_lr
from slime.train.profile import flops_per_token, live_parameter_count, peak_flops
from slime.train.rundir import RunDir
from slime.train.trainer import Trainer

__all__ = [
    "MODES",
    "main",
    "profile_model",
    "profile_models",
    "sweep_lr",
    "train_for",
    "train_steps",
]

MODES = ("eager", "compiled", "graphs")

_STEP_PARTS = ("forward", "backward", "grad_norms", "optimizer")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    """Free what earlier models left (trainers hold reference cycles), then reset the peak."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _tensor_bytes(tree: Any) -> int:
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(_tensor_bytes(v) for v in tree.values())
    if isinstance(tree, list | tuple):
        return sum(_tensor_bytes(v) for v in tree)
    return 0


def _attention_widths(trainer: Trainer) -> list[int]:
    c = trainer.cfg.model
    if not trainer.is_slime:
        return [c.n_pods * c.head_dim] * c.n_layer
    return [len(o.live_slots()) * c.head_dim for o in trainer.model.organisms]


def _free_running_ms(trainer: Trainer, device: torch.device, steps: int) -> float:
    """Mean ms per step over ``steps`` free-running steps (device synchronised at the ends)."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
        trainer.step += 1
    _sync(device)
    return (time.perf_counter() - t0) / steps * 1e3


def _align(trainer: Trainer, interval: int) -> None:
    """Move the trainer's step counter to the next multiple of ``interval`` (no training)."""
    trainer.step += -trainer.step % interval


def profile_model(
    cfg: RunConfig,
    dataset: Dataset,
    device: torch.device,
    steps: int,
    warmup: int = 10,
    repeats: int = 3,
) -> dict[str, Any]:
    """Per-step time by phase, lifecycle event costs, memory, FLOPs and MFU of one model.

    With a lifecycle, ``free_step_ms`` averages whole medium intervals (so it holds their
    observed steps in proportion) and ``plain_step_ms`` averages steps outside the observation
    window. Each is the median of ``repeats`` timed windows (the two kinds alternating), so one
    window slowed by other work on the host does not decide it. The observation cost per step
    (``observation_ms_per_step``) is an observed step's extra time over a plain one
    (``observed_step_extra_ms``: the median over ``3 * repeats`` pairs of short adjacent
    windows) times the share of steps that observe. :func:`profile_models` times several
    models' windows in turn.
    """
    return profile_models({"model": cfg}, dataset, device, steps, warmup, repeats)["model"]


def profile_models(
    cfgs: dict[str, RunConfig],
    dataset: Dataset,
    device: torch.device,
    steps: int,
    warmup: int = 10,
    repeats: int = 3,
) -> dict[str, dict[str, Any]]:
    """:func:`profile_model` of each of ``cfgs``, their free-running windows interleaved.

    Every model is built and profiled with synchronised phases first (each peak counts only its
    own memory); then round after round each model times one window of each kind, the order
    reversed every round, so a slow spell of the host lands on all models alike instead of on
    whichever was timed then; then each model's lifecycle events are timed.
    """
    started = {
        name: _start_profile(cfg, dataset, device, steps, warmup) for name, cfg in cfgs.items()
    }
    names = list(started)
    windows: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in names}
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            frees, plains = windows[name]
            free, plain = _time_windows(started[name][0], cfgs[name], device, steps)
            frees.append(free)
            plains.append(plain)
    results = {}
    for name in names:
        trainer, out = started.pop(name)
        results[name] = _finish_profile(
            trainer, cfgs[name], device, out, *windows[name], pairs=3 * repeats
        )
        del trainer
    return results


def _start_profile(
    cfg: RunConfig, dataset: Dataset, device: torch.device, steps: int, warmup: int
) -> tuple[Trainer, dict[str, Any]]:
    """A warmed-up trainer and its synchronised per-phase profile over ``steps`` steps."""
    _reset_peak(device)
    others = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    trainer = Trainer(cfg, dataset, device=device, sync_timing=True)
    for _ in range(warmup):
        trainer.train_step()
        trainer.step += 1
    lc = cfg.lifecycle
    if trainer.lifecycle is not None:  # one observed step too: its graph compiles here, not below
        _align(trainer, lc.medium_interval)
        trainer.step -= 1
        trainer.train_step()
        trainer.step += 1
    trainer.timings.clear()
    _reset_peak(device)
    for _ in range(steps):
        trainer.train_step()
        trainer.step += 1
    _sync(device)
    per_step = {k: v / steps for k, v in trainer.timings.items()}
    step_s = sum(per_step.get(k, 0.0) for k in _STEP_PARTS)
    peak = _peak_mb(device)
    trainer.sync_timing = False  # free-running from here: the step time a real run sees
    return trainer, {
        "params": live_parameter_count(trainer.model),
        "step_ms": step_s * 1e3,
        "phases_ms": {k: v * 1e3 for k, v in per_step.items()},
        # models profiled earlier stay resident while the next one runs: count only its own
        "peak_memory_mb": None if peak is None else peak - others / 2**20,
    }


def _time_windows(
    trainer: Trainer, cfg: RunConfig, device: torch.device, steps: int
) -> tuple[float, float]:
    """One free-running window over whole medium intervals and one of the steps between
    observation windows, ms per step each (the same window twice without a lifecycle)."""
    lc = cfg.lifecycle
    if trainer.lifecycle is None or lc.observe_steps >= lc.medium_interval:
        free = _free_running_ms(trainer, device, steps)
        return free, free
    _align(trainer, lc.medium_interval)
    plain = _free_running_ms(trainer, device, lc.medium_interval - lc.observe_steps)
    _align(trainer, lc.medium_interval)
    intervals = max(1, round(steps / lc.medium_interval))
    return _free_running_ms(trainer, device, intervals * lc.medium_interval), plain


def _observation_pairs(
    trainer: Trainer, cfg: RunConfig, device: torch.device, pairs: int
) -> list[float]:
    """What one observed step costs over a plain one, ms, from ``pairs`` pairs of short windows:
    ``n`` observed steps (the end of an observation window) and ``n`` plain steps (just after
    the next medium boundary), ``n`` the observation window's length or the steps between two
    windows if fewer, timed back to back, the order alternating from pair to pair. Short
    adjacent windows keep the host's drift (+-15% between rounds of an eager step on a GPU host)
    out of a difference of a few percent."""
    lc = cfg.lifecycle
    n = min(lc.observe_steps, lc.medium_interval - lc.observe_steps)
    extra = []
    for pair in range(pairs):
        timed = {}
        for observed in (True, False) if pair % 2 == 0 else (False, True):
            if observed:  # the last n steps before a boundary observe
                trainer.step += (-trainer.step - n) % lc.medium_interval
            else:  # the first n after one do not
                _align(trainer, lc.medium_interval)
            timed[observed] = _free_running_ms(trainer, device, n)
        extra.append(timed[True] - timed[False])
    return extra


def _finish_profile(
    trainer: Trainer,
    cfg: RunConfig,
    device: torch.device,
    out: dict[str, Any],
    frees: list[float],
    plains: list[float],
    pairs: int,
) -> dict[str, Any]:
    """``out`` with the windows' medians, FLOPs and MFU, and the lifecycle's events and share."""
    lc = cfg.lifecycle
    free_ms, plain_ms = statistics.median(frees), statistics.median(plains)
    out.update(
        free_step_ms=free_ms,
        plain_step_ms=plain_ms,
        free_step_ms_windows=frees,
        plain_step_ms_windows=plains,
    )
    n_params = out["params"] - trainer.model.wpe.weight.numel()
    fpt = flops_per_token(n_params, _attention_widths(trainer), trainer.probe[0].shape[1])
    tokens_per_step = cfg.train.batch_size * cfg.model.block_size
    out["flops_per_token"] = fpt
    device_peak = peak_flops(device)
    free_s = out["free_step_ms"] / 1e3
    out["mfu"] = tokens_per_step / free_s * fpt / device_peak if device_peak else None
    if trainer.lifecycle is not None:
        if lc.observe_steps < lc.medium_interval:
            # Tubes and per-slot gradient statistics: an observed step's extra cost from short
            # paired windows (the median over pairs), at the share of steps that observe.
            extra = _observation_pairs(trainer, cfg, device, pairs)
            out["observed_step_extra_ms"] = statistics.median(extra)
            out["observed_step_extra_ms_pairs"] = extra
            observed = out["observed_step_extra_ms"] * lc.observe_steps / lc.medium_interval
        else:  # every step observes: the plain step has no counterpart to compare with
            observed = 0.0
        out.update(_profile_lifecycle(trainer, device))
        out["observation_ms_per_step"] = max(0.0, observed)
        per_step_lifecycle = (
            out["observation_ms_per_step"] / 1e3
            + out["medium_rest_ms"] / 1e3 / lc.medium_interval
            + out["births_per_slow_interval"] * out["birth_ms"] / 1e3 / lc.slow_interval
            + out["slow_event_ms"] / 1e3 / lc.slow_interval
        )
        out["lifecycle_ms_per_step"] = per_step_lifecycle * 1e3
        out["lifecycle_overhead"] = per_step_lifecycle / free_s
        model_bytes = _tensor_bytes(dict(trainer.model.named_parameters()))
        optim_bytes = _tensor_bytes(trainer.optimizer.optimizer.state_dict()["state"])
        archive_bytes = sum(
            _tensor_bytes([e.genome for e in o.archive]) for o in trainer.model.organisms
        )
        out["archive_bytes"] = archive_bytes
        out["archive_memory_overhead"] = archive_bytes / (model_bytes + optim_bytes)
    return out


def _profile_lifecycle(trainer: Trainer, device: torch.device, repeats: int = 3) -> dict[str, Any]:
    """Time medium events in the gentle phase (with births) and slow ones in the full phase.

    One medium and one slow event run first, untimed in the means: their first calls pay one-off
    costs (kernel compilation and autotuning, lazily allocated archive columns) that a run pays
    once, not every interval. They are reported as ``*_first_ms``.
    """
    lc, life = trainer.cfg.lifecycle, trainer.lifecycle
    for _ in range(3):  # fill the gate's moving average so the gate stays open
        loss = trainer.train_step()[0]
        life.gate.observe(loss)

    def timed(event) -> tuple[float, dict]:
        _sync(device)
        t0 = time.perf_counter()
        record = event()
        _sync(device)
        return (time.perf_counter() - t0) * 1e3, record

    def medium():
        return life.medium(lc.warmup_steps, loss, trainer.probe)

    def slow():
        return life.slow(lc.gentle_steps)

    medium_first, _ = timed(medium)
    slow_first, _ = timed(slow)
    trainer.timings.clear()
    mediums = [timed(medium) for _ in range(repeats)]
    slows = [timed(slow) for _ in range(repeats)]
    parts = {k.removeprefix("lifecycle/"): v * 1e3 / repeats for k, v in trainer.timings.items()}
    births = sum(r["births"] for _, r in mediums)
    medium_ms = statistics.mean(t for t, _ in mediums)
    deaths = statistics.mean(r["deaths"] for _, r in slows)
    return {
        "medium_event_ms": medium_ms,
        # A medium event apart from its births, and one birth: births only refill slots that
        # deaths emptied (a full pool has no room), so a run pays as many per slow interval as
        # its slow event culls, not the few per medium event these timed events hold.
        "medium_rest_ms": medium_ms - parts.get("births", 0.0),
        "birth_ms": parts.get("births", 0.0) * repeats / births if births else 0.0,
        "births_per_slow_interval": deaths,
        "medium_births": [r["births"] for _, r in mediums],
        "slow_event_ms": statistics.mean(t for t, _ in slows),
        "slow_deaths": [r["deaths"] for _, r in slows],
        "medium_first_ms": medium_first,
        "slow_first_ms": slow_first,
        "lifecycle_parts_ms": parts,  # per event: measure, fitness, archive, births; cull, ...
    }


def train_for(
    cfg: RunConfig,
    dataset: Dataset,
    device: torch.device,
    seconds: float,
    out: Path,
    eval_interval: int = 10**9,
) -> dict[str, Any]:
    """Train a fresh model for ``seconds`` of wall time, the cosine decay following the clock,
    evaluating every ``eval_interval`` steps (the summary's ``best_val`` is the best of them)."""
    cfg = cfg.replace(
        train={"steps": 10**9, "eval_interval": eval_interval, "checkpoint_interval": 10**9}
    )
    clock: list[float] = []

    def by_time(step: int) -> float:
        if not clock:
            clock.append(time.perf_counter())
        progress = (time.perf_counter() - clock[0]) / seconds
        return learning_rate(step, cfg.train, progress=progress)

    run = RunDir.create(out, cfg.model.kind)
    trainer = Trainer(cfg, dataset, run_dir=run, device=device, lr_schedule=by_time)
    _reset_peak(device)
    summary = trainer.fit(max_seconds=seconds)
    summary["peak_memory_mb"] = _peak_mb(device)
    summary["run_dir"] = str(run.path)
    return summary


def train_steps(
    cfg: RunConfig, dataset: Dataset, device: torch.device, steps: int, out: Path,
    eval_interval: int,
) -> dict[str, Any]:  # fmt: skip
    """Train a fresh model for ``steps`` steps, the cosine decay over those steps (the
    equal-steps budget), evaluating every ``eval_interval`` steps and at the end."""
    cfg = cfg.replace(
        train={"steps": steps, "eval_interval": min(eval_interval, steps),
               "checkpoint_interval": steps}
    )  # fmt: skip
    run = RunDir.create(out, cfg.model.kind)
    trainer = Trainer(cfg, dataset, run_dir=run, device=device)
    _reset_peak(device)
    summary = trainer.fit()
    summary["peak_memory_mb"] = _peak_mb(device)
    summary["run_dir"] = str(run.path)
    return summary


SWEEP_SEED_OFFSET = 17  # sweep runs' seed: their evaluation batches are not the final runs'


def sweep_lr(
    cfg: RunConfig, dataset: Dataset, device: torch.device, lrs: list[float], seconds: float,
    out: Path, eval_interval: int,
) -> dict[str, Any]:  # fmt: skip
    """Train ``cfg`` briefly (``seconds`` each, cosine over the clock) at each peak LR of ``lrs``
    and pick the one with the best held-out loss. The sweep runs use seed ``train.seed + 17``,
    so their evaluation (selection) batches are not the final runs' held-out batches. The floor
    keeps ``min_lr / lr``."""
    ratio = cfg.train.min_lr / cfg.train.lr
    seed = cfg.train.seed + SWEEP_SEED_OFFSET

    def score(lr: float) -> float:
        run_cfg = cfg.replace(train={"lr": lr, "min_lr": lr * ratio, "seed": seed})
        summary = train_for(run_cfg, dataset, device, seconds, out / f"lr{lr:g}", eval_interval)
        return summary.get("best_val", math.nan)

    return pick_lr(lrs, score)


def _lrs(text: str) -> list[float]:
    """``"3e-4,1e-3,3e-3"`` as floats. Raises ValueError naming a bad item."""
    out = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"--lr-sweep: {item!r} is not a number") from None
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--lr-sweep: expected positive learning rates, got {item!r}")
        out.append(value)
    if len(set(out)) < 3:
        raise ValueError(f"--lr-sweep: expected at least 3 distinct learning rates, got {text!r}")
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec) if isinstance(value, int | float) else str(value)


def _table(results: dict[str, Any]) -> str:
    s, b = results["slime"], results["baseline"]
    rows = [
        ("parameters (start)", s["profile"]["params"], b["profile"]["params"]),
        ("parameters (end)", s["train"]["params"], b["train"]["params"]),
        ("steps in budget", s["train"]["steps"], b["train"]["steps"]),
        ("val loss (end)", s["train"].get("val_loss"), b["train"].get("val_loss")),
        ("best val loss", s["train"].get("best_val"), b["train"].get("best_val")),
        ("  reached at s", s["train"].get("best_time_s"), b["train"].get("best_time_s")),
        ("  reached at step", s["train"].get("best_step"), b["train"].get("best_step")),
        ("train loss", s["train"].get("train_loss"), b["train"].get("train_loss")),
        ("tokens/s (whole run)", s["train"]["tokens_per_s"], b["train"]["tokens_per_s"]),
        ("step ms (free-running)", s["profile"]["free_step_ms"], b["profile"]["free_step_ms"]),
        ("  between observations", s["profile"]["plain_step_ms"], b["profile"]["plain_step_ms"]),
        ("step ms (phases synced)", s["profile"]["step_ms"], b["profile"]["step_ms"]),
        ("peak memory MB (train)", s["train"]["peak_memory_mb"], b["train"]["peak_memory_mb"]),
        ("MFU (profiled)", s["profile"]["mfu"], b["profile"]["mfu"]),
    ]
    if "sweep" in s:
        rows.insert(0, ("peak lr (swept)", s["sweep"]["lr"], b["sweep"]["lr"]))
    if s["train"].get("target_loss") is not None:
        rows += [
            (f"time to {s['train']['target_loss']:g} (s)", s["train"].get("target_time_s"),
             b["train"].get("target_time_s")),
            ("  steps to it", s["train"].get("target_step"), b["train"].get("target_step")),
        ]  # fmt: skip
    if "train_steps" in s:
        t, u = s["train_steps"], b["train_steps"]
        rows += [
            (f"equal steps ({t['steps']}): best val", t.get("best_val"), u.get("best_val")),
            ("  reached at step", t.get("best_step"), u.get("best_step")),
            ("  wall s", t["elapsed_s"], u["elapsed_s"]),
        ]
        if t.get("target_loss") is not None:
            rows += [
                ("  time to target (s)", t.get("target_time_s"), u.get("target_time_s")),
                ("  steps to target", t.get("target_step"), u.get("target_step")),
            ]
    for phase in ("forward", "backward", "grad_norms", "optimizer", "fitness"):
        rows.append(
            (
                f"  {phase} ms/step",
                s["profile"]["phases_ms"].get(phase),
                b["profile"]["phases_ms"].get(phase),
            )
        )
    lines = [f"{'':28s} {'slime':>14s} {'baseline':>14s}"]
    lines += [f"{name:28s} {_fmt(x):>14s} {_fmt(y):>14s}" for name, x, y in rows]
    r = results["ratios"]
    lines.append("")
    lines.append(
        f"medium event ms: {_fmt(s['profile'].get('medium_event_ms'))} "
        f"(first {_fmt(s['profile'].get('medium_first_ms'))}; "
        f"{_fmt(s['profile'].get('medium_rest_ms'))} apart from births, "
        f"{_fmt(s['profile'].get('birth_ms'))} a birth), "
        f"slow event ms: {_fmt(s['profile'].get('slow_event_ms'))} "
        f"(first {_fmt(s['profile'].get('slow_first_ms'))})"
    )
    lines.append(
        f"observation ms per step: {_fmt(s['profile'].get('observation_ms_per_step'))} "
        f"(an observed step {_fmt(s['profile'].get('observed_step_extra_ms'))} ms over a plain "
        f"one, median of paired windows)"
    )
    lines.append(f"lifecycle parts ms: {s['profile'].get('lifecycle_parts_ms')}")
    for name, value in r.items():
        lines.append(f"{name:40s} {_fmt(value)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slime.train.compare", description=__doc__)
    parser.add_argument(
        "--data-dir",
        help="folder holding the corpus (default: $SLIME_DATA_DIR, else the bundled tiny-shakespeare)",
    )
    parser.add_argument("--seconds", type=float, default=300.0, help="training wall time per model")
    parser.add_argument("--out", default="runs/compare", help="folder for compare.json and runs")
    parser.add_argument("--config", default="shakespeare", help="preset or YAML (model: slime)")
    parser.add_argument(
        "--pod-capacity",
        type=int,
        help="overrides model.pod_capacity (slots per layer; the preset's n_pods gives capacity "
        "= live, the issue's target; the baseline is the same either way)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--profile-steps",
        type=int,
        default=100,
        help="steps per timing (rounded to whole medium intervals for the free-running one)",
    )
    parser.add_argument(
        "--profile-repeats",
        type=int,
        default=3,
        help="free-running windows timed per kind; the median is reported",
    )
    parser.add_argument(
        "--modes",
        default="eager",
        help="comma-separated: eager, compiled (train.compile), graphs (train.cuda_graphs); "
        "each mode runs both models",
    )
    parser.add_argument(
        "--eval-interval",
        type=int,
        default=250,
        help="steps between held-out evaluations while training (both models pay for them); "
        "the table reports the best held-out loss and when it was reached",
    )
    parser.add_argument(
        "--fitness-task",
        choices=("masked", "taylor"),
        help="overrides fitness.task (taylor: no probe forwards on the medium timescale)",
    )
    parser.add_argument(
        "--lr-sweep",
        help="comma-separated peak LRs (at least 3, e.g. 3e-4,1e-3,3e-3): each model trains "
        "briefly at each (--sweep-seconds) and its runs use the one with the best held-out loss",
    )
    parser.add_argument(
        "--sweep-seconds", type=float, help="seconds per sweep run (default: --seconds / 10)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        help="also train each model this many steps (the equal-steps budget, cosine over them)",
    )
    parser.add_argument(
        "--target-loss",
        type=float,
        help="report each run's time and steps until the held-out loss first reaches this",
    )
    args = parser.parse_args(argv)
    try:
        args.lrs = _lrs(args.lr_sweep) if args.lr_sweep else None
    except ValueError as exc:
        parser.error(str(exc))
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps: expected a positive step count, got {args.steps}")
    if args.profile_steps < 1:
        parser.error(f"--profile-steps: expected a positive step count, got {args.profile_steps}")
    if args.profile_repeats < 1:
        parser.error(f"--profile-repeats: expected at least 1 window, got {args.profile_repeats}")
    if args.target_loss is not None and not (
        math.isfinite(args.target_loss) and args.target_loss > 0
    ):
        parser.error(f"--target-loss: expected a positive loss, got {args.target_loss}")
    if args.sweep_seconds is not None and not args.sweep_seconds > 0:
        parser.error(f"--sweep-seconds: expected a positive time, got {args.sweep_seconds}")
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; expected some of {', '.join(MODES)}")
    try:
        device = resolve_device(args.device)
        base_cfg = load_config(args.config).replace(
            train={"device": str(device), "target_loss": args.target_loss}
        )
        if args.fitness_task is not None:
            base_cfg = base_cfg.replace(fitness={"task": args.fitness_task})
        if args.pod_capacity is not None:
            base_cfg = base_cfg.replace(model={"pod_capacity": args.pod_capacity})
    except ConfigError as exc:
        parser.error(str(exc))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if base_cfg.train.cpu_threads is not None:
        torch.set_num_threads(base_cfg.train.cpu_threads)  # process-wide, at the script's edge
    dataset = build_dataset(base_cfg.data, base_cfg.model.block_size, args.data_dir)
    results: dict[str, Any] = {"device": str(device), "seconds": args.seconds}
    if device.type == "cuda":
        results["device_name"] = torch.cuda.get_device_name(device)
    results["torch"] = torch.__version__
    results["modes"] = {}
    for mode in modes:
        results["modes"][mode] = _compare(base_cfg, mode, dataset, device, args, out / mode)
    (out / "compare.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    for mode in modes:
        print(f"\n== {mode} ==")
        print(_table(results["modes"][mode]))
    print(f"\nwritten: {out / 'compare.json'}")
    return 0


def _compare(
    base_cfg: RunConfig,
    mode: str,
    dataset: Dataset,
    device: torch.device,
    args: argparse.Namespace,
    out: Path,
) -> dict[str, Any]:
    """Profile and train both models in ``mode``; their results and the ratios."""
    torch._dynamo.reset()
    results: dict[str, Any] = {}
    cfgs, sweeps = {}, {}
    for kind in ("baseline", "slime"):
        graphs = mode == "graphs"
        cfg = base_cfg.replace(
            model={"kind": kind}, train={"compile": mode != "eager", "cuda_graphs": graphs}
        )
        if args.lrs is not None:
            seconds = args.sweep_seconds or args.seconds / 10
            print(f"[{mode}] lr sweep {kind}: {args.lrs}, {seconds:.0f} s each", file=sys.stderr)
            sweep = sweeps[kind] = sweep_lr(
                cfg, dataset, device, args.lrs, seconds, out / "sweep", args.eval_interval
            )
            ratio = cfg.train.min_lr / cfg.train.lr
            cfg = cfg.replace(train={"lr": sweep["lr"], "min_lr": sweep["lr"] * ratio})
            print(f"  {kind}: {sweep['scores']} -> lr {sweep['lr']:g}", file=sys.stderr)
        cfgs[kind] = cfg
    print(f"[{mode}] profiling both models, their timed windows in turn ...", file=sys.stderr)
    profiles = profile_models(
        cfgs, dataset, device, args.profile_steps, repeats=args.profile_repeats
    )
    for kind, cfg in cfgs.items():
        print(f"[{mode}] training {kind} for {args.seconds:.0f} s ...", file=sys.stderr)
        trained = train_for(cfg, dataset, device, args.seconds, out, args.eval_interval)
        print(
            f"  {kind}: {trained['steps']} steps, val loss {trained.get('val_loss', math.nan):.4f}"
            f" (best {trained.get('best_val', math.nan):.4f})",
            file=sys.stderr,
        )
        results[kind] = {"profile": profiles[kind], "train": trained, "config": cfg.to_dict()}
        if kind in sweeps:
            results[kind]["sweep"] = sweeps[kind]
        if args.steps is not None:
            print(f"[{mode}] training {kind} for {args.steps} steps ...", file=sys.stderr)
            results[kind]["train_steps"] = train_steps(
                cfg, dataset, device, args.steps, out / "steps", args.eval_interval
            )
    s, b = results["slime"], results["baseline"]
    rounds = _round_ratios(s, b)
    results["ratios"] = {
        "lifecycle time / slime step": s["profile"].get("lifecycle_overhead"),
        "slime step / baseline step": _ratio(
            s["profile"]["free_step_ms"], b["profile"]["free_step_ms"]
        ),
        # The same ratio window by window (round i of slime over round i of the baseline): how
        # far one run's median can be trusted (two runs of this command have differed by 0.15).
        "  per round, lowest": min(rounds, default=None),
        "  per round, highest": max(rounds, default=None),
        "slime step between observations / baseline step": _ratio(
            s["profile"]["plain_step_ms"], b["profile"]["free_step_ms"]
        ),
        "slime tokens/s / baseline tokens/s": _ratio(
            s["train"]["tokens_per_s"], b["train"]["tokens_per_s"]
        ),
        "archive bytes / (params + optimizer) bytes": s["profile"].get("archive_memory_overhead"),
        "slime peak memory / baseline peak memory": _ratio(
            s["train"]["peak_memory_mb"], b["train"]["peak_memory_mb"]
        ),
    }
    return results


def _round_ratios(slime: dict[str, Any], baseline: dict[str, Any]) -> list[float]:
    """Slime's free-running window of each round over the baseline's of the same round."""
    pairs = zip(
        slime["profile"]["free_step_ms_windows"],
        baseline["profile"]["free_step_ms_windows"],
        strict=True,
    )
    return [s / b for s, b in pairs if b > 0]


if __name__ == "__main__":
    sys.exit(main())
