"""Measurements taken on a trained model with fixed held-out batches (no RNG consumed, no grads).

- :func:`heldout_eval`: loss and token accuracy on the scored targets of fixed validation batches,
  the same batches for every arm of a seed, so arms are compared on identical data.
- :func:`head_similarity`: mean pairwise ``|cosine|`` between the heads' contributions to the
  residual stream (blueprint decision 11: do heads stay behaviourally distinct?). Works for the
  SlimeModel (one head per live pod), the baseline GPT (its ``n_head`` heads), the NAS arm's GPT
  (each layer's own heads) and the hypernetwork arm (its generated heads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from slime.core import SlimeModel
from slime.proto import ConfigError
from slime.train.ablations.hypernet import HyperAttention
from torch import Tensor

__all__ = [
    "head_contributions",
    "head_similarity",
    "heldout_batches",
    "heldout_eval",
    "mean_abs_cosine",
]


def heldout_batches(
    dataset, n_batches: int, batch_size: int, seed: int, device: torch.device
) -> list[tuple[Tensor, Tensor]]:
    """``n_batches`` validation batches ``(idx, targets)`` drawn from a generator seeded ``seed``."""
    if n_batches < 1:
        raise ConfigError(f"expected at least one held-out batch, got {n_batches}", "n_batches")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        idx, targets = dataset.batch("val", batch_size, gen)
        out.append((idx.to(device), targets.to(device)))
    return out


@torch.no_grad()
def heldout_eval(model, batches: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """Mean cross-entropy and argmax accuracy over every scored target of ``batches``."""
    was_training = model.training
    model.eval()
    try:
        nll, correct, count = 0.0, 0, 0
        for idx, targets in batches:
            logits, _ = model(idx)
            scored = targets >= 0
            flat = logits.float()[scored]  # (n, V)
            gold = targets[scored]
            nll += F.cross_entropy(flat, gold, reduction="sum").item()
            correct += int((flat.argmax(-1) == gold).sum())
            count += int(scored.sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ConfigError("held-out batches hold no scored target", "heldout")
    return {"loss": nll / count, "accuracy": correct / count}


def _organism_heads(organism, latent: Tensor) -> Tensor:
    """``(n_live, B*T*D)``: each live slot's head output mapped through its columns of the output
    projection (the shared output bias left out), over the whole slot table at once, the way the
    organism's forward computes it."""
    batch, seq, width = latent.shape
    q, k, v = organism.project(latent)  # (B, P, T, d)
    heads = organism.kernel.attention(q, k, v, causal=True, alive=organism.alive)  # (B, P, T, d)
    per_slot = torch.einsum("bptd,epd->pbte", heads, organism.o_weight)  # (P, B, T, D)
    return per_slot[organism.alive].reshape(-1, batch * seq * width)


def _slime_heads(model: SlimeModel, idx: Tensor) -> list[Tensor]:
    """Per layer: ``(n_live, B*T*D)`` contributions of each live pod to the residual stream."""
    x = model.drop(model.wte(idx) + model.wpe(torch.arange(idx.shape[1], device=idx.device)))
    layers = []
    for block in model.blocks:
        layers.append(_organism_heads(block.attn, block.attention_input(x)))
        x = block(x)
    return layers


def _hyper_heads(attn: HyperAttention, x: Tensor) -> Tensor:
    """``(n_head, B*T*D)``: each generated head's output through its generated output columns."""
    _, o, _ = attn.head_weights()
    per_head = torch.einsum("bhtd,hed->hbte", attn.heads(x), o)  # (H, B, T, D)
    return per_head.reshape(attn.n_head, -1)


def _baseline_heads(model, idx: Tensor) -> list[Tensor]:
    """Per layer: ``(n_head, B*T*D)`` contributions of each head of a GPT (baseline, NAS or
    hypernetwork arm)."""
    B, T = idx.shape
    x = model.drop(model.wte(idx) + model.wpe(torch.arange(T, device=idx.device)))
    layers = []
    for block in model.blocks:
        attn = block.attn
        if isinstance(attn, HyperAttention):
            layers.append(_hyper_heads(attn, block.ln_1(x)))
            x = block(x)
            continue
        h, d = attn.n_head, attn.head_dim
        q, k, v = attn.c_attn(block.ln_1(x)).split(h * d, dim=2)
        q, k, v = (t.view(B, T, h, d).transpose(1, 2) for t in (q, k, v))  # (B, H, T, d)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, d)
        w = attn.c_proj.weight.view(-1, h, d)  # (D, H, d)
        per_head = torch.einsum("bhtd,ehd->hbte", y, w)  # (H, B, T, D)
        layers.append(per_head.reshape(h, -1))
        x = block(x)
    return layers


@torch.no_grad()
def head_contributions(model, idx: Tensor) -> list[Tensor]:
    """Each layer's head contributions ``(n_heads, B*T*D)`` on ``idx`` ``(B, T)``, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, SlimeModel):
            return _slime_heads(model, idx)
        return _baseline_heads(model, idx)
    finally:
        model.train(was_training)


def mean_abs_cosine(heads: Tensor, *, min_norm: float = 1e-8) -> float | None:
    """Mean pairwise ``|cosine|`` between the rows of ``heads`` ``(n, F)``: 1 when every head
    points the same way (or exactly opposite), 0 when they are mutually orthogonal.

    Rows of (near) zero norm, such as quiet newborn pods whose output projection is still zero,
    have no direction and are left out; None when fewer than two rows are left.
    """
    if heads.dim() != 2:
        raise ConfigError(f"expected (n, F) head outputs, got shape {tuple(heads.shape)}", "heads")
    heads = heads.float()
    heads = heads[heads.norm(dim=1) > min_norm]
    n = heads.shape[0]
    if n < 2:
        return None
    unit = heads / heads.norm(dim=1, keepdim=True)
    cos = (unit @ unit.T).abs()
    return cos[~torch.eye(n, dtype=torch.bool, device=cos.device)].mean().item()


def head_similarity(model, idx: Tensor, *, min_norm: float = 1e-8) -> float | None:
    """Mean over layers of :func:`mean_abs_cosine` of the head contributions (None when no layer
    has two heads with a direction)."""
    values = [mean_abs_cosine(h, min_norm=min_norm) for h in head_contributions(model, idx)]
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None
