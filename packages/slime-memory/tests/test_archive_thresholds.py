"""Archive.thresholds: offering only the items above their cell's threshold gives the archive that
offering every item gives (the filter a caller with costly genomes applies)."""

from __future__ import annotations

import math

import pytest
import torch
from slime.memory import CVTArchive, GridArchive
from slime.proto import ArchiveError

RANGES = [(-1.0, 1.0), (-1.0, 1.0)]


def _archives(kind: str, **kw):
    if kind == "grid":
        return [GridArchive([5, 5], RANGES, **kw) for _ in range(2)]
    centroids = torch.rand(20, 2, generator=torch.Generator().manual_seed(7)) * 2 - 1
    return [CVTArchive(20, RANGES, centroids=centroids, **kw) for _ in range(2)]


def _batch(seed: int, n: int = 40):
    g = torch.Generator().manual_seed(seed)
    return (
        {"solution": torch.randn(n, 3, generator=g)},
        torch.randn(n, generator=g),
        torch.rand(n, 2, generator=g) * 2.2 - 1.1,
    )


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("kind", ["grid", "cvt"])
@pytest.mark.parametrize(
    "options",
    [{}, {"threshold_min": -0.5, "learning_rate": 0.3}, {"max_size": 6}],
    ids=["map-elites", "cma-mae", "eviction"],
)
def test_offering_only_items_above_their_threshold_gives_the_same_archive(kind, options, device):
    everything, filtered = _archives(kind, device=device, **options)
    for seed in range(6):
        genomes, objectives, descriptors = _batch(seed)
        genomes = {"solution": genomes["solution"].to(device)}
        objectives, descriptors = objectives.to(device), descriptors.to(device)
        threshold = filtered.thresholds(descriptors)
        assert threshold.dtype == torch.float64 and threshold.shape == objectives.shape
        above = objectives.double() > threshold
        whole = everything.add(genomes, objectives, descriptors)
        assert bool((whole.status[~above] == 0).all())
        torch.testing.assert_close(whole.value[~above], (objectives.double() - threshold)[~above])
        if above.any():
            part = filtered.add(
                {"solution": genomes["solution"][above]}, objectives[above], descriptors[above]
            )
            assert torch.equal(part.status, whole.status[above])
        assert torch.equal(everything._state, filtered._state)
        a, b = list(everything), list(filtered)
        assert [(e.cell, e.objective) for e in a] == [(e.cell, e.objective) for e in b]
        assert all(torch.equal(x.genome["solution"], y.genome["solution"]) for x, y in zip(a, b))


def test_thresholds_are_the_occupants_objectives_and_threshold_min_in_empty_cells():
    archive = GridArchive([2, 1], [(0.0, 1.0), (0.0, 1.0)], threshold_min=-2.0, learning_rate=1.0)
    archive.add({"x": torch.zeros(1, 1)}, torch.tensor([0.5]), torch.tensor([[0.2, 0.5]]))
    got = archive.thresholds(torch.tensor([[0.2, 0.5], [0.8, 0.5]]))
    assert got.tolist() == [0.5, -2.0]
    assert math.isinf(GridArchive([2, 1], [(0, 1), (0, 1)]).thresholds(torch.zeros(1, 2))[0])


def test_thresholds_name_a_non_finite_descriptor():
    with pytest.raises(ArchiveError, match="descriptors"):
        GridArchive([2, 2], RANGES).thresholds(torch.tensor([[0.0, 0.0], [math.nan, 0.0]]))
