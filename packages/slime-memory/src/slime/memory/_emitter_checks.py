"""Argument checks shared by the emitters: each raises ConfigError naming the bad value."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from slime.proto import ConfigError

__all__ = [
    "Bounds",
    "check_bounds",
    "check_generator",
    "check_scale",
    "check_x0",
    "positive_float",
    "positive_int",
]

Bounds = Sequence[tuple[float | None, float | None]] | tuple[float | None, float | None] | None
"""None, one ``(low, high)`` pair for every coordinate, or one pair per coordinate."""


def positive_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{path.rsplit('.', 1)[-1]} must be an int >= 1, got {value!r}", path)
    return value


def positive_float(value: Any, path: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(
            f"{path.rsplit('.', 1)[-1]} must be a finite number > 0, got {value!r}", path
        )
    return float(value)


def check_x0(x0: Any, device: torch.device, owner: str) -> torch.Tensor:
    try:
        point = torch.as_tensor(x0, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"x0 must be d numbers, got {x0!r}", f"{owner}.x0") from e
    if point.dim() != 1 or point.shape[0] == 0:
        raise ConfigError(
            f"x0 must have shape (d,) with d >= 1, got shape {tuple(point.shape)}", f"{owner}.x0"
        )
    if not torch.isfinite(point).all():
        raise ConfigError(f"x0 must be finite, got {point.tolist()!r}", f"{owner}.x0")
    return point.to(device)


def check_scale(sigma: Any, dim: int, device: torch.device, path: str) -> torch.Tensor:
    if isinstance(sigma, numbers.Real) and not isinstance(sigma, bool):
        return torch.tensor(positive_float(sigma, path), dtype=torch.float64, device=device)
    scale = torch.as_tensor(sigma, dtype=torch.float64)
    if scale.shape != (dim,) or not bool((torch.isfinite(scale) & (scale > 0)).all()):
        raise ConfigError(
            f"sigma must be a number > 0 or {dim} finite numbers > 0, got {sigma!r}", path
        )
    return scale.to(device)


def check_bounds(
    bounds: Bounds, dim: int, device: torch.device, owner: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d,)`` lower and upper bounds (``-inf``/``inf`` where open) on ``device``."""
    path = f"{owner}.bounds"
    if bounds is None:
        pairs: list[Any] = [(None, None)] * dim
    elif len(bounds) == 2 and all(b is None or isinstance(b, numbers.Real) for b in bounds):
        pairs = [tuple(bounds)] * dim
    else:
        pairs = list(bounds)
        if len(pairs) != dim:
            raise ConfigError(
                f"bounds has {len(pairs)} pairs, expected one (low, high) or {dim}", path
            )
    lows, highs = [], []
    for i, pair in enumerate(pairs):
        if pair is None:
            pair = (None, None)
        try:
            low, high = pair
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bounds[{i}] is {pair!r}, expected (low, high)", path) from e
        low = -math.inf if low is None else low
        high = math.inf if high is None else high
        if (
            any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in (low, high))
            or math.isnan(low)
            or math.isnan(high)
            or not low < high
        ):
            raise ConfigError(f"bounds[{i}] is {pair!r}, expected numbers low < high", path)
        lows.append(float(low))
        highs.append(float(high))
    both = torch.tensor([lows, highs], dtype=torch.float64, device=device)
    return both[0], both[1]


def check_generator(
    generator: torch.Generator | None, device: torch.device, owner: str
) -> torch.Generator:
    if generator is None:
        fresh = torch.Generator(device=device)
        fresh.seed()
        return fresh
    if not isinstance(generator, torch.Generator):
        raise ConfigError(
            f"generator must be a torch.Generator, got {type(generator).__name__}",
            f"{owner}.generator",
        )
    if generator.device.type != device.type:
        raise ConfigError(
            f"generator is on {generator.device}, the archive on {device}; make it with "
            f"torch.Generator(device={str(device)!r})",
            f"{owner}.generator",
        )
    return generator
