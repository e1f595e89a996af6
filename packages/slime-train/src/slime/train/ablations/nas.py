"""The NAS arm: random search over what slime varies (heads per layer, head width), then a retrain.

The search space is every GPT whose layer ``l`` has ``heads[l]`` heads in ``1..pod_capacity`` (the
range slime's pool can take) of width ``widths[l]`` in ``{head_dim / 2, head_dim, 2 head_dim}``,
restricted to architectures whose parameter count is within ``tolerance`` (a fraction) of the
baseline's. :func:`sample_architectures` draws ``n`` distinct ones from it (seeded);
:func:`random_search` scores each once (a short training, then the loss on selection batches that
are not the final held-out batches) and keeps the lowest. The budget is exactly ``n`` scorings of
``steps`` training steps each; the arm then retrains the winner with the normal step count.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from slime.proto import ConfigError
from slime.train.baseline import CausalSelfAttention
from slime.train.config import ModelConfig
from torch import nn

__all__ = [
    "Architecture",
    "SearchResult",
    "architecture_params",
    "install_architecture",
    "random_search",
    "sample_architectures",
    "width_choices",
]

MAX_DRAWS_PER_CANDIDATE = 10_000


@dataclass(frozen=True)
class Architecture:
    """Heads and head width of each layer's attention."""

    heads: tuple[int, ...]
    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.heads) != len(self.widths) or not self.heads:
            raise ConfigError(
                f"expected one head count and one width per layer, got heads {self.heads} and "
                f"widths {self.widths}",
                "architecture",
            )
        bad = [v for v in (*self.heads, *self.widths) if v < 1]
        if bad:
            raise ConfigError(f"expected positive heads and widths, got {bad}", "architecture")

    def to_dict(self) -> dict[str, list[int]]:
        return {"heads": list(self.heads), "widths": list(self.widths)}

    def __str__(self) -> str:
        return " / ".join(f"{h}x{w}" for h, w in zip(self.heads, self.widths, strict=True))


def _attention_params(heads: int, width: int, cfg: ModelConfig) -> int:
    """One CausalSelfAttention's parameters: q/k/v and output weights, their biases."""
    inner = heads * width
    return 4 * inner * cfg.n_embd + int(cfg.bias) * (3 * inner + cfg.n_embd)


def architecture_params(arch: Architecture, baseline_params: int, cfg: ModelConfig) -> int:
    """Parameters of the GPT with ``arch`` whose uniform version (``cfg``) has
    ``baseline_params``: only the attentions differ."""
    if len(arch.heads) != cfg.n_layer:
        raise ConfigError(
            f"expected {cfg.n_layer} layers, got an architecture of {len(arch.heads)}",
            "architecture",
        )
    uniform = cfg.n_layer * _attention_params(cfg.n_pods, cfg.head_dim, cfg)
    searched = sum(_attention_params(h, w, cfg) for h, w in zip(arch.heads, arch.widths))
    return baseline_params - uniform + searched


def width_choices(head_dim: int) -> tuple[int, ...]:
    """Head widths the search tries: half, the same and twice the baseline's."""
    return tuple(sorted({max(1, head_dim // 2), head_dim, 2 * head_dim}))


def sample_architectures(
    cfg: ModelConfig, baseline_params: int, n: int, tolerance: float, seed: int
) -> list[Architecture]:
    """``n`` distinct architectures within ``tolerance`` of ``baseline_params``, drawn uniformly
    (per layer: heads in ``1..pod_capacity``, width from :func:`width_choices`) by rejection.

    Raises:
        ConfigError: ``n < 1``, a negative tolerance, or fewer than ``n`` distinct architectures
            found within the tolerance.
    """
    if n < 1:
        raise ConfigError(f"expected at least 1 candidate, got {n}", "nas_candidates")
    if not 0.0 <= tolerance < 1.0:
        raise ConfigError(f"expected a tolerance in [0, 1), got {tolerance}", "nas_tolerance")
    rng = random.Random(seed)
    widths = width_choices(cfg.head_dim)
    found: dict[Architecture, None] = {}
    for _ in range(n * MAX_DRAWS_PER_CANDIDATE):
        arch = Architecture(
            tuple(rng.randint(1, cfg.pod_capacity) for _ in range(cfg.n_layer)),
            tuple(rng.choice(widths) for _ in range(cfg.n_layer)),
        )
        params = architecture_params(arch, baseline_params, cfg)
        if abs(params - baseline_params) <= tolerance * baseline_params:
            found[arch] = None
            if len(found) == n:
                return list(found)
    raise ConfigError(
        f"found {len(found)} distinct architectures within {tolerance:.0%} of "
        f"{baseline_params} parameters; expected {n} candidates",
        "nas_candidates",
    )


@dataclass(frozen=True)
class SearchResult:
    """Every candidate's score, in the order scored, and the best one."""

    scores: list[tuple[Architecture, float]]
    best: Architecture
    best_score: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": [{**a.to_dict(), "loss": s} for a, s in self.scores],
            "best": self.best.to_dict(),
            "best_loss": self.best_score,
            "seconds": self.seconds,
        }


def random_search(
    candidates: Sequence[Architecture], score: Callable[[Architecture], float]
) -> SearchResult:
    """Score each candidate once (lower is better); the best is the lowest finite score (the
    first on ties). The budget is ``len(candidates)`` calls of ``score``, never more.

    Raises:
        ConfigError: no candidates, or no candidate scored a finite value.
    """
    if not candidates:
        raise ConfigError("expected at least 1 candidate, got none", "nas_candidates")
    t0 = time.perf_counter()
    scores = [(arch, float(score(arch))) for arch in candidates]
    finite = [(a, s) for a, s in scores if math.isfinite(s)]
    if not finite:
        raise ConfigError(
            f"every one of the {len(scores)} candidates scored a non-finite loss",
            "nas_candidates",
        )
    best, best_score = min(finite, key=lambda pair: pair[1])
    return SearchResult(scores, best, best_score, time.perf_counter() - t0)


@torch.no_grad()
def install_architecture(
    model: nn.Module, arch: Architecture, *, generator: torch.Generator | None = None
) -> nn.Module:
    """Give each block of the baseline GPT ``model`` an attention of ``arch``'s heads and width,
    initialised as the GPT initialises its own (N(0, 0.02), residual projection scaled by
    ``1 / sqrt(2 L)``, zero biases); returns ``model``."""
    cfg = model.config
    if len(arch.heads) != len(model.blocks):
        raise ConfigError(
            f"expected {len(model.blocks)} layers, got an architecture of {len(arch.heads)}",
            "architecture",
        )
    device = next(model.parameters()).device
    resid_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    for block, heads, width in zip(model.blocks, arch.heads, arch.widths, strict=True):
        layer_cfg = ModelConfig(**{**cfg.to_dict(), "n_pods": heads, "head_dim": width})
        attn = CausalSelfAttention(layer_cfg)
        for name, p in attn.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            else:
                std = resid_std if name == "c_proj.weight" else 0.02
                p.copy_(torch.randn(p.shape, generator=generator) * std)
        block.attn = attn.to(device)
    return model
