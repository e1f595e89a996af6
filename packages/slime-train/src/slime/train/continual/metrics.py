"""What a continual run measures, as pure functions of per-task numbers and head statistics.

- **Plasticity** of task ``t``: the held-out loss after ``N`` steps on task ``t`` (having trained on
  every earlier task) over the held-out loss of a freshly initialised model after ``N`` steps on the
  same task from the same seed. 1 means as plastic as a new network; above 1, less. The run's
  number is the mean over its last ``last_k`` tasks (10 in gpu-full), and the trend is the least
  squares slope of the ratio against the task index (per task; above 0: plasticity decays).
- **Forgetting** on a revisited task: its held-out loss at the start of the revisit (before any
  step on it) minus its loss at the end of its previous visit (nats; above 0: forgot).
- **Dormant heads**: heads whose mean contribution to the residual stream is at most
  ``DORMANT_TAU`` times their layer's mean (near-zero output norm), as a fraction of live heads.
- **Duplicate heads**: heads whose contribution has ``|cos| > DUPLICATE_COS`` with another head's of
  the same layer, as a fraction of live heads.
- **Effective rank** of a layer's concatenated head outputs (Roy & Vetterli 2007: exp of the
  entropy of the normalised singular values), over the width ``n d``, averaged over layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from slime.train.continual.resets import HeadStats
from torch import Tensor

__all__ = [
    "DORMANT_TAU",
    "DUPLICATE_COS",
    "dormant_fraction",
    "duplicate_fraction",
    "effective_rank",
    "forgetting",
    "head_health",
    "plasticity",
    "slope",
]

DORMANT_TAU = 0.1
DUPLICATE_COS = 0.9


def dormant_fraction(stats: HeadStats, tau: float = DORMANT_TAU) -> float:
    """Fraction of all layers' heads whose contribution norm is at most ``tau`` times its layer's
    mean (a layer whose heads are all silent counts all of them)."""
    dormant = total = 0
    for values in stats.contribution:
        total += len(values)
        mean = float(values.mean()) if len(values) else 0.0
        dormant += len(values) if mean <= 0 else int((values <= tau * mean).sum())
    return dormant / total if total else math.nan


def duplicate_fraction(stats: HeadStats, threshold: float = DUPLICATE_COS) -> float:
    """Fraction of heads with a same-layer partner whose contribution has ``|cos| > threshold``
    (silent heads, with no direction, are never duplicates)."""
    dup = total = 0
    for vectors in stats.vectors:
        n = vectors.shape[0]
        total += n
        norms = vectors.norm(dim=1)
        ok = norms > 1e-12
        unit = vectors / norms.clamp_min(1e-12)[:, None]
        cos = (unit @ unit.T).abs()
        cos.fill_diagonal_(0.0)
        cos[~ok] = 0.0
        cos[:, ~ok] = 0.0
        dup += int((cos > threshold).any(dim=1).sum())
    return dup / total if total else math.nan


def effective_rank(outputs: Tensor) -> float:
    """Roy-Vetterli effective rank of ``outputs`` ``(N, width)`` divided by ``width`` (in (0, 1];
    NaN for an all-zero matrix)."""
    s = torch.linalg.svdvals(outputs.double())
    total = float(s.sum())
    if total <= 0:
        return math.nan
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum())) / outputs.shape[1]


def head_health(stats: HeadStats) -> dict[str, float]:
    """The three head diagnostics of one measurement."""
    ranks = [effective_rank(o) for o in stats.outputs if o.numel()]
    ranks = [r for r in ranks if not math.isnan(r)]
    return {
        "dormant": dormant_fraction(stats),
        "duplicate": duplicate_fraction(stats),
        "erank": sum(ranks) / len(ranks) if ranks else math.nan,
    }


def slope(values: Sequence[float]) -> float | None:
    """Least-squares slope of ``values`` against their index; None for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return None
    mx = (n - 1) / 2
    my = sum(values) / n
    sxx = sum((i - mx) ** 2 for i in range(n))
    return sum((i - mx) * (v - my) for i, v in enumerate(values)) / sxx


def plasticity(
    end_loss: Sequence[float], fresh_loss: Sequence[float], last_k: int
) -> dict[str, Any]:
    """Per-task ratios ``end_loss[t] / fresh_loss[t]``, their mean over the last ``last_k`` tasks
    and their slope over all tasks."""
    if len(end_loss) != len(fresh_loss):
        raise ValueError(f"expected paired losses, got {len(end_loss)} and {len(fresh_loss)}")
    ratios = [a / b for a, b in zip(end_loss, fresh_loss)]
    tail = ratios[-last_k:] if last_k > 0 else ratios
    return {
        "ratios": ratios,
        "plasticity": sum(tail) / len(tail) if tail else None,
        "plasticity_trend": slope(ratios),
    }


def forgetting(
    keys: Sequence[str], start_loss: Sequence[float], end_loss: Sequence[float]
) -> dict[str, Any]:
    """For each task whose key was seen before: ``start_loss`` of the revisit minus ``end_loss`` of
    the previous visit. Returns the per-revisit values and their mean (None without revisits)."""
    last_end: dict[str, float] = {}
    values = []
    for key, start, end in zip(keys, start_loss, end_loss, strict=True):
        if key in last_end:
            values.append(start - last_end[key])
        last_end[key] = end
    return {
        "forgetting_per_revisit": values,
        "forgetting": sum(values) / len(values) if values else None,
    }
