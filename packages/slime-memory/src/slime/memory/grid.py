"""GridArchive: a MAP-Elites archive over a uniform grid of the descriptor box."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from slime.memory.archive import MAX_ARCHIVE_SIZE, Archive, config_number
from slime.memory.limits import MAX_ARCHIVE_CELLS
from slime.proto import ConfigError, shown

__all__ = ["GridArchive"]


class GridArchive(Archive):
    """Cells split each descriptor range into ``dims[i]`` equal intervals (row-major numbering).

    Cell indices are computed arithmetically, as pyribs does: descriptors outside the ranges are
    clipped into the edge cells, and ``epsilon`` absorbs rounding at cell boundaries.

    Args:
        dims: cells per dimension, e.g. ``(10, 10)``; their product is at most
            :data:`~slime.memory.limits.MAX_ARCHIVE_CELLS` (16,777,216).
        ranges: ``(low, high)`` per dimension, same length as ``dims``.
        epsilon: added before truncation so a value on a boundary lands in the upper cell.
        device, qd_offset, learning_rate, threshold_min, max_size: see :class:`Archive`.
    """

    kind = "GridArchive"

    def __init__(
        self,
        dims: Sequence[int],
        ranges: Sequence[tuple[float, float]],
        *,
        device: torch.device | str | None = None,
        qd_offset: float = 0.0,
        learning_rate: float = 1.0,
        threshold_min: float = -math.inf,
        max_size: int = MAX_ARCHIVE_SIZE,
        epsilon: float = 1e-6,
    ) -> None:
        if isinstance(dims, str | bytes) or not hasattr(dims, "__len__"):
            raise ConfigError(
                f"dims must be a sequence of positive ints, got {shown(dims)}", "GridArchive.dims"
            )
        dims = list(dims)
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise ConfigError(f"dims must be positive ints, got {shown(dims)}", "GridArchive.dims")
        if math.prod(dims) > MAX_ARCHIVE_CELLS:
            raise ConfigError(
                f"dims {shown(dims)} make {math.prod(dims)} cells, above the limit "
                f"MAX_ARCHIVE_CELLS = {MAX_ARCHIVE_CELLS}",
                "GridArchive.dims",
            )
        if isinstance(ranges, str | bytes) or not hasattr(ranges, "__len__"):
            raise ConfigError(
                f"ranges must be a sequence of (low, high) pairs, got {shown(ranges)}",
                "GridArchive.ranges",
            )
        if len(dims) != len(ranges):
            raise ConfigError(
                f"dims has {len(dims)} entries but ranges has {len(ranges)}", "GridArchive.ranges"
            )
        number = config_number(epsilon, "GridArchive.epsilon")
        if not (math.isfinite(number) and number >= 0):
            raise ConfigError(
                f"epsilon must be finite and >= 0, got {epsilon!r}", "GridArchive.epsilon"
            )
        self._dims = dims
        self._epsilon = number
        super().__init__(
            math.prod(dims),
            ranges,
            device=device,
            qd_offset=qd_offset,
            learning_rate=learning_rate,
            threshold_min=threshold_min,
            max_size=max_size,
        )
        self._dims_t = torch.tensor(dims, dtype=torch.float64, device=self.device)
        self._width = self._upper - self._lower
        self._first, self._last = torch.zeros_like(self._dims_t), self._dims_t - 1
        strides = [math.prod(dims[i + 1 :]) for i in range(len(dims))]
        self._strides = torch.tensor(strides, dtype=torch.int64, device=self.device)
        # Per dimension, as Python numbers for the numpy path: low, cells, width, last, stride.
        self._axes = [
            (low, float(dim), high - low, float(dim - 1), stride)
            for (low, high), dim, stride in zip(self.ranges, dims, strides)
        ]

    @property
    def dims(self) -> list[int]:
        return list(self._dims)

    def _cell_index(self, descriptors: torch.Tensor) -> torch.Tensor:
        # pyribs' arithmetic, operation for operation, so boundary values land in the same cell.
        position = (self._dims_t * (descriptors - self._lower) + self._epsilon) / self._width
        grid = position.clamp_(min=self._first, max=self._last).long()
        return (grid * self._strides).sum(dim=1)  # row-major; int64 matmul is CPU-only

    def _host_cell_index(self, descriptors: np.ndarray) -> np.ndarray:
        # The same operations in numpy (IEEE float64 both ways, so the same cells), one
        # descriptor column at a time with scalar operands: broadcasting a (k,) row over (n, k)
        # runs numpy's inner loops k items long, about 4x slower.
        cells = None
        for j, (low, dim, width, last, stride) in enumerate(self._axes):
            position = descriptors[:, j] - low
            position *= dim
            position += self._epsilon
            position /= width
            np.maximum(position, 0.0, out=position)
            np.minimum(position, last, out=position)
            index = position.astype(np.int64)
            if stride != 1:
                index *= stride
            cells = index if cells is None else np.add(cells, index, out=cells)
        return cells

    def _config(self) -> dict[str, Any]:
        return {"dims": list(self._dims), "epsilon": self._epsilon}
