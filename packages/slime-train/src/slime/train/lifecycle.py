"""The pseudopod lifecycle on the medium and slow timescales (blueprint invariants 6, 7 and 9).

Medium (every ``medium_interval`` steps): measure behaviour on a probe batch, assess fitness (written
into each organism's ``fitness`` buffer), offer every pod to its layer's archive, check the loss
gate, and (gentle and full phases, gate open) grow pods into free slots. A birth bootstraps from
archive elites picked by chemotaxis (``Organism.spawn``): initialisation only, the newborn then
trains with the network. Its birth step is recorded in the organism's ``born_step`` buffer.

Slow (every ``slow_interval`` steps): in the full phase with the gate open, cull the least fit
fraction of each layer among pods past ``maturity_steps`` (founders, ``born_step == -1``, are always
mature); then always enforce the hard pool limit and the memory budget, and analyse the behavioural
space (KMO, Bartlett, kernel PCA over the live pods' descriptors). Every cull goes through
``Organism.cull_least_fit``, which offers the dying pods to the archive first, so an elite survives
as a genome.

The loss gate's moving average is fed on the device every step (no host sync) and read on the
medium timescale.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from slime.core import FOUNDER
from slime.core.organism import live_slots_by_layer
from slime.memory import bartlett_sphericity as bartlett
from slime.memory import kernel_pca, kmo
from slime.proto import ArchiveError, PoolError
from slime.train.config import LifecycleConfig, TrainConfig
from slime.train.fitness import FitnessTracker, masked_probe

__all__ = ["Lifecycle", "LossGate", "Phase", "lifecycle_phase", "probe_compiler"]

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

    ``observe`` runs every step on the device: the average is a 0-d tensor (float64) that
    non-finite losses leave unchanged, and NaN until the first finite loss. ``check`` on the medium
    timescale reads it (host sync) and closes or reopens the gate.
    """

    def __init__(
        self, ratio: float, decay: float, *, device: torch.device | str | None = None
    ) -> None:
        self.ratio, self.decay = ratio, decay
        self.device = torch.device(device) if device is not None else None
        self._ema: torch.Tensor | None = None
        self.frozen = False

    def _fresh(self, value: float) -> torch.Tensor:
        device = self.device or torch.device("cpu")
        dtype = torch.float32 if device.type == "mps" else torch.float64
        return torch.full((), value, dtype=dtype, device=device)

    @property
    def ema(self) -> float | None:
        """The moving average (host read), None before any finite loss."""
        if self._ema is None:
            return None
        value = float(self._ema)
        return None if math.isnan(value) else value

    @torch.no_grad()
    def observe(self, loss: torch.Tensor | float) -> None:
        """Fold ``loss`` (a 0-d tensor or a float) into the moving average, on the device."""
        if self._ema is None:
            if self.device is None and isinstance(loss, torch.Tensor):
                self.device = loss.device
            self._ema = self._fresh(math.nan)
        loss = torch.as_tensor(loss).detach().to(self._ema.device, self._ema.dtype)
        start = torch.where(torch.isnan(self._ema), loss, self._ema)
        updated = start.lerp(loss, 1 - self.decay)  # decay * ema + (1 - decay) * loss
        torch.where(torch.isfinite(loss), updated, self._ema, out=self._ema)

    def check(self, loss: torch.Tensor | float) -> bool:
        """Close the gate if ``loss > ratio * ema`` (or is not finite), reopen otherwise.

        Returns:
            Whether the lifecycle is frozen.
        """
        loss = float(loss)
        ema = self.ema
        self.frozen = not math.isfinite(loss) or (ema is not None and loss > self.ratio * ema)
        return self.frozen

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema, "frozen": self.frozen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._ema = self._fresh(math.nan if state["ema"] is None else state["ema"])
        self.frozen = state["frozen"]


