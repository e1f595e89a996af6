"""Packed payload storage: rows kept in place, moved between layouts, freed and reused.

Payload-by-payload copies (packing switched off) are the reference: whatever the mix of
layouts a stream brings, reading the archive back gives the same genomes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from slime.memory import GridArchive, _stores
from slime.memory._stores import _Pack

RANGES = [(-1.0, 1.0), (0.0, 2.0)]


def layouts_stream(seed: int, batches: int = 24, batch: int = 40):
    """Batches cycling through two packable layouts, one not packable (a stray key), and
    multi-key payloads whose key order differs between items (not packable either)."""
    rng = np.random.default_rng(seed)
    for i in range(batches):
        objectives = torch.from_numpy(rng.integers(-4, 5, size=batch) / 2.0)
        descriptors = torch.from_numpy(rng.uniform([-1.2, -0.2], [1.2, 2.2], size=(batch, 2)))
        values = torch.from_numpy(rng.normal(size=(batch, 3)))
        kind = i % 4
        if kind == 0:
            genomes = [{"w": row} for row in values]
        elif kind == 1:
            genomes = [{"w": row[:2].float()} for row in values]
        elif kind == 2:  # one payload has another single key: the batch stays loose
            genomes = [{"w": row} for row in values]
            genomes[batch // 2] = {"v": values[batch // 2]}
        else:
            genomes = [
                {"a": row, "b": row[0]} if j % 2 else {"b": row[0], "a": row}
                for j, row in enumerate(values)
            ]
        yield genomes, objectives, descriptors


def assert_same_genomes(ours: GridArchive, reference: GridArchive) -> None:
    assert torch.equal(ours._state, reference._state)
    mine, theirs = list(ours), list(reference)
    assert [e.cell for e in mine] == [e.cell for e in theirs]
    for a, b in zip(mine, theirs):
        assert list(a.genome) == list(b.genome)
        for key, value in b.genome.items():
            assert a.genome[key].dtype == value.dtype
            assert torch.equal(a.genome[key], value)


@pytest.mark.parametrize("max_size", [108, 9])
@pytest.mark.parametrize("host", [True, False])
def test_mixed_layouts_read_back_as_payload_by_payload_copies(monkeypatch, max_size, host):
    packed = GridArchive([12, 9], RANGES, max_size=max_size)
    packed._host = host
    for genomes, objectives, descriptors in layouts_stream(1):
        packed.add(genomes, objectives, descriptors)
    assert len(packed._store._packs) == 2, "both packable layouts were packed"
    if max_size > 9:  # a small archive may have evicted every loose genome by the end
        assert packed._store._loose, "the unpackable batches stayed loose"
    monkeypatch.setattr(_stores, "_stack_flat", lambda payloads: None)
    reference = GridArchive([12, 9], RANGES, max_size=max_size)
    for genomes, objectives, descriptors in layouts_stream(1):
        reference.add(genomes, objectives, descriptors)
    assert_same_genomes(packed, reference)
    store = packed._store
    held = np.flatnonzero(store._pack_of >= 0)
    # Every cell held in a pack has its own row; loose and packed cells do not overlap.
    pairs = set(zip(store._pack_of[held].tolist(), store._row_of[held].tolist()))
    assert len(pairs) == held.shape[0]
    assert not set(held.tolist()) & set(store._loose)


def test_improving_a_cell_overwrites_its_row_in_place() -> None:
    archive = GridArchive([5, 4], RANGES)
    point = torch.tensor([[0.0, 1.0]])
    archive.add([{"w": torch.zeros(3)}], torch.tensor([1.0]), point)
    (cell,) = archive.occupied_cells()
    row = int(archive._store._row_of[cell])
    archive.add([{"w": torch.ones(3)}], torch.tensor([2.0]), point)
    assert int(archive._store._row_of[cell]) == row
    assert next(iter(archive)).genome["w"].tolist() == [1.0, 1.0, 1.0]


def test_caller_edits_to_dicts_and_tensors_after_add_do_not_reach_the_archive() -> None:
    archive = GridArchive([5, 4], RANGES)
    weights = torch.zeros(2, 3, requires_grad=True)
    genomes = [{"w": row, "id": torch.tensor(i)} for i, row in enumerate(weights.unbind(0))]
    archive.add(genomes, torch.tensor([1.0, 2.0]), torch.tensor([[-0.9, 0.1], [0.9, 1.9]]))
    assert archive._store._packs
    with torch.no_grad():
        weights.add_(5.0)
    genomes[0]["w"] = torch.full((3,), 9.0)
    genomes[1]["id"] = torch.tensor(7)
    genomes[1]["extra"] = torch.ones(1)
    elites = list(archive)
    assert [sorted(e.genome) for e in elites] == [["id", "w"], ["id", "w"]]
    assert [e.genome["w"].tolist() for e in elites] == [[0.0] * 3, [0.0] * 3]
    assert [int(e.genome["id"]) for e in elites] == [0, 1]
    assert not any(e.genome["w"].requires_grad for e in elites)


def test_pack_hands_out_each_free_row_once_and_keeps_rows_when_it_grows() -> None:
    pack = _Pack({"w": torch.zeros(1, 2)}, cells=100)
    first = pack.take(5)
    assert sorted(first.tolist()) == list(range(5))
    pack.write(first, {"w": torch.arange(10.0).view(5, 2)})
    pack.release(first[[1, 3]])
    second = pack.take(20)  # the two freed rows and new ones: the buffers grow
    assert len(set(second.tolist())) == 20
    assert not set(second.tolist()) & {int(first[0]), int(first[2]), int(first[4])}
    assert pack.buffers["w"].shape[0] >= 23
    kept = pack.buffers["w"][torch.from_numpy(first[[0, 2, 4]])]
    assert kept.tolist() == [[0.0, 1.0], [4.0, 5.0], [8.0, 9.0]]


def test_pack_grows_to_at_most_one_row_per_cell() -> None:
    pack = _Pack({"w": torch.zeros(1, 2)}, cells=40)
    rows = pack.take(30)  # more than the 16 a new pack starts with: exactly what is needed
    assert pack.buffers["w"].shape[0] == 30
    rows = np.concatenate([rows, pack.take(10)])  # doubling would give 60: capped at 40
    assert pack.buffers["w"].shape[0] == 40
    assert sorted(rows.tolist()) == list(range(40))
