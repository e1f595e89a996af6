"""``python -m slime.train.ablations``: run the suite and write REPORT.md, results.json and PNGs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from slime.proto import ConfigError, SlimeError
from slime.train.ablations.analysis import analyse
from slime.train.ablations.groups import GROUPS, groups
from slime.train.ablations.merge import merge_results
from slime.train.ablations.plots import write_plots
from slime.train.ablations.profiles import PROFILES, profile
from slime.train.ablations.report import render_report
from slime.train.ablations.runner import run_suite

__all__ = ["main", "write_outputs"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m slime.train.ablations",
        description="Ablations of blueprint §12: each comparison over seeds, with 95% intervals.",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu-small")
    parser.add_argument("--out", required=True, help="folder for REPORT.md, results.json, *.png")
    parser.add_argument("--groups", nargs="+", choices=[g.key for g in GROUPS], help="default: all")
    parser.add_argument("--seeds", type=int, help="runs per arm and task (default: profile's, 3)")
    parser.add_argument(
        "--seed-indices",
        type=int,
        nargs="+",
        metavar="I",
        help="run exactly these seeds (1337 + I) instead of --seeds: one part of a suite whose "
        "seeds are split over several commands, joined with --merge",
    )
    parser.add_argument("--steps", type=int, help="fix the steps per run (skips calibration)")
    parser.add_argument("--tasks", nargs="+", help="restrict the profile's tasks to these")
    parser.add_argument(
        "--data-dir", help="corpora folder (default: $SLIME_DATA_DIR, ../shared/data)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: profile's)")
    parser.add_argument(
        "--budget-s", type=float, help="seconds the calibrated suite may plan for (gpu-full: 360)"
    )
    parser.add_argument(
        "--deadline-s", type=float, help="start no run after this many seconds (gpu-full: 510)"
    )
    parser.add_argument(
        "--sweep-from",
        metavar="RESULTS_JSON",
        help="keep the learning rates and targets of this earlier results file's LR sweep and "
        "sweep only the arms and tasks it lacks (parts of one suite in separate commands)",
    )
    parser.add_argument(
        "--equal-time-s",
        type=float,
        help="training seconds of each equal-time run (default: the profile's)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        help="stop a run after this many evaluations without a new best held-out loss: --steps "
        "becomes a limit and each run trains to its plateau (default: the profile's, none)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="RESULTS_JSON",
        help="run nothing: merge these results.json files (parts of one suite) into --out "
        "(one file: render its report and plots again)",
    )
    return parser


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (results.json stays strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


PARTIAL = "results.partial.json"
_RESULT_KEYS = ("profile", "groups", "steps", "seeds", "params", "tasks", "runs", "device")


def _write_partial(results: dict[str, Any], out: Path) -> None:
    """The finished runs so far, replaced atomically after each run (``--merge`` reads it)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (PARTIAL + ".tmp")
    tmp.write_text(json.dumps(_clean(results)) + "\n", encoding="utf-8")
    tmp.replace(out / PARTIAL)


def write_outputs(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """Analyse ``results`` and write results.json, REPORT.md and the plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyse(results)
    payload = _clean({**results, "analysis": analysis})
    (out / "results.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    plots = write_plots(results, out)
    render_report(results, analysis, out / "REPORT.md", plots)
    return analysis


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.merge:
        return _merge(args.merge, Path(args.out))
    prof = profile(args.profile)
    if args.budget_s is not None:
        prof = dataclasses.replace(prof, time_budget_s=args.budget_s)
    if args.deadline_s is not None:
        prof = dataclasses.replace(prof, deadline_s=args.deadline_s)
    try:
        if args.equal_time_s is not None:
            prof = dataclasses.replace(prof, equal_time_s=args.equal_time_s)
        if args.patience is not None:
            prof = dataclasses.replace(prof, patience=args.patience)
        sweep = _read_sweep(args.sweep_from) if args.sweep_from else None
    except (OSError, json.JSONDecodeError, SlimeError) as exc:
        print(f"ablations: error: {exc}", file=sys.stderr)
        return 2
    threads = args.threads if args.threads is not None else prof.threads
    if threads is not None:
        torch.set_num_threads(threads)  # process-wide: set at the application's edge
    try:
        results = run_suite(
            prof,
            groups(args.groups),
            seeds=args.seeds,
            seed_indices=tuple(args.seed_indices) if args.seed_indices is not None else None,
            steps=args.steps,
            tasks=tuple(args.tasks) if args.tasks else None,
            data_dir=args.data_dir,
            log=lambda line: print(line, flush=True),
            on_run=lambda partial: _write_partial(partial, Path(args.out)),
            sweep=sweep,
        )
        analysis = write_outputs(results, Path(args.out))
        (Path(args.out) / PARTIAL).unlink(missing_ok=True)
    except SlimeError as exc:
        print(f"ablations: error: {exc}", file=sys.stderr)
        return 2
    _print_verdicts(analysis, Path(args.out))
    return 0


def _read_sweep(path: str) -> dict[str, Any]:
    """The ``sweep`` of the results file at ``path``. Raises ConfigError when it has none."""
    sweep = json.loads(Path(path).read_text(encoding="utf-8"))
    sweep = sweep.get("sweep") if isinstance(sweep, dict) else None
    if not isinstance(sweep, dict) or "lrs" not in sweep or "targets" not in sweep:
        raise ConfigError(f"{path} holds no LR sweep (lrs and targets)", "--sweep-from")
    return sweep


def _print_verdicts(analysis: dict[str, Any], out: Path) -> None:
    for key, entry in analysis.items():
        print(f"{key}: {entry['verdict']}")
    print(f"wrote {out / 'REPORT.md'}")


def _merge(paths: list[str], out: Path) -> int:
    return merge_files(
        paths, out, keys=_RESULT_KEYS, what="suite", merge=merge_results, write=write_outputs,
        tool="ablations",
    )  # fmt: skip


def merge_files(
    paths: list[str],
    out: Path,
    *,
    keys: Sequence[str],
    what: str,
    merge: Callable[[list[dict[str, Any]]], dict[str, Any]],
    write: Callable[[dict[str, Any], Path], dict[str, Any]],
    tool: str,
) -> int:
    """``--merge`` of a suite (this one or the continual benchmark): read the results files at
    ``paths`` (each must hold ``keys``), ``merge`` them (one file: render it again), ``write``
    the outputs into ``out`` and print the verdicts. Returns the exit status; errors are one
    line on stderr, prefixed ``tool``."""
    try:
        parts = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
        for path, part in zip(paths, parts, strict=True):
            missing = [k for k in keys if k not in part] if isinstance(part, dict) else ["*"]
            if missing:
                raise ConfigError(f"{path} is not a {what} results file: no {missing}", "--merge")
            part.pop("analysis", None)  # recomputed from the merged runs
        results = merge(parts) if len(parts) > 1 else parts[0]  # one: re-render only
        analysis = write(results, out)
    except (OSError, json.JSONDecodeError, SlimeError) as exc:
        print(f"{tool}: error: {exc}", file=sys.stderr)
        return 2
    _print_verdicts(analysis, out)
    return 0
