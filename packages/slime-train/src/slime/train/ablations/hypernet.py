"""The hypernetwork arm: a GPT whose attention-head weights are generated from learned embeddings.

Every head of every layer has a learned embedding ``e`` (width ``E``). One hypernetwork, shared by
all layers, maps it to the head's weights: ``w = W2 tanh(W1 e + b1) + b2`` (hidden width ``M``),
and ``w`` is cut into the head's query, key and value rows ``(3, d, D)``, its columns of the output
projection ``(D, d)`` and, with ``bias``, its query/key/value biases ``(3 d)``. The output
projection's bias (one per layer, not per head), the embeddings, MLPs and LayerNorms are ordinary
parameters, as in the baseline GPT.

**How the parameter count is matched to the baseline.** Per head the baseline holds
``P = 4 d D + 3 d bias`` attention parameters, ``L H P`` in all; the hypernetwork holds
``L H E`` (embeddings) ``+ E M + M`` (first layer) ``+ (M + 1) P`` (second layer). The second
layer alone costs ``P`` per unit of hidden width, so ``M`` can be at most ``L H - 2`` (the
widest generator that leaves room for embeddings); the ``P - M`` parameters left over by that
choice set the embedding width ``E = (P - M) // (L H + M)``. What the floor leaves out,
``(P - M) mod (L H + M)``, is the difference from the baseline: never negative and always
smaller than ``L H + M`` (one more unit of embedding width would overshoot). That is the stated
tolerance, asserted by :func:`check_matched`; for the profiles' sizes it is 0 (cpu-small) and 2
parameters in 3.2 M (gpu-full). With ``M = L H - 2`` the generated heads span an affine subspace of
dimension ``L H - 2`` of weight space: one dimension less than ``L H`` free heads, which is the
price of generating them instead of holding them.

Heads can be zeroed at test time through each attention's ``head_mask`` (see
:mod:`slime.train.ablations.degradation`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from slime.proto import ConfigError
from slime.train.config import ModelConfig
from torch import Tensor, nn

__all__ = [
    "HeadHypernetwork",
    "HyperAttention",
    "check_matched",
    "hypernet_sizes",
    "install_hypernet",
]

TANH_VARIANCE = 0.394  # Var[tanh(z)] for z ~ N(0, 1): sets the second layer's initial scale


def _per_head(n_embd: int, head_dim: int, bias: bool) -> int:
    return 4 * head_dim * n_embd + 3 * head_dim * int(bias)


def hypernet_sizes(
    n_layer: int, n_head: int, n_embd: int, head_dim: int, bias: bool
) -> tuple[int, int, int]:
    """``(embed_width, hidden_width, shortfall)``: the sizes that match the baseline's attention
    parameters (see the module docstring) and how many parameters fewer the hypernetwork has.

    Raises:
        ConfigError: fewer than 3 heads in all (no room for a hidden layer), or no room for an
            embedding of width 1.
    """
    heads = n_layer * n_head
    if heads < 3:
        raise ConfigError(
            f"expected at least 3 heads in all for a hypernetwork of matched size, got {heads} "
            f"({n_layer} layers x {n_head} heads)",
            "model.n_pods",
        )
    per_head = _per_head(n_embd, head_dim, bias)
    hidden = heads - 2
    rest = per_head - hidden
    embed = rest // (heads + hidden)
    if embed < 1:
        raise ConfigError(
            f"expected room for head embeddings, got {per_head} parameters per head for "
            f"{heads} heads",
            "model.head_dim",
        )
    return embed, hidden, rest - embed * (heads + hidden)


class HeadHypernetwork(nn.Module):
    """Embeddings ``(L, H, E)`` and the shared generator ``E -> M -> P`` of every head's weights."""

    def __init__(
        self,
        cfg: ModelConfig,
        embed: int,
        hidden: int,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.n_layer, self.n_head = cfg.n_layer, cfg.n_pods
        self.n_embd, self.head_dim, self.bias = cfg.n_embd, cfg.head_dim, cfg.bias
        self.per_head = _per_head(cfg.n_embd, cfg.head_dim, cfg.bias)
        self.embeddings = nn.Parameter(torch.empty(cfg.n_layer, cfg.n_pods, embed))
        self.hidden = nn.Linear(embed, hidden)
        self.out = nn.Linear(hidden, self.per_head)
        with torch.no_grad():
            self.embeddings.copy_(torch.randn(self.embeddings.shape, generator=generator))
            self.hidden.weight.copy_(
                torch.randn(self.hidden.weight.shape, generator=generator) / math.sqrt(embed)
            )
            self.hidden.bias.zero_()
            # Generated weights start with the baseline's scales: N(0, 0.02) for q/k/v, the
            # GPT-2 residual scale for the output columns, zero biases.
            qkv, o = 3 * self.head_dim * self.n_embd, self.head_dim * self.n_embd
            resid = 0.02 / math.sqrt(2 * cfg.n_layer)
            scale = torch.zeros(self.per_head)
            scale[:qkv] = 0.02
            scale[qkv : qkv + o] = resid
            draw = torch.randn(self.out.weight.shape, generator=generator)
            self.out.weight.copy_(draw * scale[:, None] / math.sqrt(hidden * TANH_VARIANCE))
            self.out.bias.zero_()

    def layer_weights(self, layer: int) -> Tensor:
        """``(H, P)``: the generated weights of every head of ``layer``."""
        return self.out(torch.tanh(self.hidden(self.embeddings[layer])))

    def split(self, w: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(H, P)`` -> q/k/v rows ``(3, H, d, D)``, output columns ``(H, D, d)``, q/k/v biases
        ``(3, H, d)`` (None without bias)."""
        h, d, D = w.shape[0], self.head_dim, self.n_embd
        qkv = w[:, : 3 * d * D].view(h, 3, d, D).transpose(0, 1)
        o = w[:, 3 * d * D : 4 * d * D].view(h, D, d)
        b = w[:, 4 * d * D :].view(h, 3, d).transpose(0, 1) if self.bias else None
        return qkv, o, b


class HyperAttention(nn.Module):
    """Causal multi-head attention of one layer with generated head weights: ``(B, T, D)`` ->
    ``(B, T, D)``. ``head_mask`` ``(H,)`` (1 = kept) scales each head's output before the output
    projection; it is all ones in training."""

    def __init__(self, cfg: ModelConfig, layer: int, hyper: HeadHypernetwork) -> None:
        super().__init__()
        self.layer, self.hyper = layer, hyper
        self.n_head, self.head_dim = cfg.n_pods, cfg.head_dim
        self.out_bias = nn.Parameter(torch.zeros(cfg.n_embd)) if cfg.bias else None
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.register_buffer("head_mask", torch.ones(cfg.n_pods), persistent=False)

    def head_weights(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """This layer's generated ``(qkv, o, qkv_bias)``, shapes as :meth:`HeadHypernetwork.split`."""
        return self.hyper.split(self.hyper.layer_weights(self.layer))

    def heads(self, x: Tensor) -> Tensor:
        """``(B, H, T, d)``: each head's attention output (before the mask and projection)."""
        qkv, _, b = self.head_weights()
        q, k, v = (torch.einsum("btc,hdc->bhtd", x, w) for w in qkv)
        if b is not None:
            q, k, v = (t + bias[None, :, None, :] for t, bias in zip((q, k, v), b, strict=True))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward(self, x: Tensor) -> Tensor:
        _, o, _ = self.head_weights()
        y = self.heads(x) * self.head_mask.to(x.dtype)[None, :, None, None]
        out = torch.einsum("bhtd,hcd->btc", y, o)
        if self.out_bias is not None:
            out = out + self.out_bias
        return self.resid_dropout(out)


def install_hypernet(model: nn.Module, *, generator: torch.Generator | None = None) -> nn.Module:
    """Replace every attention of the baseline GPT ``model`` with a :class:`HyperAttention` fed by
    one shared :class:`HeadHypernetwork` (sized by :func:`hypernet_sizes`); returns ``model``.

    The rest of the GPT (embeddings, MLPs, LayerNorms, tied head) is kept as initialised.
    """
    cfg = model.config
    embed, hidden, _ = hypernet_sizes(cfg.n_layer, cfg.n_pods, cfg.n_embd, cfg.head_dim, cfg.bias)
    device = next(model.parameters()).device
    hyper = HeadHypernetwork(cfg, embed, hidden, generator=generator)
    for layer, block in enumerate(model.blocks):
        block.attn = HyperAttention(cfg, layer, hyper)
    model.hypernet = hyper
    return model.to(device)


def check_matched(hyper_params: int, baseline_params: int, cfg: ModelConfig) -> int:
    """The shortfall ``baseline_params - hyper_params``; raises unless it is the one
    :func:`hypernet_sizes` states (in ``[0, L H + M)``).

    Raises:
        ConfigError: the counts differ by anything else.
    """
    _, hidden, shortfall = hypernet_sizes(
        cfg.n_layer, cfg.n_pods, cfg.n_embd, cfg.head_dim, cfg.bias
    )
    diff = baseline_params - hyper_params
    bound = cfg.n_layer * cfg.n_pods + hidden
    if diff != shortfall or not 0 <= diff < bound:
        raise ConfigError(
            f"the hypernetwork arm has {hyper_params} parameters and the baseline "
            f"{baseline_params}; expected {shortfall} fewer (at most {bound - 1})",
            "model",
        )
    return diff
