"""The baseline: a plain pre-norm GPT (nanoGPT-style) that every slime comparison is made against.

It takes the same :class:`~slime.train.config.ModelConfig` as the slime model: ``n_pods`` becomes the
number of heads, ``head_dim`` their width, so that at a matching config both models hold the same
number of parameters (``tests/test_baseline.py`` checks the equality against ``SlimeModel``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from slime.core import generate_tokens
from slime.proto import ConfigError
from slime.train.config import ModelConfig
from torch import Tensor, nn

__all__ = ["GPT", "MLP", "Block", "CausalSelfAttention"]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with torch SDPA: ``(B, T, D) -> (B, T, D)``.

    Dropout applies to the attention output only, not to the attention probabilities (nanoGPT
    drops both): SlimeModel's fused pool attention has no probability dropout, and the comparison
    must differ in architecture, not in regularisation.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_pods, cfg.head_dim
        inner = self.n_head * self.head_dim
        self.c_attn = nn.Linear(cfg.n_embd, 3 * inner, bias=cfg.bias)
        self.c_proj = nn.Linear(inner, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).split(self.n_head * self.head_dim, dim=2)
        # (B, T, H*d) -> (B, H, T, d)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: ``D -> mlp_ratio * D -> D`` with GELU."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = int(cfg.mlp_ratio * cfg.n_embd)
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only language model; token and position embeddings, tied output head.

    Args:
        cfg: the model section; ``vocab_size`` must be set (not ``None``).
        generator: seeds the N(0, 0.02) initialisation (residual projections scaled by
            ``1 / sqrt(2 * n_layer)``, as GPT-2).
    """

    def __init__(self, cfg: ModelConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if cfg.vocab_size is None:
            raise ConfigError("expected an int for the baseline, got null", "model.vocab_size")
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self._init_weights(generator)

    @torch.no_grad()
    def _init_weights(self, generator: torch.Generator | None) -> None:
        resid_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif "ln_" in name:
                p.fill_(1.0)
            else:
                std = resid_std if name.endswith("c_proj.weight") else 0.02
                p.copy_(torch.randn(p.shape, generator=generator) * std)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``idx`` ``(B, T)`` -> ``logits`` ``(B, T, V)`` and the mean cross-entropy over targets.

        ``targets`` ``(B, T)`` uses ``-1`` for positions that are not scored.
        """
        B, T = idx.shape
        if T > self.config.block_size:
            raise ConfigError(
                f"sequence length {T} exceeds block_size {self.config.block_size}",
                "model.block_size",
            )
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1
        )
        return logits, loss

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once); ``non_embedding`` leaves out position embeddings."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample ``max_new_tokens`` continuations of ``idx`` ``(B, T)``; returns ``(B, T + n)``."""
        return generate_tokens(
            self,
            idx,
            max_new_tokens,
            block_size=self.config.block_size,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
        )
