"""The Kernel protocol on Triton: flash-style pool attention and a sync-free effective rank.

Correlation and coherence are a matmul and a reduction; they use the torch definitions from
:mod:`slime.kernels.torch_fallback` (cuBLAS is already the right kernel for them), so both backends
share one definition of each. Without a GPU the Triton kernels run in the Triton interpreter when
``TRITON_INTERPRET=1`` is set before this package is imported (tests do; it is slow).
"""

from __future__ import annotations

from slime.kernels import torch_fallback
from slime.kernels.functional import pool_attention, triton_available
from slime.proto import KernelError
from torch import Tensor

__all__ = ["TritonKernel"]


class TritonKernel:
    """The Kernel protocol computed by Triton kernels (head dims 16, 32, 64, 128).

    Raises:
        KernelError: at construction, when the ``triton`` package cannot be imported.
    """

    name = "triton"

    def __init__(self) -> None:
        if not triton_available():
            raise KernelError("TritonKernel needs the 'triton' package, which is not installed")

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
        return pool_attention(
            q,
            k,
            v,
            causal=causal,
            scale=scale,
            key_padding_mask=key_padding_mask,
            alive=alive,
            backend="triton",
        )

    def correlation(self, x: Tensor) -> Tensor:
        return torch_fallback.correlation(x)

    def effective_rank(self, matrices: Tensor) -> Tensor:
        from slime.kernels import _triton_erank

        return _triton_erank.effective_rank(matrices)

    def coherence(self, corr: Tensor) -> Tensor:
        return torch_fallback.coherence(corr)

    def __repr__(self) -> str:
        return "TritonKernel()"
