"""The Kernel protocol: the compute every pseudopod calls. Implemented by slime.kernels backends.

Shapes: ``B`` batch, ``P`` pseudopods in a pool (padded to a capacity; see ``alive``), ``T`` sequence
length, ``d`` head dimension, ``N`` samples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["Kernel"]


@runtime_checkable
class Kernel(Protocol):
    """Pool attention and the statistics of a pool's behaviour, one definition per function."""

    name: str

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
        """Scaled dot-product attention of every pseudopod in a pool, differentiable.

        Args:
            q, k, v: ``(B, P, T, d)``, float32/float16/bfloat16, same dtype and device.
            causal: query ``t`` sees keys ``<= t`` only.
            scale: logit scale; ``None`` means ``d ** -0.5``.
            key_padding_mask: ``(B, T)`` bool, True where a key may be attended.
            alive: ``(P,)`` bool, False for padded slots of a pool below capacity.

        Returns:
            ``(B, P, T, d)`` in the input dtype (fp32 accumulation). A query with no visible key
            (all masked) and every slot of a dead pseudopod give exactly 0, never NaN.
        """
        ...

    def correlation(self, x: Tensor) -> Tensor:
        """Per-pseudopod Pearson correlation matrix of features: ``(P, N, d) -> (P, d, d)`` float32."""
        ...

    def effective_rank(self, matrices: Tensor) -> Tensor:
        """Roy & Vetterli effective rank of symmetric PSD matrices: ``(P, n, n) -> (P,)`` float32.

        ``exp(H(p))`` with ``p = s / sum(s)`` over the singular values ``s`` (the eigenvalues, for
        symmetric PSD input). No host synchronisation.
        """
        ...

    def coherence(self, corr: Tensor) -> Tensor:
        """Coherence of each correlation matrix: ``(P, d, d) -> (P,)`` float32 in ``[0, 1]``."""
        ...
