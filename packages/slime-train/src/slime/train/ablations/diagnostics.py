"""Quality-diversity diagnostics recorded during every slime run, injected by composition.

- :class:`RecordingFitness` scores pods as :class:`~slime.train.fitness.FitnessTracker` does
  (optionally with measured costs), then measures each pod's masked-loss contribution on a fixed
  held-out batch and records how well the fitness, and each candidate metric (probe-batch masked
  loss, gradient norm, the blueprint's blend, the first-order Taylor estimate), rank-correlate with
  it (Spearman).
- :class:`RecordingLifecycle` runs the lifecycle unchanged and appends a timeline point after each
  medium event: pool size, archive coverage and QD score, descriptor variance across pods.
- :class:`BirthLedger` follows every pod born during the run to compute the survival rate of
  newborns (bootstrapped from the archive or not) across the cull events they lived through.

Time spent on diagnostics is accumulated in a :class:`Stopwatch` so that throughput, wall time and
peak memory can be reported without it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from slime.memory import descriptor_variance
from slime.train.ablations.stats import spearman
from slime.train.config import FitnessConfig, LifecycleConfig
from slime.train.fitness import FitnessTracker, PodKey, PodScore, masked_loss_contributions
from slime.train.fitness import normalise as minmax
from slime.train.lifecycle import Lifecycle, lifecycle_phase
from torch import Tensor

__all__ = ["BLEND", "BirthLedger", "RecordingFitness", "RecordingLifecycle", "Stopwatch"]

BLEND = (0.7, 0.2, 0.1)  # the blueprint's task / efficiency / gradient weights (decision 10)


class Stopwatch:
    """Accumulates the wall seconds spent inside :meth:`timed` (synchronising CUDA around it), and
    keeps the diagnostics' memory out of the run's CUDA peak: :attr:`peak_bytes` is the allocator
    peak outside :meth:`timed`, given that the caller reset the peak statistics at the run's start.

    A diagnostic is an instrument, not part of the run it watches: the held-out masked-loss probe
    runs every slot's masked copy of a 16-sequence batch at once, which at gpu-full sizes peaked
    at 3.4x the baseline's whole training footprint (918 against 267 MiB, H200, 2026-12-02).
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, 0.0
        self._outside = 0  # the peak outside ``timed`` before its last call (bytes)

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            self._outside = max(self._outside, torch.cuda.max_memory_allocated(self.device))
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
                # From here the peak restarts at what is allocated now: what the diagnostic
                # allocated and freed no longer counts.
                torch.cuda.reset_peak_memory_stats(self.device)
            self.seconds += time.perf_counter() - t0

    def peak_bytes(self) -> int | None:
        """The CUDA allocator peak outside :meth:`timed` since the caller's last reset (None off
        CUDA)."""
        if self.device.type != "cuda":
            return None
        return max(self._outside, torch.cuda.max_memory_allocated(self.device))


class RecordingFitness(FitnessTracker):
    """FitnessTracker that also records Spearman(metric, held-out masked-loss contribution).

    Args:
        cfg: the fitness weights.
        heldout: a fixed ``(idx, targets)`` validation batch, distinct from the lifecycle's probe.
        stopwatch: where diagnostic time goes.
        cost_fn: ``fn(model, probe_idx) -> {pod: cost}``; None keeps the shipped cost.
    """

    def __init__(
        self,
        cfg: FitnessConfig,
        *,
        heldout: tuple[Tensor, Tensor],
        stopwatch: Stopwatch,
        cost_fn: Callable[[Any, Tensor], dict[PodKey, float]] | None = None,
    ) -> None:
        super().__init__(cfg)
        self.heldout, self.stopwatch, self.cost_fn = heldout, stopwatch, cost_fn
        self.events: list[dict[str, Any]] = []

    def assess(self, model, idx, targets, costs=None, *, task=None) -> dict[PodKey, PodScore]:
        if costs is None and self.cost_fn is not None:
            costs = self.cost_fn(model, idx)
        scores = super().assess(model, idx, targets, costs, task=task)
        with self.stopwatch.timed():
            self.events.append(self._correlations(model, scores))
        return scores

    def _correlations(self, model, scores: dict[PodKey, PodScore]) -> dict[str, Any]:
        keys = list(scores)
        heldout = masked_loss_contributions(model, *self.heldout)
        truth = [heldout[k] for k in keys]
        task = [scores[k].task for k in keys]
        grad = [scores[k].gradient for k in keys]
        own_cost = [scores[k].cost for k in keys]
        param_bytes = [float(model.organisms[layer].pod_bytes()) for layer, _ in keys]
        averages = self.averages(keys)
        taylor = [averages[k][1] for k in keys]
        terms = (minmax(task), minmax([-c for c in param_bytes]), minmax(grad))
        blend = [sum(w * t[i] for w, t in zip(BLEND, terms)) for i in range(len(keys))]
        return {
            "pods": len(keys),
            "fitness": spearman([scores[k].fitness for k in keys], truth),
            "task": spearman(task, truth),
            "grad": spearman(grad, truth),
            "blend": spearman(blend, truth),
            "taylor": spearman(taylor, truth),
            "distinct_costs": len(set(own_cost)),
        }


