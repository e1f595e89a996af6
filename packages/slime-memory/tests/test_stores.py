"""Genome stores: the sync-free column staging (used on accelerators) equals the host one."""

from __future__ import annotations

import torch
from slime.memory._stores import ColumnStore


def stage_and_apply(store: ColumnStore, batches) -> None:
    for columns, cells, kept, source in batches:
        store.apply(store.stage(columns, cells, kept, source, None))


def test_sync_free_column_staging_matches_landing_rows_only() -> None:
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        columns = {"w": torch.randn(6, 2, 3, generator=g), "id": torch.arange(6)}
        cells = torch.randperm(10, generator=g)[:4]
        kept = torch.rand(4, generator=g) > 0.5
        source = torch.randint(0, 6, (4,), generator=g)
        batches.append((columns, cells, kept, source))
    host = ColumnStore(10, torch.device("cpu"), sync_free=False)
    device_style = ColumnStore(10, torch.device("cpu"), sync_free=True)
    stage_and_apply(host, batches)
    stage_and_apply(device_style, batches)
    for name in ("w", "id"):
        assert torch.equal(host.columns[name], device_style.columns[name])


def test_default_staging_is_sync_free_only_off_the_cpu() -> None:
    assert not ColumnStore(4, torch.device("cpu")).sync_free
    assert ColumnStore(4, torch.device("meta")).sync_free
