"""Autoregressive sampling shared by every causal LM with ``forward(idx) -> (logits, loss)``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from slime.proto import ConfigError
from torch import Tensor

__all__ = ["generate_tokens"]


@torch.no_grad()
def generate_tokens(
    model: Callable[[Tensor], tuple[Tensor, Tensor | None]],
    idx: Tensor,
    max_new_tokens: int,
    *,
    block_size: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample ``max_new_tokens`` continuations of ``idx`` ``(B, T)``; returns ``(B, T + n)``.

    The model sees at most the last ``block_size`` tokens; ``top_k`` keeps the k most likely.

    Raises:
        ConfigError: ``temperature`` is not > 0, or ``top_k`` is below 1.
    """
    if not temperature > 0:
        raise ConfigError(f"expected > 0, got {temperature!r}", "temperature")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"expected >= 1 or None, got {top_k!r}", "top_k")
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -block_size:])
        logits = logits[:, -1, :] / temperature
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        probs = F.softmax(logits, dim=-1)
        idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return idx
