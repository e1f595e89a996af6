"""Gradient statistics for one step: a fused norm that serves clipping and pod fitness at once.

One ``torch._foreach_norm`` over every gradient (what ``clip_grad_norm_`` runs internally) gives
the per-parameter norms; their squares sum to the total norm used for clipping and, grouped pod by
pod, to each pod's gradient norm for the fitness's gradient term. Everything stays on the device;
the trainer reads the total norm together with the loss in its one host sync per step, which is
also where non-finite losses and gradients are detected.
"""

from __future__ import annotations

import torch
from slime.train.fitness import PodKey
from torch import Tensor, nn

__all__ = ["GradientMonitor"]


class GradientMonitor:
    """Clips gradients and measures per-pod gradient norms of a model (slime or baseline).

    The parameter layout (non-pod parameters first, then pod by pod) is cached and rebuilt when
    ``version`` changes (the optimizer bumps its ``layout_version`` on every birth and death).
    """

    def __init__(self, model: nn.Module, max_norm: float) -> None:
        self.model, self.max_norm = model, max_norm
        self._version: int | None = None
        self._params: list[nn.Parameter] = []
        self._n_other = 0
        self._keys: list[PodKey] = []
        self._per_pod = 0

    def _layout(self, version: int) -> None:
        if version == self._version:
            return
        pod_params: list[list[nn.Parameter]] = []
        self._keys = []
        for layer, organism in enumerate(getattr(self.model, "organisms", [])):
            for slot in organism.live_slots():
                self._keys.append((layer, slot))
                pod_params.append(list(organism.pods[str(slot)].parameters()))
        in_pods = {id(p) for params in pod_params for p in params}
        others = [p for p in self.model.parameters() if id(p) not in in_pods]
        self._per_pod = len(pod_params[0]) if pod_params else 0
        self._n_other = len(others)
        self._params = others + [p for params in pod_params for p in params]
        self._version = version

    def clip_and_measure(self, version: int) -> tuple[Tensor, Tensor, list[PodKey]]:
        """Clip to ``max_norm`` (0: no clipping) and return the total norm before clipping
        (0-d), per-pod norms ``(n_pods,)`` before clipping and the pods' keys."""
        self._layout(version)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
        squares = torch.stack(torch._foreach_norm(grads)) ** 2  # (n_params,)
        total = squares.sum().sqrt()
        if self.max_norm > 0:
            coef = (self.max_norm / (total + 1e-6)).clamp(max=1.0)
            torch._foreach_mul_(grads, coef)
        pods = squares[self._n_other :].view(len(self._keys), self._per_pod).sum(1).sqrt()
        return total, pods, list(self._keys)
