"""The Memory protocol: temporal memory with decay (TubeNetwork). Not for component lifecycles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["Memory"]


@runtime_checkable
class Memory(Protocol):
    """Bounded temporal memory of weighted tensors that fades with time."""

    def store(self, data: Tensor, weight: float | Tensor) -> None:
        """Store ``data`` (any shape, fixed per memory) with a non-negative ``weight``."""
        ...

    def recall(self) -> Tensor | None:
        """Decay-weighted mean of what is stored (same shape as ``data``), or None when empty."""
        ...

    def clear(self) -> None:
        """Forget everything."""
        ...
