"""Benchmark: adds per second of slime.memory archives against pyribs on the same stream.

    python -m slime.memory.bench                 # CPU, pyribs alongside when installed
    python -m slime.memory.bench --device cuda   # our archives on the GPU (pyribs still on CPU)

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
import importlib.util
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from slime.memory.archive import Archive
from slime.memory.cvt import CVTArchive
from slime.memory.grid import GridArchive

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
    """Adds per second of ``archive.add(..., check=False)`` captured in a CUDA graph: the first
    batch is added eagerly (it allocates the genome buffers) and the add captured (neither
    timed); each later batch is copied into the static inputs and the graph replayed, with one
    synchronisation at the end."""
    on_device = [tuple(torch.from_numpy(array).to(device) for array in batch) for batch in stream]
    static = [tensor.clone() for tensor in on_device[0]]
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        archive.add({"solution": static[0]}, static[1], static[2], check=False)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        archive.add({"solution": static[0]}, static[1], static[2], check=False)
    _synchronize(device)
    start = time.perf_counter()
    for batch in on_device[1:]:
        for buffer, tensor in zip(static, batch):
            buffer.copy_(tensor)
        graph.replay()
    _synchronize(device)
    return sum(b[1].shape[0] for b in on_device[1:]) / (time.perf_counter() - start)


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="device of our archives (cpu, cuda)")
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
    args = parser.parse_args(argv)
    if args.cuda_graph and not args.device.startswith("cuda"):
        parser.error("--cuda-graph needs --device cuda")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with_ribs = not args.no_ribs and importlib.util.find_spec("ribs") is not None
    versions = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    if with_ribs:
        import ribs

        versions.append(f"ribs {ribs.__version__}")
    else:
        versions.append("ribs not installed: our numbers only")
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
