"""Reading a run's curve of held-out evaluations: its best checkpoint and when it reached a target.

A curve is a list of evaluation points ``{"step", "time_s", <loss key>, ...}`` in step order
(:class:`~slime.train.ablations.one_run.AblationTrainer` records ``heldout_loss`` on the fixed
held-out batches and ``time_s``, the training seconds so far).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["best_of", "time_to_target"]


def best_of(curve: Sequence[dict[str, Any]], key: str = "heldout_loss") -> dict[str, Any]:
    """The best evaluation of ``curve`` by ``key`` (lowest finite value, earliest on ties):
    ``best_val_loss``, ``best_step`` and ``best_time_s`` (training seconds); None where no
    evaluation has a finite value."""
    points = [p for p in curve if p.get(key) is not None and math.isfinite(p[key])]
    if not points:
        return {"best_val_loss": None, "best_step": None, "best_time_s": None}
    best = min(points, key=lambda p: p[key])  # min keeps the first of equal values
    return {"best_val_loss": best[key], "best_step": best["step"], "best_time_s": best["time_s"]}


def time_to_target(
    curve: Sequence[dict[str, Any]], target: float | None, key: str = "heldout_loss"
) -> dict[str, Any]:
    """Step and training seconds of the first evaluation with ``key`` at or under ``target``
    (``target_step``, ``target_time_s``; both None when never reached or no target)."""
    if target is not None:
        for p in curve:
            if p.get(key) is not None and p[key] <= target:
                return {"target_step": p["step"], "target_time_s": p["time_s"]}
    return {"target_step": None, "target_time_s": None}