def _untimed(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def probe_compiler(
    train: TrainConfig, device: torch.device, *, sharded: bool = False
) -> Callable[[Callable], Callable] | None:
    """What compiles the medium event's probe forward and behaviour measurement:
    ``torch.compile`` (no CUDA graphs: a captured probe would hold its activations for the whole
    run) when the training step is compiled on a GPU, where their few hundred launches each cost
    more host time than their device work; None elsewhere (on a CPU the probe is compute-bound, and a head-sharded model's
    forward runs collectives)."""
    if not train.compile or device.type != "cuda" or sharded:
        return None
    return functools.partial(torch.compile, dynamic=False)


class Lifecycle:
    """Runs the medium and slow timescale work on a SlimeModel. Returns plain-data event records.

    Args:
        timer: ``timer(name)`` returns a context manager timing the named part (``measure``,
            ``fitness``, ``archive``, ``births``, ``cull``, ``budget``, ``analysis``); the trainer
            passes its own so profiles can say where lifecycle time goes.
        autocast: returns the context the fitness probe forwards run in; the trainer passes its
            training autocast, so pods are scored in the precision they train in (bf16 on a GPU:
            the masked forwards are most of a medium event's device work).
        agree: ``agree(stage)`` runs at ``"measure"`` (before behaviour is measured) and at
            ``"decide"`` (after fitness is scored, before the archive, births and culls act on
            it); a data-parallel trainer passes :class:`~slime.train.distributed.Lockstep`, so
            every rank decides alike.
        compiler: compiles the probe forward of the masked fitness and the behaviour
            measurement once each (for example ``functools.partial(torch.compile,
            dynamic=False)``; the trainer passes one when it compiles the model on a GPU, where
            their launches are host time); None runs them eagerly.
    """

    def __init__(
        self,
        model,
        cfg: LifecycleConfig,
        fitness: FitnessTracker,
        *,
        timer: Callable[[str], contextlib.AbstractContextManager] = _untimed,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        agree: Callable[[str], None] | None = None,
        compiler: Callable[[Callable], Callable] | None = None,
    ) -> None:
        self.model, self.cfg, self.fitness, self.timer = model, cfg, fitness, timer
        self.compiler = compiler
        self.autocast = autocast
        self.agree = agree or (lambda stage: None)
        device = model.organisms[0].alive.device if model.organisms else None
        self.gate = LossGate(cfg.loss_gate_ratio, cfg.loss_ema_decay, device=device)
        self.births = 0
        self.deaths = 0
        fitness.attach(model)

    def pool_size(self) -> int:
        return sum(self._live_counts())

    def _live_counts(self) -> list[int]:
        """Live pods per layer, in one read of the device."""
        return [len(slots) for slots in live_slots_by_layer(self.model.organisms)]

    def medium(
        self, step: int, loss: torch.Tensor | float, probe: tuple[torch.Tensor, torch.Tensor]
    ) -> dict:
        """Behaviour, fitness, archive elites, loss gate, births. ``probe`` is ``(idx, targets)``;
        ``loss`` is the latest training loss (a float or a 0-d tensor)."""
        idx, targets = probe
        phase = lifecycle_phase(step, self.cfg)
        self.agree("measure")
        task = latents = None
        if self.fitness.cfg.task == "masked":  # one forward gives contributions and latents
            with self.timer("fitness"), self.autocast():
                task, latents = self._masked_probe(idx, targets)
        with self.timer("measure"):
            self._measure(idx, latents)
        with self.timer("fitness"), self.autocast():
            scores = self.fitness.assess(self.model, idx, targets, task=task)
        self.agree("decide")
        added = 0
        with self.timer("archive"):
            for result in self.model.archive_elites():
                if result is not None:
                    added += int((result.status > 0).sum())
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

    def _masked_probe(self, idx: torch.Tensor, targets: torch.Tensor):
        return self._compiled_or_eager(
            "fitness probe",
            lambda compiler: masked_probe(self.model, idx, targets, compiler=compiler),
        )

    def _measure(self, idx: torch.Tensor, latents: torch.Tensor | None) -> None:
        self._compiled_or_eager(
            "behaviour measurement",
            lambda compiler: self.model.measure_behaviour(idx, latents=latents, compiler=compiler),
        )

    def _compiled_or_eager(self, what: str, run: Callable[[Any], Any]) -> Any:
        """``run(self.compiler)``; when compiling fails, ``run(None)`` from then on."""
        if self.compiler is not None:
            try:
                return run(self.compiler)
            except torch._dynamo.exc.TorchDynamoException as err:
                # The compiled forms are only faster paths to the same numbers: say why they
                # are gone and keep the run going on the eager ones.
                warnings.warn(
                    f"the compiled {what} failed, running the medium event eagerly from now "
                    f"on: {err}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self.compiler = None
        return run(None)

    def _grow(self, step: int) -> int:
        born = 0
        for organism, live in zip(self.model.organisms, self._live_counts()):
            room = min(self.cfg.max_pool_size - live, organism.pod_capacity - live)
            for _ in range(max(0, min(self.cfg.births_per_event, room))):
                organism.spawn(step=step)
                born += 1
        return born

    def slow(self, step: int) -> dict:
        """Culling (full phase, gate open), with ``refill_culled`` a birth into each culled slot,
        hard limits, memory budget, behavioural analysis."""
        phase = lifecycle_phase(step, self.cfg)
        culled = born = 0
        if phase == "full" and not self.gate.frozen:
            with self.timer("cull"):
                for organism in self.model.organisms:
                    n = self._cull_least_fit(organism, step)
                    culled += n
                    if self.cfg.refill_culled:
                        for _ in range(n):  # the slots just freed: room is never short
                            organism.spawn(step=step)
                        born += n
        self.births += born
        with self.timer("budget"):
            for organism in self.model.organisms:
                excess = len(organism.live_slots()) - self.cfg.max_pool_size
                culled += len(organism.cull_least_fit(excess))
                culled += len(organism.enforce_budget())
                if len(organism.archive) > self.cfg.max_archive_size:
                    raise PoolError(
                        f"{organism.name} archive holds {len(organism.archive)} elites, "
                        f"over the hard limit {self.cfg.max_archive_size}"
                    )
        self.deaths += culled
        with self.timer("analysis"):
            analysis = self.analyse()
        return {
            "phase": phase,
            "deaths": culled,
            "births": born,
            "pool_size": self.pool_size(),
            **analysis,
        }

    def _cull_least_fit(self, organism, step: int) -> int:
        live = organism.live_slots()
        n = min(int(self.cfg.cull_fraction * len(live)), len(live) - self.cfg.min_pods)
        return len(organism.cull_least_fit(n, eligible=self.mature(organism, step)))

    def mature(self, organism, step: int) -> list[int]:
        """Live slots of ``organism`` old enough at ``step`` to be culled for low fitness; founders
        (``born_step == -1``) always are."""
        born = organism.born_step.tolist()
        return [
            s
            for s in organism.live_slots()
            if born[s] == FOUNDER or step - born[s] >= self.cfg.maturity_steps
        ]

    def analyse(self) -> dict[str, Any]:
        """KMO, Bartlett and kernel-PCA statistics of all live pods' descriptors ``(n, 3)``, and
        each layer's mean effective rank of its pods' output correlations (of ``head_dim``: how
        many directions a head's outputs use; low means redundant features).

        Early in training the descriptors can be degenerate (a constant dimension, too few pods);
        the statistics are then undefined and the reason is reported instead.
        """
        ranks = []
        for organism in self.model.organisms:
            rank, _ = organism.correlation_stats()
            ranks.append(float(rank.mean()) if len(rank) else None)
        descs = torch.cat([o.live_descriptors(full=True) for o in self.model.organisms]).cpu()
        try:
            kmo_result = kmo(descs)
            stat, p_value = bartlett(descs)
            pca = kernel_pca(descs, n_components=min(2, descs.shape[0]))
        except ArchiveError as exc:
            return {"analysis": f"undefined: {exc}", "effective_rank": ranks}
        return {
            "effective_rank": ranks,
            "kmo": kmo_result.overall,
            "bartlett_stat": stat,
            "bartlett_p": p_value,
            "kpca_explained": pca.explained_ratio.tolist(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Gate and counters; birth steps live in the organisms' ``born_step`` buffers."""
        return {"gate": self.gate.state_dict(), "births": self.births, "deaths": self.deaths}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`; one written before the slot table carries ``born_at``
        (``[[layer, slot, step], ...]``), applied to the live pods' ``born_step`` (load the model
        first)."""
        self.gate.load_state_dict(state["gate"])
        self.births, self.deaths = state["births"], state["deaths"]
        organisms = self.model.organisms
        with torch.no_grad():
            for layer, slot, step in state.get("born_at", []):
                if 0 <= layer < len(organisms) and slot in organisms[layer].live_slots():
                    organisms[layer].born_step[slot] = step
