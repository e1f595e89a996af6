"""Hard limits that every layer above checks against."""

from __future__ import annotations

__all__ = [
    "MAX_ARCHIVE_CELLS",
    "MAX_EMITTER_INSTANCES",
    "MAX_POOL_SIZE",
    "MAX_SAMPLE_SIZE",
    "MAX_TUBE_CAPACITY",
]

MAX_POOL_SIZE = 64
"""The blueprint's hard limit on live pods in one pool (an organism's slot capacity)."""

MAX_ARCHIVE_CELLS = 1 << 24
"""Most cells an archive may have (16,777,216): its state matrix holds ``3 + k`` float64 per
cell, so a larger count is a mistake (a grid of ``10**6 x 10**6`` cells) rather than a plan."""

MAX_SAMPLE_SIZE = 1 << 20
"""Most elites one :meth:`~slime.memory.Archive.sample_elites` call draws (1,048,576)."""

MAX_TUBE_CAPACITY = 1 << 20
"""Most stores a :class:`~slime.memory.TubeNetwork` remembers (1,048,576); its buffer holds
``capacity`` copies of the stored tensor."""

MAX_EMITTER_INSTANCES = 1 << 12
"""Most CMA-ES searches one :class:`~slime.memory.EvolutionStrategyEmitter` runs (4,096);
each holds a ``(d, d)`` covariance."""
