"""The pseudopod lifecycle on the medium and slow timescales (blueprint invariants 6, 7 and 9).

Medium (every ``medium_interval`` steps): measure behaviour on a probe batch, assess fitness, offer
every pod to its layer's archive, check the loss gate, and (gentle and full phases, gate open) grow
pods into free slots. A birth bootstraps from archive elites picked by chemotaxis
(``Organism.spawn``): initialisation only, the newborn then trains with the network.

Slow (every ``slow_interval`` steps): in the full phase with the gate open, cull the least fit
fraction of each layer among pods past ``maturity_steps`` (offering the dying pods to the archive
first, so an elite survives as a genome); then always enforce the memory budget and the hard limits, and analyse the behavioural
space (KMO, Bartlett, kernel PCA over the live pods' descriptors).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from slime.memory import bartlett_sphericity as bartlett
from slime.memory import kernel_pca, kmo
from slime.proto import ArchiveError, PoolError
from slime.train.config import LifecycleConfig
from slime.train.fitness import FitnessTracker

__all__ = ["Lifecycle", "LossGate", "Phase", "lifecycle_phase"]

Phase = Literal["warmup", "gentle", "full"]


def lifecycle_phase(step: int, cfg: LifecycleConfig) -> Phase:
    """``warmup`` (static pool) before ``warmup_steps``, ``gentle`` (births only) before
    ``gentle_steps``, then ``full`` (births and deaths)."""
    if step < cfg.warmup_steps:
        return "warmup"
    if step < cfg.gentle_steps:
        return "gentle"
    return "full"


class LossGate:
    """Freezes the lifecycle while the loss exceeds ``ratio`` times its moving average.

    ``observe`` runs every step (host floats the trainer already has); ``check`` on the medium
    timescale closes or reopens the gate.
    """

    def __init__(self, ratio: float, decay: float) -> None:
        self.ratio, self.decay = ratio, decay
        self.ema: float | None = None
        self.frozen = False

    def observe(self, loss: float) -> None:
        if math.isfinite(loss):
            self.ema = loss if self.ema is None else self.decay * self.ema + (1 - self.decay) * loss

    def check(self, loss: float) -> bool:
        """Close the gate if ``loss > ratio * ema`` (or is not finite), reopen otherwise.

        Returns:
            Whether the lifecycle is frozen.
        """
        self.frozen = not math.isfinite(loss) or (
            self.ema is not None and loss > self.ratio * self.ema
        )
        return self.frozen

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema, "frozen": self.frozen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema, self.frozen = state["ema"], state["frozen"]


def _untimed(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


class Lifecycle:
    """Runs the medium and slow timescale work on a SlimeModel. Returns plain-data event records.

    Args:
        timer: ``timer(name)`` returns a context manager timing the named part (``measure``,
            ``fitness``, ``archive``, ``births``, ``cull``, ``budget``, ``analysis``); the trainer
            passes its own so profiles can say where lifecycle time goes.
    """

    def __init__(
        self,
        model,
        cfg: LifecycleConfig,
        fitness: FitnessTracker,
        *,
        timer: Callable[[str], contextlib.AbstractContextManager] = _untimed,
    ) -> None:
        self.model, self.cfg, self.fitness, self.timer = model, cfg, fitness, timer
        self.gate = LossGate(cfg.loss_gate_ratio, cfg.loss_ema_decay)
        self.births = 0
        self.deaths = 0
        self.born_at: dict[tuple[int, int], int] = {}  # (layer, slot) -> step, for pods born here

    def pool_size(self) -> int:
        return sum(len(o.live_slots()) for o in self.model.organisms)

    def medium(self, step: int, loss: float, probe: tuple[torch.Tensor, torch.Tensor]) -> dict:
        """Behaviour, fitness, archive elites, loss gate, births. ``probe`` is ``(idx, targets)``."""
        idx, targets = probe
        phase = lifecycle_phase(step, self.cfg)
        with self.timer("measure"):
            self.model.measure_behaviour(idx)
        with self.timer("fitness"):
            scores = self.fitness.assess(self.model, idx, targets)
        added = 0
        with self.timer("archive"):
            for layer, organism in enumerate(self.model.organisms):
                fitness = {slot: scores[(layer, slot)].fitness for slot in organism.live_slots()}
                if fitness:
                    added += int((organism.archive_elites(fitness).status > 0).sum())
        frozen = self.gate.check(loss)
        born = 0
        if phase != "warmup" and not frozen:
            with self.timer("births"):
                born = self._grow(step)
        self.births += born
        task = [s.task for s in scores.values()]
        return {
            "phase": phase,
            "frozen": frozen,
            "births": born,
            "archive_added": added,
            "pool_size": self.pool_size(),
            "task_mean": sum(task) / len(task) if task else 0.0,
            "fitness_max": max((s.fitness for s in scores.values()), default=0.0),
        }

    def _grow(self, step: int) -> int:
        born = 0
        for layer, organism in enumerate(self.model.organisms):
            room = min(
                self.cfg.max_pool_size - len(organism.live_slots()),
                organism.pod_capacity - len(organism.live_slots()),
            )
            for _ in range(max(0, min(self.cfg.births_per_event, room))):
                self.born_at[(layer, organism.spawn())] = step
                born += 1
        return born

    def slow(self, step: int) -> dict:
        """Culling (full phase, gate open), memory budget, hard limits, behavioural analysis."""
        phase = lifecycle_phase(step, self.cfg)
        culled = 0
        if phase == "full" and not self.gate.frozen:
            with self.timer("cull"):
                for layer, organism in enumerate(self.model.organisms):
                    culled += self._cull_least_fit(layer, organism, step)
        with self.timer("budget"):
            for organism in self.model.organisms:
                culled += len(organism.enforce_budget())
                culled += self._enforce_pool_limit(organism)
                if len(organism.archive) > self.cfg.max_archive_size:
                    raise PoolError(
                        f"{organism.name} archive holds {len(organism.archive)} elites, "
                        f"over the hard limit {self.cfg.max_archive_size}"
                    )
        self.deaths += culled
        self._forget_dead()
        with self.timer("analysis"):
            analysis = self.analyse()
        return {"phase": phase, "deaths": culled, "pool_size": self.pool_size(), **analysis}

    def _cull_least_fit(self, layer: int, organism, step: int) -> int:
        live = organism.live_slots()
        n = min(int(self.cfg.cull_fraction * len(live)), len(live) - self.cfg.min_pods)
        mature = [s for s in live if self._is_mature(layer, s, step)]
        n = min(n, len(mature))
        if n <= 0:
            return 0
        ranked = sorted(mature, key=lambda s: (organism.pods[str(s)].fitness, s))
        dying = ranked[:n]
        organism.archive_elites({s: organism.pods[str(s)].fitness for s in dying})
        organism.cull(dying)
        return n

    def _is_mature(self, layer: int, slot: int, step: int) -> bool:
        """Pods present from the start have no birth step here and count as mature."""
        born = self.born_at.get((layer, slot))
        return born is None or step - born >= self.cfg.maturity_steps

    def _forget_dead(self) -> None:
        live = {(layer, s) for layer, o in enumerate(self.model.organisms) for s in o.live_slots()}
        self.born_at = {k: v for k, v in self.born_at.items() if k in live}

    def _enforce_pool_limit(self, organism) -> int:
        live = organism.live_slots()
        excess = len(live) - self.cfg.max_pool_size
        if excess <= 0:
            return 0
        ranked = sorted(live, key=lambda s: (organism.pods[str(s)].fitness, s))
        organism.cull(ranked[:excess])
        return excess

    def analyse(self) -> dict[str, Any]:
        """KMO, Bartlett and kernel-PCA statistics of all live pods' descriptors ``(n, 3)``.

        Early in training the descriptors can be degenerate (a constant dimension, too few pods);
        the statistics are then undefined and the reason is reported instead.
        """
        descs = torch.cat([o.descriptors(full=True) for o in self.model.organisms]).cpu()
        try:
            kmo_result = kmo(descs)
            stat, p_value = bartlett(descs)
            pca = kernel_pca(descs, n_components=min(2, descs.shape[0]))
        except ArchiveError as exc:
            return {"analysis": f"undefined: {exc}"}
        return {
            "kmo": kmo_result.overall,
            "bartlett_stat": stat,
            "bartlett_p": p_value,
            "kpca_explained": pca.explained_ratio.tolist(),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate.state_dict(),
            "births": self.births,
            "deaths": self.deaths,
            "born_at": [[layer, slot, step] for (layer, slot), step in self.born_at.items()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gate.load_state_dict(state["gate"])
        self.births, self.deaths = state["births"], state["deaths"]
        self.born_at = {(layer, slot): step for layer, slot, step in state["born_at"]}
