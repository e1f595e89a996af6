"""Archive.where: the elites inside a descriptor box, and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from slime.memory import Archive, CVTArchive, GridArchive
from slime.proto import ArchiveError

RANGES = [(0.0, 1.0), (0.0, 1.0)]


def filled(archive: Archive, seed: int = 0, n: int = 60) -> Archive:
    rng = np.random.default_rng(seed)
    points = torch.from_numpy(rng.uniform(0.0, 1.0, size=(n, 2)))
    objectives = torch.from_numpy(rng.normal(size=n))
    archive.add([{"id": torch.tensor(i)} for i in range(n)], objectives, points)
    return archive


def brute_force(archive: Archive, low, high) -> list[int]:
    return [
        e.cell
        for e in archive
        if all(lo <= d <= hi for lo, d, hi in zip(low, e.descriptor.tolist(), high))
    ]


@pytest.mark.parametrize(
    "make",
    [
        lambda: GridArchive([6, 6], RANGES, max_size=36),
        lambda: CVTArchive(20, RANGES, samples=400, max_size=20),
    ],
)
def test_where_returns_the_elites_inside_the_box(make) -> None:
    archive = filled(make())
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = np.sort(rng.uniform(-0.1, 1.1, size=(2, 2)), axis=0)
        got = archive.where(a.tolist(), b.tolist())
        assert [e.cell for e in got] == brute_force(archive, a, b)
        assert got == sorted(got, key=lambda e: e.cell)
    full = archive.where()
    assert [e.cell for e in full] == [e.cell for e in archive]
    by_cell = {e.cell: e for e in archive}
    for elite in full:
        assert elite.objective == by_cell[elite.cell].objective
        assert torch.equal(elite.genome["id"], by_cell[elite.cell].genome["id"])


def test_where_bounds_are_inclusive_and_open_sides_take_none_or_inf() -> None:
    archive = GridArchive([4, 4], RANGES)
    points = torch.tensor([[0.1, 0.1], [0.3, 0.6], [0.9, 0.9]], dtype=torch.float64)
    archive.add([{"i": i} for i in range(3)], torch.ones(3), points)
    assert [e.genome["i"] for e in archive.where([0.3, 0.6], [0.3, 0.6])] == [1]
    assert [e.genome["i"] for e in archive.where([None, 0.6], None)] == [1, 2]
    assert [e.genome["i"] for e in archive.where([-math.inf, -math.inf], [0.3, math.inf])] == [
        0,
        1,
    ]
    assert [e.genome["i"] for e in archive.where(high=torch.tensor([0.2, 0.2]))] == [0]
    assert archive.where([0.31, None], [0.89, None]) == []


def test_where_on_an_empty_archive_is_empty() -> None:
    assert GridArchive([3, 3], RANGES).where([0.0, 0.0], [1.0, 1.0]) == []


@pytest.mark.parametrize(
    ("low", "high", "message"),
    [
        ([0.0], None, r"low has 1 entries, expected 2"),
        (None, [0.1, 0.2, 0.3], r"high has 3 entries, expected 2"),
        ([0.0, float("nan")], None, r"low\[1\] is NaN"),
        (None, torch.tensor([float("nan"), 1.0]), r"high\[0\] is NaN"),
        ([0.5, 0.0], [0.4, 1.0], r"low\[0\] = 0.5 is above high\[0\] = 0.4"),
        (["a", 0.0], None, r"low\[0\] is 'a', not a number"),
        ("01", None, r"low must be 2 numbers, got '01'"),
        (torch.zeros(2, 2), None, r"low must be 2 real numbers, got a tensor of shape \(2, 2\)"),
        ([True, 0.0], None, r"low\[0\] is True, not a number"),
    ],
)
def test_where_rejects_bad_bounds_naming_them(low, high, message) -> None:
    archive = filled(GridArchive([3, 3], RANGES))
    before = [e.cell for e in archive]
    with pytest.raises(ArchiveError, match=message):
        archive.where(low, high)
    assert [e.cell for e in archive] == before


@pytest.mark.parametrize(
    "make",
    [
        lambda: GridArchive([6, 6], RANGES, max_size=36),
        lambda: GridArchive([6, 6], RANGES, max_size=5),  # evicting
        lambda: CVTArchive(20, RANGES, samples=400, max_size=20),
    ],
)
def test_elite_scores_are_the_elites_without_their_genomes(make) -> None:
    archive = filled(make())
    cells, objectives, descriptors = archive.elite_scores()
    elites = list(archive)
    assert cells.tolist() == [e.cell for e in elites]
    assert objectives.dtype == descriptors.dtype == torch.float64
    assert objectives.tolist() == [e.objective for e in elites]
    assert torch.equal(descriptors, torch.stack([e.descriptor for e in elites]))
    archive.clear()
    cells, objectives, descriptors = archive.elite_scores()
    assert cells.shape == objectives.shape == (0,) and descriptors.shape == (0, 2)
