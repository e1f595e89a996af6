"""Where an archive keeps its elites' genomes: per-item payloads or batched tensor columns.

An archive picks the store from the first batch it is given:

- ``PayloadStore``: a sequence of ``to_dict()`` payloads (tensors and plain data, any structure).
  Landing payloads are checked and deep-copied on the host; a dict maps cell -> payload.
- ``ColumnStore``: a mapping ``name -> (n, ...)`` tensor, one row per item, the same names, shapes
  and dtypes every batch. Rows are copied into ``(cells, ...)`` buffers on the archive's device
  with one ``index_copy_`` per column: no per-item Python work, which is what makes large batches
  fast, and no host synchronisation on an accelerator.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from slime.memory._payload import (
    INDEXABLE_DTYPES,
    as_numbers,
    check_storable,
    copy_payload,
    is_storable,
)
from slime.proto import ArchiveError

__all__ = ["ColumnStore", "GenomeStore", "PayloadStore", "store_for"]


class GenomeStore:
    """Genomes by cell. ``stage`` may raise and changes nothing; ``apply`` cannot fail."""

    kind = "store"

    def check_batch(self, genomes: Any, n: int) -> None:
        raise NotImplementedError

    def stage(self, genomes: Any, target: torch.Tensor, lost: torch.Tensor | None) -> Any:
        """Prepare a change, given per item of the batch the cell whose genome it becomes
        (``target`` ``(n,)`` int64 on the device; ``cells``, one past the last cell, for an
        item that lands nowhere); where ``lost`` ``(C,)`` (None: nowhere), a cell loses its
        elite. No two items target the same cell."""
        raise NotImplementedError

    def stage_landing(
        self, genomes: Any, target: np.ndarray, rows: np.ndarray, lost: np.ndarray | None
    ) -> Any:
        """:meth:`stage` with host indices (CPU archives): cell ``target[i]`` takes batch row
        ``rows[i]`` (int64 arrays of the landing items only); cells ``lost`` lose their elite."""
        raise NotImplementedError

    def apply(self, staged: Any) -> None:
        raise NotImplementedError

    def get(self, cells: list[int]) -> list[dict[str, Any]]:
        """The stored genomes of occupied ``cells`` (payload store: the stored objects)."""
        raise NotImplementedError


class PayloadStore(GenomeStore):
    """Per-item payloads by cell.

    A payload is copied when it lands (tensors cloned, detached), so later edits by the caller
    cannot leak in. Two layouts hold the copies:

    - *loose*: a dict cell -> deep-copied payload, for any ``to_dict()`` tree.
    - *packed*: when every landing payload of a batch is a flat dict of the same str keys (in
      the same order) whose values are plain ``torch.Tensor`` s of one shape, dtype and device
      per key, the batch's rows are copied with one ``torch.stack`` per key (see
      :func:`_stack_flat`) into growable ``(rows, ...)`` buffers shared by every payload of
      that layout, and a cell -> (pack, row) index says where each genome is. No per-item
      tensor or dict is made when payloads land; a genome is materialised only when read.
      Payloads above ``PACK_MAX_BYTES`` stay loose.

    :meth:`get` answers the same for both (packed genomes come back as fresh tensors, the
    loose ones as the stored objects); :attr:`payloads` materialises every genome, for saving.
    """

    kind = "payloads"

    def __init__(self, cells: int) -> None:
        self.cells = cells
        self._loose: dict[int, dict[str, Any]] = {}
        self._packs: list[_Pack] = []
        self._pack_ids: dict[tuple, int] = {}  # layout -> index into _packs
        self._pack_of = np.full(cells, -1, dtype=np.int64)  # cell -> pack (-1: loose or empty)
        self._row_of = np.zeros(cells, dtype=np.int64)  # cell -> row of its pack

    @classmethod
    def from_payloads(cls, cells: int, payloads: dict[int, dict[str, Any]]) -> PayloadStore:
        """A store holding ``payloads`` (cell -> payload, taken as they are) loose."""
        store = cls(cells)
        store._loose = dict(payloads)
        return store

    @property
    def payloads(self) -> dict[int, dict[str, Any]]:
        """Every stored genome by cell; packed tensors are copied out one by one."""
        found = dict(self._loose)
        for cell in np.flatnonzero(self._pack_of >= 0).tolist():
            pack, row = self._packs[self._pack_of[cell]], int(self._row_of[cell])
            found[cell] = {key: pack.buffers[key][row].clone() for key in pack.keys}
        return found

    def check_batch(self, genomes: Any, n: int) -> None:
        if isinstance(genomes, Mapping) or not isinstance(genomes, Sequence):
            raise ArchiveError(
                "this archive stores per-item payloads (a sequence of dicts); got "
                f"{type(genomes).__name__}"
            )
        if len(genomes) != n:
            raise ArchiveError(f"{len(genomes)} genomes for a batch of {n} objectives")

    def stage(self, genomes, target, lost):
        """See :meth:`GenomeStore.stage`. Payload copies are host work: this fetches the
        targets (and lost cells) in one transfer, a host sync."""
        n = target.shape[0]
        parts = [target] if lost is None else [target, lost.to(torch.int64)]
        host = torch.cat(parts).cpu().numpy()
        rows = np.flatnonzero(host[:n] < self.cells)  # ascending: batch order
        removed = None if lost is None else np.flatnonzero(host[n:])
        return self.stage_landing(genomes, host[:n][rows], rows, removed)

    def stage_landing(self, genomes, target, rows, lost):
        """See :meth:`GenomeStore.stage_landing`. Rows in ascending order read the genomes in
        the order they were made, which is kinder to the memory caches (any order works)."""
        removed = _NO_CELLS if lost is None else lost
        count = target.shape[0]
        if count == 0:
            return None, None, removed
        picked = rows.tolist()
        landing = (genomes[picked[0]],) if count == 1 else operator.itemgetter(*picked)(genomes)
        packed = _stack_flat(landing)
        if packed is not None:
            return None, (target, *packed), removed
        copies = _copy_flat(landing)
        if copies is not None:
            return dict(zip(target.tolist(), copies)), None, removed
        added = {}
        for cell, pos, genome in zip(target.tolist(), picked, landing):
            if not isinstance(genome, dict):
                raise ArchiveError(f"genomes[{pos}] is a {type(genome).__name__}, not a dict")
            added[cell] = copy_payload(genome, f"genomes[{pos}]")
        return added, None, removed

    def apply(self, staged) -> None:
        added, packed, removed = staged
        if removed.shape[0]:
            self._drop(removed)
        if added:
            self._drop(np.fromiter(added, dtype=np.int64, count=len(added)))
            self._loose.update(added)
        if packed is not None:
            target, layout, values = packed
            pack_id = self._pack_ids.get(layout)
            if pack_id is None:
                pack_id = self._pack_ids[layout] = len(self._packs)
                self._packs.append(_Pack(values, self.cells))
            pack = self._packs[pack_id]
            # A cell whose elite already sits in this pack keeps its row (overwritten below);
            # the others give up whatever they held and take free rows.
            was = self._pack_of[target]
            moving = np.flatnonzero(was != pack_id)
            if moving.shape[0] == target.shape[0]:
                rows = pack.take(target.shape[0])
            else:
                rows = self._row_of[target]
                rows[moving] = pack.take(moving.shape[0])
            if moving.shape[0]:
                movers = target[moving]
                self._drop(movers, was[moving])
                self._pack_of[movers] = pack_id
                self._row_of[movers] = rows[moving]
            pack.write(rows, values)

    def _drop(self, cells: np.ndarray, pack_of: np.ndarray | None = None) -> None:
        """Forget the genomes of ``cells`` (int64 array; cells holding none are skipped).
        ``pack_of``: ``self._pack_of[cells]`` when the caller has it already."""
        if self._loose:
            for cell in cells.tolist():
                self._loose.pop(cell, None)
        if self._packs:
            pack_of = self._pack_of[cells] if pack_of is None else pack_of
            held = pack_of >= 0
            if held.any():
                held_cells = cells[held]
                if len(self._packs) == 1:
                    self._packs[0].release(self._row_of[held_cells])
                else:
                    held_packs = pack_of[held]
                    for pack_id in np.unique(held_packs).tolist():
                        mine = held_cells[held_packs == pack_id]
                        self._packs[pack_id].release(self._row_of[mine])
                self._pack_of[held_cells] = -1

    def get(self, cells: list[int]) -> list[dict[str, Any]]:
        found: list[Any] = [None] * len(cells)
        index = np.asarray(cells, dtype=np.int64)
        pack_of = self._pack_of[index] if cells else index
        for pack_id in np.unique(pack_of[pack_of >= 0]).tolist():
            positions = np.flatnonzero(pack_of == pack_id)
            pack = self._packs[pack_id]
            rows = torch.from_numpy(self._row_of[index[positions]])
            picked = {
                key: buffer.index_select(0, rows.to(buffer.device)).unbind(0)
                for key, buffer in pack.buffers.items()
            }
            for j, position in enumerate(positions.tolist()):
                found[position] = {key: picked[key][j] for key in pack.keys}
        for position in np.flatnonzero(pack_of < 0).tolist():
            found[position] = self._loose[cells[position]]
        return found


_NO_CELLS = np.zeros(0, dtype=np.int64)
_NO_CELLS.flags.writeable = False


class _Pack:
    """Growable ``(rows, ...)`` buffers of one flat payload layout, with a stack of free rows.

    A pack never needs more rows than the archive has cells (one per elite), so it grows by
    doubling up to ``cells`` rows and no further.
    """

    def __init__(self, values: dict[str, torch.Tensor], cells: int) -> None:
        self.cells = cells
        self.keys = tuple(values)
        self.buffers = {key: v.new_empty((0, *v.shape[1:])) for key, v in values.items()}
        self.on_cpu = all(v.device.type == "cpu" for v in values.values())
        self._free = np.zeros(0, dtype=np.int64)  # free rows, the next one taken last
        self._free_count = 0

    def release(self, rows: np.ndarray) -> None:
        """Give ``rows`` (int64, distinct, in use) back to the free rows."""
        end = self._free_count + rows.shape[0]
        self._free[self._free_count : end] = rows  # room: at most every row is free
        self._free_count = end

    def take(self, count: int) -> np.ndarray:
        """``count`` free rows (growing the buffers when too few are free)."""
        if self._free_count < count:
            size = next(iter(self.buffers.values())).shape[0]
            need = size + count - self._free_count  # at most cells: one row per elite
            grown = max(need, min(max(2 * size, 16), self.cells))
            self.buffers = {
                key: torch.cat([b, b.new_empty((grown - size, *b.shape[1:]))])
                for key, b in self.buffers.items()
            }
            free = np.empty(grown, dtype=np.int64)  # room for every row
            free[: self._free_count] = self._free[: self._free_count]
            # The new rows go on top, lowest last: taken first, lowest first.
            free[self._free_count : self._free_count + grown - size] = np.arange(
                grown - 1, size - 1, -1
            )
            self._free = free
            self._free_count += grown - size
        start = self._free_count - count
        rows = self._free[start : self._free_count][::-1].copy()
        self._free_count = start
        return rows

    def write(self, rows: np.ndarray, values: dict[str, torch.Tensor]) -> None:
        """Copy the ``(k, ...)`` rows of ``values`` into buffer rows ``rows`` ``(k,)``."""
        index = torch.from_numpy(rows)
        for key, value in values.items():
            buffer = self.buffers[key]
            buffer.index_copy_(0, index if self.on_cpu else index.to(buffer.device), value)


_DTYPE = operator.attrgetter("dtype")

PACK_MAX_BYTES = 1024
"""Largest flat payload (bytes of its tensors) that is packed. Beyond it a payload's own clone
costs about what packing does, and packing's growing buffers would only add copies."""


