"""Autoregressive sampling shared by every causal LM with ``forward(idx) -> (logits, loss)``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from slime.proto import ConfigError, DataError, shown
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
        ConfigError: ``max_new_tokens`` is not an int >= 0, ``temperature`` not a finite number
            > 0, ``top_k`` not an int >= 1, or ``generator`` not a torch.Generator.
        DataError: ``idx`` is not a ``(B, T)`` tensor.
    """
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ConfigError(f"expected an int >= 0, got {shown(max_new_tokens)}", "max_new_tokens")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 < temperature < math.inf
    ):
        raise ConfigError(f"expected a finite number > 0, got {shown(temperature)}", "temperature")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"expected an int >= 1 or None, got {shown(top_k)}", "top_k")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ConfigError(
            f"expected a torch.Generator or None, got {shown(generator)}", "generator"
        )
    if not isinstance(idx, Tensor) or idx.dim() != 2:
        got = tuple(idx.shape) if isinstance(idx, Tensor) else idx
        raise DataError(f"idx must be a (B, T) tensor, got {shown(got)}")
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -block_size:])
        logits = logits[:, -1, :] / temperature
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        probs = F.softmax(logits, dim=-1)
        idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return idx
