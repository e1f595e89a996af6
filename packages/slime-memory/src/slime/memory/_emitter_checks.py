"""Argument checks shared by the emitters: each raises ConfigError naming the bad value."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from slime.memory.limits import MAX_ASK_ELEMENTS
from slime.proto import ConfigError, shown

__all__ = [
    "Bounds",
    "check_ask_elements",
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
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        number = math.nan
    else:
        try:
            number = float(value)
        except OverflowError:  # an int such as 10**400
            number = math.inf
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(
            f"{path.rsplit('.', 1)[-1]} must be a finite number > 0, got {shown(value)}", path
        )
    return number


def _real_tensor(value: Any, what: str, path: str) -> torch.Tensor:
    """``value`` (numbers, a sequence or a tensor) as a float64 CPU tensor, or ConfigError:
    strings, complex numbers (the cast would drop the imaginary part), numbers beyond the
    float64 range and more than MAX_ASK_ELEMENTS numbers (one ask returns at least that many
    per row; an ``expand()``-ed view of 10**12 would be copied by the cast) are refused, not
    converted."""
    if isinstance(value, str | bytes):
        raise ConfigError(f"{what}, got {shown(value)}", path)
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        # A Python int past int64 (2**70) makes torch give up on the whole list: read the
        # numbers as float64 instead, which still refuses 10**400 (beyond float64) and text.
        try:
            tensor = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            raise ConfigError(f"{what}, got {shown(value)}", path) from e
    if tensor.is_meta:
        raise ConfigError(f"{what}, got a tensor on the meta device (no values)", path)
    if tensor.numel() > MAX_ASK_ELEMENTS:
        raise ConfigError(
            f"{what}: got {tensor.numel():,} of them, above the limit MAX_ASK_ELEMENTS = "
            f"{MAX_ASK_ELEMENTS:,}",
            path,
        )
    if (
        tensor.is_complex()
        or tensor.dtype == torch.bool
        or not (tensor.is_floating_point() or tensor.dtype in _INTEGER_DTYPES)
    ):
        raise ConfigError(f"{what} (real), got {tensor.dtype} values {shown(value)}", path)
    return tensor.detach().to(device="cpu", dtype=torch.float64)


_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_x0(x0: Any, device: torch.device, owner: str) -> torch.Tensor:
    point = _real_tensor(x0, "x0 must be d numbers", f"{owner}.x0")
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
    what = f"sigma must be a number > 0 or {dim} finite numbers > 0"
    scale = _real_tensor(sigma, what, path)
    if scale.shape != (dim,) or not bool((torch.isfinite(scale) & (scale > 0)).all()):
        raise ConfigError(f"{what}, got {shown(sigma)}", path)
    return scale.to(device)


_UNORDERED = (str, bytes, set, frozenset, Mapping)
"""What bounds and their pairs may not be: a set or a dict has no (low, high) order of its own
(a dict iterates its keys), and a str is characters."""


def check_bounds(
    bounds: Bounds, dim: int, device: torch.device, owner: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d,)`` lower and upper bounds (``-inf``/``inf`` where open) on ``device``."""
    path = f"{owner}.bounds"
    if bounds is None:
        pairs: list[Any] = [(None, None)] * dim
    elif isinstance(bounds, _UNORDERED) or not has_length(bounds):
        raise ConfigError(
            f"bounds must be None, one (low, high) pair or {dim} pairs, got {shown(bounds)}", path
        )
    elif len(bounds) == 2 and all(b is None or isinstance(b, numbers.Real) for b in bounds):
        pairs = [tuple(bounds)] * dim
    else:
        if len(bounds) != dim:  # before copying: an expand()-ed view may have 10**12 rows
            raise ConfigError(
                f"bounds has {len(bounds)} pairs, expected one (low, high) or {dim}", path
            )
        pairs = list(bounds)
    lows, highs = [], []
    for i, pair in enumerate(pairs):
        if pair is None:
            pair = (None, None)
        if isinstance(pair, _UNORDERED):  # unpacking would take keys, characters or any order
            raise ConfigError(f"bounds[{i}] is {shown(pair)}, expected (low, high)", path)
        try:
            low, high = pair
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bounds[{i}] is {pair!r}, expected (low, high)", path) from e
        low = -math.inf if low is None else low
        high = math.inf if high is None else high
        if any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in (low, high)):
            raise ConfigError(f"bounds[{i}] is {shown(pair)}, expected numbers low < high", path)
        try:
            low, high = float(low), float(high)
        except OverflowError as e:  # an int such as 10**400
            raise ConfigError(
                f"bounds[{i}] is {shown(pair)}: beyond the float64 range (use None for open)",
                path,
            ) from e
        if math.isnan(low) or math.isnan(high) or not low < high:
            raise ConfigError(f"bounds[{i}] is {shown(pair)}, expected numbers low < high", path)
        lows.append(low)
        highs.append(high)
    both = torch.tensor([lows, highs], dtype=torch.float64, device=device)
    return both[0], both[1]


def check_ask_elements(rows: int, dim: int, what: str, path: str) -> None:
    """Raise ConfigError if an ask of ``rows`` solutions of ``dim`` coordinates (``what``
    says where ``rows`` comes from) is above MAX_ASK_ELEMENTS numbers."""
    if rows * dim > MAX_ASK_ELEMENTS:
        raise ConfigError(
            f"{what} = {rows} solutions of {dim} coordinates per ask: {rows * dim:,} float64 "
            f"({8 * rows * dim:,} bytes), above the limit MAX_ASK_ELEMENTS = "
            f"{MAX_ASK_ELEMENTS:,} numbers",
            path,
        )


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


def has_length(value: Any) -> bool:
    """Whether ``len(value)`` works: a 0-d tensor or array has ``__len__`` but raises."""
    try:
        len(value)
    except TypeError:
        return False
    return True
