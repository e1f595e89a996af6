"""Benchmark: quality-diversity search with our emitters against pyribs at equal evaluations.

    python -m slime.memory.qd_bench                  # ours on the CPU, pyribs alongside
    python -m slime.memory.qd_bench --device cuda    # ours on the GPU (pyribs runs on the CPU)
    python -m slime.memory.qd_bench --device cpu cuda --json qd.json
    python -m slime.memory.qd_bench --device cuda --eigen-device cpu  # + CMA-ME, eigh on CPU

Both sides run the same algorithms with the settings of pyribs' ``examples/sphere.py``: a
100 x 100 grid over the linear-projection measures, ``x0 = 0``, 540 solutions per iteration as

- ``cma_me``: 15 improvement-ranked CMA-ES searches of 36 (ranker ``2imp``, ``filter``
  selection, ``no_improvement`` restarts, ``sigma0 = 0.5``); pyribs as 15 emitters, ours as one
  emitter with ``instances=15``;
- ``map_elites``: one Gaussian emitter, ``sigma = 0.5``;
- ``line_map_elites``: one iso-line emitter, ``iso_sigma = 0.5``, ``line_sigma = 0.2``.

Each (problem, dimension, algorithm) runs ``--seeds`` seeds per side. The QD score and coverage
are read at ``--checkpoints`` evenly spaced iterations; wall time covers the whole loop (ask,
evaluate, tell and those reads), after an untimed warm-up of each configuration. The table
gives the means over seeds (± sample standard deviation of the final QD score) and, for our
rows, the wall time at the first checkpoint whose mean QD score reaches pyribs' final mean.
Without pyribs (``ribs``) only our rows are printed. Both sides evaluate with
:mod:`slime.memory.problems` (pyribs' solutions go through torch on the CPU). On an accelerator
our scheduler adds with ``check=False`` (the problems' values are finite), so a ``tell`` does
not wait for the device. Defaults (dims 100
and 1000, 300 iterations, 3 seeds) take ~4 minutes, mostly pyribs' CMA-ME at dimension 1000;
``--eigen-device cpu`` is meant for dimension 100 (at 1000 a one-thread CPU ``eigh`` of 15
matrices takes seconds).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from slime.memory.bench import ribs_and_versions
from slime.memory.emitters import EvolutionStrategyEmitter, GaussianEmitter, IsoLineEmitter
from slime.memory.grid import GridArchive
from slime.memory.problems import PROBLEMS, measure_ranges
from slime.memory.schedulers import Scheduler

ALGORITHMS = ("cma_me", "map_elites", "line_map_elites")
SIGMA = 0.5
ISO_SIGMA, LINE_SIGMA = 0.5, 0.2
BATCH = 540
CMA_SEARCHES, CMA_BATCH = 15, 36

Problem = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Trace:
    """One run: QD score, coverage and elapsed wall time at each checkpoint."""

    side: str  # "pyribs (cpu)" or "ours (<device>)"
    problem: str
    algorithm: str
    dim: int
    seed: int
    evaluations: list[int]
    qd_score: list[float]
    coverage: list[float]
    seconds: list[float]


def _ours(
    algorithm: str, dim: int, grid: int, device: str, seed: int, eigen_device: str | None = None
) -> Scheduler:
    cells = grid * grid
    archive = GridArchive((grid, grid), measure_ranges(dim), device=device, max_size=cells)
    generator = torch.Generator(device=device).manual_seed(seed)
    x0 = torch.zeros(dim)
    if algorithm == "cma_me":
        emitter = EvolutionStrategyEmitter(
            archive,
            x0=x0,
            sigma0=SIGMA,
            instances=CMA_SEARCHES,
            batch_size=CMA_BATCH,
            generator=generator,
            eigen_device=eigen_device,
        )
    elif algorithm == "map_elites":
        emitter = GaussianEmitter(
            archive, sigma=SIGMA, x0=x0, batch_size=BATCH, generator=generator
        )
    else:
        emitter = IsoLineEmitter(
            archive,
            iso_sigma=ISO_SIGMA,
            line_sigma=LINE_SIGMA,
            x0=x0,
            batch_size=BATCH,
            generator=generator,
        )
    # Our problems give finite values, so on a device tell need not wait for a finiteness check.
    return Scheduler(archive, [emitter], check=device == "cpu")


def _theirs(algorithm: str, dim: int, grid: int, seed: int) -> Any:
    from ribs.archives import GridArchive as RibsGrid
    from ribs.emitters import EvolutionStrategyEmitter as RibsES
    from ribs.emitters import GaussianEmitter as RibsGaussian
    from ribs.emitters import IsoLineEmitter as RibsIsoLine
    from ribs.schedulers import Scheduler as RibsScheduler

    archive = RibsGrid(solution_dim=dim, dims=(grid, grid), ranges=measure_ranges(dim), seed=seed)
    x0 = np.zeros(dim)
    seeds = np.random.SeedSequence(seed).spawn(CMA_SEARCHES)
    if algorithm == "cma_me":
        emitters = [
            RibsES(
                archive,
                x0=x0,
                sigma0=SIGMA,
                ranker="2imp",
                selection_rule="filter",
                restart_rule="no_improvement",
                batch_size=CMA_BATCH,
                seed=s,
            )
            for s in seeds
        ]
    elif algorithm == "map_elites":
        emitters = [RibsGaussian(archive, sigma=SIGMA, x0=x0, batch_size=BATCH, seed=seeds[0])]
    else:
        emitters = [
            RibsIsoLine(
                archive,
                iso_sigma=ISO_SIGMA,
                line_sigma=LINE_SIGMA,
                x0=x0,
                batch_size=BATCH,
                seed=seeds[0],
            )
        ]
    return RibsScheduler(archive, emitters)


def run_ours(
    problem: str,
    algorithm: str,
    dim: int,
    iterations: int,
    device: str,
    seed: int,
    *,
    grid: int = 100,
    checkpoints: int = 10,
    eigen_device: str | None = None,
) -> Trace:
    """One search with our scheduler on ``device`` (CMA-ES eigendecompositions on
    ``eigen_device``, default the same)."""
    scheduler = _ours(algorithm, dim, grid, device, seed, eigen_device)
    evaluate = PROBLEMS[problem]

    def step() -> int:
        solutions = scheduler.ask()
        objectives, measures = evaluate(solutions)
        scheduler.tell(objectives, measures)
        return solutions.shape[0]

    def read() -> tuple[float, float]:
        stats = scheduler.archive.stats  # one host transfer; it also waits for the device
        return stats.qd_score, stats.coverage

    side = f"ours ({device})" if eigen_device is None else f"ours ({device}, eigh {eigen_device})"
    return _trace(side, problem, algorithm, dim, seed, iterations, checkpoints, step, read)


def run_theirs(
    problem: str,
    algorithm: str,
    dim: int,
    iterations: int,
    seed: int,
    *,
    grid: int = 100,
    checkpoints: int = 10,
) -> Trace:
    """One search with pyribs (numpy, CPU); solutions are evaluated by the same functions."""
    scheduler = _theirs(algorithm, dim, grid, seed)
    evaluate = PROBLEMS[problem]

    def step() -> int:
        solutions = scheduler.ask()
        objectives, measures = evaluate(torch.from_numpy(solutions))
        scheduler.tell(objectives.numpy(), measures.numpy())
        return solutions.shape[0]

    def read() -> tuple[float, float]:
        stats = scheduler.archive.stats
        return float(stats.qd_score), float(stats.coverage)

    return _trace(
        "pyribs (cpu)", problem, algorithm, dim, seed, iterations, checkpoints, step, read
    )


def _trace(
    side: str,
    problem: str,
    algorithm: str,
    dim: int,
    seed: int,
    iterations: int,
    checkpoints: int,
    step: Callable[[], int],
    read: Callable[[], tuple[float, float]],
) -> Trace:
    marks = sorted({max(1, round(iterations * (i + 1) / checkpoints)) for i in range(checkpoints)})
    evaluations, qd, coverage, seconds = [], [], [], []
    done = 0
    start = time.perf_counter()
    for iteration in range(1, iterations + 1):
        done += step()
        if iteration in marks:
            score, covered = read()
            seconds.append(time.perf_counter() - start)
            evaluations.append(done)
            qd.append(score)
            coverage.append(covered)
    return Trace(side, problem, algorithm, dim, seed, evaluations, qd, coverage, seconds)


def _mean(rows: list[list[float]]) -> list[float]:
    return [statistics.fmean(column) for column in zip(*rows, strict=True)]


def summarise(traces: list[Trace]) -> list[dict[str, Any]]:
    """One row per (problem, dim, algorithm, side): means over seeds, and for our rows the wall
    time at which the mean QD score first reaches pyribs' final mean (None if never)."""
    groups: dict[tuple, list[Trace]] = {}
    for t in traces:
        groups.setdefault((t.problem, t.dim, t.algorithm, t.side), []).append(t)
    finals = {
        key[:3]: statistics.fmean(t.qd_score[-1] for t in group)
        for key, group in groups.items()
        if key[3].startswith("pyribs")
    }
    rows = []
    for (problem, dim, algorithm, side), group in groups.items():
        qd = _mean([t.qd_score for t in group])
        seconds = _mean([t.seconds for t in group])
        final = [t.qd_score[-1] for t in group]
        target = finals.get((problem, dim, algorithm))
        reach = None
        if target is not None and not side.startswith("pyribs"):
            reach = next((s for q, s in zip(qd, seconds) if q >= target), None)
        rows.append(
            {
                "problem": problem,
                "dim": dim,
                "algorithm": algorithm,
                "side": side,
                "seeds": len(group),
                "evaluations": group[0].evaluations[-1],
                "qd_mid": qd[(len(qd) - 1) // 2],
                "evaluations_mid": group[0].evaluations[(len(qd) - 1) // 2],
                "qd_final": statistics.fmean(final),
                "qd_sd": statistics.stdev(final) if len(final) > 1 else 0.0,
                "coverage": statistics.fmean(t.coverage[-1] for t in group),
                "seconds": seconds[-1],
                "seconds_to_pyribs_qd": reach,
                "pyribs_qd": target,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| problem | dim | algorithm | side | seeds | evals | QD score (mid-run) | QD score "
        "(final) | vs pyribs | coverage | wall s | s to pyribs' final QD | speed-up |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mid = f"{r['qd_mid']:,.0f} @ {r['evaluations_mid']:,}"
        final = f"{r['qd_final']:,.0f} ± {r['qd_sd']:,.0f}"
        ratio = speed = reach = "–"
        if r["pyribs_qd"] and not r["side"].startswith("pyribs"):
            ratio = f"{r['qd_final'] / r['pyribs_qd']:.3f}"
            theirs = next(
                o["seconds"]
                for o in rows
                if o["side"].startswith("pyribs")
                and (o["problem"], o["dim"], o["algorithm"])
                == (r["problem"], r["dim"], r["algorithm"])
            )
            speed = f"{theirs / r['seconds']:.2f}x"
            if r["seconds_to_pyribs_qd"] is not None:
                reach = f"{r['seconds_to_pyribs_qd']:.2f}"
            else:
                reach = "not reached"
        lines.append(
            f"| {r['problem']} | {r['dim']} | {r['algorithm']} | {r['side']} | {r['seeds']} "
            f"| {r['evaluations']:,} | {mid} | {final} | {ratio} | {r['coverage']:.3f} "
            f"| {r['seconds']:.2f} | {reach} | {speed} |"
        )
    return "\n".join(lines)


def _warm_up(args: argparse.Namespace, with_ribs: bool, algorithm: str, dim: int) -> None:
    """Untimed runs: pyribs' numba kernels, torch's first calls, CUDA/cuSOLVER handles. On an
    accelerator the CMA-ES warm-up lasts until its first eigendecomposition."""
    short = dict(grid=args.grid, checkpoints=1)
    for device, eigen_device in _variants(args, algorithm):
        iterations = 2
        if algorithm == "cma_me" and device != "cpu":
            probe = _ours(algorithm, dim, args.grid, device, 0).emitters[0]
            iterations = math.ceil(probe.es.eigen_gap / CMA_BATCH) + 2
            where = eigen_device or device
            torch.linalg.eigh(torch.eye(dim, dtype=torch.float64, device=where).expand(2, -1, -1))
        run_ours(
            args.problem,
            algorithm,
            dim,
            iterations,
            device,
            10_000,
            eigen_device=eigen_device,
            **short,
        )
    if with_ribs:
        run_theirs(args.problem, algorithm, dim, 2, 10_000, **short)


def _variants(args: argparse.Namespace, algorithm: str) -> list[tuple[str, str | None]]:
    """(device, eigen_device) pairs to run ours with: ``--eigen-device`` only matters for CMA-ES
    and only where it differs from the device."""
    pairs = []
    for device in args.device:
        pairs.append((device, None))
        if algorithm == "cma_me":
            pairs += [(device, e) for e in args.eigen_device if e != device.split(":")[0]]
    return pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", nargs="+", default=["cpu"], help="our devices (cpu, cuda)")
    parser.add_argument("--problem", default="sphere", choices=sorted(PROBLEMS))
    parser.add_argument("--dims", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--iterations", type=int, default=300, help="540 evaluations each")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--grid", type=int, default=100, help="cells per measure (grid side)")
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument(
        "--eigen-device",
        nargs="*",
        default=[],
        help="also run CMA-ME with its eigendecompositions on these devices (e.g. cpu)",
    )
    parser.add_argument("--no-ribs", action="store_true", help="skip pyribs even if installed")
    parser.add_argument("--json", help="also write every trace and the table rows here")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1, like pyribs' numpy; 0 keeps torch's default)",
    )
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with_ribs, versions = ribs_and_versions(args.no_ribs)
    for device in args.device:
        if device.startswith("cuda"):
            versions.append(torch.cuda.get_device_name(device))
    versions.append(f"torch threads {torch.get_num_threads()}")
    print(f"# {', '.join(versions)}; {platform.machine()}; {args.problem}", flush=True)
    traces: list[Trace] = []
    settings = dict(grid=args.grid, checkpoints=args.checkpoints)
    for dim in args.dims:
        for algorithm in args.algorithms:
            _warm_up(args, with_ribs, algorithm, dim)
            for seed in range(args.seeds):
                if with_ribs:
                    traces.append(
                        run_theirs(args.problem, algorithm, dim, args.iterations, seed, **settings)
                    )
                for device, eigen_device in _variants(args, algorithm):
                    traces.append(
                        run_ours(
                            args.problem,
                            algorithm,
                            dim,
                            args.iterations,
                            device,
                            seed,
                            eigen_device=eigen_device,
                            **settings,
                        )
                    )
            done = [t for t in traces if (t.dim, t.algorithm) == (dim, algorithm)]
            for line in format_table(summarise(done)).splitlines()[2:]:
                print(line, flush=True)
    print()
    print(format_table(summarise(traces)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"traces": [asdict(t) for t in traces], "rows": summarise(traces)}, f, indent=1
            )


if __name__ == "__main__":
    main()