class BirthLedger:
    """Follows pods born after construction through the slot listeners of every organism.

    ``step`` must be kept current by the caller (the lifecycle sets it before births). A newborn is
    *exposed* once a cull event happens while it lives; the survival rate is the fraction of exposed
    newborns alive at the end.
    """

    def __init__(self, model, *, uses_archive: bool) -> None:
        self.step = 0
        self.uses_archive = uses_archive
        self.entries: list[dict[str, Any]] = []
        self._live: dict[tuple[int, int], int] = {}  # (layer, slot) -> entry, live newborns only
        self._layer = {id(o): layer for layer, o in enumerate(model.organisms)}
        model.add_slot_listener(self.on_slots_changed)

    def on_slots_changed(self, organism, slots: list[int]) -> None:
        """Slot listener: a listed slot now alive holds a newborn, one now dead held a pod that
        died (slow timescale: reads ``alive`` on the host)."""
        layer = self._layer[id(organism)]
        alive = organism.alive.tolist()
        for slot in slots:
            key = (layer, slot)
            index = self._live.pop(key, None)
            if index is not None:  # the newborn that held this slot died
                self.entries[index]["alive"] = False
                self.entries[index]["died"] = self.step
            if alive[slot]:
                self._live[key] = len(self.entries)
                self.entries.append(
                    {
                        "layer": layer,
                        "born": self.step,
                        "bootstrapped": self.uses_archive and len(organism.archive) > 0,
                        "exposed": False,
                        "alive": True,
                        "died": None,
                    }
                )

    def expose(self) -> None:
        """A cull event is about to happen: every live newborn faces it."""
        for index in self._live.values():
            self.entries[index]["exposed"] = True

    def summary(self) -> dict[str, Any]:
        """Counts of births, exposed and surviving newborns; survival rates of all newborns and
        of the bootstrapped ones (None where no newborn of that kind faced a cull)."""
        exposed = [e for e in self.entries if e["exposed"]]
        survived = [e for e in exposed if e["alive"]]
        boot_exposed = [e for e in exposed if e["bootstrapped"]]
        boot_survived = [e for e in boot_exposed if e["alive"]]
        return {
            "births": len(self.entries),
            "bootstrapped": sum(e["bootstrapped"] for e in self.entries),
            "exposed": len(exposed),
            "survived": len(survived),
            "survival_rate": len(survived) / len(exposed) if exposed else None,
            "bootstrapped_survival_rate": (
                len(boot_survived) / len(boot_exposed) if boot_exposed else None
            ),
        }


class RecordingLifecycle(Lifecycle):
    """The shipped lifecycle plus a timeline point after each medium event.

    Extra keyword arguments (the trainer's ``timer``) go to :class:`Lifecycle` unchanged.
    """

    def __init__(
        self,
        model,
        cfg: LifecycleConfig,
        fitness: FitnessTracker,
        *,
        ledger: BirthLedger,
        stopwatch: Stopwatch,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, cfg, fitness, **kwargs)
        self.ledger, self.stopwatch = ledger, stopwatch
        self.timeline: list[dict[str, Any]] = []

    def medium(self, step: int, loss: Tensor | float, probe: tuple[Tensor, Tensor]) -> dict:
        self.ledger.step = step
        record = super().medium(step, loss, probe)
        with self.stopwatch.timed():
            self.timeline.append({"step": step, "frozen": record["frozen"], **self.snapshot()})
        return record

    def slow(self, step: int) -> dict:
        self.ledger.step = step
        if lifecycle_phase(step, self.cfg) == "full" and not self.gate.frozen:
            self.ledger.expose()
        return super().slow(step)

    def snapshot(self) -> dict[str, Any]:
        """Pool size, archive coverage (mean over layers), QD score and elites (sums over layers),
        and the mean per-dimension variance of the descriptors of the live pods measured so far
        (a pod born in this event holds zero descriptors until its first measurement)."""
        organisms = self.model.organisms
        stats = [o.archive.stats for o in organisms]
        measured = torch.cat([o.descriptors[o.alive & (o.n_measurements > 0)] for o in organisms])
        variance = (  # len() is the host sync
            descriptor_variance(measured).mean().item() if len(measured) >= 2 else None
        )
        return {
            "pool_size": self.pool_size(),
            "coverage": sum(s.coverage for s in stats) / len(stats),
            "qd_score": sum(s.qd_score for s in stats),
            "elites": sum(s.num_elites for s in stats),
            "descriptor_variance": variance,
        }
