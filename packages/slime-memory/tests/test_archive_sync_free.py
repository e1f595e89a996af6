"""``add(..., check=False)``: the sync-free add. Non-finite items are left out and reported with
status -1 (value NaN); everything else is what the batch without them gives. The tensor path
(what accelerators run, forced on the CPU with ``_host = False``) is checked against the CPU's
numpy path for every stream hypothesis draws: all cells every batch, evictions, CMA-MAE."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from slime.memory import Archive, CVTArchive, GridArchive
from slime.proto import ArchiveError

RANGES = [(-1.0, 1.0), (0.0, 2.0)]
CENTROIDS = torch.from_numpy(np.random.default_rng(4).uniform(-1, 2, size=(15, 2)))

ARCHIVES = {
    "grid": lambda: GridArchive([12, 9], RANGES, max_size=108),
    "grid evicting": lambda: GridArchive([5, 4], RANGES, max_size=6),
    "cma-mae evicting": lambda: GridArchive(
        [6, 5], RANGES, learning_rate=0.5, threshold_min=-1.0, max_size=8
    ),
    "cvt brute force": lambda: CVTArchive(
        15, RANGES, centroids=CENTROIDS, nearest="brute_force", max_size=9
    ),
}


def on_path(archive: Archive, path: str) -> Archive:
    archive._host = path == "host"
    return archive


def stream_with_non_finite(seed: int, batches: int = 6, batch: int = 25):
    """Ties, repeated cells, and in every batch a few NaN/Inf objectives or descriptors."""
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        solutions = torch.from_numpy(rng.normal(size=(batch, 3)))
        objectives = rng.integers(-3, 4, size=batch) / 2.0
        descriptors = rng.uniform([-1.3, -0.3], [1.3, 2.3], size=(batch, 2))
        bad = rng.choice(batch, size=4, replace=False)
        objectives[bad[0]] = math.nan
        objectives[bad[1]] = math.inf
        descriptors[bad[2], 1] = -math.inf
        descriptors[bad[3], 0] = math.nan
        yield solutions, torch.from_numpy(objectives), torch.from_numpy(descriptors)


def genomes_of(solutions: torch.Tensor, form: str, keep: torch.Tensor | None = None):
    ids = torch.arange(solutions.shape[0])
    if keep is not None:
        solutions, ids = solutions[keep], ids[keep]
    if form == "columns":
        return {"x": solutions, "id": ids}
    return [{"x": row, "id": i} for row, i in zip(solutions, ids)]


def assert_same_contents(ours: Archive, reference: Archive) -> None:
    assert torch.equal(ours._state, reference._state)
    mine, theirs = list(ours), list(reference)
    assert [e.cell for e in mine] == [e.cell for e in theirs]
    for a, b in zip(mine, theirs):
        for key in b.genome:
            assert torch.equal(a.genome[key], b.genome[key])


@pytest.mark.parametrize("form", ["columns", "payloads"])
@pytest.mark.parametrize("path", ["host", "device"])
@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_non_finite_items_report_minus_one_and_the_rest_lands_as_without_them(
    name: str, path: str, form: str
) -> None:
    ours = on_path(ARCHIVES[name](), path)
    reference = ARCHIVES[name]()
    for solutions, objectives, descriptors in stream_with_non_finite(3):
        finite = torch.isfinite(objectives) & torch.isfinite(descriptors).all(dim=1)
        got = ours.add(genomes_of(solutions, form), objectives, descriptors, check=False)
        expected = reference.add(
            genomes_of(solutions, form, finite), objectives[finite], descriptors[finite]
        )
        assert got.status[~finite].tolist() == [-1] * int((~finite).sum())
        assert torch.isnan(got.value[~finite]).all()
        assert torch.equal(got.status[finite], expected.status)
        assert torch.equal(got.value[finite], expected.value)
        assert_same_contents(ours, reference)


@pytest.mark.parametrize("path", ["host", "device"])
def test_check_true_raises_naming_the_first_non_finite_item_and_changes_nothing(path) -> None:
    archive = on_path(GridArchive([5, 4], RANGES, max_size=3), path)
    archive.add({"x": torch.ones(1, 2)}, torch.tensor([1.0]), torch.tensor([[0.0, 1.0]]))
    state, columns = archive._state.clone(), archive._store.columns["x"].clone()
    descriptors = torch.tensor([[0.0, 1.0], [0.5, math.inf], [math.nan, 0.0]])
    with pytest.raises(ArchiveError, match=r"objectives/descriptors\[1\] is not finite"):
        archive.add({"x": torch.zeros(3, 2)}, torch.tensor([5.0, 5.0, 5.0]), descriptors)
    assert torch.equal(archive._state, state)
    assert torch.equal(archive._store.columns["x"], columns)


@pytest.mark.parametrize("check", [None, 0, "no"])
def test_check_must_be_a_bool(check) -> None:
    archive = GridArchive([5, 4], RANGES)
    with pytest.raises(ArchiveError, match="check must be True or False"):
        archive.add({"x": torch.ones(1, 2)}, torch.ones(1), torch.zeros(1, 2), check=check)
    assert archive.genome_form is None


item = st.tuples(
    st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0, math.nan, math.inf]),  # ties, and non-finite
    st.sampled_from([-1.5, -1.0, -0.3, 0.0, 0.49, 0.5, 0.99, 1.0, 1.7, math.nan]),
    st.floats(-0.5, 2.5, allow_nan=False),
)
streams = st.lists(st.lists(item, min_size=1, max_size=40), min_size=1, max_size=6)
configs = st.sampled_from(
    [
        {"max_size": 30},  # never binds
        {"max_size": 4},
        {"max_size": 29},
        {"learning_rate": 0.3, "threshold_min": -0.5, "max_size": 30},
        {"learning_rate": 0.6, "threshold_min": 0.0, "max_size": 5},
    ]
)


@settings(max_examples=80, deadline=None)
@given(stream=streams, config=configs)
def test_sync_free_tensor_path_equals_the_host_path(stream, config) -> None:
    device_style = GridArchive([6, 5], RANGES, **config)
    device_style._host = False
    host = GridArchive([6, 5], RANGES, **config)
    for batch in stream:
        objectives = torch.tensor([o for o, _, _ in batch], dtype=torch.float64)
        descriptors = torch.tensor([[x, y] for _, x, y in batch], dtype=torch.float64)
        columns = {"i": torch.arange(len(batch))}
        got = device_style.add(columns, objectives, descriptors, check=False)
        expected = host.add(columns, objectives, descriptors, check=False)
        assert torch.equal(got.status, expected.status)
        torch.testing.assert_close(got.value, expected.value, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(device_style._state, host._state)
        occupied = host._occupied
        assert torch.equal(
            device_style._store.columns["i"][occupied], host._store.columns["i"][occupied]
        )
    assert len(host) <= config["max_size"]


def test_sync_free_add_keeps_finite_numbers_bit_for_bit_and_sums_nothing() -> None:
    # The tensor path tells non-finite items apart by x - x, not by sums that finite values
    # could overflow, and leaves finite objectives as they were (-0.0 included).
    archive = on_path(GridArchive([5, 4], RANGES), "device")
    big = 1.7e308  # two of them sum to Inf
    objectives = torch.tensor([-0.0, 5e-324, -big, big, math.nan], dtype=torch.float64)
    descriptors = torch.tensor(
        [[-0.9, 0.1], [0.5, 1.9], [0.0, 1.0], [big, big], [0.5, 0.5]], dtype=torch.float64
    )
    result = archive.add({"x": torch.zeros(5, 1)}, objectives, descriptors, check=False)
    assert result.status.tolist() == [2, 2, 2, 2, -1]
    stored = archive._objective.index_select(0, archive.cell_index(descriptors[:4]))
    assert torch.equal(stored.view(torch.int64), objectives[:4].view(torch.int64))


def test_device_adds_keep_constants_for_a_few_batch_sizes_only() -> None:
    archive = on_path(GridArchive([5, 4], RANGES), "device")
    for n in range(1, 21):
        x = torch.zeros(n, 1)
        archive.add({"x": x}, torch.ones(n), torch.zeros(n, 2), check=False)
    assert sorted(archive._constants) == list(range(13, 21))
    result = archive.add({"x": torch.zeros(3, 1)}, torch.full((3,), 2.0), torch.zeros(3, 2))
    assert result.status.tolist() == [1, 1, 1] and len(archive) == 1