def _flat_keys(payloads: Sequence[Any]) -> tuple[str, ...] | None:
    """The keys every payload has, in the same order, when all are non-empty plain dicts (C-level
    passes over their types and sizes); None otherwise (the payload-by-payload copy decides)."""
    first = payloads[0]
    if type(first) is not dict or not first:
        return None
    keys = tuple(first)
    if set(map(type, payloads)) != {dict} or set(map(len, payloads)) != {len(keys)}:
        return None
    if len(keys) > 1 and not all(tuple(p) == keys for p in payloads):
        return None
    return keys


def _stack_flat(payloads: Sequence[Any]) -> tuple[tuple, dict[str, torch.Tensor]] | None:
    """``(layout, {key: (n, ...) stacked copy})`` when ``payloads`` are flat dicts of the same
    str keys, in the same order, holding plain tensors of one shape, dtype and device per key,
    at most :data:`PACK_MAX_BYTES` per payload; None otherwise (the caller then copies payload
    by payload, which also reports the bad ones).

    The payloads are read by C-level passes (``map``): the dicts' types and sizes, then per key
    the values, their types and dtypes, and one ``torch.stack`` (which checks shapes and
    devices and copies)."""
    keys = _flat_keys(payloads)
    if keys is None:
        return None
    values = {}
    layout = []
    row_bytes = 0
    for key in keys:
        head = payloads[0][key]
        if type(key) is not str or type(head) is not torch.Tensor or head.layout != torch.strided:
            return None
        if head.dtype not in INDEXABLE_DTYPES or head.is_nested or head.is_meta:
            return None  # no buffer can take it; copied payload by payload (and checked)
        row_bytes += head.numel() * head.element_size()
        if row_bytes > PACK_MAX_BYTES:
            return None
        try:
            column = list(map(operator.itemgetter(key), payloads))
        except KeyError:
            return None
        if set(map(type, column)) != {torch.Tensor} or set(map(_DTYPE, column)) != {head.dtype}:
            return None  # not plain tensors, or mixed dtypes (stack would promote them)
        try:
            stacked = torch.stack(column)
        except RuntimeError:  # shapes or devices differ
            return None
        values[key] = stacked.detach() if stacked.requires_grad else stacked
        layout.append((key, stacked.shape[1:], stacked.dtype, stacked.device))
    return tuple(layout), values


