"""Differential tests: identical streams into pyribs (the reference) and slime.memory archives.

Objectives are drawn from a few values so that batches contain ties, repeated cells and
out-of-range descriptors; every batch's status and value and the final elites must agree.
Each archive runs both ways: the CPU's numpy path, and the tensor path that accelerators use
(forced on the CPU with ``_host = False``) in its sync-free mode (``check=False``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from slime.memory import Archive, CVTArchive, GridArchive

ribs = pytest.importorskip("ribs.archives")

SOLUTION_DIM = 3
RANGES = [(-1.0, 1.0), (0.0, 2.0)]


def stream(seed: int, batches: int = 6, batch: int = 40):
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        solutions = rng.normal(size=(batch, SOLUTION_DIM))
        objectives = rng.integers(-3, 4, size=batch).astype(np.float64) / 2
        descriptors = rng.uniform([-1.3, -0.3], [1.3, 2.3], size=(batch, 2))
        yield solutions, objectives, descriptors


PATHS = ["host", "device sync-free"]


def on_path(archive: Archive, path: str) -> Archive:
    archive._host = path == "host"
    return archive


def feed(ours: Archive, theirs, seed: int, form: str = "payloads") -> None:
    check = ours._host  # the tensor path runs without its one host sync
    for solutions, objectives, descriptors in stream(seed):
        expected = theirs.add(solutions, objectives, descriptors)
        if form == "payloads":
            genomes = [{"solution": torch.from_numpy(s)} for s in solutions]
        else:
            genomes = {"solution": torch.from_numpy(solutions)}
        got = ours.add(
            genomes, torch.from_numpy(objectives), torch.from_numpy(descriptors), check=check
        )
        np.testing.assert_array_equal(got.status.numpy(), expected["status"])
        np.testing.assert_allclose(got.value.numpy(), expected["value"], rtol=0, atol=1e-12)


def assert_same_elites(ours: Archive, theirs) -> None:
    data = theirs.data()
    order = np.argsort(data["index"])
    elites = list(ours)
    assert [e.cell for e in elites] == data["index"][order].tolist()
    for elite, i in zip(elites, order):
        assert elite.objective == data["objective"][i]
        np.testing.assert_array_equal(elite.descriptor.numpy(), data["measures"][i])
        np.testing.assert_array_equal(elite.genome["solution"].numpy(), data["solution"][i])


def assert_same_stats(ours: Archive, theirs) -> None:
    mine, ref = ours.stats, theirs.stats
    assert mine.num_elites == ref.num_elites
    assert mine.coverage == pytest.approx(float(ref.coverage))
    assert mine.qd_score == pytest.approx(float(ref.qd_score))
    assert mine.norm_qd_score == pytest.approx(float(ref.norm_qd_score))
    assert mine.obj_mean == pytest.approx(float(ref.obj_mean))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("seed", "form", "dims"),
    [
        (0, "payloads", [5, 4]),  # batches of 40 cover all 20 cells: the dense path
        (1, "payloads", [12, 9]),  # 108 cells, more than the batch touches
        (0, "columns", [5, 4]),
        (2, "columns", [12, 9]),
    ],
)
def test_grid_archive_matches_pyribs_cell_by_cell(
    seed: int, form: str, dims: list[int], path: str
) -> None:
    cells = dims[0] * dims[1]
    ours = on_path(GridArchive(dims, RANGES, qd_offset=-2.0, max_size=cells), path)
    theirs = ribs.GridArchive(
        solution_dim=SOLUTION_DIM, dims=dims, ranges=RANGES, qd_score_offset=-2.0, seed=0
    )
    feed(ours, theirs, seed, form)
    assert_same_elites(ours, theirs)
    assert_same_stats(ours, theirs)
    assert ours.stats.obj_max == float(theirs.stats.obj_max)


def test_grid_cell_index_matches_pyribs_index_of() -> None:
    ours = GridArchive([7, 3], RANGES)
    theirs = ribs.GridArchive(solution_dim=1, dims=[7, 3], ranges=RANGES)
    points = np.random.default_rng(3).uniform([-1.5, -0.5], [1.5, 2.5], size=(500, 2))
    boundaries = np.array([[-1.0 + 2.0 * i / 7, 2.0 * i / 3] for i in range(4)])  # on the edges
    points = np.concatenate([points, boundaries])
    expected = theirs.index_of(points)
    np.testing.assert_array_equal(ours.cell_index(torch.from_numpy(points)).numpy(), expected)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dims", [[5, 4], [12, 9]])
def test_cma_mae_thresholds_match_pyribs(dims: list[int], path: str) -> None:
    cells = dims[0] * dims[1]
    ours = GridArchive(dims, RANGES, learning_rate=0.3, threshold_min=-0.5, max_size=cells)
    on_path(ours, path)
    theirs = ribs.GridArchive(
        solution_dim=SOLUTION_DIM,
        dims=dims,
        ranges=RANGES,
        learning_rate=0.3,
        threshold_min=-0.5,
        seed=0,
    )
    feed(ours, theirs, seed=2)
    assert_same_elites(ours, theirs)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("form", ["payloads", "columns"])
def test_cvt_archive_with_given_centroids_matches_pyribs(form: str, path: str) -> None:
    centroids = np.random.default_rng(4).uniform([-1.0, 0.0], [1.0, 2.0], size=(15, 2))
    ours = CVTArchive(15, RANGES, centroids=torch.from_numpy(centroids), max_size=15)
    on_path(ours, path)
    theirs = ribs.CVTArchive(solution_dim=SOLUTION_DIM, centroids=centroids, ranges=RANGES, seed=0)
    feed(ours, theirs, seed=5, form=form)
    assert_same_elites(ours, theirs)
    assert_same_stats(ours, theirs)
