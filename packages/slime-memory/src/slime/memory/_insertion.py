"""The arithmetic of one batched MAP-Elites insertion, as pure tensor functions (no host syncs
except where a docstring says so). ``n`` items of a batch map to ``m`` cells (on a device, all
``C`` cells of the archive; on the CPU, the cells a batch touches when they are far fewer)."""

from __future__ import annotations

import math

import torch
from slime.proto import ArchiveError

__all__ = [
    "cell_winners",
    "check_finite",
    "cma_mae_thresholds",
    "eviction_mask",
    "raise_first_non_finite",
]


def check_finite(objectives: torch.Tensor, descriptors: torch.Tensor) -> None:
    """Raise ArchiveError naming the first item with a NaN/Inf objective or descriptor.

    One host sync: a sum is finite only if every term is; when it is not (a NaN, an Inf, or
    finite values overflowing), the exact per-item check decides.
    """
    if math.isfinite(float(objectives.sum() + descriptors.sum())):
        return
    finite = torch.isfinite(objectives) & torch.isfinite(descriptors).all(dim=1)
    raise_first_non_finite(finite, "objectives/descriptors")


def raise_first_non_finite(finite: torch.Tensor, name: str) -> None:
    """Raise ArchiveError naming the first False entry of ``finite`` ``(n,)``, if any."""
    if not bool(finite.all()):
        index = int(torch.nonzero(~finite)[0, 0])
        raise ArchiveError(f"{name}[{index}] is not finite (NaN or Inf)")


def cell_winners(
    cells: torch.Tensor,
    objectives: torch.Tensor,
    can_insert: torch.Tensor,
    threshold: torch.Tensor,
    positions: torch.Tensor,
    cell_ids: torch.Tensor,
) -> torch.Tensor:
    """``(n,)`` bool: whether item ``i`` is the one its cell takes from the batch.

    A cell takes its best insertable item, the earliest among equal objectives (pyribs' tie
    rule). ``cells`` ``(n,)`` and ``objectives`` ``(n,)`` (NaN: never insertable) per item,
    ``threshold`` ``(C,)``, ``positions`` ``arange(n)``, ``cell_ids`` any ``(C,)`` int64 tensor
    (only its shape and device are used). One float64 key cannot hold both an objective
    and a batch index exactly, hence two scatter-reduces: the best objective, then the
    earliest index holding it.
    """
    key = objectives.nan_to_num(nan=-math.inf)  # amax would propagate a NaN to its cell
    # max(threshold, insertable objectives): above the threshold exactly where one can land
    best = threshold.scatter_reduce(0, cells, key, reduce="amax")
    top = (key == best.index_select(0, cells)) & can_insert
    candidate = torch.where(top, positions, positions.shape[0])  # n: no candidate
    first = cell_ids.scatter_reduce(0, cells, candidate, reduce="amin", include_self=False)
    return first.index_select(0, cells) == positions


def cma_mae_thresholds(
    inverse: torch.Tensor,
    objectives: torch.Tensor,
    can_insert: torch.Tensor,
    current: torch.Tensor,
    learning_rate: float,
) -> torch.Tensor:
    """CMA-MAE's batch threshold update (Fontaine & Nikolaidis 2023) for the ``m`` touched cells.

    A cell moves from its ``current`` threshold toward the mean of the batch's objectives that
    beat it, at rate ``1 - (1 - learning_rate) ** count``. Cells nothing beat keep ``current``.
    Objectives that cannot be inserted (NaN among them) are left out.
    """
    zeros = torch.zeros_like(current)
    count = zeros.scatter_add(0, inverse, can_insert.to(current.dtype))
    total = zeros.scatter_add(0, inverse, torch.where(can_insert, objectives, 0.0))
    mean = total / count.clamp(min=1.0)
    # Finite objectives can sum past the float range (two 1e308): then average the shares, each
    # objective over its cell's count, which stays finite. Bit-identical wherever the sum is finite.
    share = objectives / count.index_select(0, inverse).clamp(min=1.0)
    scaled = zeros.scatter_add(0, inverse, torch.where(can_insert, share, 0.0))
    mean = torch.where(torch.isfinite(total), mean, scaled)
    keep = (1.0 - learning_rate) ** count
    return keep * current + mean * (1.0 - keep)


def eviction_mask(
    objective: torch.Tensor, occupied: torch.Tensor, newcomer: torch.Tensor, max_size: int
) -> torch.Tensor:
    """``(C,)`` bool: the elites to drop so that at most ``max_size`` remain.

    Lowest objective first; on equal objectives newcomers go before incumbents (so a new cell
    enters a full archive only by beating its worst elite), then higher cells first. Two
    stable sorts of the ``C`` cells, no host sync: the number to evict stays a device tensor.
    """
    cells = objective.shape[0]
    excess = (occupied.sum() - max_size).clamp(min=0)
    order = torch.arange(cells - 1, -1, -1, device=objective.device)
    order = order[torch.argsort((~newcomer[order]).to(torch.int8), stable=True)]
    key = torch.where(occupied, objective, math.inf)
    order = order[torch.argsort(key[order], stable=True)]
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(cells, device=objective.device))
    return occupied & (rank < excess)
