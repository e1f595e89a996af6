"""The Kernel protocol on torch's fused attention where it applies, a pool kernel where it does not.

For the pool attention a language model trains with (causal or full, no key padding) the pool's
semantics are exactly scaled dot-product attention per slot with dead slots zeroed, so this kernel
runs :func:`slime.kernels.pool_attention` with ``backend="sdpa"`` (cuDNN or flash on CUDA, the
fused CPU kernel elsewhere, even in fp32 and under ``torch.compile``). A call from eager code
costs one C++ dispatch, where a Python-launched Triton kernel costs several hundred microseconds
of host time (slime.kernels BENCHMARKS.md), which made small training steps host-bound.

Calls with a ``key_padding_mask`` go to the ``masked`` kernel (SDPA with a mask runs its slower
memory-efficient kernel), as do correlation, effective rank and coherence; float64 calls go to the
torch fallback, which computes in float64 (the fused and pool kernels take fp32 and narrower).
"""

from __future__ import annotations

import torch
from slime.kernels import torch_fallback
from slime.kernels.functional import pool_attention
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
        """``(B, P, T, d)`` pool attention; see :func:`slime.kernels.pool_attention`. float64
        (which the fused and pool kernels do not take) runs the torch fallback, in float64."""
        if q.dtype is torch.float64:
            return torch_fallback.attention(
                q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask, alive=alive
            )
        if key_padding_mask is not None:
            return self.masked.attention(
                q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask, alive=alive
            )
        return pool_attention(q, k, v, causal=causal, scale=scale, alive=alive, backend="sdpa")

    def correlation(self, x: Tensor) -> Tensor:
        return self.masked.correlation(x)

    def effective_rank(self, matrices: Tensor) -> Tensor:
        return self.masked.effective_rank(matrices)

    def coherence(self, corr: Tensor) -> Tensor:
        return self.masked.coherence(corr)

    def __repr__(self) -> str:
        return f"SDPAKernel(masked={self.masked!r})"
