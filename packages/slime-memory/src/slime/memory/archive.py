"""MAP-Elites archive base: batched insertion with pyribs' semantics, queries, bootstrap, save/load.

Subclasses only say how descriptors map to cells (:meth:`Archive.cell_index`): arithmetic for a
grid, nearest centroid for a CVT. Everything else (thresholds, the per-cell choice of a batch's
best, capacity, statistics) lives here, on the archive's device.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from slime.memory import _persist
from slime.memory._devices import as_device
from slime.memory._insertion import (
    cell_winners,
    check_finite,
    cma_mae_thresholds,
    eviction_mask,
    raise_first_non_finite,
)
from slime.memory._payload import as_numbers, blend_payloads, copy_payload
from slime.memory._stores import GenomeStore, store_for
from slime.memory.limits import MAX_ARCHIVE_CELLS, MAX_BATCH_SIZE, MAX_SAMPLE_SIZE
from slime.proto import ArchiveError, ConfigError, shown

__all__ = ["MAX_ARCHIVE_SIZE", "AddResult", "Archive", "ArchiveStats", "Elite"]

MAX_ARCHIVE_SIZE = 1000
"""The blueprint's hard limit on elites held at once (default ``max_size``)."""

_OBJ, _THR, _OCC, _DESC = 0, 1, 2, 3  # columns of Archive._state
_BATCH_SIZES_KEPT = 8  # batch sizes whose constants a device add keeps (_batch_constants)


@dataclass(frozen=True)
class Elite:
    """One archived elite. ``genome`` is the archive's copy: treat it as read-only."""

    cell: int
    objective: float
    descriptor: torch.Tensor  # (k,) float64
    genome: dict[str, Any]


@dataclass(frozen=True)
class AddResult:
    """Per-item outcome of :meth:`Archive.add`, computed against the archive before the batch.

    ``status`` (n,) int32: 0 not added, 1 improved an occupied cell, 2 new cell, and -1 for an
    item with a NaN/Inf objective or descriptor, left out (only with ``add(..., check=False)``;
    by default such an item raises). ``value`` (n,) float64: objective minus the cell's
    threshold (the occupant's objective by default), or minus ``threshold_min`` (0 when it is
    -inf) for an empty cell; NaN for status -1. Both live on the archive's device.
    """

    status: torch.Tensor
    value: torch.Tensor


@dataclass(frozen=True)
class ArchiveStats:
    """Summary of the archive's current contents (``obj_max``/``obj_mean`` None when empty)."""

    num_elites: int
    coverage: float
    qd_score: float
    norm_qd_score: float
    obj_max: float | None
    obj_mean: float | None


