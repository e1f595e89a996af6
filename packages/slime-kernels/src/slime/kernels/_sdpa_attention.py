"""Pool attention through ``F.scaled_dot_product_attention``, with the pool kernels' zeros.

The pool's semantics are scaled dot-product attention per ``(batch, slot)`` with two additions:
a dead slot outputs 0, and a query with no visible key outputs 0. Both are a ``torch.where`` on
the output. A zeroed output row has a zero output gradient, and SDPA's backward then gives it
exactly zero contributions (``dS = P * (dO V^T - rowsum(dO * O))`` is 0), so those rows' and
slots' gradients are exact zeros too. The kernels behind SDPA (cuDNN, flash, memory-efficient on
CUDA; the fused CPU kernel elsewhere) accumulate in fp32; its math fallback upcasts half
precision to fp32 as well.

Without key padding the call is ``is_causal`` SDPA with no mask, which lets torch pick cuDNN or
flash. With key padding it takes a boolean ``attn_mask``; rows with no visible key would be
NaN there, so they are given every key (a finite, discarded result) and zeroed afterwards. A mask
restricts CUDA to the memory-efficient or math kernels, which is why ``backend="auto"`` sends key
padding to the pool kernels instead (see :func:`slime.kernels.functional.choose_path`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["attention"]


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool,
    scale: float,
    key_padding_mask: Tensor | None,
    alive: Tensor | None,
) -> Tensor:
    """``(B, P, T, d)`` pool attention by SDPA; inputs already validated by the caller."""
    if key_padding_mask is None:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
        if alive is None:
            return out
        return torch.where(alive.view(1, -1, 1, 1), out, 0.0)
    batch, _, seq, _ = q.shape
    visible = key_padding_mask.view(batch, 1, 1, seq)
    if causal:
        visible = visible & torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()
        # Query t sees a key when one of keys 0..t is unpadded: a running "any" along T.
        has_key = (key_padding_mask.cumsum(dim=-1) > 0).view(batch, 1, seq, 1)
    else:
        has_key = key_padding_mask.any(dim=-1).view(batch, 1, 1, 1)
    mask = visible | ~has_key
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    keep = has_key if alive is None else has_key & alive.view(1, -1, 1, 1)
    return torch.where(keep, out, 0.0)
