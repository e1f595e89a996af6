"""CVTArchive: a MAP-Elites archive over a centroidal Voronoi tessellation of the descriptor box."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.spatial import KDTree
from sklearn.cluster import k_means
from slime.memory.archive import MAX_ARCHIVE_SIZE, Archive
from slime.memory.limits import MAX_CVT_SAMPLES
from slime.proto import ConfigError, shown

__all__ = ["CVTArchive"]

_CHUNK = 4096  # descriptors per batched distance computation on the CPU
_CHUNK_ELEMENTS = 1 << 23  # point-centroid pairs per distance block on an accelerator (64 MiB)


class CVTArchive(Archive):
    """Each cell is the Voronoi region of one centroid; a descriptor belongs to its nearest centroid.

    Centroids come from k-means (scikit-learn, one Lloyd run from a random init) over ``samples``
    points drawn uniformly in the ranges, or are given. The nearest centroid is found with a scipy
    k-d tree on CPU and by batched distances + argmin elsewhere (``nearest`` overrides the
    choice): ``torch.cdist``'s direct form on CPU tensors, squared differences summed one
    descriptor column at a time on an accelerator.

    Args:
        cells: number of centroids.
        ranges: ``(low, high)`` per dimension.
        centroids: ``(cells, k)`` centroids to use instead of k-means: finite and pairwise
            distinct (an equal pair's second cell could never be reached). They may lie
            outside the ranges: descriptors are not clipped into the ranges here, and every
            distinct centroid's cell holds the centroid itself, so each cell stays reachable.
        samples: uniform samples clustered by k-means (ignored with ``centroids``), at most
            :data:`~slime.memory.limits.MAX_CVT_SAMPLES` (16,777,216).
        seed: seeds the samples and k-means: an int in ``[0, 2**32)`` (scikit-learn's range).
        nearest: ``"auto"`` (k-d tree on CPU, batched distances elsewhere), ``"kd_tree"`` (CPU
            only) or ``"brute_force"``.
        device, qd_offset, learning_rate, threshold_min, max_size: see :class:`Archive`. On
            ``"meta"`` the archive follows shapes only, as a :class:`GridArchive` does there
            (centroids are still computed or checked on the CPU first).

    Raises:
        ConfigError: a bad ``cells``, range, ``samples``, ``seed`` or ``nearest``; centroids
            of the wrong type, shape or dtype, on the meta device, non-finite, or with two
            equal rows (naming both indices), also when k-means produced them.
    """

    kind = "CVTArchive"

    def __init__(
        self,
        cells: int,
        ranges: Sequence[tuple[float, float]],
        *,
        centroids: torch.Tensor | None = None,
        samples: int = 10_000,
        seed: int = 0,
        nearest: str = "auto",
        device: torch.device | str | None = None,
        qd_offset: float = 0.0,
        learning_rate: float = 1.0,
        threshold_min: float = -math.inf,
        max_size: int = MAX_ARCHIVE_SIZE,
    ) -> None:
        super().__init__(
            cells,
            ranges,
            device=device,
            qd_offset=qd_offset,
            learning_rate=learning_rate,
            threshold_min=threshold_min,
            max_size=max_size,
        )
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ConfigError(
                f"seed must be an int in [0, 2**32), got {shown(seed)}", "CVTArchive.seed"
            )
        samples_made = False
        if centroids is None:
            if isinstance(samples, bool) or not isinstance(samples, int) or samples < cells:
                raise ConfigError(
                    f"samples must be an int >= cells ({cells}), got {samples!r}",
                    "CVTArchive.samples",
                )
            if samples > MAX_CVT_SAMPLES:
                raise ConfigError(
                    f"samples {samples} is above the limit MAX_CVT_SAMPLES = {MAX_CVT_SAMPLES}",
                    "CVTArchive.samples",
                )
            centroids = torch.from_numpy(self._k_means(samples, seed))
            samples_made = True
        elif not isinstance(centroids, torch.Tensor):
            raise ConfigError(
                f"centroids must be a torch.Tensor of shape ({cells}, {len(ranges)}), got "
                f"{type(centroids).__name__} {shown(centroids)}",
                "CVTArchive.centroids",
            )
        elif centroids.shape != (cells, len(ranges)):
            raise ConfigError(
                f"centroids has shape {tuple(centroids.shape)}, expected ({cells}, {len(ranges)})",
                "CVTArchive.centroids",
            )
        elif centroids.is_complex() or centroids.is_meta:
            raise ConfigError(
                f"centroids must be real numbers holding data, got {centroids.dtype} on "
                f"{centroids.device}",
                "CVTArchive.centroids",
            )
        elif not bool(torch.isfinite(centroids).all()):
            raise ConfigError("centroids contain NaN or Inf", "CVTArchive.centroids")
        if not isinstance(nearest, str) or nearest not in ("auto", "kd_tree", "brute_force"):
            raise ConfigError(
                f"nearest must be auto, kd_tree or brute_force, got {shown(nearest)}",
                "CVTArchive.nearest",
            )
        if nearest == "kd_tree" and self.device.type != "cpu":
            raise ConfigError(
                f"nearest='kd_tree' runs on CPU only, not {self.device}", "CVTArchive.nearest"
            )
        centroids = centroids.detach().to(dtype=torch.float64)  # distinct as the archive reads them
        _check_distinct(centroids.cpu().numpy(), seed if samples_made else None)
        self._samples, self._seed, self._nearest = samples, seed, nearest
        self._centroids = centroids.to(device=self.device)
        self._centroid_columns = self._centroids.t().unsqueeze(1).unbind(0)  # k x (1, cells)
        use_tree = nearest == "kd_tree" or (nearest == "auto" and self.device.type == "cpu")
        self._tree = KDTree(self._centroids.cpu().numpy()) if use_tree else None

    @property
    def centroids(self) -> torch.Tensor:
        """``(cells, k)`` float64 centroids (a copy)."""
        return self._centroids.clone()

    def _k_means(self, samples: int, seed: int) -> np.ndarray:
        low, high = np.array(self.ranges).T
        points = np.random.default_rng(seed).uniform(low, high, size=(samples, len(low)))
        found = k_means(
            points, self.cells, init="random", n_init=1, algorithm="lloyd", random_state=seed
        )[0]
        return np.asarray(found, dtype=np.float64)

    def _host_cell_index(self, descriptors: np.ndarray) -> np.ndarray:
        if self._tree is not None:
            _, nearest = self._tree.query(descriptors)
            return np.asarray(nearest, dtype=np.int64).reshape(-1)
        return super()._host_cell_index(descriptors)

    def _cell_index(self, descriptors: torch.Tensor) -> torch.Tensor:
        if self._tree is not None:
            return torch.from_numpy(self._host_cell_index(descriptors.numpy()))
        # cdist's default turns distances into a matrix product above 25 rows, which cancels
        # catastrophically far from the origin (points 0.1 apart at 1e6 swap their nearest
        # centroid); direct differences are exact enough and cheap for descriptor dims.
        if descriptors.device.type == "cpu":
            parts = [
                torch.cdist(
                    chunk, self._centroids, compute_mode="donot_use_mm_for_euclid_dist"
                ).argmin(dim=1)
                for chunk in descriptors.split(_CHUNK)
            ]
        else:
            # On CUDA cdist's direct path runs one reduction per pair (13 ms for 10,000 x 1,000
            # pairs of 2-d points on an H200); a sum of squared differences, one descriptor
            # column at a time, is the same arithmetic in a few elementwise kernels.
            rows = max(1, _CHUNK_ELEMENTS // self.cells)
            if descriptors.shape[0] <= rows:  # one block: no split and cat to pay for
                return self._nearest_by_columns(descriptors)
            parts = [self._nearest_by_columns(chunk) for chunk in descriptors.split(rows)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64, device=self.device)

    def _in_own_cells(self, descriptors: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """As :meth:`Archive._in_own_cells`, where a descriptor as near its cell's centroid as to
        the nearest one (to 1e-9 relative) counts as in it: the k-d tree, ``cdist`` and the
        column sums may break such a tie differently, and an archive saved on one device must
        load on another."""
        nearest = self.cell_index(descriptors)
        to_held = (descriptors - self._centroids.index_select(0, cells)).square().sum(1)
        to_nearest = (descriptors - self._centroids.index_select(0, nearest)).square().sum(1)
        return (nearest == cells) | (to_held <= to_nearest * (1 + 1e-9))

    def _nearest_by_columns(self, points: torch.Tensor) -> torch.Tensor:
        """Index of each point's nearest centroid ``(n,)`` by squared Euclidean distance."""
        total = None
        for column, centroids in zip(points.split(1, dim=1), self._centroid_columns):
            gap = column - centroids  # (n, 1) - (1, cells)
            total = gap.square() if total is None else total.addcmul_(gap, gap)
        return total.argmin(dim=1)

    def _config(self) -> dict[str, Any]:
        return {
            "cells": self.cells,
            "samples": self._samples,
            "seed": self._seed,
            "nearest": self._nearest,
        }

    def _config_tensors(self) -> dict[str, torch.Tensor]:
        return {"centroids": self._centroids}


def _check_distinct(centroids: np.ndarray, seed: int | None) -> None:
    """Raise ConfigError naming the first pair of equal centroids ``(cells, k)``: a descriptor
    nearest to both goes to the lower cell, so the other's cell is never reached. ``seed``:
    the k-means seed when k-means made them (None: the caller gave them). One lexicographic
    sort; equal rows (``-0.0 == 0.0`` included) end up next to each other."""
    order = np.lexsort(centroids.T[::-1])
    ordered = centroids[order]
    same = (ordered[1:] == ordered[:-1]).all(axis=1)
    if not same.any():
        return
    earlier, later = order[:-1][same], order[1:][same]  # the sort is stable: earlier < later
    first = int(np.argmin(later))
    i, j = int(earlier[first]), int(later[first])
    equal = f"centroids {i} and {j} are equal ({shown(centroids[i].tolist())})"
    if seed is None:
        raise ConfigError(
            f"{equal}: the cell of centroid {j} could never be reached; give distinct centroids",
            "CVTArchive.centroids",
        )
    raise ConfigError(
        f"k-means (seed {seed}) made {equal}, so one cell could never be reached; use more "
        "samples or another seed",
        "CVTArchive.samples",
    )