class Archive:
    """A MAP-Elites archive of genomes indexed by behavioural descriptor.

    Genomes are ``to_dict()`` payloads or tensor columns (see :meth:`add`); the archive never
    holds live objects. Insertion follows pyribs 0.12: a candidate lands if its objective beats its cell's threshold;
    of a batch, only the best candidate per cell lands (ties: the earliest). With ``learning_rate``
    < 1 and a finite ``threshold_min`` the thresholds follow CMA-MAE's batch update.

    Capacity: at most ``max_size`` cells hold an elite. When a batch would exceed it, the lowest
    objectives are evicted until it fits; on equal objectives a newcomer goes before an elite that
    was already there, so a new cell enters a full archive only by beating its worst elite. Items
    of the batch whose cell was evicted report status 0. A ``max_size`` at or above ``cells``
    never binds. Eviction empties the cell (its threshold returns to ``threshold_min``).

    ``stats.obj_max`` is the best objective held now (pyribs reports the best ever inserted,
    which differs only for CMA-MAE or after evictions).

    Args:
        cells: number of cells, at most
            :data:`~slime.memory.limits.MAX_ARCHIVE_CELLS` (16,777,216).
        ranges: ``(low, high)`` per descriptor dimension.
        device: where the archive's tensors live; inputs on another device are copied there.
            A string torch cannot read as a device raises ConfigError.
        qd_offset: subtracted from each objective in ``qd_score``.
        learning_rate: CMA-MAE threshold learning rate in ``(0, 1]``; with a finite
            ``threshold_min`` the batch threshold rule applies even at 1, as in pyribs.
        threshold_min: initial threshold of every cell; must be finite when ``learning_rate`` < 1.
        max_size: most elites held at once (see Capacity).
    """

    kind: ClassVar[str] = "Archive"

    def __init__(
        self,
        cells: int,
        ranges: Sequence[tuple[float, float]],
        *,
        device: torch.device | str | None = None,
        qd_offset: float = 0.0,
        learning_rate: float = 1.0,
        threshold_min: float = -math.inf,
        max_size: int = MAX_ARCHIVE_SIZE,
    ) -> None:
        name = type(self).__name__
        if isinstance(cells, bool) or not isinstance(cells, int) or cells < 1:
            raise ConfigError(f"cells must be a positive int, got {cells!r}", f"{name}.cells")
        if cells > MAX_ARCHIVE_CELLS:
            raise ConfigError(
                f"cells is {cells}, above the limit MAX_ARCHIVE_CELLS = {MAX_ARCHIVE_CELLS}",
                f"{name}.cells",
            )
        device = as_device(device, f"{name}.device")
        self._ranges = _check_ranges(ranges, name)
        # Numbers first (an int beyond float range, such as 10**400, raises ConfigError here).
        learning_rate = config_number(learning_rate, f"{name}.learning_rate")
        threshold_min = config_number(threshold_min, f"{name}.threshold_min")
        qd_offset = config_number(qd_offset, f"{name}.qd_offset")
        if not 0.0 < learning_rate <= 1.0:
            raise ConfigError(
                f"learning_rate must be in (0, 1], got {learning_rate!r}", f"{name}.learning_rate"
            )
        if math.isnan(threshold_min) or threshold_min == math.inf:
            raise ConfigError(
                f"threshold_min must be finite or -inf, got {threshold_min!r}",
                f"{name}.threshold_min",
            )
        if threshold_min == -math.inf and learning_rate != 1.0:
            raise ConfigError(
                f"learning_rate {learning_rate!r} < 1 needs a finite threshold_min (CMA-MAE)",
                f"{name}.threshold_min",
            )
        if not math.isfinite(qd_offset):
            raise ConfigError(f"qd_offset must be finite, got {qd_offset!r}", f"{name}.qd_offset")
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ConfigError(
                f"max_size must be a positive int, got {max_size!r}", f"{name}.max_size"
            )
        self._cells = cells
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self._qd_offset = float(qd_offset)
        self._learning_rate = float(learning_rate)
        self._threshold_min = float(threshold_min)
        self._max_size = max_size
        bounds = torch.tensor(self._ranges, dtype=torch.float64, device=self._device)
        self._lower, self._upper = bounds[:, 0], bounds[:, 1]
        self._store: GenomeStore | None = None  # chosen by the first batch's genome form
        # On the CPU a batch is worked out in numpy on views of the state (see _add_on_host):
        # at small batches torch's per-operation dispatch cost, not arithmetic, dominates.
        self._host = self._device.type == "cpu"
        self._lower_np, self._upper_np = np.array(self._ranges, dtype=np.float64).T
        self._all_cells = np.arange(cells)
        self._cell_ids = torch.arange(cells, device=self._device)
        self._scratch_row = torch.tensor(cells, device=self._device)  # see _add_on_device
        self._constants: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.clear()

    # ---- geometry -------------------------------------------------------------------------

    @property
    def cells(self) -> int:
        return self._cells

    @property
    def descriptor_dim(self) -> int:
        return len(self._ranges)

    @property
    def ranges(self) -> list[tuple[float, float]]:
        return list(self._ranges)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def genome_form(self) -> str | None:
        """How genomes are stored: ``"payloads"`` or ``"columns"`` (chosen by the first batch),
        None while no batch has been added since construction or :meth:`clear`."""
        return None if self._store is None else self._store.kind

    @property
    def max_size(self) -> int:
        return self._max_size

    @property
    def qd_offset(self) -> float:
        return self._qd_offset

    @property
    def learning_rate(self) -> float:
        return self._learning_rate

    @property
    def threshold_min(self) -> float:
        return self._threshold_min

    def cell_index(self, descriptors: torch.Tensor) -> torch.Tensor:
        """Cell of each descriptor: ``(n, k) -> (n,)`` int64 on the archive's device.

        Raises:
            ArchiveError: wrong shape, more than :data:`~slime.memory.limits.MAX_BATCH_SIZE`
                rows, or a NaN/Inf descriptor (naming its index).
        """
        self._refuse_meta("cell_index")
        descriptors = self._as_descriptors(descriptors, "descriptors")
        raise_first_non_finite(torch.isfinite(descriptors).all(dim=1), "descriptors")
        if self._host:
            return torch.from_numpy(self._host_cell_index(descriptors.numpy()))
        return self._cell_index(descriptors)

    def thresholds(self, descriptors: torch.Tensor) -> torch.Tensor:
        """What an item with each descriptor must beat to land: its cell's threshold (the
        occupant's objective by default, CMA-MAE's annealed threshold with ``learning_rate`` <
        1, ``threshold_min`` in an empty cell), ``(n, k) -> (n,)`` float64 on the archive's
        device.

        :meth:`add` gives an item whose objective is not above it status 0 and value
        ``objective - threshold``, and such an item changes nothing (no threshold, eviction or
        tie moves): a caller whose genomes are costly to produce may offer only the items above
        it and get the same archive.

        Raises:
            ArchiveError: wrong shape, more than :data:`~slime.memory.limits.MAX_BATCH_SIZE`
                rows, or a NaN/Inf descriptor (naming its index).
        """
        self._refuse_meta("thresholds")
        return self._threshold.index_select(0, self.cell_index(descriptors))

    def _cell_index(self, descriptors: torch.Tensor) -> torch.Tensor:
        """``(n, k)`` finite float64 on the archive's device -> ``(n,)`` int64 cells."""
        raise NotImplementedError(f"{type(self).__name__} must define _cell_index")

    def _host_cell_index(self, descriptors: np.ndarray) -> np.ndarray:
        """:meth:`_cell_index` for a CPU archive in numpy: ``(n, k)`` float64 -> ``(n,)`` int64.

        Subclasses override it with the same arithmetic in numpy; this default goes through
        the tensor version (zero-copy views both ways).
        """
        return self._cell_index(torch.from_numpy(descriptors)).numpy()

    # ---- insertion ------------------------------------------------------------------------

    def add(
        self,
        genomes: Sequence[dict[str, Any]] | Mapping[str, torch.Tensor],
        objectives: torch.Tensor,
        descriptors: torch.Tensor,
        *,
        check: bool = True,
    ) -> AddResult:
        """Insert a batch; see the class docstring for the rules.

        On an accelerator, ``add(columns, objectives, descriptors, check=False)`` never
        synchronises with the host: statuses, values, thresholds, evictions and genome rows are
        all worked out on the device and the results come back as device tensors, so batches
        pipeline and the call can be captured in a CUDA graph (inputs already on the archive's
        device; the first batch, which allocates the genome buffers, outside the capture):
        :class:`~slime.memory.GraphedAdd` does that for a batch size and column layout.
        With ``check=True`` the finiteness check is its one sync; payload genomes add one more
        (their landing copies are host work).

        Args:
            genomes: either n ``to_dict()`` payloads (only those that land are checked and
                deep-copied), or tensor columns ``{name: (n, ...)}`` with the same names, shapes
                and dtypes every batch (stored in device buffers: the fast path). The first batch
                fixes the form for the archive's life (until :meth:`clear`).
            objectives: ``(n,)`` floats, higher is better.
            descriptors: ``(n, k)`` floats.
            check: True (the default): a NaN/Inf objective or descriptor raises ArchiveError
                naming the first such item (on an accelerator, one host sync). False: **no
                error for non-finite items**: they never land, leave thresholds alone, and
                report status -1 and value NaN; the rest of the batch is added as if they were
                absent. Read ``status`` when passing False.

        Returns:
            Per-item status and value on the archive's device.

        Raises:
            ArchiveError: mismatched shapes or counts (naming them), more than
                :data:`~slime.memory.limits.MAX_BATCH_SIZE` items, a NaN/Inf objective or
                descriptor with ``check=True`` (naming its index), genomes of the other form,
                or a landing payload that holds something other than tensors and plain data.
                The archive is unchanged when it raises.
        """
        if not isinstance(check, bool):
            raise ArchiveError(f"check must be True or False, got {check!r}")
        if check:
            self._refuse_meta("add with check=True")
        objectives, descriptors = self._check_batch(objectives, descriptors)
        n = objectives.shape[0]
        store = self._store or store_for(genomes, self._cells, self._device)
        store.check_batch(genomes, n)
        if n == 0:
            empty = torch.zeros(0, device=self._device)
            return AddResult(status=empty.to(torch.int32), value=empty.to(torch.float64))
        if self._host:
            return self._add_on_host(store, genomes, objectives.numpy(), descriptors.numpy(), check)
        return self._add_on_device(store, genomes, objectives, descriptors, check)

    def _add_on_device(
        self,
        store: GenomeStore,
        genomes: Any,
        objectives: torch.Tensor,
        descriptors: torch.Tensor,
        check: bool,
    ) -> AddResult:
        """:meth:`add` in tensor operations on the archive's device, without host syncs
        (except ``check``'s and a payload store's).

        How many items land is data the host would have to wait for, so every item writes: a
        winner (its cell's best insertable item) writes its row into its cell, every other item
        into a scratch row past the last cell (``_state_rows[C]``, and likewise in a column
        store), one ``index_copy_`` per tensor. Each operation costs a dispatch and a kernel
        launch at any batch size, so the common case (no eviction, plain MAP-Elites
        thresholds) is kept to few of them. ``objectives`` ``(n,)``, ``descriptors``
        ``(n, k)``: float64 on the device.
        """
        n = objectives.shape[0]
        positions, ones = self._batch_constants(n)
        if not check:
            # x - x is +0 for finite x and NaN for NaN or +-Inf (a plain sum of the values
            # could overflow), and +0 + obj * (+0) is +0 for a finite objective, NaN for
            # another. So ``poison`` is NaN exactly for the items with a non-finite objective
            # or descriptor, +0 for the others, and subtracting it leaves finite objectives
            # bit for bit (-0.0 included).
            poison = (descriptors - descriptors).sum(dim=1)
            poison = torch.addcmul(poison, objectives, poison)
            # Those items' objectives become NaN: they beat no threshold, land nowhere and
            # get value NaN. Their descriptors become finite so they map to a valid cell.
            objectives = objectives - poison
            descriptors = descriptors.nan_to_num()
        else:
            check_finite(objectives, descriptors)  # raising needs the answer: one host sync
            poison = None
        cells = self._cell_index(descriptors)  # (n,)
        item_state = self._thresholds_occupied.index_select(0, cells)  # (n, 2)
        item_threshold, item_occupied = item_state.unbind(1)
        can_insert = objectives > item_threshold  # False for NaN
        # An empty cell's threshold is threshold_min (every update keeps it so): the value's
        # base, except that -inf counts as 0.
        plain = self._threshold_min == -math.inf
        value = objectives - (item_threshold.nan_to_num(neginf=0.0) if plain else item_threshold)
        status = 2.0 - item_occupied  # 1 improved an occupied cell, 2 new cell
        # 0 not added; NaN (-1 below) for the non-finite items
        if poison is None:
            status = status.mul_(can_insert)
        else:
            status = torch.where(can_insert, status, poison)

        threshold = self._threshold
        wins = cell_winners(cells, objectives, can_insert, threshold, positions, self._cell_ids)
        objective = objectives[:, None]
        if plain:  # a cell's threshold is its elite's objective
            landing = [objective, objective]
        else:
            threshold = cma_mae_thresholds(
                cells, objectives, can_insert, threshold, self._learning_rate
            )
            landing = [objective, threshold.index_select(0, cells)[:, None]]
        rows = torch.cat([*landing, ones, descriptors], dim=1)  # (n, 3 + k): a winner's new row
        target = torch.where(wins, cells, self._scratch_row)  # (n,)
        after = lost = None
        if self._max_size < self._cells:
            after, evicted, lost = self._evict(target, rows)
            # Items whose cell was evicted in this very batch report status 0 (NaN stays NaN).
            item_evicted = evicted.index_select(0, cells)
            status.mul_(~item_evicted)
            target = target.masked_fill(item_evicted, self._cells)

        staged = store.stage(genomes, target, lost)  # may raise; changes nothing
        store.apply(staged)
        self._store = store
        if after is None:
            self._state_rows.index_copy_(0, target, rows)
        else:
            self._state_rows.copy_(after)
        if poison is not None:
            status = status.nan_to_num(nan=-1.0)
        return AddResult(status=status.to(torch.int32), value=value)

    def _evict(
        self, target: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """After landing ``rows`` at ``target``, evict down to ``max_size``: the state rows
        then ``(C + 1, 3 + k)``, the evicted cells and those of them that held an elite before
        the batch ``(C,)`` bool."""
        after = self._state_rows.index_copy(0, target, rows)
        before = self._state[:, _OCC] > 0
        occupied = after[: self._cells, _OCC] > 0
        evicted = eviction_mask(
            after[: self._cells, _OBJ], occupied, occupied & ~before, self._max_size
        )
        after[: self._cells, _OCC].masked_fill_(evicted, 0.0)
        after[: self._cells, _THR].masked_fill_(evicted, self._threshold_min)
        return after, evicted, evicted & before

    def _batch_constants(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``arange(n)`` int64 and ``(n, 1)`` float64 ones on the device, kept for the last
        few batch sizes (each would cost an operation per add). A CUDA graph that reads them
        must hold them itself (see GraphedAdd): a size dropped here frees its tensors."""
        found = self._constants.pop(n, None)  # put back last: the latest sizes stay
        if found is None:
            if len(self._constants) >= _BATCH_SIZES_KEPT:
                del self._constants[next(iter(self._constants))]
            found = (
                torch.arange(n, device=self._device),
                torch.ones(n, 1, dtype=torch.float64, device=self._device),
            )
        self._constants[n] = found
        return found

    def _add_on_host(
        self,
        store: GenomeStore,
        genomes: Any,
        objectives: np.ndarray,
        descriptors: np.ndarray,
        check: bool,
    ) -> AddResult:
        """:meth:`add` for a CPU archive, step for step the tensor version in numpy.

        ``objectives`` ``(n,)`` and ``descriptors`` ``(n, k)`` are float64 views of the checked
        batch; the state is updated in place through a numpy view of ``_state``.
        """
        n = objectives.shape[0]
        finite = None
        # A sum is finite only if every term is; otherwise (NaN, Inf, or an overflowing sum of
        # finite values) the per-item check decides.
        if not math.isfinite(objectives.sum() + descriptors.sum()):
            finite = np.isfinite(objectives) & np.isfinite(descriptors).all(axis=1)
            if check:
                raise_first_non_finite(torch.from_numpy(finite), "objectives/descriptors")
            objectives = np.where(finite, objectives, 0.0)  # see _add_on_device
            descriptors = np.where(finite[:, None], descriptors, self._lower_np)
        item_cells = self._host_cell_index(descriptors)
        state = self._state.numpy()  # shares memory with self._state
        if self._cells <= 2 * n:  # work on every cell: no sort, column views
            cells, inverse = self._all_cells, item_cells
            occupied, threshold = state[:, _OCC] > 0, state[:, _THR]
        else:
            cells, inverse = _host_unique(item_cells)
            occupied, threshold = state[cells, _OCC] > 0, state[cells, _THR]
        m = cells.shape[0]
        item_occupied = occupied[inverse]
        item_threshold = threshold[inverse]
        can_insert = objectives > item_threshold
        if finite is not None:
            can_insert &= finite
        status = np.subtract(2, item_occupied, dtype=np.int32)  # 1 improved, 2 new cell
        status *= can_insert  # 0 not added
        empty_base = 0.0 if self._threshold_min == -math.inf else self._threshold_min
        value = objectives - np.where(item_occupied, item_threshold, empty_base)

        # best_per_cell: the best insertable objective per cell, the earliest item holding it,
        # worked out over the insertable items only (after the first batches, a minority).
        insertable = np.flatnonzero(can_insert)
        key, key_cells = objectives[insertable], inverse[insertable]
        best = np.full(m, -np.inf)
        np.maximum.at(best, key_cells, key)
        top = key == best[key_cells]
        tied, tied_cells = insertable[top], key_cells[top]
        first = np.full(m, n, dtype=np.int64)
        np.minimum.at(first, tied_cells, tied)
        # The landing items, one per landing cell, in batch order (the store reads the landing
        # genomes in that order, kinder to the caches), and their cells' positions.
        rows = tied[first[tied_cells] == tied]
        lands = inverse[rows]
        if self._threshold_min != -math.inf:
            threshold = _host_cma_mae_thresholds(
                inverse, objectives, can_insert, threshold, self._learning_rate, m
            )
        else:
            threshold = best
        # The landing cells' new rows; every other cell keeps its row.
        land_cells = cells[lands]
        new = np.empty((lands.shape[0], state.shape[1]))
        new[:, _OBJ] = best[lands]
        new[:, _THR] = threshold[lands]
        new[:, _OCC] = 1.0
        new[:, _DESC:] = np.take(descriptors, rows, axis=0)  # ~8x faster than descriptors[rows]

        evicted = lost = None
        kept_rows = rows
        if self._max_size < self._cells:
            whole = state.copy()
            whole[land_cells] = new
            newcomer = np.zeros(self._cells, dtype=bool)
            newcomer[land_cells] = ~occupied[lands]
            evicted = eviction_mask(
                torch.from_numpy(whole[:, _OBJ]),
                torch.from_numpy(whole[:, _OCC] > 0),
                torch.from_numpy(newcomer),
                self._max_size,
            ).numpy()
            lost = np.flatnonzero(evicted & (state[:, _OCC] > 0))
            stays = ~evicted[land_cells]
            kept_rows = rows[stays]
            # Items whose cell was evicted in this very batch report status 0.
            status[evicted[item_cells]] = 0

        if finite is not None:
            status[~finite] = -1
            value[~finite] = math.nan
        staged = store.stage_landing(genomes, item_cells[kept_rows], kept_rows, lost)  # may raise
        store.apply(staged)
        self._store = store
        state[land_cells] = new
        if evicted is not None:
            state[evicted, _OCC] = 0.0
            state[evicted, _THR] = self._threshold_min
        return AddResult(status=torch.from_numpy(status), value=torch.from_numpy(value))

    # ---- queries --------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of elites (one host sync)."""
        self._refuse_meta("len()")
        return int(self._occupied.sum())

    def occupied_cells(self) -> list[int]:
        """Occupied cells in ascending order (one host transfer)."""
        self._refuse_meta("occupied_cells")
        return torch.nonzero(self._occupied).squeeze(1).tolist()

    def __iter__(self) -> Iterator[Elite]:
        """Elites in ascending cell order (blueprint decision 3: reproducible iteration)."""
        self._refuse_meta("iterating the archive")
        return iter(self._elites(self.occupied_cells()))

    def elite_scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The elites without their genomes: occupied cells ``(n,)`` int64 in ascending order,
        their objectives ``(n,)`` and descriptors ``(n, k)`` (float64), on the archive's device,
        in one gather (finding the occupied cells reads their count: one wait on an
        accelerator). For readers of the landscape (where the elites are, how good) that need
        no genome: iterating the archive copies every genome."""
        self._refuse_meta("elite_scores")
        cells = torch.nonzero(self._occupied).squeeze(1)
        rows = self._state.index_select(0, cells)
        return cells, rows[:, _OBJ], rows[:, _DESC:]

    def retrieve(self, descriptors: torch.Tensor) -> tuple[torch.Tensor, list[Elite | None]]:
        """The elite of each descriptor's cell: ``(n, k)`` -> (occupied ``(n,)`` bool, elites)."""
        self._refuse_meta("retrieve")
        cells = self.cell_index(descriptors)
        occupied = self._occupied.index_select(0, cells)
        cell_list, flags = cells.tolist(), occupied.tolist()
        found = {
            e.cell: e for e in self._elites(sorted({c for c, f in zip(cell_list, flags) if f}))
        }
        return occupied, [found.get(c) for c in cell_list]

    def where(
        self,
        low: Sequence[float | None] | torch.Tensor | None = None,
        high: Sequence[float | None] | torch.Tensor | None = None,
    ) -> list[Elite]:
        """The elites whose descriptors lie in the box ``low <= descriptor <= high`` (inclusive).

        One mask over every cell, computed on the archive's device; only the matching elites
        come to the host (one transfer), as :meth:`__iter__` yields them: ascending cell order,
        genomes included.

        Args:
            low: ``k`` lower bounds (a sequence or a ``(k,)`` tensor); None, or an entry that is
                None or ``-inf``, leaves that side open.
            high: ``k`` upper bounds, likewise open with None or ``+inf``.

        Raises:
            ArchiveError: a bound of another length than ``k``, an entry that is NaN or not a
                number, or ``low[i] > high[i]`` (each naming the offending value).
        """
        self._refuse_meta("where")
        lows = self._box_side(low, "low", -math.inf)
        highs = self._box_side(high, "high", math.inf)
        for i, (a, b) in enumerate(zip(lows, highs)):
            if a > b:
                raise ArchiveError(f"where: low[{i}] = {a!r} is above high[{i}] = {b!r}")
        box = torch.tensor([lows, highs], dtype=torch.float64, device=self._device)
        descriptors = self._descriptors
        inside = ((descriptors >= box[0]) & (descriptors <= box[1])).all(dim=1)
        cells = torch.nonzero(inside & self._occupied).squeeze(1).tolist()
        return self._elites(cells)

    def _box_side(self, bound: Any, name: str, open_value: float) -> list[float]:
        """One side of a :meth:`where` box as ``k`` floats (None entries -> ``open_value``)."""
        k = self.descriptor_dim
        if bound is None:
            return [open_value] * k
        if isinstance(bound, torch.Tensor):
            if bound.dim() != 1 or bound.is_complex():
                raise ArchiveError(
                    f"where: {name} must be {k} real numbers, got a tensor of shape "
                    f"{tuple(bound.shape)}"
                )
            bound = bound.tolist()
        if isinstance(bound, str | bytes) or not isinstance(bound, Sequence):
            raise ArchiveError(f"where: {name} must be {k} numbers, got {bound!r}")
        if len(bound) != k:
            raise ArchiveError(
                f"where: {name} has {len(bound)} entries, expected {k} (one per descriptor)"
            )
        side = []
        for i, value in enumerate(bound):
            if value is None:
                side.append(open_value)
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ArchiveError(f"where: {name}[{i}] is {value!r}, not a number")
            try:
                number = float(value)
            except OverflowError as e:  # an int beyond float range, e.g. 10**400
                raise ArchiveError(
                    f"where: {name}[{i}] = {shown(value)} is beyond the float64 range"
                ) from e
            if math.isnan(number):
                raise ArchiveError(f"where: {name}[{i}] is NaN")
            side.append(number)
        return side

    def sample_elites(self, n: int, generator: torch.Generator) -> list[Elite]:
        """``n`` elites drawn uniformly with replacement; the same generator state, the same draw.

        Args:
            n: how many, 1 to :data:`~slime.memory.limits.MAX_SAMPLE_SIZE` (1,048,576).
            generator: a ``torch.Generator``; the draw runs on its device.

        Raises:
            ArchiveError: ``n`` < 1 or above the limit, a generator that is not a
                ``torch.Generator``, or the archive is empty.
        """
        self._refuse_meta("sample_elites")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ArchiveError(f"sample_elites needs n >= 1, got {shown(n)}")
        if n > MAX_SAMPLE_SIZE:
            raise ArchiveError(
                f"sample_elites: n = {n} is above the limit MAX_SAMPLE_SIZE = {MAX_SAMPLE_SIZE}"
            )
        if not isinstance(generator, torch.Generator):
            raise ArchiveError(
                f"sample_elites needs a torch.Generator, got {shown(generator)} "
                "(e.g. torch.Generator().manual_seed(0))"
            )
        cells = self.occupied_cells()
        if not cells:
            raise ArchiveError("sample_elites on an empty archive")
        picks = torch.randint(len(cells), (n,), generator=generator, device=generator.device)
        by_cell = {e.cell: e for e in self._elites(cells)}
        return [by_cell[cells[i]] for i in picks.tolist()]

    @property
    def stats(self) -> ArchiveStats:
        """Statistics of the current contents (one host transfer)."""
        self._refuse_meta("stats")
        objective = self._objective[self._occupied]
        count = objective.shape[0]
        if count == 0:
            return ArchiveStats(0, 0.0, 0.0, 0.0, None, None)
        total, top = torch.stack([objective.sum(), objective.max()]).tolist()
        qd_score = total - count * self._qd_offset
        return ArchiveStats(
            num_elites=count,
            coverage=count / self._cells,
            qd_score=qd_score,
            norm_qd_score=qd_score / self._cells,
            obj_max=top,
            obj_mean=total / count,
        )

    def bootstrap(self, descriptor: torch.Tensor) -> dict[str, Any]:
        """A deep copy of the genome of the elite nearest to ``descriptor`` ``(k,)``.

        Distance is Euclidean in descriptor space scaled by each range's width; ties go to the
        lower cell. Raises ArchiveError on an empty archive or a bad descriptor.
        """
        self._refuse_meta("bootstrap")
        cells, _ = self._nearest_elites(descriptor, 1)
        (genome,) = self._genomes(cells)
        return copy_payload(genome, "genome")

    def interpolate(self, descriptor: torch.Tensor, k_neighbors: int = 2) -> dict[str, Any]:
        """Distance-weighted blend of the ``k_neighbors`` elites nearest to ``descriptor`` ``(k,)``.

        Weights are inverse scaled distances; a neighbour at distance 0 gets all the weight.
        Floating tensors are blended where the neighbours agree on shape and dtype; everything
        else comes from the nearest elite. Fewer neighbours are used when the archive holds fewer.
        """
        self._refuse_meta("interpolate")
        if isinstance(k_neighbors, bool) or not isinstance(k_neighbors, int) or k_neighbors < 1:
            raise ArchiveError(f"k_neighbors must be an int >= 1, got {k_neighbors!r}")
        cells, distances = self._nearest_elites(descriptor, k_neighbors)
        genomes = self._genomes(cells)
        if distances[0] == 0.0:
            return copy_payload(genomes[0], "genome")
        # Inverse distances relative to the nearest's (1 for it): no under- or overflow.
        return blend_payloads(genomes, [distances[0] / d for d in distances])

    def _nearest_elites(self, descriptor: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
        if not isinstance(descriptor, torch.Tensor):
            raise ArchiveError(
                f"descriptor must be a torch.Tensor of shape ({self.descriptor_dim},), got "
                f"{type(descriptor).__name__} {shown(descriptor)}"
            )
        if descriptor.shape != (self.descriptor_dim,):
            raise ArchiveError(
                f"descriptor must have shape ({self.descriptor_dim},), got "
                f"{tuple(descriptor.shape)}"
            )
        point = self._as_descriptors(descriptor[None], "descriptor")
        raise_first_non_finite(torch.isfinite(point).all(dim=1), "descriptor")
        cells = torch.nonzero(self._occupied).squeeze(1)  # ascending: ties go to the lower cell
        if cells.shape[0] == 0:
            raise ArchiveError("no elite to start from: the archive is empty")
        scale = self._upper - self._lower
        offsets = (self._descriptors.index_select(0, cells) - point) / scale
        # The norm of offsets over ~1e154 overflows (inf: every elite as far, NaN weights in
        # interpolate): take it of the offsets divided by their largest, then scale back.
        largest = offsets.abs().amax(dim=1)
        unit = offsets / largest.clamp(min=torch.finfo(torch.float64).tiny)[:, None]
        distance = torch.linalg.vector_norm(unit, dim=1) * largest
        nearest = torch.sort(distance, stable=True).indices[: min(k, cells.shape[0])]
        cells_list, distances = cells[nearest].tolist(), distance[nearest].tolist()
        if not math.isfinite(distances[0]):
            raise ArchiveError(
                f"descriptor {descriptor.tolist()!r} is too far from every elite to measure "
                "(its scaled distance overflows float64)"
            )
        return cells_list, distances

    def _genomes(self, cells: list[int]) -> list[dict[str, Any]]:
        assert self._store is not None, "occupied cells imply a store"
        return self._store.get(cells)

    def _elites(self, cells: list[int]) -> list[Elite]:
        """Elites of occupied ``cells`` (one host transfer for all of them)."""
        if not cells:
            return []
        index = torch.tensor(cells, dtype=torch.int64, device=self._device)
        objectives = self._objective.index_select(0, index).tolist()
        descriptors = self._descriptors.index_select(0, index).cpu()
        return [
            Elite(cell=c, objective=o, descriptor=d, genome=g)
            for c, o, d, g in zip(cells, objectives, descriptors.unbind(0), self._genomes(cells))
        ]

    # ---- housekeeping ---------------------------------------------------------------------

    def clear(self) -> None:
        """Remove every elite and reset thresholds; the next batch may use either genome form."""
        state = torch.zeros(self._cells, 3 + self.descriptor_dim, dtype=torch.float64)
        state[:, _THR] = self._threshold_min
        self._set_state(state)
        self._store = None

    def _set_state(self, state: torch.Tensor) -> None:
        """Hold ``state`` ``(C, 3 + k)`` as ``_state``: the first ``C`` rows of ``_state_rows``,
        whose last row is the scratch row of :meth:`_add_on_device`."""
        rows = torch.zeros(self._cells + 1, state.shape[1], dtype=torch.float64)
        rows[: self._cells] = state
        self._state_rows = rows.to(self._device)
        self._state = self._state_rows[: self._cells]
        # Views a device add reads, made once, not per add: (C, 2) and (C,).
        self._thresholds_occupied = self._state[:, _THR : _OCC + 1]
        self._threshold = self._state[:, _THR]

    # One (C, 3 + k) float64 matrix holds every cell's numbers, so a batch reads and writes
    # them with one gather and one scatter. Columns: objective, threshold, occupied, descriptor.
    @property
    def _objective(self) -> torch.Tensor:
        return self._state[:, _OBJ]

    @property
    def _occupied(self) -> torch.Tensor:
        return self._state[:, _OCC] > 0

    @property
    def _descriptors(self) -> torch.Tensor:
        return self._state[:, _DESC:]

    def _in_own_cells(self, descriptors: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """``(n,)`` bool: whether each descriptor ``(n, k)`` belongs in its cell ``(n,)`` (what
        :meth:`load` asks of every stored elite)."""
        return self.cell_index(descriptors) == cells

    def _config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (beyond the shared ones) for save/load."""
        raise NotImplementedError(f"{type(self).__name__} must define _config")

    def _config_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors the constructor needs back on load (e.g. CVT centroids)."""
        return {}

    def save(self, path: str | Path) -> None:
        """Write the archive to the directory ``path``: safetensors for tensors, JSON for the rest.

        No pickle. The JSON records the tensor file's sha256, so load detects truncation or edits.
        The folder is created if missing; a save that fails leaves what the folder held whole.

        Raises:
            ArchiveError: ``path`` is not a str or path-like, or it (or a parent) is an existing
                file rather than a folder, or the files cannot be written (a full disk, no
                permission, a read-only folder): naming the path and the OS's reason, with the
                OSError as its cause. The previous files stay whole.
        """
        self._refuse_meta("save")
        _check_folder_path(path, "save")
        shared = {
            "ranges": [list(r) for r in self._ranges],
            "qd_offset": self._qd_offset,
            "learning_rate": self._learning_rate,
            "threshold_min": self._threshold_min,
            "max_size": self._max_size,
        }
        _persist.save_archive(
            Path(path),
            kind=self.kind,
            config={**shared, **self._config()},
            config_tensors=self._config_tensors(),
            state={
                "objective": self._objective,
                "threshold": self._threshold,
                "occupied": self._occupied,
                "descriptors": self._descriptors,
            },
            store=self._store,
        )

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str | None = None) -> Archive:
        """Rebuild an archive written by :meth:`save`, with its tensors on ``device`` (CPU default).

        The configuration is checked against the stored tensors before anything is built, and
        every elite against its cell, so a forged pair of files (checksums recomputed) is
        refused rather than trusted.

        Raises:
            ArchiveError: ``path`` is not a str or path-like, missing, truncated or tampered
                files, a file of another archive kind,
                a configuration whose cell count differs from the stored tensors' (or is above
                ``MAX_ARCHIVE_CELLS``), more elites than its ``max_size``, a threshold of +inf
                or NaN, or an elite whose
                descriptor lies in another cell than the one holding it (naming the cell).
            ConfigError: a ``device`` torch cannot read or this process cannot use.
        """
        _check_folder_path(path, "load")
        device = as_device(device, f"{cls.__name__}.load.device")
        saved = _persist.load_archive(Path(path), device=device)
        kinds = {sub.kind: sub for sub in _subclasses(Archive)}
        target = kinds.get(saved.kind)
        if target is None or not issubclass(target, cls):
            raise ArchiveError(f"{path} holds a {saved.kind!r} archive, not a {cls.kind}")
        _check_saved_cells(saved.config, saved.state, path)
        try:
            config = dict(saved.config)
            config["ranges"] = [tuple(r) for r in config["ranges"]]
            archive = target(**config, **saved.config_tensors, device=device)
        except (KeyError, TypeError, ValueError, ConfigError) as e:
            raise ArchiveError(f"{path}: the saved configuration is invalid: {e}") from e
        archive._refuse_meta("load")
        archive._set_state(saved.state_matrix(archive.cells, archive.descriptor_dim))
        occupied = archive.occupied_cells()
        if len(occupied) > archive.max_size:
            raise ArchiveError(
                f"{path}: {len(occupied)} cells hold an elite, above the saved max_size "
                f"{archive.max_size} (forged or from another archive)"
            )
        if occupied:
            held = torch.tensor(occupied, dtype=torch.int64, device=archive.device)
            descriptors = archive._descriptors.index_select(0, held)
            wrong = torch.nonzero(~archive._in_own_cells(descriptors, held)).squeeze(1)
            if wrong.numel():
                i = int(wrong[0])
                mapped = int(archive.cell_index(descriptors[i : i + 1])[0])
                raise ArchiveError(
                    f"{path}: the elite in cell {occupied[i]} has a descriptor of cell "
                    f"{mapped} (forged or from another archive)"
                )
        archive._store = saved.genome_store(occupied, archive.cells, archive.device)
        return archive

    # ---- input checks ---------------------------------------------------------------------

    def _as_descriptors(self, descriptors: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(descriptors, torch.Tensor):
            raise ArchiveError(f"{name} must be a torch.Tensor, got {type(descriptors).__name__}")
        if descriptors.dim() != 2 or descriptors.shape[1] != self.descriptor_dim:
            raise ArchiveError(
                f"{name} has shape {tuple(descriptors.shape)}, expected (n, {self.descriptor_dim})"
            )
        _check_batch_size(descriptors.shape[0], name)
        self._check_numbers(descriptors, name)
        return as_numbers(descriptors, self._device, torch.float64)

    def _refuse_meta(self, operation: str) -> None:
        """Raise ArchiveError if the archive is on the meta device, where ``operation`` (which
        reads values) cannot run: it holds shapes only."""
        if self._device.type == "meta":
            raise ArchiveError(
                f"{operation} reads values, but this archive is on the meta device, which holds "
                "shapes only (there, only add(..., check=False) and clear() run)"
            )

    def _check_numbers(self, tensor: torch.Tensor, name: str) -> None:
        """Raise ArchiveError unless ``tensor`` holds real numbers the archive can read: not
        complex (casting would drop the imaginary part) and not on the meta device (no data)
        unless the archive is (it then follows shapes only)."""
        if tensor.is_complex():
            raise ArchiveError(f"{name} must be real-valued, got dtype {tensor.dtype}")
        if tensor.is_meta and self._device.type != "meta":
            raise ArchiveError(
                f"{name} is on the meta device (no data); the archive is on {self._device}"
            )

    def _check_batch(
        self, objectives: torch.Tensor, descriptors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(objectives, torch.Tensor):
            raise ArchiveError(
                f"objectives must be a torch.Tensor, got {type(objectives).__name__}"
            )
        if not isinstance(descriptors, torch.Tensor):
            raise ArchiveError(
                f"descriptors must be a torch.Tensor, got {type(descriptors).__name__}"
            )
        n = objectives.shape[0] if objectives.dim() == 1 else None
        if n is None or descriptors.dim() != 2 or descriptors.shape != (n, self.descriptor_dim):
            raise ArchiveError(
                f"batch shapes disagree: objectives {tuple(objectives.shape)}, descriptors "
                f"{tuple(descriptors.shape)}; expected (n,) and (n, {self.descriptor_dim})"
            )
        _check_batch_size(n, "objectives")
        self._check_numbers(objectives, "objectives")
        self._check_numbers(descriptors, "descriptors")
        # Detached: the archive keeps numbers, never a piece of someone's autograd graph.
        return (
            as_numbers(objectives, self._device, torch.float64),
            as_numbers(descriptors, self._device, torch.float64),
        )


def _check_folder_path(path: Any, verb: str) -> None:
    """Raise ArchiveError unless ``path`` names a folder: a str or path-like (not bytes), not
    empty (``Path("")`` is the current directory, which ``""`` rarely means)."""
    if not isinstance(path, str | os.PathLike) or isinstance(os.fspath(path), bytes):
        raise ArchiveError(f"{verb} needs a folder path (str or Path), got {shown(path)}")
    if os.fspath(path) == "":
        raise ArchiveError(
            f"{verb} needs a folder path, got the empty string (use '.' for the current folder)"
        )


def _check_batch_size(n: int, name: str) -> None:
    """Raise ArchiveError if a batch of ``n`` rows (of ``name``) is above MAX_BATCH_SIZE:
    before it is converted, summed or mapped (an ``expand()``-ed view holds no memory)."""
    if n > MAX_BATCH_SIZE:
        raise ArchiveError(
            f"{name} has {n} rows, above the limit MAX_BATCH_SIZE = {MAX_BATCH_SIZE}; "
            "split it into batches"
        )


def _host_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for a non-empty int64 ``(n,)`` array, without
    its wrapper's overhead (which is most of the cost at small ``n``)."""
    order = values.argsort()
    ordered = values[order]
    starts = np.empty(values.shape[0], dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    inverse = np.empty(values.shape[0], dtype=np.int64)
    inverse[order] = starts.cumsum() - 1
    return ordered[starts], inverse


def _host_cma_mae_thresholds(
    inverse: np.ndarray,
    objectives: np.ndarray,
    can_insert: np.ndarray,
    current: np.ndarray,
    learning_rate: float,
    m: int,
) -> np.ndarray:
    """:func:`~slime.memory._insertion.cma_mae_thresholds` in numpy (CPU archives)."""
    weight = can_insert.astype(np.float64)
    count = np.bincount(inverse, weights=weight, minlength=m)
    total = np.bincount(inverse, weights=objectives * weight, minlength=m)
    # torch's pow, as the tensor path: numpy's differs in the last bit (0.4 ** 2.0 is 0.16
    # there, 0.16000000000000003 in torch and Python), which the paths' equality tests catch.
    mean = total / np.maximum(count, 1.0)
    if not np.isfinite(total).all():
        # Finite objectives can sum past the float range (two 1e308): average the shares instead.
        with np.errstate(invalid="ignore"):
            share = np.where(can_insert, objectives / np.maximum(count, 1.0)[inverse], 0.0)
        mean = np.where(np.isfinite(total), mean, np.bincount(inverse, weights=share, minlength=m))
    keep = torch.pow(1.0 - learning_rate, torch.from_numpy(count)).numpy()
    return keep * current + mean * (1.0 - keep)


def config_number(value: Any, path: str) -> float:
    """``value`` as a float if it is a real Python number (int or float, not bool) within the
    float64 range, else ConfigError naming it (the last part of ``path`` is the argument)."""
    field = path.rsplit(".", 1)[-1]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{field} must be a number, got {shown(value)}", path)
    try:
        return float(value)
    except OverflowError as e:  # an int such as 10**400
        raise ConfigError(f"{field} = {shown(value)} is beyond the float64 range", path) from e


def _check_ranges(ranges: Sequence[tuple[float, float]], owner: str) -> list[tuple[float, float]]:
    if isinstance(ranges, str | bytes) or not isinstance(
        ranges, Sequence | np.ndarray | torch.Tensor
    ):
        # An iterator would be used up by the first pass over it (and has no length to
        # compare with the dims); a set or dict has no order to match the dims with.
        raise ConfigError(
            f"ranges must be a sequence of (low, high) pairs, got {shown(ranges)}",
            f"{owner}.ranges",
        )
    if isinstance(ranges, torch.Tensor | np.ndarray) and ranges.ndim != 2:
        # Iterating it would fail inside numpy or torch: a 0-d one has no rows, a 1-d one's
        # rows are single numbers.
        raise ConfigError(
            f"ranges must be (low, high) pairs, shape (k, 2), got a {type(ranges).__name__} "
            f"of shape {tuple(ranges.shape)}",
            f"{owner}.ranges",
        )
    checked = []
    for i, pair in enumerate(ranges):
        low, high = _range_pair(pair, i, f"{owner}.ranges")
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ConfigError(
                f"range {i} is {pair!r}, expected finite low < high", f"{owner}.ranges"
            )
        if not math.isfinite(high - low):  # cells and distances divide by the width
            raise ConfigError(
                f"range {i} is {pair!r}: its width high - low overflows to inf",
                f"{owner}.ranges",
            )
        checked.append((low, high))
    if not checked:
        raise ConfigError("ranges is empty; need one (low, high) per dimension", f"{owner}.ranges")
    return checked


def _range_pair(pair: Any, i: int, path: str) -> tuple[float, float]:
    """Range ``i`` as two floats, or ConfigError naming it: a pair (a sequence, array or tensor
    of two real numbers); not a string (``"01"``), a set or dict (whose order is not the
    caller's), bools, or numbers beyond the float64 range."""
    ordered = isinstance(pair, Sequence | np.ndarray | torch.Tensor)
    if isinstance(pair, str | bytes) or not ordered or len(pair) != 2:
        raise ConfigError(f"range {i} is {shown(pair)}, expected (low, high)", path)
    bounds = []
    for value in pair:
        if isinstance(value, torch.Tensor | np.ndarray) and value.ndim == 0:
            value = value.item()  # a row of a tensor or array of ranges
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"range {i} is {shown(pair)}, expected two real numbers", path)
        try:
            bounds.append(float(value))
        except OverflowError as e:  # an int such as 10**400
            raise ConfigError(f"range {i} is {shown(pair)}: beyond the float64 range", path) from e
    return bounds[0], bounds[1]


def _check_saved_cells(config: dict[str, Any], state: dict[str, torch.Tensor], path: Any) -> None:
    """Raise ArchiveError unless the saved configuration asks for as many cells as the stored
    state holds, at most MAX_ARCHIVE_CELLS: checked before the archive (and its state, or a
    k-means over that many cells) is built from the configuration."""
    objective = state.get("objective")
    if objective is None or objective.dim() != 1:
        shape = None if objective is None else tuple(objective.shape)
        raise ArchiveError(f"{path}: 'objective' has shape {shape}, expected (cells,)")
    stored = objective.shape[0]
    asked = None
    if "cells" in config:
        asked = config["cells"]
    elif isinstance(config.get("dims"), list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in config["dims"]
    ):
        dims = config["dims"]
        # The product of many dims can be astronomically large: stop once past the limit.
        asked = 1
        for d in dims:
            asked *= d
            if asked > MAX_ARCHIVE_CELLS:
                break
    if isinstance(asked, int) and not isinstance(asked, bool):
        if asked > MAX_ARCHIVE_CELLS:
            raise ArchiveError(
                f"{path}: the saved configuration asks for {shown(asked)} cells, above the "
                f"limit MAX_ARCHIVE_CELLS = {MAX_ARCHIVE_CELLS}"
            )
        if asked != stored:
            raise ArchiveError(
                f"{path}: the saved configuration asks for {asked} cells, the stored state "
                f"holds {stored}"
            )


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found
