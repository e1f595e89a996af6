"""Pool: a thread-safe, bounded population of live Components with lifecycle accounting."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from slime.memory._payload import payload_nbytes
from slime.proto import Component, ConfigError, MemoryBudgetError, PoolError

__all__ = ["MAX_POOL_SIZE", "SOFT_LIMIT_CULL_FRACTION", "Pool"]

MAX_POOL_SIZE = 64
"""The blueprint's hard limit on live components in one pool."""

SOFT_LIMIT_CULL_FRACTION = 0.2
"""Share of the pool culled when a memory budget is exceeded (blueprint decision 4)."""

_OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError}
)

T = TypeVar("T")


@dataclass
class _Member:
    component: Component
    born: int  # pool step at spawn


def default_size_of(component: Component) -> int:
    """Bytes of a component: its parameters and buffers if it has them, else its payload tensors."""
    tensors: list[torch.Tensor] = []
    for method in ("parameters", "buffers"):
        if callable(getattr(component, method, None)):
            tensors.extend(getattr(component, method)())
    if tensors:
        return sum(t.numel() * t.element_size() for t in tensors)
    return payload_nbytes(component.to_dict())


class Pool:
    """Up to ``capacity`` Components, each known by a member id that is never reused.

    Every method takes one re-entrant lock, so spawns, culls and snapshots from several threads
    keep the invariants ``len(pool) <= capacity`` and ``births - deaths == len(pool)``. Iteration
    and :meth:`by_fitness` work on snapshots taken under the lock.

    Culling removes the lowest fitness first; equal fitness goes in spawn order (older first).
    ``cull_worst(f)`` removes ``ceil(f * len)`` members, so at least one when the pool is not empty.

    Args:
        capacity: most live members, 1..MAX_POOL_SIZE.
        memory_budget_bytes: soft budget checked by :meth:`enforce_budget`; None for no budget.
        size_of: bytes of one component (default: parameters and buffers, else payload tensors).
        on_cull: called with the ``(member_id, component)`` pairs of every cull, so an owner can
            drop them from its model. Runs under the pool's lock.
    """

    def __init__(
        self,
        capacity: int = MAX_POOL_SIZE,
        *,
        memory_budget_bytes: int | None = None,
        size_of: Callable[[Component], int] | None = None,
        on_cull: Callable[[list[tuple[int, Component]]], None] | None = None,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise ConfigError(f"capacity must be an int, got {capacity!r}", "Pool.capacity")
        if not 1 <= capacity <= MAX_POOL_SIZE:
            raise ConfigError(
                f"capacity must be in 1..{MAX_POOL_SIZE}, got {capacity}", "Pool.capacity"
            )
        if memory_budget_bytes is not None and (
            isinstance(memory_budget_bytes, bool)
            or not isinstance(memory_budget_bytes, int)
            or memory_budget_bytes <= 0
        ):
            raise MemoryBudgetError(
                f"memory_budget_bytes must be a positive int or None, got {memory_budget_bytes!r}"
            )
        self._capacity = capacity
        self._budget = memory_budget_bytes
        self._size_of = size_of if size_of is not None else default_size_of
        self._on_cull = on_cull
        self._lock = threading.RLock()
        self._members: dict[int, _Member] = {}
        self._next_id = 0
        self._step = 0
        self._births = 0
        self._deaths = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def memory_budget_bytes(self) -> int | None:
        return self._budget

    @property
    def births(self) -> int:
        with self._lock:
            return self._births

    @property
    def deaths(self) -> int:
        with self._lock:
            return self._deaths

    @property
    def step(self) -> int:
        with self._lock:
            return self._step

    def spawn(self, component: Component) -> int:
        """Add a component; returns its member id. Raises PoolError when full or not a Component."""
        if not isinstance(component, Component):
            raise PoolError(f"{type(component).__name__} does not implement the Component protocol")
        with self._lock:
            if len(self._members) >= self._capacity:
                raise PoolError(f"pool is full ({self._capacity} members); cull before spawning")
            member_id = self._next_id
            self._next_id += 1
            self._members[member_id] = _Member(component, self._step)
            self._births += 1
            return member_id

    def remove(self, member_id: int) -> Component:
        """Remove one member and return it. Raises PoolError for an unknown id."""
        with self._lock:
            member = self._members.pop(member_id, None)
            if member is None:
                raise PoolError(f"no member with id {member_id!r}")
            self._deaths += 1
            return member.component

    def get(self, member_id: int) -> Component:
        """The live component with ``member_id``. Raises PoolError for an unknown id."""
        with self._lock:
            member = self._members.get(member_id)
            if member is None:
                raise PoolError(f"no member with id {member_id!r}")
            return member.component

    def __contains__(self, member_id: object) -> bool:
        with self._lock:
            return member_id in self._members

    def __len__(self) -> int:
        with self._lock:
            return len(self._members)

    def __iter__(self) -> Iterator[Component]:
        """Components in spawn order, from a snapshot (the pool may change while you iterate)."""
        with self._lock:
            snapshot = [m.component for m in self._members.values()]
        return iter(snapshot)

    def items(self) -> list[tuple[int, Component]]:
        """``(member_id, component)`` pairs in spawn order (a snapshot)."""
        with self._lock:
            return [(i, m.component) for i, m in self._members.items()]

    def tick(self, steps: int = 1) -> None:
        """Advance the pool's clock, which ages every member."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise PoolError(f"tick needs a non-negative int, got {steps!r}")
        with self._lock:
            self._step += steps

    def age(self, member_id: int) -> int:
        """Steps since ``member_id`` was spawned. Raises PoolError for an unknown id."""
        with self._lock:
            member = self._members.get(member_id)
            if member is None:
                raise PoolError(f"no member with id {member_id!r}")
            return self._step - member.born

    def by_fitness(self, descending: bool = True) -> list[tuple[int, Component]]:
        """Snapshot of ``(member_id, component)`` ordered by fitness (ties in spawn order).

        Raises:
            PoolError: a member's fitness is NaN (naming the member).
        """
        with self._lock:
            ranked = self._ranked()
        if descending:
            ranked = sorted(ranked, key=lambda r: (-r[0], r[1]))
        return [(member_id, component) for _, member_id, component in ranked]

    def _ranked(self) -> list[tuple[float, int, Component]]:
        """``(fitness, id, component)`` ascending by fitness, ties by id. Call under the lock."""
        rows = []
        for member_id, member in self._members.items():
            fitness = float(member.component.fitness)
            if math.isnan(fitness):
                raise PoolError(f"member {member_id} has NaN fitness; cannot rank it")
            rows.append((fitness, member_id, member.component))
        return sorted(rows, key=lambda r: (r[0], r[1]))

    def cull_worst(self, fraction: float) -> list[Component]:
        """Remove the ``ceil(fraction * len)`` lowest-fitness members; returns them, worst first.

        Raises:
            PoolError: ``fraction`` outside ``(0, 1]``, or a NaN fitness.
        """
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise PoolError(f"fraction must be a number in (0, 1], got {fraction!r}")
        if not 0.0 < fraction <= 1.0:
            raise PoolError(f"fraction must be in (0, 1], got {fraction!r}")
        with self._lock:
            # The tolerance keeps 0.1 * 30 (= 3.0000000000000004) at 3 rather than 4.
            count = math.ceil(fraction * len(self._members) - 1e-9)
            victims = self._ranked()[:count]
            for _, member_id, _ in victims:
                del self._members[member_id]
            self._deaths += len(victims)
            culled = [(member_id, component) for _, member_id, component in victims]
            if culled and self._on_cull is not None:
                self._on_cull(culled)
        return [component for _, component in culled]

    def used_bytes(self) -> int:
        """Bytes held by the live members, as measured by ``size_of``."""
        with self._lock:
            return sum(self._size_of(m.component) for m in self._members.values())

    def enforce_budget(self, used_bytes: int | None = None) -> list[Component]:
        """Soft memory limit: over budget, cull 20% (once per call); returns what was culled.

        Args:
            used_bytes: measured usage (e.g. ``torch.cuda.memory_allocated()``); None measures the
                members with ``size_of``.

        Returns:
            The culled components; empty when within budget or when the pool has no budget.
        """
        if used_bytes is not None and (
            isinstance(used_bytes, bool) or not isinstance(used_bytes, int) or used_bytes < 0
        ):
            raise MemoryBudgetError(f"used_bytes must be a non-negative int, got {used_bytes!r}")
        if self._budget is None:
            return []
        with self._lock:
            used = self.used_bytes() if used_bytes is None else used_bytes
            if used <= self._budget or not self._members:
                return []
            return self.cull_worst(SOFT_LIMIT_CULL_FRACTION)

    def guard(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn``; on an out-of-memory error cull 20% and retry once instead of crashing.

        Raises:
            MemoryBudgetError: the retry ran out of memory too (chained to the second error).
        """
        try:
            return fn(*args, **kwargs)
        except _OOM_ERRORS:
            if len(self):
                self.cull_worst(SOFT_LIMIT_CULL_FRACTION)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        try:
            return fn(*args, **kwargs)
        except _OOM_ERRORS as e:
            raise MemoryBudgetError(
                f"out of memory again after culling to {len(self)} members: {e}"
            ) from e
