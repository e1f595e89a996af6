"""Genome stores: the per-item column staging (accelerators: no host sync, every item writes,
those that land nowhere into a scratch row) equals staging the landing rows only (CPU archives),
and payload staging from device tensors picks the same rows."""

from __future__ import annotations

import numpy as np
import torch
from slime.memory._stores import ColumnStore, PayloadStore


def random_batches(seed: int, cells: int = 10, n: int = 8, batches: int = 5):
    """Per item: a cell (repeats likely), its cell's winner (an item of that cell, not always
    the first) and whether the cell takes the winner's row."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        columns = {"w": torch.randn(n, 2, 3, generator=g), "id": torch.arange(n) + 100}
        item_cells = torch.randint(0, cells, (n,), generator=g)
        rank = torch.randperm(n, generator=g)  # the winner of a cell: its lowest-ranked item
        low = torch.full((cells,), n, dtype=torch.int64).scatter_reduce(
            0, item_cells, rank, reduce="amin"
        )
        winner = torch.zeros(cells, dtype=torch.int64)
        winner[item_cells[rank == low.index_select(0, item_cells)]] = torch.nonzero(
            rank == low.index_select(0, item_cells)
        ).squeeze(1)
        takes = torch.rand(cells, generator=g) > 0.4
        yield (
            columns,
            item_cells,
            winner.index_select(0, item_cells),
            takes.index_select(0, item_cells),
        )


def landing_rows(item_cells, source, kept):
    lands = (kept & (source == torch.arange(source.shape[0]))).numpy()
    rows = np.flatnonzero(lands)
    return item_cells.numpy()[rows], rows


def targets(item_cells, source, kept, cells=10):
    """Per item: its cell if it is the row its cell takes, else ``cells`` (the scratch row)."""
    lands = kept & (source == torch.arange(source.shape[0]))
    return torch.where(lands, item_cells, cells)


def test_per_item_column_staging_equals_landing_rows_only() -> None:
    per_item, landing = ColumnStore(10, torch.device("cpu")), ColumnStore(10, torch.device("cpu"))
    for seed in range(3):
        for columns, item_cells, source, kept in random_batches(seed):
            per_item.apply(per_item.stage(columns, targets(item_cells, source, kept), None))
            target, rows = landing_rows(item_cells, source, kept)
            landing.apply(landing.stage_landing(columns, target, rows, None))
            for name in ("w", "id"):
                assert torch.equal(per_item.columns[name], landing.columns[name])
    assert (per_item.columns["id"] >= 100).any(), "some rows landed"


def test_payload_staging_from_device_tensors_copies_each_landing_item_once() -> None:
    staged = PayloadStore(10)
    reference = PayloadStore(10)
    for columns, item_cells, source, kept in random_batches(5):
        genomes = [{"id": int(i)} for i in columns["id"]]  # loose payloads
        lost = torch.zeros(10, dtype=torch.bool)
        lost[int(item_cells[0])] = not bool(kept[0])
        added, _, removed = staged.stage(genomes, targets(item_cells, source, kept), lost)
        target, rows = landing_rows(item_cells, source, kept)
        assert (added or {}) == {int(c): genomes[r] for c, r in zip(target, rows)}
        assert removed.tolist() == torch.nonzero(lost).squeeze(1).tolist()
        staged.apply((added, None, removed))
        reference.apply(reference.stage_landing(genomes, target, rows, removed))
    assert staged.payloads == reference.payloads
