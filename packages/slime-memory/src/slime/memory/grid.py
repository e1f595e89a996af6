"""GridArchive: a MAP-Elites archive over a uniform grid of the descriptor box."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence, Set
from typing import Any

import numpy as np
import torch
from slime.memory._emitter_checks import has_length
from slime.memory.archive import MAX_ARCHIVE_SIZE, Archive, _check_ranges, config_number
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
        epsilon: added before truncation so a value on a boundary lands in the upper cell. It
            shifts every descriptor by ``epsilon / (high - low)`` of a cell, so it must be below
            the width ``high - low`` of every range (a shift of a whole cell or more would put
            every descriptor in another cell than its own).
        device, qd_offset, learning_rate, threshold_min, max_size: see :class:`Archive`. On
            ``"meta"`` the archive follows shapes only (for counting operations): an unchecked
            ``add(..., check=False)`` and ``clear()`` work; whatever reads values (a checked
            add, queries, statistics, save) cannot, and emitters refuse such an archive.

    Raises:
        ConfigError: dims that are not positive ints (numpy integers are read as ints) or
            make more cells than the limit, ranges that are not finite ``low < high`` pairs
            (one per dim), or an ``epsilon`` that is negative, not finite, or not below the
            width of every range: each naming the value and the argument, before anything
            is allocated.
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
        dims = _check_dims(dims)
        checked = _check_ranges(ranges, "GridArchive")  # a sequence of finite pairs
        if len(dims) != len(checked):
            raise ConfigError(
                f"dims has {len(dims)} entries but ranges has {len(checked)}",
                "GridArchive.ranges",
            )
        number = config_number(epsilon, "GridArchive.epsilon")
        if not (math.isfinite(number) and number >= 0):
            raise ConfigError(
                f"epsilon must be finite and >= 0, got {epsilon!r}", "GridArchive.epsilon"
            )
        _check_epsilon(number, checked)
        self._dims = dims
        self._epsilon = number
        super().__init__(
            math.prod(dims),
            checked,
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


def _check_dims(dims: Any) -> list[int]:
    """``dims`` as a list of positive ints with a product of at most MAX_ARCHIVE_CELLS, or
    ConfigError naming it. The product stops growing once past the limit: the product of
    100,000 dims of 2 has 30,103 digits, more than Python will even print."""
    if isinstance(dims, str | bytes | Mapping | Set) or not has_length(dims):
        raise ConfigError(
            f"dims must be a sequence of positive ints, got {shown(dims)}", "GridArchive.dims"
        )
    if len(dims) > MAX_ARCHIVE_CELLS:  # before iterating: each entry is a dimension
        raise ConfigError(
            f"dims has {len(dims)} entries, above the limit MAX_ARCHIVE_CELLS = "
            f"{MAX_ARCHIVE_CELLS} (one per descriptor dimension)",
            "GridArchive.dims",
        )
    checked: list[int] = []
    cells = 1
    for d in dims:  # one at a time: a 10**12-long expand()-ed tensor stops at its first entry
        if isinstance(d, bool | np.bool_) or not isinstance(d, numbers.Integral) or d < 1:
            raise ConfigError(
                f"dims must be positive ints, got {shown(dims)} (entry {len(checked)} is "
                f"{shown(d)})",
                "GridArchive.dims",
            )
        checked.append(int(d))  # numpy integers too: the saved configuration is JSON
        cells *= checked[-1]
        if cells > MAX_ARCHIVE_CELLS:
            raise ConfigError(
                f"dims {shown(dims)} make more than {MAX_ARCHIVE_CELLS} cells, above the limit "
                f"MAX_ARCHIVE_CELLS = {MAX_ARCHIVE_CELLS}",
                "GridArchive.dims",
            )
    if not checked:
        raise ConfigError(f"dims must be positive ints, got {shown(dims)}", "GridArchive.dims")
    return checked


def _check_epsilon(epsilon: float, ranges: list[tuple[float, float]]) -> None:
    """Raise ConfigError unless ``epsilon`` is below the width of every range: it shifts each
    descriptor by ``epsilon / width`` of a cell before truncation, so at a whole cell or more
    every descriptor (the lower bound itself included) would land in another cell."""
    for i, (low, high) in enumerate(ranges):
        width = high - low
        if epsilon >= width:
            raise ConfigError(
                f"epsilon {shown(epsilon)} is not below the width {shown(width)} of range {i} "
                f"{shown((low, high))}: it would shift every descriptor by "
                f"{shown(epsilon / width)} cells; pass an epsilon well below the narrowest "
                "range's width",
                "GridArchive.epsilon",
            )
