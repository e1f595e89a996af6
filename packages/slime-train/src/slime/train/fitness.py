"""Pod fitness: ``w_task * task + w_eff * efficiency + w_grad * gradient`` (blueprint decisions 6, 10).

- ``task``: how much the loss on a probe batch rises when the pod is masked out
  (``SlimeModel.ablate``), the honest contribution measure of Michel et al. (2019); or, with
  ``task: taylor``, the moving average of its first-order estimate from the training gradients
  (no extra forwards; validated against masking in ``tests/test_fitness.py``).
- ``efficiency``: minus the pod's measured cost (by default its parameter bytes,
  ``Organism.pod_bytes()``; a caller may pass measured costs such as timings instead).
- ``gradient``: an exponential moving average of the pod's gradient L2 norm, fed every step from
  the per-slot norms the trainer computes anyway (no host sync).

The moving averages live on the device as one ``(2, L, P)`` tensor (gradient norm, Taylor estimate
per layer and slot). A slot listener marks the slots whose pod changed (birth or death) as fresh:
their averages restart at the next observed value. A step the trainer found non-finite leaves them
unchanged, decided on the device too.

Each term is min-max normalised across all live pods of the model before weighting, so the weights
mean what they say whatever the terms' units. A term that is equal for every pod normalises to 0 and
does not affect the ranking. :meth:`FitnessTracker.assess` writes the result into each organism's
``fitness`` buffer, the one record the lifecycle's culls and the archive read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from slime.core.organism import live_slots_by_layer
from slime.proto import CheckpointError
from slime.train.config import FitnessConfig
from torch import Tensor

__all__ = [
    "FitnessTracker",
    "PodKey",
    "PodScore",
    "masked_loss_contributions",
    "masked_probe",
    "normalise",
]

PodKey = tuple[int, int]  # (layer, slot)


@dataclass(frozen=True)
class PodScore:
    """One pod's assessment: the raw terms (before normalisation) and the weighted fitness."""

    task: float  # masked-loss increase in nats (measured, or its Taylor estimate)
    cost: float
    gradient: float  # EMA of the gradient norm
    fitness: float


def normalise(values: list[float]) -> list[float]:
    """Min-max to [0, 1]; all-equal values give all zeros."""
    lo, hi = min(values), max(values)
    if hi == lo:
        return [0.0] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def _live_keys(model) -> list[PodKey]:
    """``(layer, slot)`` of every live pod, bottom layer first, slots ascending (one read of the
    device for all layers: :func:`~slime.core.organism.live_slots_by_layer`)."""
    by_layer = live_slots_by_layer(model.organisms)
    return [(layer, slot) for layer, slots in enumerate(by_layer) for slot in slots]


@torch.no_grad()
def masked_probe(
    model,
    idx: Tensor,
    targets: Tensor,
    *,
    max_logits: int = 2**26,
    compiler: Callable[[Callable], Callable] | None = None,
) -> tuple[dict[PodKey, float], Tensor]:
    """Each live pod's loss increase on ``(idx, targets)`` when it alone is masked (host sync),
    and each layer's attention input for the whole pool ``(n_layer, B, T, n_embd)``, the
    latents behaviour is measured from, out of the same forward.

    The masked copies share the whole pool's forward up to their layer
    (``SlimeModel.ablation_losses``): one batched forward instead of ``n_pods`` small ones, and
    no second forward for the measurement. Every slot of every layer gets its copy, empty ones
    too, so the forward's shapes depend on the model's capacity and never on the pool: births
    and deaths change no batch size, which would cost eager attention backends new setup per
    shape (an eager run with births and deaths measured 70 ms per fitness part against 10 ms with
    a fixed pool when the batch followed the live pods). Copies go in chunks whose logits stay
    under ``max_logits`` elements (large vocabularies). Eval mode (no dropout); the model's mode
    is restored. ``compiler`` compiles that forward once and reuses it (see
    ``SlimeModel.ablation_losses``).
    """
    keys = _live_keys(model)
    capacity = model.organisms[0].pod_capacity
    every = [(layer, slot) for layer in range(len(model.organisms)) for slot in range(capacity)]
    losses, latents = model.ablation_losses(
        idx, targets, every, max_logits=max_logits, compiler=compiler
    )
    picked = torch.tensor([layer * capacity + slot for layer, slot in keys], dtype=torch.long)
    deltas = (losses[1:][picked.to(losses.device)] - losses[0]).tolist()
    return dict(zip(keys, deltas)), latents


