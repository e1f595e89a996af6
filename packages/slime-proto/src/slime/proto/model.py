"""Model protocols of the blueprint: Pseudopod, Chemotaxis, Organism."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["Chemotaxis", "Organism", "Pseudopod"]


@runtime_checkable
class Pseudopod(Protocol):
    """A sensory probe: one attention head of the living pool. Also a Component."""

    def forward(self, latent: Tensor, stimulus: Tensor | None = None) -> Tensor:
        """Attend over ``latent`` ``(B, T, D)``; returns ``(B, T, d)`` (head output).

        ``stimulus`` is optional context (masks, memory) the implementation documents.
        """
        ...

    @property
    def correlation(self) -> Tensor:
        """``(d, d)`` correlation of the pod's most recent outputs (see Kernel.correlation)."""
        ...

    def effective_rank(self) -> Tensor:
        """0-d tensor: effective rank of :attr:`correlation`."""
        ...

    def coherence(self) -> Tensor:
        """0-d tensor in ``[0, 1]``: coherence of :attr:`correlation`."""
        ...


@runtime_checkable
class Chemotaxis(Protocol):
    """Navigator of the behavioural space: where should the next pseudopod grow from?"""

    def add_source(self, location: Tensor, concentration: float | Tensor) -> None:
        """Add a food source at behavioural ``location`` ``(k,)`` with ``concentration`` (how
        rich it is, e.g. an elite's objective)."""
        ...

    def sample(self, behavior: Tensor, metabolic_rate: float, hunger: float) -> Tensor | None:
        """Pick a behavioural location ``(k,)`` to grow toward from ``behavior`` ``(k,)``.

        ``metabolic_rate`` sets how far to range; ``hunger`` in ``[0, 1]`` how greedily to follow
        concentration. Returns None when there is nothing to follow.
        """
        ...

    def clear(self) -> None:
        """Remove every source."""
        ...


@runtime_checkable
class Organism(Protocol):
    """Top-level orchestrator owning a pool of pseudopods, an archive and chemotaxis."""

    def forward(self, stimulus: Tensor) -> Tensor:
        """``(B, T, D)`` stimulus -> ``(B, T, D)`` output; implementations document further
        keyword arguments (masks)."""
        ...

    def reset_state(self) -> None:
        """Forget temporal memory (tubes)."""
        ...

    def stats(self) -> dict[str, Any]:
        """Plain-data summary: pool size, births, deaths, archive coverage, ..."""
        ...
