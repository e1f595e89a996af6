"""The device argument shared by the archives, emitters and TubeNetwork, checked once."""

from __future__ import annotations

from typing import Any

import torch
from slime.proto import ConfigError, shown

__all__ = ["as_device"]


def as_device(device: Any, path: str) -> torch.device | None:
    """``device`` as a ``torch.device`` (None stays None), or ConfigError naming it: a string
    torch cannot parse (``"gpu"``, ``"cuda:x"``) or something that is no device at all."""
    if device is None or isinstance(device, torch.device):
        return device
    if isinstance(device, str) or (isinstance(device, int) and not isinstance(device, bool)):
        try:
            return torch.device(device)  # an int is a CUDA index, as torch reads it
        except (RuntimeError, ValueError) as e:
            raise ConfigError(f"device {shown(device)} is not a torch device: {e}", path) from e
    raise ConfigError(
        f"device must be a torch.device or a string such as 'cpu' or 'cuda:0', got {shown(device)}",
        path,
    )
