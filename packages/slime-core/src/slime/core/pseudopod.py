"""What a pseudopod is measured by: its behavioural descriptors.

A pod is one attention head of an organism: ``q, k, v`` projections ``(d, D)`` (and biases ``(d,)``
when ``bias``) and an output projection ``(D, d)``, stored as one slot of the organism's slot table
and seen through :class:`~slime.core.pod_view.PodView`. ``Organism.measure_behaviour`` measures every
slot at once.

Behavioural descriptors (blueprint decision 9: they follow compute structure), each in [0, 1]:

0. ``attention_distance``: mean ``|t - s|`` under the head's attention, divided by ``T - 1``.
   Short-range heads touch nearby keys (cache-friendly, window-able); long-range heads do not.
1. ``activation_sparsity``: Hoyer sparsity of the head's outputs, ``(sqrt(d) - |x|_1/|x|_2) /
   (sqrt(d) - 1)`` per token, averaged. Sparse outputs compress and prune well.
2. ``weight_spread``: ``1 - mean(|w|)^2 / mean(w^2)`` over the pod's weights; 0 for constant
   magnitudes, larger for heavy tails (which need more precision to quantise).

Archives use the first ``k`` of these (``k`` = number of archive dimensions). Measurements happen on
a probe batch (medium timescale) and are smoothed by an exponential moving average, so one noisy
minibatch cannot move a pod across the archive.
"""

from __future__ import annotations

import math

import torch
from slime.proto import KernelError
from torch import Tensor

__all__ = ["DESCRIPTOR_NAMES", "hoyer_sparsity"]

DESCRIPTOR_NAMES = ("attention_distance", "activation_sparsity", "weight_spread")


def hoyer_sparsity(x: Tensor) -> Tensor:
    """Hoyer sparsity of each row of ``(..., d)`` in [0, 1]; all-zero rows count as fully sparse."""
    d = x.shape[-1]
    if d < 2:
        raise KernelError(f"Hoyer sparsity needs at least 2 features, got {d}")
    x = x.float()
    l1 = x.abs().sum(-1)
    l2 = torch.linalg.vector_norm(x, dim=-1)
    ratio = torch.where(l2 > 0, l1 / l2.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    return ((math.sqrt(d) - ratio) / (math.sqrt(d) - 1)).clamp(0.0, 1.0)
