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

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from slime.memory._payload import as_numbers, copy_payload
from slime.proto import ArchiveError

__all__ = ["ColumnStore", "GenomeStore", "PayloadStore", "store_for"]


class GenomeStore:
    """Genomes by cell. ``stage`` may raise and changes nothing; ``apply`` cannot fail."""

    kind = "store"

    def check_batch(self, genomes: Any, n: int) -> None:
        raise NotImplementedError

    def stage(
        self,
        genomes: Any,
        cells: torch.Tensor,
        kept: torch.Tensor,
        source: torch.Tensor,
        lost: torch.Tensor | None,
    ) -> Any:
        """Prepare a change: where ``kept`` ``(m,)``, cell ``cells[i]`` takes batch row
        ``source[i]``; where ``lost`` ``(C,)`` (None: nowhere), a cell loses its elite."""
        raise NotImplementedError

    def apply(self, staged: Any) -> None:
        raise NotImplementedError

    def get(self, cells: list[int]) -> list[dict[str, Any]]:
        """The stored genomes of occupied ``cells`` (payload store: the stored objects)."""
        raise NotImplementedError


class PayloadStore(GenomeStore):
    kind = "payloads"

    def __init__(self) -> None:
        self.payloads: dict[int, dict[str, Any]] = {}

    def check_batch(self, genomes: Any, n: int) -> None:
        if isinstance(genomes, Mapping) or not isinstance(genomes, Sequence):
            raise ArchiveError(
                "this archive stores per-item payloads (a sequence of dicts); got "
                f"{type(genomes).__name__}"
            )
        if len(genomes) != n:
            raise ArchiveError(f"{len(genomes)} genomes for a batch of {n} objectives")

    def stage(self, genomes, cells, kept, source, lost):
        landing = torch.nonzero(kept).squeeze(1)
        target, rows = torch.stack([cells[landing], source[landing]]).tolist()
        removed = [] if lost is None else torch.nonzero(lost).squeeze(1).tolist()
        added = {}
        for cell, pos in zip(target, rows):
            genome = genomes[pos]
            if not isinstance(genome, dict):
                raise ArchiveError(f"genomes[{pos}] is a {type(genome).__name__}, not a dict")
            added[cell] = copy_payload(genome, f"genomes[{pos}]")
        return added, removed

    def apply(self, staged) -> None:
        added, removed = staged
        for cell in removed:
            del self.payloads[cell]
        self.payloads.update(added)

    def get(self, cells: list[int]) -> list[dict[str, Any]]:
        return [self.payloads[c] for c in cells]


class ColumnStore(GenomeStore):
    kind = "columns"

    def __init__(self, cells: int, device: torch.device, sync_free: bool | None = None) -> None:
        self.cells = cells
        self.device = device
        # Sync-free staging rewrites every touched row; the default uses it off the CPU only.
        self.sync_free = device.type != "cpu" if sync_free is None else sync_free
        self.columns: dict[str, torch.Tensor] = {}  # name -> (cells, ...)

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
            if column.dim() == 0 or column.shape[0] != n:
                raise ArchiveError(
                    f"genome column {name!r} has shape {tuple(column.shape)}; expected ({n}, ...)"
                )
        if self.columns:
            expected = {k: (tuple(v.shape[1:]), v.dtype) for k, v in self.columns.items()}
            got = {k: (tuple(v.shape[1:]), v.dtype) for k, v in genomes.items()}
            if got != expected:
                raise ArchiveError(f"genome columns {got} differ from the archive's {expected}")

    def stage(self, genomes, cells, kept, source, lost):
        buffers = self.columns or {
            name: torch.zeros((self.cells, *c.shape[1:]), dtype=c.dtype, device=self.device)
            for name, c in genomes.items()
        }
        if not self.sync_free:
            # Copy only the rows that land (finding them is free on the host).
            landing = torch.nonzero(kept).squeeze(1)
            cells, source = cells.index_select(0, landing), source.index_select(0, landing)
            values = {
                name: as_numbers(column, self.device).index_select(0, source)
                for name, column in genomes.items()
            }
        else:
            # On an accelerator, rewrite every touched row (old or new) rather than count the
            # landing rows, which would synchronise with the host.
            values = {}
            for name, column in genomes.items():
                new = as_numbers(column, self.device).index_select(0, source)
                old = buffers[name].index_select(0, cells)
                mask = kept.view(-1, *([1] * (new.dim() - 1)))
                values[name] = torch.where(mask, new, old)
        return buffers, cells, values

    def apply(self, staged) -> None:
        buffers, cells, values = staged
        self.columns = buffers
        for name, value in values.items():
            self.columns[name].index_copy_(0, cells, value)

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
    return PayloadStore()
