"""GraphedAdd: replaying the captured sync-free add gives what eager adds give (CUDA, -m gpu);
it refuses archives it cannot capture, inputs of another layout, and archives cleared since."""

from __future__ import annotations

import pytest
import torch
from slime.memory import Archive, CVTArchive, GraphedAdd, GridArchive
from slime.proto import ArchiveError

RANGES = [(-1.0, 1.0), (0.0, 2.0)]
CONFIGS = {
    "plain": {},
    "cma-mae evicting": {"max_size": 7, "learning_rate": 0.5, "threshold_min": -1.0},
}


def archive_of(kind: str, config: dict, device: str = "cuda") -> Archive:
    if kind == "grid":
        return GridArchive([20, 15], RANGES, **{"max_size": 300, **config}, device=device)
    centroids = torch.rand(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    centroids = centroids * torch.tensor([2.0, 2.0]) - torch.tensor([1.0, 0.0])
    return CVTArchive(64, RANGES, centroids=centroids, **{"max_size": 64, **config}, device=device)


def batches(n: int, count: int, device: str = "cuda"):
    """Ties, repeated cells, a NaN objective and an Inf descriptor in every batch."""
    g = torch.Generator().manual_seed(n)
    for _ in range(count):
        solutions = torch.randn(n, 3, generator=g)
        objectives = torch.randint(-4, 5, (n,), generator=g).double() / 2
        descriptors = torch.rand(n, 2, generator=g, dtype=torch.float64) * 2.6
        descriptors -= torch.tensor([1.3, 0.3], dtype=torch.float64)
        objectives[0] = float("nan")
        descriptors[-1, 1] = float("inf")
        yield solutions.to(device), objectives.to(device), descriptors.to(device)


def test_graphed_add_refuses_an_archive_off_cuda() -> None:
    archive = GridArchive([5, 4], RANGES)
    with pytest.raises(ArchiveError, match="the archive is on cpu, expected a CUDA device"):
        GraphedAdd(archive, {"x": torch.zeros(8, 3)})
    assert archive.genome_form is None


@pytest.mark.gpu
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("kind", ["grid", "cvt"])
def test_replays_give_what_eager_adds_give(kind: str, config: str) -> None:
    eager, graphed = archive_of(kind, CONFIGS[config]), archive_of(kind, CONFIGS[config])
    stream = list(batches(400, 6))
    add = GraphedAdd(graphed, {"x": stream[0][0]})
    for solutions, objectives, descriptors in stream:
        expected = eager.add({"x": solutions}, objectives, descriptors, check=False)
        got = add({"x": solutions}, objectives, descriptors)
        assert torch.equal(got.status, expected.status)
        torch.testing.assert_close(got.value, expected.value, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(graphed._state, eager._state)
    occupied = eager._occupied
    assert torch.equal(graphed._store.columns["x"][occupied], eager._store.columns["x"][occupied])
    assert [(e.cell, e.objective) for e in graphed] == [(e.cell, e.objective) for e in eager]


@pytest.mark.gpu
def test_building_adds_nothing_and_fixes_the_column_layout() -> None:
    archive = archive_of("grid", {})
    add = GraphedAdd(archive, {"x": torch.zeros(16, 3, device="cuda")})
    assert len(archive) == 0 and archive.genome_form == "columns" and add.batch_size == 16
    with pytest.raises(ArchiveError, match="differ"):
        archive.add({"y": torch.zeros(2, 3, device="cuda")}, torch.ones(2), torch.zeros(2, 2))
    mixed = archive.add({"x": torch.ones(2, 3, device="cuda")}, torch.ones(2), torch.zeros(2, 2))
    assert mixed.status.tolist() == [2, 2] and len(archive) == 1  # eager adds still work


@pytest.mark.gpu
def test_inputs_of_another_layout_are_refused() -> None:
    add = GraphedAdd(archive_of("grid", {}), {"x": torch.zeros(16, 3, device="cuda")})
    objectives, descriptors = torch.ones(16, device="cuda"), torch.zeros(16, 2, device="cuda")
    with pytest.raises(ArchiveError, match="differ from the captured"):
        add({"x": torch.zeros(16, 3, dtype=torch.float64, device="cuda")}, objectives, descriptors)
    with pytest.raises(ArchiveError, match=r"objectives has shape \(15,\), expected \(16,\)"):
        add({"x": torch.zeros(16, 3, device="cuda")}, objectives[1:], descriptors)


@pytest.mark.gpu
def test_a_cleared_archive_needs_a_new_graphed_add() -> None:
    archive = archive_of("cvt", {})
    solutions, objectives, descriptors = next(batches(32, 1))
    add = GraphedAdd(archive, {"x": solutions})
    archive.clear()
    with pytest.raises(ArchiveError, match="cleared"):
        add({"x": solutions}, objectives, descriptors)


@pytest.mark.gpu
def test_payload_archives_are_refused() -> None:
    archive = archive_of("grid", {})
    archive.add([{"x": torch.zeros(3)}], torch.ones(1), torch.zeros(1, 2))
    with pytest.raises(ArchiveError, match="stores payloads"):
        GraphedAdd(archive, {"x": torch.zeros(4, 3, device="cuda")})


@pytest.mark.gpu
def test_columns_above_the_batch_limit_are_refused_before_allocating() -> None:
    from slime.memory.limits import MAX_BATCH_SIZE

    archive = archive_of("grid", {})
    huge = torch.zeros(1, 3, device="cuda").expand(10**12, 3)  # a view: no memory
    with pytest.raises(ArchiveError, match=f"above the limit MAX_BATCH_SIZE = {MAX_BATCH_SIZE}"):
        GraphedAdd(archive, {"x": huge})
    assert archive.genome_form is None


@pytest.mark.parametrize("archive", [None, "archive"], ids=["none", "str"])
def test_graphed_add_of_something_that_is_no_archive_raises_archive_error(archive) -> None:
    # GraphedAdd read archive.device: None raised AttributeError.
    with pytest.raises(ArchiveError, match="GraphedAdd needs a slime.memory Archive, got"):
        GraphedAdd(archive, {"x": torch.zeros(2, 3)})
