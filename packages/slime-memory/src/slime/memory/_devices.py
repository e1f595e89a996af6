"""The device argument shared by the archives, emitters and TubeNetwork, checked once."""

from __future__ import annotations

from typing import Any

import torch
from slime.proto import ConfigError, shown

__all__ = ["as_device"]


def as_device(device: Any, path: str) -> torch.device | None:
    """``device`` as a ``torch.device`` (None stays None), or ConfigError naming it: a string
    torch cannot parse (``"gpu"``, ``"cuda:x"``), something that is no device at all, or a
    device this process cannot hold a tensor on (``"cuda"`` without a GPU or driver, an index
    past the last GPU, a backend torch was built without), which torch would otherwise report
    from deep inside the first tensor made there."""
    if device is None:
        return None
    if isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, str) or (isinstance(device, int) and not isinstance(device, bool)):
        try:
            parsed = torch.device(device)  # an int is a CUDA index, as torch reads it
        except (RuntimeError, ValueError) as e:
            raise ConfigError(f"device {shown(device)} is not a torch device: {e}", path) from e
    else:
        raise ConfigError(
            "device must be a torch.device or a string such as 'cpu' or 'cuda:0', got "
            f"{shown(device)}",
            path,
        )
    try:
        torch.empty(0, device=parsed)
    except Exception as e:  # RuntimeError, NotImplementedError, AssertionError, ImportError
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"device {shown(device)} is not usable here: {type(e).__name__}: {reason}", path
        ) from e
    return parsed
