"""Hard limits that every layer above checks against."""

from __future__ import annotations

__all__ = [
    "MAX_ARCHIVE_CELLS",
    "MAX_ASK_ELEMENTS",
    "MAX_BATCH_SIZE",
    "MAX_CMA_STATE_BYTES",
    "MAX_CVT_SAMPLES",
    "MAX_EMITTER_INSTANCES",
    "MAX_POOL_SIZE",
    "MAX_SAMPLE_SIZE",
    "MAX_TUBE_CAPACITY",
    "MAX_TUBE_ELEMENTS",
]

MAX_POOL_SIZE = 64
"""The blueprint's hard limit on live pods in one pool (an organism's slot capacity)."""

MAX_ARCHIVE_CELLS = 1 << 24
"""Most cells an archive may have (16,777,216): its state matrix holds ``3 + k`` float64 per
cell, so a larger count is a mistake (a grid of ``10**6 x 10**6`` cells) rather than a plan."""

MAX_BATCH_SIZE = 1 << 24
"""Most items one :meth:`~slime.memory.Archive.add` takes (16,777,216), and most descriptors one
query (``cell_index``, ``thresholds``, ``retrieve``) maps; also the most solutions one emitter's
``ask`` returns (``instances * batch_size`` for CMA-ES) and a scheduler's emitters return
together. Larger is a mistake (an ``expand()``-ed view of ``10**12`` rows) rather than a plan:
split it into batches."""

MAX_CVT_SAMPLES = 1 << 24
"""Most uniform points a :class:`~slime.memory.CVTArchive` clusters with k-means (16,777,216)."""

MAX_SAMPLE_SIZE = 1 << 20
"""Most elites one :meth:`~slime.memory.Archive.sample_elites` call draws (1,048,576)."""

MAX_TUBE_CAPACITY = 1 << 20
"""Most stores a :class:`~slime.memory.TubeNetwork` remembers (1,048,576); its buffer holds
``capacity`` copies of the stored tensor."""

MAX_TUBE_ELEMENTS = 1 << 24
"""Most elements one tensor a :class:`~slime.memory.TubeNetwork` stores may have (16,777,216):
its buffer holds ``capacity`` copies of it, so a larger one is a mistake (an ``expand()``-ed view
of ``10**12`` elements) rather than a plan."""

MAX_EMITTER_INSTANCES = 1 << 12
"""Most CMA-ES searches one :class:`~slime.memory.EvolutionStrategyEmitter` runs (4,096);
each holds a ``(d, d)`` covariance."""

MAX_CMA_STATE_BYTES = 1 << 34
"""Most bytes the covariance state of one :class:`~slime.memory.EvolutionStrategyEmitter` may
take (17,179,869,184, 16 GiB): ``3 * instances * d * d`` float64, the covariances, their
``B sqrt(D)`` factors and their inverse square roots, each ``(instances, d, d)``; an update
and an eigendecomposition briefly need a few more copies. Checked before anything is
allocated: an ``x0`` of 100,000 coordinates (240 GB) is a mistake rather than a plan."""

MAX_ASK_ELEMENTS = 1 << 30
"""Most numbers one emitter's ``ask`` returns (1,073,741,824, 8 GiB of float64):
``ask_size * d``, each row a solution of ``d`` coordinates. Checked when the emitter is
built, before its first ``ask`` allocates the batch."""