def masked_loss_contributions(
    model, idx: Tensor, targets: Tensor, *, max_logits: int = 2**26
) -> dict[PodKey, float]:
    """Loss increase on ``(idx, targets)`` when each live pod alone is masked (host sync); see
    :func:`masked_probe`."""
    return masked_probe(model, idx, targets, max_logits=max_logits)[0]


class FitnessTracker:
    """Tracks per-slot gradient statistics every step and assesses fitness on the medium timescale.

    :meth:`attach` (the lifecycle and the trainer call it) sizes the averages for a model and
    registers the slot listener; a tracker fed without one sizes them from the first observation.
    """

    def __init__(self, cfg: FitnessConfig) -> None:
        self.cfg = cfg
        self.ema: Tensor | None = None  # (2, L, P): gradient norm, Taylor estimate
        self.fresh: Tensor | None = None  # (L, P) bool: restart at the next observed value
        self._attached: Any = None

    def attach(self, model) -> None:
        """Size the averages for ``model``'s organisms and listen to their births and deaths
        (idempotent for the same model)."""
        if self._attached is model:
            return
        self._attached = model
        organisms = list(model.organisms)
        if not organisms:
            return
        shape = (len(organisms), max(o.pod_capacity for o in organisms))
        if self.ema is None or tuple(self.ema.shape[1:]) != shape:
            device = organisms[0].alive.device
            self.ema = torch.zeros((2, *shape), device=device)
            self.fresh = torch.ones(shape, dtype=torch.bool, device=device)
        for layer, organism in enumerate(organisms):
            organism.add_slot_listener(self._listener(layer))

    def _listener(self, layer: int):
        def forget(organism, slots: list[int]) -> None:
            self.forget(layer, slots)

        return forget

    def forget(self, layer: int, slots: list[int]) -> None:
        """Restart the averages of ``slots`` of ``layer`` at their next observed value."""
        if self.fresh is None or not slots:
            return
        if len(slots) == 1:  # a birth or a death: one element's fill, no index to copy over
            self.fresh[layer, slots[0]] = True
            return
        index = torch.tensor(slots, dtype=torch.long, device=self.fresh.device)
        self.fresh[layer].index_fill_(0, index, True)

    @torch.no_grad()
    def observe_gradients(
        self, norms: Tensor, taylor: Tensor | None = None, finite: Tensor | None = None
    ) -> None:
        """Fast timescale (no host sync): fold this step's per-slot gradient norms ``(L, P)`` (and
        Taylor estimates of the masked-loss contribution, when given) into their moving averages.

        Fresh slots start at their value; where the 0-d bool ``finite`` is False nothing changes.
        """
        norms = norms.detach().float()
        taylor = torch.zeros_like(norms) if taylor is None else taylor.detach().float()
        stats = torch.stack([norms, taylor])  # (2, L, P)
        if self.ema is None or self.ema.shape != stats.shape:
            self.ema = torch.zeros_like(stats)
            self.fresh = torch.ones(stats.shape[1:], dtype=torch.bool, device=stats.device)
        blended = torch.lerp(self.ema, stats, 1 - self.cfg.grad_ema_decay)
        updated = torch.where(self.fresh, stats, blended)
        if finite is None:
            self.ema.copy_(updated)
            self.fresh.zero_()
        else:
            torch.where(finite, updated, self.ema, out=self.ema)
            self.fresh.logical_and_(~finite)

    @property
    def grad_ema(self) -> Tensor | None:
        """``(L, P)`` moving average of each slot's gradient norm."""
        return None if self.ema is None else self.ema[0]

    def averages(self, keys: list[PodKey]) -> dict[PodKey, tuple[float, float]]:
        """``{(layer, slot): (gradient norm EMA, Taylor EMA)}`` for ``keys`` (host sync); slots
        never observed read ``(0, 0)``."""
        if self.ema is None:
            return {k: (0.0, 0.0) for k in keys}
        table = self.ema.tolist()
        fresh = self.fresh.tolist()
        return {
            (layer, slot): (0.0, 0.0)
            if fresh[layer][slot]
            else (table[0][layer][slot], table[1][layer][slot])
            for layer, slot in keys
        }

    def assess(
        self,
        model,
        idx: Tensor,
        targets: Tensor,
        costs: dict[PodKey, float] | None = None,
        *,
        task: dict[PodKey, float] | None = None,
    ) -> dict[PodKey, PodScore]:
        """Medium timescale: score every live pod (host sync) and write each score into its
        organism's ``fitness`` buffer.

        Args:
            model: a ``SlimeModel``.
            idx, targets: the probe batch ``(B, T)``.
            costs: measured cost per pod (lower is better); default: parameter bytes.
            task: with ``task: masked``, the contributions :func:`masked_probe` already measured
                on this probe and these weights; None measures them here.
        """
        keys = _live_keys(model)
        if not keys:
            return {}
        ema = self.averages(keys)
        if self.cfg.task == "masked":
            if task is None:
                task = masked_loss_contributions(model, idx, targets)
            missing = [k for k in keys if k not in task]
            if missing:
                raise ValueError(f"task contributions miss the live pods {missing}")
        else:
            task = {k: ema[k][1] for k in keys}
        if costs is None:
            costs = {(layer, s): float(model.organisms[layer].pod_bytes()) for layer, s in keys}
        grads = [ema[k][0] for k in keys]
        terms = (
            normalise([task[k] for k in keys]),
            normalise([-costs[k] for k in keys]),
            normalise(grads),
        )
        w = (self.cfg.w_task, self.cfg.w_eff, self.cfg.w_grad)
        scores = {}
        for i, k in enumerate(keys):
            fitness = sum(wj * term[i] for wj, term in zip(w, terms))
            scores[k] = PodScore(task[k], costs[k], grads[i], fitness)
        with torch.no_grad():  # every layer's buffer in one gather, one write, one copy back
            buffers = [organism.fitness for organism in model.organisms]
            table = torch.stack(buffers)
            index = torch.tensor(keys, dtype=torch.long).to(table.device, non_blocking=True)
            values = torch.tensor([scores[k].fitness for k in keys], dtype=table.dtype)
            table[index[:, 0], index[:, 1]] = values.to(table.device, non_blocking=True)
            torch._foreach_copy_(buffers, list(table.unbind(0)))
        return scores

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema, "fresh": self.fresh}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`, or one written before the slot table (``keys`` and a
        ``(2, n_pods)`` ``ema``; needs :meth:`attach` first, to know the table's shape).

        Raises:
            CheckpointError: an old state and no attached model, or a key outside the table.
        """
        if "keys" in state:
            self._load_keyed(state)
            return
        ema, fresh = state["ema"], state["fresh"]
        if ema is None or fresh is None:
            self.ema = self.fresh = None
            return
        device = self.ema.device if self.ema is not None else ema.device  # the attached model's
        self.ema = ema.detach().to(device, torch.float32, copy=True)
        self.fresh = fresh.detach().to(device, torch.bool, copy=True)

    def _load_keyed(self, state: dict[str, Any]) -> None:
        if not state["keys"]:
            return  # nothing was observed (or a baseline run)
        if self.ema is None:
            raise CheckpointError(
                "a fitness state written before the slot table needs the tracker attached to "
                "its model first (FitnessTracker.attach)"
            )
        keys = [tuple(k) for k in state["keys"]]
        ema = torch.zeros_like(self.ema)
        fresh = torch.ones_like(self.fresh)
        layers, slots = ema.shape[1:]
        for i, (layer, slot) in enumerate(keys):
            if not (0 <= layer < layers and 0 <= slot < slots):
                raise CheckpointError(f"fitness state names pod {(layer, slot)} outside the model")
            ema[:, layer, slot] = state["ema"][:, i].to(ema.device, ema.dtype)
            fresh[layer, slot] = False
        self.ema, self.fresh = ema, fresh
