"""Pod fitness: ``w_task * task + w_eff * efficiency + w_grad * gradient`` (blueprint decisions 6, 10).

- ``task``: how much the loss on a probe batch rises when the pod is masked out
  (``SlimeModel.ablate``), the honest contribution measure of Michel et al. (2019); or, with
  ``task: taylor``, the moving average of its first-order estimate from the training gradients
  (no extra forwards; validated against masking in ``tests/test_fitness.py``).
- ``efficiency``: minus the pod's measured cost (by default its parameter bytes, read from the live
  tensors; a caller may pass measured costs such as timings instead).
- ``gradient``: an exponential moving average of the pod's gradient L2 norm, fed every step from
  the norms the trainer computes anyway for clipping (no extra host sync).

Each term is min-max normalised across all live pods of the model before weighting, so the weights
mean what they say whatever the terms' units. A term that is equal for every pod normalises to 0 and
does not affect the ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from slime.train.config import FitnessConfig
from torch import Tensor

__all__ = ["FitnessTracker", "PodKey", "PodScore", "masked_loss_contributions", "normalise"]

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


def _or_zeros(values: Tensor | None, like: Tensor) -> Tensor:
    return (
        torch.zeros_like(like, dtype=torch.float32) if values is None else values.detach().float()
    )


def _live_keys(model) -> list[PodKey]:
    return [(layer, slot) for layer, o in enumerate(model.organisms) for slot in o.live_slots()]


@torch.no_grad()
def masked_loss_contributions(model, idx: Tensor, targets: Tensor) -> dict[PodKey, float]:
    """Loss increase on ``(idx, targets)`` when each live pod alone is masked (host sync).

    Runs ``1 + n_pods`` forwards in eval mode (no dropout); the model's mode is restored.
    """
    was_training = model.training
    model.eval()
    try:
        _, base = model(idx, targets)
        keys = _live_keys(model)
        losses = []
        for layer, slot in keys:
            with model.ablate({layer: [slot]}):
                losses.append(model(idx, targets)[1])
        deltas = (torch.stack(losses) - base).tolist() if losses else []
    finally:
        model.train(was_training)
    return dict(zip(keys, deltas))


class FitnessTracker:
    """Tracks gradient norms every step and assesses fitness on the medium timescale."""

    def __init__(self, cfg: FitnessConfig) -> None:
        self.cfg = cfg
        self.keys: list[PodKey] = []
        self.ema: Tensor | None = None  # (2, n_pods): gradient norm, Taylor estimate

    def observe_gradients(
        self, keys: list[PodKey], norms: Tensor, taylor: Tensor | None = None
    ) -> None:
        """Fast timescale: fold this step's per-pod gradient norms ``(n_pods,)`` (and Taylor
        estimates of the masked-loss contribution, when given) into their moving averages.

        ``keys`` names the pods in order; pods new since the last call start at their first
        value, pods gone are forgotten.
        """
        stats = torch.stack([norms.detach().float(), _or_zeros(taylor, norms)])  # (2, n_pods)
        if self.ema is None or keys != self.keys:
            self.ema = self._remap(keys, stats)
            self.keys = list(keys)
            return
        self.ema.mul_(self.cfg.grad_ema_decay).add_(stats, alpha=1 - self.cfg.grad_ema_decay)

    @property
    def grad_ema(self) -> Tensor | None:
        """``(n_pods,)`` moving average of each pod's gradient norm, in :attr:`keys` order."""
        return None if self.ema is None else self.ema[0]

    @property
    def taylor_ema(self) -> Tensor | None:
        """``(n_pods,)`` moving average of the first-order masked-loss estimates."""
        return None if self.ema is None else self.ema[1]

    def _remap(self, keys: list[PodKey], stats: Tensor) -> Tensor:
        fresh = stats.clone()
        if self.ema is not None:
            old = {k: i for i, k in enumerate(self.keys)}
            kept = [(i, old[k]) for i, k in enumerate(keys) if k in old]
            if kept:
                new_i, old_i = (torch.tensor(ix, device=stats.device) for ix in zip(*kept))
                fresh[:, new_i] = self.ema.to(stats.device)[:, old_i]
        return fresh

    def assess(
        self,
        model,
        idx: Tensor,
        targets: Tensor,
        costs: dict[PodKey, float] | None = None,
    ) -> dict[PodKey, PodScore]:
        """Medium timescale: score every live pod (host sync). Sets each pod's ``fitness``.

        Args:
            model: a ``SlimeModel``.
            idx, targets: the probe batch ``(B, T)``.
            costs: measured cost per pod (lower is better); default: parameter bytes.
        """
        ema = dict(zip(self.keys, self.ema.T.tolist())) if self.ema is not None else {}
        if self.cfg.task == "masked":
            task = masked_loss_contributions(model, idx, targets)
        else:
            task = {k: ema.get(k, (0.0, 0.0))[1] for k in _live_keys(model)}
        keys = list(task)
        if not keys:
            return {}
        pods = {(layer, slot): model.organisms[layer].pods[str(slot)] for layer, slot in keys}
        if costs is None:
            costs = {k: float(pod.parameter_bytes()) for k, pod in pods.items()}
        grads = [ema.get(k, (0.0, 0.0))[0] for k in keys]
        terms = (
            normalise([task[k] for k in keys]),
            normalise([-costs[k] for k in keys]),
            normalise(grads),
        )
        w = (self.cfg.w_task, self.cfg.w_eff, self.cfg.w_grad)
        scores = {}
        for i, k in enumerate(keys):
            fitness = sum(wj * term[i] for wj, term in zip(w, terms))
            pods[k].fitness = fitness
            scores[k] = PodScore(task[k], costs[k], grads[i], fitness)
        return scores

    def state_dict(self) -> dict:
        return {"keys": [list(k) for k in self.keys], "ema": self.ema}

    def load_state_dict(self, state: dict) -> None:
        self.keys = [tuple(k) for k in state["keys"]]
        self.ema = state["ema"]
