"""``python -m slime.train.continual``: run the benchmark and write REPORT.md, results.json and PNGs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from slime.proto import SlimeError
from slime.train.ablations.suite import (
    PARTIAL,
    _clean,
    _print_verdicts,
    _write_partial,
    merge_files,
)
from slime.train.continual.analysis import analyse
from slime.train.continual.arms import ARMS
from slime.train.continual.merge import RESULT_KEYS, merge_results
from slime.train.continual.profiles import PROFILES, profile
from slime.train.continual.report import render_report, write_plots
from slime.train.continual.runner import run_continual
from slime.train.continual.streams import STREAMS

__all__ = ["PARTIAL", "main", "write_outputs"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m slime.train.continual",
        description="Continual language modelling: does head turnover keep a transformer plastic?",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu-small")
    parser.add_argument("--out", required=True, help="folder for REPORT.md, results.json, *.png")
    parser.add_argument("--streams", nargs="+", choices=STREAMS, help="default: the profile's")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), help="default: all")
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        help="seed indices to run (seed 1337 + i); default: 0 .. profile's seeds - 1",
    )
    parser.add_argument(
        "--data-dir", help="corpora folder (default: $SLIME_DATA_DIR, ../shared/data)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: profile's)")
    parser.add_argument("--deadline-s", type=float, help="start no (stream, seed) unit after this")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="RESULTS_JSON",
        help="run nothing: merge these results.json files (parts) into --out (one file: re-render)",
    )
    return parser


def write_outputs(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """Analyse ``results`` and write results.json, REPORT.md and the plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyse(results)
    payload = _clean({**results, "analysis": analysis})
    (out / "results.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    plots = write_plots(results, analysis, out)
    render_report(results, analysis, out / "REPORT.md", plots)
    return analysis


def _merge(paths: list[str], out: Path) -> int:
    return merge_files(
        paths, out, keys=RESULT_KEYS, what="continual", merge=merge_results, write=write_outputs,
        tool="continual",
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    if args.merge:
        return _merge(args.merge, out)
    prof = profile(args.profile)
    if args.deadline_s is not None:
        import dataclasses

        prof = dataclasses.replace(prof, deadline_s=args.deadline_s)
    threads = args.threads if args.threads is not None else prof.threads
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        results = run_continual(
            prof,
            streams=tuple(args.streams) if args.streams else None,
            arms=tuple(args.arms) if args.arms else None,
            seeds=tuple(args.seeds) if args.seeds is not None else None,
            data_dir=args.data_dir,
            log=lambda line: print(line, flush=True),
            on_run=lambda partial: _write_partial(partial, out),
        )
        analysis = write_outputs(results, out)
        (out / PARTIAL).unlink(missing_ok=True)
    except SlimeError as exc:
        print(f"continual: error: {exc}", file=sys.stderr)
        return 2
    _print_verdicts(analysis, out)
    return 0
