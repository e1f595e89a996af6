"""The Component protocol: anything a pool manages and an archive stores."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Component"]


@runtime_checkable
class Component(Protocol):
    """A pooled, archivable unit (a pseudopod, or any user type).

    Archives never hold live objects: they store ``to_dict()`` payloads, which contain only tensors
    and plain data (str, int, float, bool, None, lists and dicts of those), never references to
    modules or other live objects. ``from_dict(to_dict())`` must rebuild an equivalent component.
    """

    @property
    def fitness(self) -> float:
        """Current fitness; higher is better. Pools order and cull by it."""
        ...

    def reset(self) -> None:
        """Forget accumulated statistics (fitness trackers, smoothed descriptors)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Serialise to tensors and plain data only (no object references)."""
        ...

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Component:
        """Rebuild a component from a :meth:`to_dict` payload."""
        ...
