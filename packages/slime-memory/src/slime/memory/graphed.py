"""GraphedAdd: an archive's sync-free column add captured once in a CUDA graph, then replayed.

An eager ``add(columns, objectives, descriptors, check=False)`` on a GPU is a few dozen small
operations, each paying a Python dispatch and a kernel launch (``python -m slime.memory.bench
--count-ops`` lists them); at small and medium batches those costs, not the arithmetic, are its
time. Replaying a captured graph launches them all at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from slime.memory.archive import AddResult, Archive
from slime.memory.limits import MAX_BATCH_SIZE
from slime.proto import ArchiveError

__all__ = ["GraphedAdd"]


class GraphedAdd:
    """``archive.add(columns, objectives, descriptors, check=False)`` for batches of one size
    and column layout, captured in a CUDA graph: each call copies the batch into static input
    buffers and replays the graph.

    Building one adds nothing: it fixes the archive's genome form to columns with the names,
    row shapes and dtypes of ``columns`` (a warm-up add of ``n`` NaN objectives, which land
    nowhere, allocates the genome buffers), then captures the add. Semantics are those of the
    eager sync-free add (non-finite items report status -1). The returned ``AddResult`` holds
    the graph's output tensors, which the next call overwrites: clone what you keep. Eager
    adds to the same archive may be mixed in; after :meth:`Archive.clear` the graph would
    write to the old tensors, so a call raises and a new ``GraphedAdd`` is needed.

    Args:
        archive: an archive on a CUDA device, holding tensor columns or nothing yet.
        columns: ``{name: (n, ...)}``, an example batch: every call must bring the same names,
            ``n`` and row shapes, and the same dtypes. Its values are not added. ``n`` is at
            most :data:`~slime.memory.limits.MAX_BATCH_SIZE`.

    Raises:
        ArchiveError: an archive on another device, one that stores payload genomes, or
            columns the archive does not accept (naming them).
    """

    def __init__(self, archive: Archive, columns: Mapping[str, torch.Tensor]) -> None:
        if not isinstance(archive, Archive):
            raise ArchiveError(
                f"GraphedAdd needs a slime.memory Archive, got {type(archive).__name__}"
            )
        if archive.device.type != "cuda":
            raise ArchiveError(
                f"GraphedAdd captures a CUDA graph: the archive is on {archive.device}, "
                "expected a CUDA device"
            )
        if archive.genome_form == "payloads":
            raise ArchiveError(
                "GraphedAdd needs an archive of tensor columns: this one stores payloads, "
                "whose landing copies are host work a CUDA graph cannot hold"
            )
        self._layout = _layout(columns)
        n, device = next(iter(self._layout.values()))[0][0], archive.device
        if n == 0 or any(shape[0] != n for shape, _ in self._layout.values()):
            raise ArchiveError(f"columns must share a batch size n >= 1, got {self._layout}")
        if n > MAX_BATCH_SIZE:  # before the static buffers are allocated
            raise ArchiveError(
                f"columns have {n} rows, above the limit MAX_BATCH_SIZE = {MAX_BATCH_SIZE}"
            )
        self._archive = archive
        self._columns = {
            name: torch.zeros(shape, dtype=dtype, device=device)
            for name, (shape, dtype) in self._layout.items()
        }
        self._objectives = torch.full((n,), math.nan, dtype=torch.float64, device=device)
        self._descriptors = torch.zeros(
            n, archive.descriptor_dim, dtype=torch.float64, device=device
        )
        with torch.cuda.device(device):
            # Eager work before a capture runs on a side stream (torch.cuda.graph's rule).
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._add()
            torch.cuda.current_stream().wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._result = self._add()
        # What the graph writes to: an archive that has replaced them is not this graph's.
        self._state_rows, self._store = archive._state_rows, archive._store
        # What it reads: kept alive here, whatever batch sizes the archive sees later.
        self._constants = archive._batch_constants(n)

    @property
    def batch_size(self) -> int:
        return self._objectives.shape[0]

    def _add(self) -> AddResult:
        return self._archive.add(self._columns, self._objectives, self._descriptors, check=False)

    def __call__(
        self,
        columns: Mapping[str, torch.Tensor],
        objectives: torch.Tensor,
        descriptors: torch.Tensor,
    ) -> AddResult:
        """Add a batch by replaying the graph (no host sync with inputs on the archive's
        device). Results: see the class docstring.

        Raises:
            ArchiveError: shapes, names or dtypes other than the captured ones, or an archive
                cleared or loaded over since the capture.
        """
        archive = self._archive
        if archive._state_rows is not self._state_rows or archive._store is not self._store:
            raise ArchiveError(
                "the archive was cleared since this GraphedAdd captured its add; build a new one"
            )
        n, k = self.batch_size, archive.descriptor_dim
        for name, value, expected in (
            ("objectives", objectives, (n,)),
            ("descriptors", descriptors, (n, k)),
        ):
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != expected:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise ArchiveError(f"{name} has shape {got}, expected {expected}")
            if value.is_complex():
                raise ArchiveError(f"{name} must be real-valued")
        layout = _layout(columns)
        if layout != self._layout:
            raise ArchiveError(f"columns {layout} differ from the captured {self._layout}")
        with torch.no_grad():
            for name, buffer in self._columns.items():
                buffer.copy_(columns[name])
            self._objectives.copy_(objectives)
            self._descriptors.copy_(descriptors)
        self._graph.replay()
        return self._result


def _layout(columns: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """``{name: (shape, dtype)}`` of genome columns.

    Raises:
        ArchiveError: not a non-empty mapping of str -> tensor of at least one dimension.
    """
    if not isinstance(columns, Mapping) or not columns:
        raise ArchiveError(f"columns must be a non-empty mapping name -> tensor, got {columns!r}")
    layout = {}
    for name, column in columns.items():
        if not isinstance(name, str) or not isinstance(column, torch.Tensor) or column.dim() == 0:
            raise ArchiveError(
                f"column {name!r} must be a str -> (n, ...) tensor pair, got {type(column).__name__}"
            )
        layout[name] = (tuple(column.shape), column.dtype)
    return layout
