"""Benchmark: adds per second of slime.memory archives against pyribs on the same stream.

    python -m slime.memory.bench                 # CPU, pyribs alongside when installed
    python -m slime.memory.bench --device cuda   # our archives on the GPU (pyribs still on CPU)
    python -m slime.memory.bench --count-ops     # aten operations of one accelerator add

Each configuration feeds the same random stream (solutions, objectives, descriptors) to every
archive. On the CPU the archives take it batch by batch, alternating between them (which one
goes first rotates from batch to batch), and only the ``add`` calls are timed. On a GPU our adds
are the sync-free ones (``check=False``): each archive takes the whole stream back to back, with
one synchronisation at the end, as a training loop would pipeline them; the batches are on the
device and the payload dicts built before the clock starts, and pyribs takes the same stream
on the CPU, timed the same way. The stream is replayed ``--repeats`` times into fresh archives
and each archive's best rate is kept, which filters out the noise of a shared machine. Our
genomes are ``{"solution": row}`` payloads built outside the timer, as a training loop hands
over ``to_dict()`` results, or tensor columns. pyribs (``ribs``) is optional: without it only
our numbers are printed.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from slime.memory.archive import Archive
from slime.memory.cvt import CVTArchive
from slime.memory.graphed import GraphedAdd
from slime.memory.grid import GridArchive
from torch.utils._python_dispatch import TorchDispatchMode

GRID_DIMS = (100, 100)
CVT_CELLS = 1000
RANGES = [(-1.0, 1.0), (-1.0, 1.0)]


@dataclass(frozen=True)
class Row:
    archive: str
    solution_dim: int
    batch: int
    items: int
    columns: float  # adds per second, genomes as tensor columns {"solution": (B, dim)}
    payloads: float | None  # adds per second, genomes as B dicts {"solution": (dim,)}
    pyribs: float | None
    graphed: float | None = None  # adds per second, columns, add replayed from a CUDA graph

    def ratio(self, ours: float | None) -> str:
        return "n/a" if ours is None or self.pyribs is None else f"{ours / self.pyribs:.2f}x"


def _ours(kind: str, device: str, centroids: np.ndarray) -> Archive:
    if kind == "grid":
        cells = GRID_DIMS[0] * GRID_DIMS[1]
        return GridArchive(GRID_DIMS, RANGES, device=device, max_size=cells)
    return CVTArchive(
        CVT_CELLS, RANGES, centroids=torch.from_numpy(centroids), device=device, max_size=CVT_CELLS
    )


def _theirs(kind: str, solution_dim: int, centroids: np.ndarray):
    from ribs.archives import CVTArchive as RibsCVT
    from ribs.archives import GridArchive as RibsGrid

    if kind == "grid":
        return RibsGrid(solution_dim=solution_dim, dims=GRID_DIMS, ranges=RANGES, seed=0)
    return RibsCVT(solution_dim=solution_dim, centroids=centroids, ranges=RANGES, seed=0)


def measure(
    kind: str,
    solution_dim: int,
    batch: int,
    items: int,
    device: str,
    *,
    with_ribs: bool,
    with_payloads: bool,
    seed: int,
    with_graph: bool = False,
) -> Row:
    """Feed ``items`` random solutions in batches of ``batch`` to each archive; adds per second.

    ``with_graph`` (CUDA only) also times a column archive whose ``add`` is captured once in a
    CUDA graph and replayed for every batch after the first."""
    rng = np.random.default_rng(seed)
    centroids = rng.uniform(-1.0, 1.0, size=(CVT_CELLS, 2))
    columns = _ours(kind, device, centroids)
    payloads = _ours(kind, device, centroids) if with_payloads else None
    theirs = _theirs(kind, solution_dim, centroids) if with_ribs else None
    batches = max(1, items // batch)
    stream = [
        (
            rng.normal(size=(batch, solution_dim)),
            rng.normal(size=batch),
            rng.uniform(-1.1, 1.1, size=(batch, 2)),
        )
        for _ in range(batches)
    ]
    n = batches * batch
    if device.startswith("cuda"):
        rates = _pipelined(stream, device, columns, payloads, theirs)
        if with_graph and batches > 1:
            rates["graphed"] = _graph_replayed(stream, device, _ours(kind, device, centroids))
    else:
        rates = {k: n / v for k, v in _interleaved(stream, columns, payloads, theirs).items()}
    return Row(
        archive=f"{kind} ({columns.cells} cells)",
        solution_dim=solution_dim,
        batch=batch,
        items=n,
        columns=rates["columns"],
        payloads=rates["payloads"] if payloads is not None else None,
        pyribs=rates["pyribs"] if theirs is not None else None,
        graphed=rates.get("graphed"),
    )


def _interleaved(stream: list, columns: Archive, payloads: Archive | None, theirs) -> dict:
    """Seconds each archive spends in ``add`` (CPU): batch by batch, each add timed alone."""
    spent: dict[str, float] = {}
    for index, (solutions, objectives, descriptors) in enumerate(stream):
        solutions_t = torch.from_numpy(solutions)
        objectives_t = torch.from_numpy(objectives)
        descriptors_t = torch.from_numpy(descriptors)
        calls = [("columns", columns.add, ({"solution": solutions_t}, objectives_t, descriptors_t))]
        if payloads is not None:
            genomes = [{"solution": row} for row in solutions_t.unbind(0)]
            calls.append(("payloads", payloads.add, (genomes, objectives_t, descriptors_t)))
        if theirs is not None:
            calls.append(("pyribs", theirs.add, (solutions, objectives, descriptors)))
        # Rotate who goes first: the add right after building the batch pays for the caches
        # and allocator state that building (and freeing the last batch's) per-item objects
        # leaves; with a fixed order one contestant would always pay it.
        first = index % len(calls)
        for name, add, args in calls[first:] + calls[:first]:
            start = time.perf_counter()
            add(*args)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
    return spent


def _pipelined(
    stream: list, device: str, columns: Archive, payloads: Archive | None, theirs
) -> dict:
    """Adds per second of each archive over the whole stream, added back to back (our archives
    on ``device`` with ``check=False``, synchronised once at the end; pyribs on the CPU)."""
    on_device = [tuple(torch.from_numpy(array).to(device) for array in batch) for batch in stream]
    contestants: list[tuple[str, Callable[[], None]]] = []

    def add_columns() -> None:
        for solutions, objectives, descriptors in on_device:
            columns.add({"solution": solutions}, objectives, descriptors, check=False)

    contestants.append(("columns", add_columns))
    if payloads is not None:
        genomes = [[{"solution": row} for row in s.unbind(0)] for s, _, _ in on_device]

        def add_payloads() -> None:
            for dicts, (_, objectives, descriptors) in zip(genomes, on_device):
                payloads.add(dicts, objectives, descriptors, check=False)

        contestants.append(("payloads", add_payloads))
    if theirs is not None:

        def add_theirs() -> None:
            for solutions, objectives, descriptors in stream:
                theirs.add(solutions, objectives, descriptors)

        contestants.append(("pyribs", add_theirs))
    rates = {}
    items = sum(batch[1].shape[0] for batch in stream)
    for name, run in contestants:
        _synchronize(device)
        start = time.perf_counter()
        run()
        _synchronize(device)
        rates[name] = items / (time.perf_counter() - start)
    return rates


def _graph_replayed(stream: list, device: str, archive: Archive) -> float:
    """Adds per second of ``archive``'s column add replayed by a :class:`GraphedAdd`: built and
    given the first batch before the clock starts; each later batch is copied into the static
    inputs and the graph replayed, with one synchronisation at the end."""
    on_device = [tuple(torch.from_numpy(array).to(device) for array in batch) for batch in stream]
    solutions, objectives, descriptors = on_device[0]
    add = GraphedAdd(archive, {"solution": solutions})
    add({"solution": solutions}, objectives, descriptors)
    _synchronize(device)
    start = time.perf_counter()
    for solutions, objectives, descriptors in on_device[1:]:
        add({"solution": solutions}, objectives, descriptors)
    _synchronize(device)
    return sum(b[1].shape[0] for b in on_device[1:]) / (time.perf_counter() - start)


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class OpCount:
    archive: str
    solution_dim: int
    batch: int
    capacity: str  # "max_size >= cells" or the binding max_size
    thresholds: str  # "MAP-Elites" or "CMA-MAE"
    ops: int  # aten operations dispatched, views included
    views: int  # of which views (no kernel, but a dispatch each)


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None) -> Any:
        self.ops[str(func.overloadpacket)] += 1
        self.views += func.is_view
        return func(*args, **(kwargs or {}))


def count_ops(
    kind: str,
    solution_dim: int,
    batch: int,
    *,
    evicting: bool = False,
    cma_mae: bool = False,
    device: str = "meta",
) -> tuple[OpCount, collections.Counter[str]]:
    """aten operations of one sync-free column add (``check=False``) on the accelerator path,
    and how many of each: the batch after a first one (which allocates the genome buffers).

    On ``"meta"`` tensors (shapes only, no arithmetic) the add runs the code an accelerator
    runs, CVT's nearest-centroid search included; ``"cpu"`` forces the same tensor path on
    the CPU, where the CVT search takes ``cdist`` instead. Each operation costs a dispatch
    and, on an accelerator, a kernel launch, whatever the batch size: the time of a small
    eager add on a GPU is roughly their number times a few microseconds.
    """
    rng = np.random.default_rng(0)
    centroids = rng.uniform(-1.0, 1.0, size=(CVT_CELLS, 2))
    cells = GRID_DIMS[0] * GRID_DIMS[1] if kind == "grid" else CVT_CELLS
    options: dict[str, Any] = {"device": device, "max_size": cells // 2 if evicting else cells}
    if cma_mae:
        options.update(learning_rate=0.5, threshold_min=-1.0)
    if kind == "grid":
        archive: Archive = GridArchive(GRID_DIMS, RANGES, **options)
    else:
        options["nearest"] = "brute_force"
        archive = CVTArchive(CVT_CELLS, RANGES, centroids=torch.from_numpy(centroids), **options)
    archive._host = False
    counter = _OpCounter()
    for counted in (False, True):
        solutions = torch.from_numpy(rng.normal(size=(batch, solution_dim))).to(device)
        objectives = torch.from_numpy(rng.normal(size=batch)).to(device)
        descriptors = torch.from_numpy(rng.uniform(-1.1, 1.1, size=(batch, 2))).to(device)
        if counted:
            with counter:
                archive.add({"solution": solutions}, objectives, descriptors, check=False)
        else:
            archive.add({"solution": solutions}, objectives, descriptors, check=False)
    row = OpCount(
        archive=f"{kind} ({cells} cells)",
        solution_dim=solution_dim,
        batch=batch,
        capacity=f"max_size {cells // 2}" if evicting else "max_size >= cells",
        thresholds="CMA-MAE" if cma_mae else "MAP-Elites",
        ops=sum(counter.ops.values()),
        views=counter.views,
    )
    return row, counter.ops


def _format_counts(rows: list[tuple[OpCount, collections.Counter[str]]], device: str) -> str:
    lines = [
        f"| archive | solution dim | batch | capacity | thresholds | aten ops ({device}) | "
        "of which views | most frequent |",
        "|---|---:|---:|---|---|---:|---:|---|",
    ]
    for r, ops in rows:
        common = ", ".join(f"{name.removeprefix('aten.')} {k}" for name, k in ops.most_common(4))
        lines.append(
            f"| {r.archive} | {r.solution_dim} | {r.batch:,} | {r.capacity} | {r.thresholds} "
            f"| {r.ops} | {r.views} | {common} |"
        )
    return "\n".join(lines)


def print_op_counts(archives: list[str], dims: list[int], batches: list[int], device: str) -> None:
    """The table of :func:`count_ops` for every archive, dimension and batch size, each with
    and without a binding ``max_size`` and CMA-MAE thresholds."""
    rows = [
        count_ops(kind, dim, batch, evicting=evicting, cma_mae=cma_mae, device=device)
        for kind in archives
        for dim in dims
        for batch in batches
        for evicting, cma_mae in ((False, False), (True, False), (False, True))
    ]
    print(f"# torch {torch.__version__}; one add({{'solution': x}}, ..., check=False)")
    print(_format_counts(rows, device))


def best_of(runs: list[Row]) -> Row:
    """The highest rate of each archive over replays of the same stream."""

    def top(values: list[float | None]) -> float | None:
        return None if values[0] is None else max(v for v in values if v is not None)

    return replace(
        runs[0],
        columns=max(r.columns for r in runs),
        payloads=top([r.payloads for r in runs]),
        pyribs=top([r.pyribs for r in runs]),
        graphed=top([r.graphed for r in runs]),
    )


def _warm_up(device: str, with_ribs: bool) -> None:
    """Compile pyribs' numba kernels and torch's first-call paths outside the timings."""
    for kind in ("grid", "cvt"):
        measure(kind, 2, 64, 128, device, with_ribs=with_ribs, with_payloads=True, seed=99)


def _format(rows: list[Row], device: str, graphed: bool = False) -> str:
    head = (
        f"| archive | solution dim | batch | items | ours, columns ({device}) | ours, payloads "
        f"({device}) | pyribs (cpu) | columns / pyribs | payloads / pyribs |"
    )
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    if graphed:
        head += f" ours, columns, CUDA graph ({device}) | graph / pyribs |"
        rule += "---:|---:|"

    def rate(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f}"

    lines = [head, rule]
    for r in rows:
        line = (
            f"| {r.archive} | {r.solution_dim} | {r.batch:,} | {r.items:,} | {rate(r.columns)} "
            f"| {rate(r.payloads)} | {rate(r.pyribs)} | {r.ratio(r.columns)} "
            f"| {r.ratio(r.payloads)} |"
        )
        if graphed:
            line += f" {rate(r.graphed)} | {r.ratio(r.graphed)} |"
        lines.append(line)
    return "\n".join(lines)


def ribs_and_versions(no_ribs: bool) -> tuple[bool, list[str]]:
    """Whether pyribs runs beside us (installed and not turned off), and the version line's
    first entries: Python, torch and pyribs (or that it is absent)."""
    with_ribs = not no_ribs and importlib.util.find_spec("ribs") is not None
    versions = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    if with_ribs:
        import ribs

        versions.append(f"ribs {ribs.__version__}")
    else:
        versions.append("ribs not installed: our numbers only")
    return with_ribs, versions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device",
        default=None,
        help="device of our archives (cpu, cuda; default cpu, and meta with --count-ops)",
    )
    parser.add_argument("--items", type=int, default=100_000, help="items per configuration")
    parser.add_argument("--batches", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[10, 1_000])
    parser.add_argument("--archives", nargs="+", default=["grid", "cvt"], choices=["grid", "cvt"])
    parser.add_argument("--repeats", type=int, default=3, help="replays; the best rate is kept")
    parser.add_argument("--no-ribs", action="store_true", help="skip pyribs even if installed")
    parser.add_argument("--no-payloads", action="store_true", help="skip the per-item dict form")
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="CUDA only: also time a column add captured in a CUDA graph and replayed per batch",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1, like pyribs' numpy; 0 keeps torch's default)",
    )
    parser.add_argument(
        "--count-ops",
        action="store_true",
        help="print the aten operations of one accelerator-path add instead of timing "
        "(--device meta, the default for this, runs the accelerator's code without one)",
    )
    args = parser.parse_args(argv)
    if args.count_ops:
        print_op_counts(args.archives, args.dims, args.batches, args.device or "meta")
        return
    args.device = args.device or "cpu"
    if args.cuda_graph and not args.device.startswith("cuda"):
        parser.error("--cuda-graph needs --device cuda")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with_ribs, versions = ribs_and_versions(args.no_ribs)
    if args.device.startswith("cuda"):
        versions.append(torch.cuda.get_device_name(args.device))
        versions.append("our adds sync-free (check=False), one synchronisation per stream")
    versions.append(f"torch threads {torch.get_num_threads()}")
    print(f"# {', '.join(versions)}; {platform.machine()}")
    _warm_up(args.device, with_ribs)
    rows = []
    for kind in args.archives:
        for dim in args.dims:
            for batch in args.batches:
                # Dimension 1000 streams fewer items so a run stays within minutes and memory.
                items = max(batch, args.items if dim <= 100 else args.items // 5)
                runs = [
                    measure(
                        kind,
                        dim,
                        batch,
                        items,
                        args.device,
                        with_ribs=with_ribs,
                        with_payloads=not args.no_payloads,
                        seed=0,
                        with_graph=args.cuda_graph,
                    )
                    for _ in range(max(1, args.repeats))
                ]
                row = best_of(runs)
                rows.append(row)
                print(_format([row], args.device, args.cuda_graph).splitlines()[-1], flush=True)
    print()
    print(_format(rows, args.device, args.cuda_graph))


if __name__ == "__main__":
    main()
