"""Device placement of a pseudopod as a pure function of its archive cell."""

from __future__ import annotations

import hashlib
import math
import operator
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from slime.proto import ConfigError, shown

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["placement"]

_QUANTUM = 1e-6  # float coordinates are rounded to this grid before hashing


_INT64 = (-(2**63), 2**63 - 1)  # what the hash packs each quantized coordinate into


def _quantize(value: float | int) -> int:
    if not isinstance(value, bool | int | float):
        try:
            value = operator.index(value)  # numpy's integers hash as the ints they are
        except TypeError:
            raise ConfigError(
                f"cell coordinates must be numbers, got {shown(value)}", "cell"
            ) from None
    if isinstance(value, bool):
        raise ConfigError(f"cell coordinates must be numbers, got {value!r}", "cell")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"cell coordinates must be finite, got {value!r}", "cell")
        quantized = int(value) if value.is_integer() else round(value / _QUANTUM)
    else:
        quantized = value
    if not _INT64[0] <= quantized <= _INT64[1]:
        raise ConfigError(
            f"cell coordinate {shown(value)} is beyond what placement hashes (int64 after "
            f"quantizing floats to {_QUANTUM})",
            "cell",
        )
    return quantized


def placement(cell: Tensor | Sequence[int | float], num_devices: int) -> int:
    """The device index in ``[0, num_devices)`` for archive ``cell`` (indices or coordinates).

    A blake2b hash of the quantized coordinates, so it is identical across processes and runs
    (Python's ``hash()`` is salted per process). Integral floats hash like their ints.

    Raises:
        ConfigError: ``num_devices < 1`` or a cell that is empty, not finite numbers, or holds
            a coordinate beyond int64 once quantized.
    """
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ConfigError(f"num_devices must be an int >= 1, got {num_devices!r}", "num_devices")
    # Tensors are recognised by duck typing: this module stays importable without torch.
    try:
        coords = cell.detach().flatten().tolist() if hasattr(cell, "detach") else list(cell)
    except TypeError:
        raise ConfigError(
            f"cell must be a tensor or a sequence of numbers, got {shown(cell)}", "cell"
        ) from None
    if not coords:
        raise ConfigError("cell must have at least one coordinate, got an empty cell", "cell")
    packed = struct.pack(f"<{len(coords)}q", *(_quantize(c) for c in coords))
    digest = hashlib.blake2b(packed, digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_devices
