"""Gradient statistics for one step: the total norm for clipping, and per-slot statistics for fitness.

One ``torch._foreach_norm`` over every gradient (what ``clip_grad_norm_`` runs internally) gives the
total norm used for clipping. A SlimeModel's pods are slots of stacked parameters, so their
statistics come from ``model.slot_gradient_stats()`` as ``(L, P)`` tables (layer, slot): each slot's
squared gradient norm and its first-order (Taylor) estimate of its masked-loss contribution. With the
pod's output scaled by a gate ``g`` (1 = present, 0 = masked), ``L(0) - L(1) ~ -dL/dg`` and
``dL/dg = <W_o, dL/dW_o>``, the Frobenius product of the pod's output projection and its gradient
(the head importance of Michel et al., 2019, without the absolute value).

Everything stays on the device, clipping included: nothing here synchronises with the host. The
trainer decides on the device whether a step is finite (see :mod:`slime.train.optim`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["GradientMonitor", "GradientStats"]


@dataclass(frozen=True)
class GradientStats:
    """One step's gradient statistics, on the device, measured before clipping.

    ``slot_norms`` and ``slot_taylor`` are ``(L, P)`` (layer, slot); dead slots read 0. A model
    without organisms (the baseline), or a call with ``per_slot=False``, gives ``(0, 0)`` tables.
    """

    total: Tensor  # 0-d L2 norm of every gradient
    slot_norms: Tensor  # (L, P) L2 norm of each slot's gradients
    slot_taylor: Tensor  # (L, P) first-order masked-loss increase, -<W_o, dL/dW_o>


class GradientMonitor:
    """Clips gradients and measures per-slot gradient statistics of a model (slime or baseline)."""

    def __init__(self, model: nn.Module, max_norm: float) -> None:
        self.model, self.max_norm = model, max_norm
        self.params = list(model.parameters())  # fixed for the model's life
        self.has_slots = hasattr(model, "slot_gradient_stats")

    def clip_and_measure(self, *, per_slot: bool = True) -> GradientStats:
        """Measure (before clipping), then clip the gradients to ``max_norm`` (0: no clipping).

        ``per_slot=False`` leaves the per-slot tables out (nothing reads them without a lifecycle).
        """
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            total = torch.stack(torch._foreach_norm(grads)).square().sum().sqrt()
        else:
            total = torch.zeros((), device=self.params[0].device if self.params else None)
        if per_slot and self.has_slots:
            norms_sq, taylor = self.model.slot_gradient_stats()
            norms = norms_sq.sqrt()
        else:
            norms = taylor = total.new_zeros(0, 0)
        if self.max_norm > 0 and grads:
            coef = (self.max_norm / (total + 1e-6)).clamp(max=1.0)
            torch._foreach_mul_(grads, coef)
        return GradientStats(total, norms, taylor)
