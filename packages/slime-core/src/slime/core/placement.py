"""Device placement of a pseudopod as a pure function of its archive cell."""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from slime.proto import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["placement"]

_QUANTUM = 1e-6  # float coordinates are rounded to this grid before hashing


def _quantize(value: float | int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"cell coordinates must be numbers, got {value!r}", "cell")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"cell coordinates must be finite, got {value!r}", "cell")
        if value.is_integer():
            return int(value)
        return round(value / _QUANTUM)
    return value


def placement(cell: Tensor | Sequence[int | float], num_devices: int) -> int:
    """The device index in ``[0, num_devices)`` for archive ``cell`` (indices or coordinates).

    A blake2b hash of the quantized coordinates, so it is identical across processes and runs
    (Python's ``hash()`` is salted per process). Integral floats hash like their ints.

    Raises:
        ConfigError: ``num_devices < 1`` or a cell that is empty or not finite numbers.
    """
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ConfigError(f"num_devices must be an int >= 1, got {num_devices!r}", "num_devices")
    # Tensors are recognised by duck typing: this module stays importable without torch.
    coords = cell.detach().flatten().tolist() if hasattr(cell, "detach") else list(cell)
    if not coords:
        raise ConfigError("cell must have at least one coordinate, got an empty cell", "cell")
    packed = struct.pack(f"<{len(coords)}q", *(_quantize(c) for c in coords))
    digest = hashlib.blake2b(packed, digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_devices
