"""CVTArchive: centroids from k-means or given, nearest-centroid cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from slime.memory import CVTArchive
from slime.proto import ArchiveError, ConfigError

RANGES = [(0.0, 1.0), (-2.0, 2.0)]


def test_k_means_centroids_lie_in_the_ranges_and_are_seeded() -> None:
    a = CVTArchive(8, RANGES, samples=400, seed=1)
    b = CVTArchive(8, RANGES, samples=400, seed=1)
    assert torch.equal(a.centroids, b.centroids)
    assert a.centroids.shape == (8, 2)
    assert bool((a.centroids[:, 0] >= 0).all() and (a.centroids[:, 1] <= 2).all())


def test_given_centroids_are_used() -> None:
    centroids = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    archive = CVTArchive(2, RANGES, centroids=centroids)
    assert archive.cell_index(torch.tensor([[0.1, 0.2], [0.9, 0.7]])).tolist() == [0, 1]


def test_cell_is_the_nearest_centroid_by_brute_force() -> None:
    archive = CVTArchive(20, RANGES, samples=500, seed=0)
    points = torch.rand(200, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([1, 4])
    points = points - torch.tensor([0, 2])
    expected = torch.cdist(points.double(), archive.centroids).argmin(dim=1)
    assert torch.equal(archive.cell_index(points), expected)


def test_brute_force_nearest_agrees_with_the_k_d_tree() -> None:
    tree = CVTArchive(50, RANGES, samples=1000, seed=2)
    brute = CVTArchive(50, RANGES, centroids=tree.centroids, nearest="brute_force")
    points = torch.rand(5000, 2, generator=torch.Generator().manual_seed(1)) * 4 - 2
    assert torch.equal(brute.cell_index(points), tree.cell_index(points))


def test_brute_force_archive_matches_k_d_tree_archive_after_adds() -> None:
    tree = CVTArchive(30, RANGES, samples=600, seed=0)
    brute = CVTArchive(30, RANGES, centroids=tree.centroids, nearest="brute_force")
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        columns = {"x": torch.randn(64, 4, generator=g)}
        objectives = torch.randn(64, generator=g)
        points = torch.rand(64, 2, generator=g) * torch.tensor([1.0, 4.0]) - torch.tensor([0, 2])
        a, b = tree.add(columns, objectives, points), brute.add(columns, objectives, points)
        assert torch.equal(a.status, b.status)
    assert [(e.cell, e.objective) for e in tree] == [(e.cell, e.objective) for e in brute]


def test_unknown_nearest_method_raises() -> None:
    with pytest.raises(ConfigError, match="nearest"):
        CVTArchive(2, RANGES, centroids=torch.zeros(2, 2), nearest="ball_tree")


def test_centroids_of_wrong_shape_raise() -> None:
    with pytest.raises(ConfigError, match=r"\(3, 2\), expected \(4, 2\)"):
        CVTArchive(4, RANGES, centroids=torch.zeros(3, 2))


def test_too_few_samples_raise() -> None:
    with pytest.raises(ConfigError, match="samples"):
        CVTArchive(10, RANGES, samples=5)


def test_descriptor_of_wrong_width_raises() -> None:
    archive = CVTArchive(2, RANGES, centroids=torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    with pytest.raises(ArchiveError, match=r"\(1, 3\), expected \(n, 2\)"):
        archive.cell_index(torch.zeros(1, 3))


@pytest.mark.gpu
def test_batched_distance_on_cuda_matches_the_cpu_tree() -> None:
    cpu = CVTArchive(64, RANGES, samples=2000, seed=0)
    gpu = CVTArchive(64, RANGES, centroids=cpu.centroids, device="cuda")
    points = torch.rand(10_000, 2, dtype=torch.float64) * torch.tensor([1, 4]) - torch.tensor(
        [0, 2]
    )
    assert torch.equal(gpu.cell_index(points.cuda()).cpu(), cpu.cell_index(points))


@pytest.mark.parametrize("nearest", ["auto", "kd_tree", "brute_force"])
def test_nearest_centroid_is_exact_far_from_the_origin(nearest) -> None:
    centroids = torch.tensor([[1e6, 1e6], [1e6 + 0.1, 1e6]], dtype=torch.float64)
    archive = CVTArchive(2, [(1e6 - 1, 1e6 + 1)] * 2, centroids=centroids, nearest=nearest)
    # 0.30420 from centroid 0, 0.30407 from centroid 1; 26 rows take cdist's matrix-product path
    points = torch.tensor([[1e6 + 0.0504, 1e6 + 0.3]] * 26, dtype=torch.float64)
    assert archive.cell_index(points).tolist() == [1] * 26
    gen = torch.Generator().manual_seed(0)
    box = 1e6 - 1 + 2 * torch.rand(2000, 2, generator=gen, dtype=torch.float64)
    exact = torch.linalg.vector_norm(box[:, None] - centroids[None], dim=-1).argmin(dim=1)
    assert torch.equal(archive.cell_index(box), exact)


def test_the_accelerator_nearest_search_agrees_with_cdist_here_and_far_from_the_origin() -> None:
    # The column-by-column squared distances accelerators use, run on CPU tensors.
    archive = CVTArchive(300, RANGES, samples=3000, seed=0, nearest="brute_force")
    points = torch.rand(5000, 2, dtype=torch.float64) * 4 - 2
    assert torch.equal(archive._nearest_by_columns(points), archive.cell_index(points))
    centroids = torch.tensor([[1e6, 1e6], [1e6 + 0.1, 1e6]], dtype=torch.float64)
    far = CVTArchive(2, [(1e6 - 1, 1e6 + 1)] * 2, centroids=centroids, nearest="brute_force")
    close_call = torch.tensor([[1e6 + 0.0504, 1e6 + 0.3]] * 26, dtype=torch.float64)
    assert far._nearest_by_columns(close_call).tolist() == [1] * 26


@pytest.mark.parametrize("seed", ["a", -1, 1.5, True, 2**32], ids=repr)
def test_a_seed_that_is_not_an_int_in_range_raises_config_error(seed) -> None:
    # numpy's default_rng and scikit-learn raised their own TypeError/ValueError (True seeded
    # as 1).
    with pytest.raises(ConfigError, match=rf"CVTArchive.seed: seed must be an int .*{seed!r}"):
        CVTArchive(4, RANGES, samples=8, seed=seed)


@pytest.mark.parametrize(
    "centroids",
    [[[0.0], [1.0]], np.array([[0.0], [1.0]])],
    ids=["list", "ndarray"],
)
def test_centroids_that_are_no_tensor_are_named_as_such(centroids) -> None:
    # The message said "centroids has shape [[0.0], [1.0]], expected (2, 1)": the right shape,
    # called wrong, with no word that a tensor is what it takes.
    with pytest.raises(
        ConfigError, match=r"centroids must be a torch.Tensor of shape \(2, 1\), got"
    ):
        CVTArchive(2, [(0.0, 1.0)], centroids=centroids)
