"""The typed error hierarchy every slime layer raises.

Every error is a :class:`SlimeError`, so a caller can catch all of slime's failures in one place, and
each subclass names one kind of failure. Messages name the offending value and what was expected.
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = [
    "ArchiveError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "KernelError",
    "MemoryBudgetError",
    "PoolError",
    "SlimeError",
    "shown",
]

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple = 3, 6, 6, 6
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 80, 80, 40


def shown(value: Any) -> str:
    """``repr(value)`` cut to a readable length for an error message: long strings, numbers and
    containers are elided (``...``) without formatting them whole, so a huge value costs nothing."""
    return _SHORT.repr(value)


class SlimeError(Exception):
    """Root of every error slime raises on purpose."""


class ConfigError(SlimeError, ValueError):
    """A configuration value is unknown, mistyped or out of range.

    Args:
        message: what is wrong and what was expected.
        path: dotted key path of the offending value (``"model.n_layer"``), if known.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class KernelError(SlimeError, ValueError):
    """A kernel was called with arguments it cannot compute on (shape, dtype, device, memory)."""


class ArchiveError(SlimeError, ValueError):
    """An archive operation got invalid data (non-finite objective, bad shape, corrupt file)."""


class CheckpointError(SlimeError):
    """A checkpoint or saved model is missing, truncated, tampered with or incompatible."""


class MemoryBudgetError(SlimeError, MemoryError):
    """A memory budget is invalid, or cannot be met even after culling."""


class PoolError(SlimeError, ValueError):
    """A pool operation would break a pool invariant (capacity, unknown member, bad fraction)."""


class DataError(SlimeError, ValueError):
    """A dataset is missing, empty or malformed."""
