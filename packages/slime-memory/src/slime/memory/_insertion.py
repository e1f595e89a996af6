"""The arithmetic of one batched MAP-Elites insertion, as pure tensor functions (no host syncs
except where a docstring says so). ``n`` items of a batch map to ``m`` cells (on a device, all
``C`` cells of the archive; on the CPU, the cells a batch touches when they are far fewer)."""

from __future__ import annotations

import math

import torch
from slime.proto import ArchiveError

__all__ = [
    "best_per_cell",
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


def best_per_cell(
    inverse: torch.Tensor, objectives: torch.Tensor, can_insert: torch.Tensor, m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per touched cell ``(m,)``: the best insertable objective and the batch index holding it.

    ``inverse`` ``(n,)`` maps items to touched cells. The index is the earliest among equal
    objectives (pyribs' tie rule), and ``n`` where nothing can land.
    """
    n = objectives.shape[0]
    key = torch.where(can_insert, objectives, -math.inf)
    best = torch.full((m,), -math.inf, dtype=torch.float64, device=objectives.device)
    best = best.scatter_reduce(0, inverse, key, reduce="amax")
    position = torch.arange(n, device=objectives.device)
    candidate = torch.where(can_insert & (key == best.index_select(0, inverse)), position, n)
    first = torch.full((m,), n, dtype=torch.int64, device=objectives.device)
    return best, first.scatter_reduce(0, inverse, candidate, reduce="amin")


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
    """
    weight = can_insert.to(current.dtype)
    zeros = torch.zeros_like(current)
    count = zeros.scatter_add(0, inverse, weight)
    total = zeros.scatter_add(0, inverse, objectives * weight)
    keep = (1.0 - learning_rate) ** count
    return keep * current + (total / count.clamp(min=1.0)) * (1.0 - keep)


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
