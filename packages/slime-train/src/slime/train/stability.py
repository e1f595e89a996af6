"""Gradient statistics for one step: a fused norm that serves clipping and pod fitness at once.

One ``torch._foreach_norm`` over every gradient (what ``clip_grad_norm_`` runs internally) gives
the per-parameter norms; their squares sum to the total norm used for clipping and, grouped pod by
pod, to each pod's gradient norm for the fitness's gradient term.

The same pass yields each pod's first-order (Taylor) estimate of its masked-loss contribution: with
the pod's output scaled by a gate ``g`` (1 = present, 0 = masked), ``L(0) - L(1) ~ -dL/dg`` and
``dL/dg = <W_o, dL/dW_o>``, the Frobenius product of the pod's output projection and its gradient
(the head importance of Michel et al., 2019, without the absolute value). Everything stays on the device;
the trainer reads the total norm together with the loss in its one host sync per step, which is
also where non-finite losses and gradients are detected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from slime.train.fitness import PodKey
from torch import Tensor, nn

__all__ = ["GradientMonitor", "GradientStats"]


@dataclass(frozen=True)
class GradientStats:
    """One step's gradient statistics, on the device, measured before clipping."""

    total: Tensor  # 0-d L2 norm of every gradient
    pod_norms: Tensor  # (n_pods,) L2 norm of each pod's gradients
    pod_taylor: Tensor  # (n_pods,) first-order masked-loss increase, -<W_o, dL/dW_o>
    keys: list[PodKey]  # (layer, slot) of each pod, in order


class GradientMonitor:
    """Clips gradients and measures per-pod gradient statistics of a model (slime or baseline).

    The parameter layout (non-pod parameters first, then pod by pod) is cached and rebuilt when
    ``version`` changes (the optimizer bumps its ``layout_version`` on every birth and death).
    """

    def __init__(self, model: nn.Module, max_norm: float) -> None:
        self.model, self.max_norm = model, max_norm
        self._version: int | None = None
        self._params: list[nn.Parameter] = []
        self._outputs: list[nn.Parameter] = []
        self._n_other = 0
        self._keys: list[PodKey] = []
        self._per_pod = 0
        self._out_positions: list[int] = []

    def _layout(self, version: int) -> None:
        if version == self._version:
            return
        pod_params: list[list[nn.Parameter]] = []
        self._keys, self._outputs = [], []
        for layer, organism in enumerate(getattr(self.model, "organisms", [])):
            for slot in organism.live_slots():
                pod = organism.pods[str(slot)]
                self._keys.append((layer, slot))
                pod_params.append(list(pod.parameters()))
                self._outputs.append(pod.o_weight)
        in_pods = {id(p) for params in pod_params for p in params}
        others = [p for p in self.model.parameters() if id(p) not in in_pods]
        self._per_pod = len(pod_params[0]) if pod_params else 0
        self._n_other = len(others)
        self._params = others + [p for params in pod_params for p in params]
        # where each pod's output projection sits in the flat list (same offset in every pod)
        at = (
            next((i for i, p in enumerate(pod_params[0]) if p is self._outputs[0]), 0)
            if pod_params
            else 0
        )
        self._out_positions = [
            self._n_other + i * self._per_pod + at for i in range(len(pod_params))
        ]
        self._version = version

    def clip_and_measure(self, version: int) -> GradientStats:
        """Measure (before clipping), then clip the gradients to ``max_norm`` (0: no clipping)."""
        self._layout(version)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
        squares = torch.stack(torch._foreach_norm(grads)) ** 2  # (n_params,)
        total = squares.sum().sqrt()
        pod_norms = squares[self._n_other :].view(len(self._keys), self._per_pod).sum(1).sqrt()
        if self._outputs:
            out_grads = [grads[i] for i in self._out_positions]
            products = torch._foreach_mul([w.detach() for w in self._outputs], out_grads)
            taylor = -torch.stack(products).sum(dim=(1, 2))  # (n_pods,)
        else:
            taylor = total.new_zeros(0)
        if self.max_norm > 0:
            coef = (self.max_norm / (total + 1e-6)).clamp(max=1.0)
            torch._foreach_mul_(grads, coef)
        return GradientStats(total, pod_norms, taylor, list(self._keys))
