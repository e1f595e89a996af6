"""CVTArchive's centroids: equal ones are refused (a cell nothing could reach); ones outside
the ranges are accepted, and their cells are reachable."""

from __future__ import annotations

import pytest
import torch
from slime.memory import CVTArchive
from slime.proto import ArchiveError, ConfigError

RANGES = [(0.0, 1.0), (0.0, 1.0)]


@pytest.mark.parametrize("nearest", ["kd_tree", "brute_force"])
def test_equal_centroids_raise_config_error_naming_both(nearest) -> None:
    # Centroids 1 and 3 equal: the archive was built, and every descriptor near them went to
    # cell 1; cell 3 could never hold an elite.
    centroids = torch.tensor([[0.1, 0.1], [0.5, 0.5], [0.9, 0.9], [0.5, 0.5]])
    with pytest.raises(
        ConfigError,
        match=r"CVTArchive\.centroids: centroids 1 and 3 are equal \(\[0\.5, 0\.5\]\)",
    ):
        CVTArchive(4, RANGES, centroids=centroids, nearest=nearest)


def test_signed_zeros_are_equal_centroids() -> None:
    with pytest.raises(ConfigError, match="centroids 0 and 1 are equal"):
        CVTArchive(2, [(-1.0, 1.0)], centroids=torch.tensor([[0.0], [-0.0]]))


def test_centroids_equal_only_as_float64_are_refused() -> None:
    # Distinct as int64, the same float64 number: the archive reads them as float64.
    centroids = torch.tensor([[2**60], [2**60 + 1]], dtype=torch.int64)
    with pytest.raises(ConfigError, match="centroids 0 and 1 are equal"):
        CVTArchive(2, [(0.0, 2.0**61)], centroids=centroids)


def test_the_first_centroid_equal_to_an_earlier_one_is_named() -> None:
    centroids = torch.tensor([[0.7], [0.2], [0.7], [0.2], [0.2]], dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"centroids 0 and 2 are equal \(\[0\.7\]\)"):
        CVTArchive(5, [(0.0, 1.0)], centroids=centroids)


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")
def test_k_means_centroids_that_coincide_name_the_samples() -> None:
    # 1-d samples in a range one float wide: k-means can only find equal centroids.
    tiny = (1.0, 1.0 + 2.0**-52)
    with pytest.raises(ConfigError, match=r"CVTArchive\.samples: k-means \(seed 0\) made"):
        CVTArchive(4, [tiny], samples=8)


def test_a_loaded_archive_with_equal_centroids_is_refused(tmp_path) -> None:
    archive = CVTArchive(3, [(0.0, 1.0)], centroids=torch.tensor([[0.1], [0.5], [0.9]]))
    archive.save(tmp_path / "a")
    forged = CVTArchive(3, [(0.0, 1.0)], centroids=torch.tensor([[0.1], [0.5], [0.9]]))
    forged._centroids[2] = 0.5  # as if the saved file held equal centroids
    forged.save(tmp_path / "b")
    assert CVTArchive.load(tmp_path / "a").cells == 3
    with pytest.raises(ArchiveError, match="centroids 1 and 2 are equal"):
        CVTArchive.load(tmp_path / "b")


def test_centroids_outside_the_ranges_are_accepted_and_reachable() -> None:
    # Decided: accepted. A CVT archive does not clip descriptors into its ranges, and the
    # Voronoi cell of a distinct centroid holds the centroid itself.
    centroids = torch.tensor([[0.5, 0.5], [5.0, -3.0]], dtype=torch.float64)
    archive = CVTArchive(2, RANGES, centroids=centroids)
    assert archive.cell_index(centroids).tolist() == [0, 1]
    archive.add({"x": torch.zeros(1, 1)}, torch.ones(1), centroids[1:])
    assert archive.occupied_cells() == [1]