_REQUIRES_GRAD = operator.attrgetter("requires_grad")


def _copy_flat(payloads: Sequence[Any]) -> list[dict[str, torch.Tensor]] | None:
    """Copies of ``payloads`` (as :func:`copy_payload` makes them: each tensor detached and
    cloned) when they are flat dicts of the same str keys, in the same order, holding plain
    tensors the archive can store; None otherwise (the caller then copies payload by payload,
    which reports the first bad one).

    For the flat payloads :func:`_stack_flat` leaves out (large ones, or shapes and dtypes
    that differ between items): the checks run as C-level passes per key and each tensor is
    cloned once, without walking each payload as a tree."""
    keys = _flat_keys(payloads)
    if keys is None:
        return None
    columns = []
    for key in keys:
        if type(key) is not str:
            return None
        try:
            column = list(map(operator.itemgetter(key), payloads))
        except KeyError:
            return None
        if set(map(type, column)) != {torch.Tensor} or not all(map(is_storable, column)):
            return None
        if any(map(_REQUIRES_GRAD, column)):
            column = [tensor.detach() for tensor in column]
        columns.append(map(torch.Tensor.clone, column))
    return [dict(zip(keys, values)) for values in zip(*columns)]


class ColumnStore(GenomeStore):
    """Genome columns in ``(cells + 1, ...)`` buffers on the device; ``columns`` are their first
    ``cells`` rows, and the last row is scratch where a device add writes the items that land
    nowhere (see :meth:`GenomeStore.stage`)."""

    kind = "columns"

    def __init__(self, cells: int, device: torch.device) -> None:
        self.cells = cells
        self.device = device
        self.columns: dict[str, torch.Tensor] = {}  # name -> (cells, ...) view of _rows
        self._rows: dict[str, torch.Tensor] = {}  # name -> (cells + 1, ...)

    @classmethod
    def from_columns(
        cls, cells: int, device: torch.device, columns: Mapping[str, torch.Tensor]
    ) -> ColumnStore:
        """A store holding copies of ``columns`` ``{name: (cells, ...)}`` on ``device``."""
        store = cls(cells, device)
        store._hold(store._new_buffers(columns))
        for name, column in columns.items():
            store.columns[name].copy_(column)
        return store

    def check_batch(self, genomes: Any, n: int) -> None:
        if not isinstance(genomes, Mapping):
            raise ArchiveError(
                "this archive stores tensor columns (a mapping name -> (n, ...) tensor); got "
                f"{type(genomes).__name__}"
            )
        if not genomes:
            raise ArchiveError("genome columns are empty; give at least one name -> tensor")
        for name, column in genomes.items():
            if not isinstance(name, str) or not isinstance(column, torch.Tensor):
                raise ArchiveError(
                    f"genome column {name!r} must be a str -> torch.Tensor pair, got "
                    f"{type(column).__name__}"
                )
            check_storable(column, f"genome column {name!r}", meta_ok=self.device.type == "meta")
            if column.dtype not in INDEXABLE_DTYPES:
                raise ArchiveError(
                    f"genome column {name!r} has dtype {column.dtype}, which a column buffer "
                    "cannot take; store such genomes as payloads"
                )
            if column.dim() == 0 or column.shape[0] != n:
                raise ArchiveError(
                    f"genome column {name!r} has shape {tuple(column.shape)}; expected ({n}, ...)"
                )
        if self.columns and not self._same_layout(genomes):
            expected = {k: (tuple(v.shape[1:]), v.dtype) for k, v in self.columns.items()}
            got = {k: (tuple(v.shape[1:]), v.dtype) for k, v in genomes.items()}
            raise ArchiveError(f"genome columns {got} differ from the archive's {expected}")

    def _same_layout(self, genomes: Mapping[str, torch.Tensor]) -> bool:
        """Whether ``genomes`` has the stored columns' names, row shapes and dtypes."""
        if len(genomes) != len(self.columns):
            return False
        for name, column in genomes.items():
            stored = self.columns.get(name)
            if (
                stored is None
                or stored.dtype != column.dtype
                or stored.shape[1:] != column.shape[1:]
            ):
                return False
        return True

    def stage(self, genomes, target, lost):
        """See :meth:`GenomeStore.stage`. Every item's row is written, one ``index_copy_``
        per column: a landing item's into its cell, the others' into the scratch row (several
        writes there, in any order: its contents are never read)."""
        buffers = self._rows or self._new_buffers(genomes)
        values = {name: as_numbers(column, self.device) for name, column in genomes.items()}
        return buffers, target, values

    def stage_landing(self, genomes, target, rows, lost):
        buffers = self._rows or self._new_buffers(genomes)
        cells, source = torch.from_numpy(target), torch.from_numpy(rows)
        values = {
            name: as_numbers(column, self.device).index_select(0, source)
            for name, column in genomes.items()
        }
        return buffers, cells, values

    def _new_buffers(self, genomes: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            name: torch.zeros((self.cells + 1, *c.shape[1:]), dtype=c.dtype, device=self.device)
            for name, c in genomes.items()
        }

    def _hold(self, buffers: dict[str, torch.Tensor]) -> None:
        if buffers is not self._rows:
            self._rows = buffers
            self.columns = {name: rows[: self.cells] for name, rows in buffers.items()}

    def apply(self, staged) -> None:
        buffers, target, values = staged
        self._hold(buffers)
        for name, value in values.items():
            buffers[name].index_copy_(0, target, value)

    def get(self, cells: list[int]) -> list[dict[str, Any]]:
        index = torch.tensor(cells, dtype=torch.int64, device=self.device)
        picked = {
            name: column.index_select(0, index).unbind(0) for name, column in self.columns.items()
        }
        return [{name: rows[i] for name, rows in picked.items()} for i in range(len(cells))]


def store_for(genomes: Any, cells: int, device: torch.device) -> GenomeStore:
    """The store matching the form of a first batch of genomes."""
    if isinstance(genomes, Mapping):
        return ColumnStore(cells, device)
    return PayloadStore(cells)
