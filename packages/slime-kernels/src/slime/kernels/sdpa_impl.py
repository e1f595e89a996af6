"""The Kernel protocol on torch's fused attention where it applies, a pool kernel where it does not.

For the pool attention a language model trains with (causal or full, no key padding) the pool's
semantics are exactly scaled dot-product attention per slot with dead slots zeroed, so this kernel
calls ``F.scaled_dot_product_attention`` (flash or cuDNN on CUDA, the fused CPU kernel elsewhere)
and zeroes the slots the ``alive`` mask marks dead: a dead or masked slot outputs exactly 0 and, since its
output gradient is then 0, receives exactly zero gradients. A call from eager code costs one C++
dispatch, where a Python-launched Triton kernel costs several hundred microseconds of host time
(slime.kernels BENCHMARKS.md), which made small training steps host-bound.

Key padding needs the pool kernel's rule that a query with no visible key outputs 0 (SDPA returns
NaN there), so calls with a ``key_padding_mask`` go to the ``masked`` kernel, as do correlation,
effective rank and coherence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from slime.kernels import utils
from slime.proto import Kernel
from torch import Tensor

__all__ = ["SDPAKernel"]


class SDPAKernel:
    """Pool attention by ``F.scaled_dot_product_attention`` without key padding; ``masked`` (the
    Triton or torch pool kernel) for everything else."""

    name = "sdpa"

    def __init__(self, masked: Kernel) -> None:
        self.masked = masked

    def attention(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        causal: bool = False,
        scale: float | None = None,
        key_padding_mask: Tensor | None = None,
        alive: Tensor | None = None,
    ) -> Tensor:
        """``(B, P, T, d)`` pool attention; see :func:`slime.kernels.pool_attention`."""
        if key_padding_mask is not None:
            return self.masked.attention(
                q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask, alive=alive
            )
        utils.check_attention_inputs(q, k, v, None, alive)
        scale = utils.resolve_scale(scale, q.shape[-1])
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
        if alive is None:
            return out
        return torch.where(alive.view(1, -1, 1, 1), out, 0.0)

    def correlation(self, x: Tensor) -> Tensor:
        return self.masked.correlation(x)

    def effective_rank(self, matrices: Tensor) -> Tensor:
        return self.masked.effective_rank(matrices)

    def coherence(self, corr: Tensor) -> Tensor:
        return self.masked.coherence(corr)

    def __repr__(self) -> str:
        return f"SDPAKernel(masked={self.masked!r})"
