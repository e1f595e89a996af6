"""FrozenSlimeLM: a SlimeModel's live pool captured at one moment, with no lifecycle left.

A living :class:`~slime.core.SlimeModel` keeps each layer's pods in a slot table padded to a fixed
capacity with an ``alive`` mask, and keeps archives, chemotaxis and tubes beside them. None of that
belongs in a deployed model. Freezing slices each layer's live slots out of the table into one
q/k/v weight ``(3 * n * d, D)`` and one output weight ``(D, n * d)`` (``n`` live pods, dead slots
dropped, so nothing is padded), and keeps the embeddings, LayerNorms and MLPs as copies. The copy is
independent: births, deaths or training of the live model afterwards do not change it.

Attention is one call of the ``slime::pool_attention`` custom op per layer (backend ``"auto"``:
Triton on CUDA, the torch fallback elsewhere), so torch.export keeps the op whole and the ONNX
exporter translates it (see :mod:`slime.tools._onnx_attention`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from slime.core import SlimeModel
from slime.kernels import utils as kernel_utils
from slime.proto import ConfigError, DataError
from torch import Tensor, nn

__all__ = ["FrozenBlock", "FrozenSlimeLM", "freeze"]

# Importing slime.kernels registered the op; the frozen model calls it directly, without the
# Python-side validation of slime.kernels.pool_attention, which would put host-side checks of
# symbolic shapes into every export graph. FrozenSlimeLM validates its own input instead.
_POOL_ATTENTION = torch.ops.slime.pool_attention


def _frozen_copy(module: nn.Module) -> nn.Module:
    clone = copy.deepcopy(module)
    clone.requires_grad_(False)
    return clone


class FrozenBlock(nn.Module):
    """One pre-norm block with a fixed set of ``n_pods`` heads: ``(B, T, D) -> (B, T, D)``.

    Args:
        qkv_weight: ``(3 * n_pods * head_dim, D)``: q of every pod, then k, then v.
        qkv_bias: ``(3 * n_pods * head_dim,)`` or None.
        out_weight: ``(D, n_pods * head_dim)``.
        out_bias: ``(D,)`` or None.
        ln_1, ln_2, mlp: copies of the live block's modules.
    """

    def __init__(
        self,
        *,
        n_pods: int,
        head_dim: int,
        qkv_weight: Tensor,
        qkv_bias: Tensor | None,
        out_weight: Tensor,
        out_bias: Tensor | None,
        ln_1: nn.Module,
        ln_2: nn.Module,
        mlp: nn.Module,
    ):
        super().__init__()
        self.n_pods, self.head_dim = n_pods, head_dim
        self.scale = head_dim**-0.5
        # The Triton kernels take these head dims only; the op's torch backend takes any.
        self.backend = "auto" if head_dim in kernel_utils.TRITON_HEAD_DIMS else "torch"
        self.qkv_weight = nn.Parameter(qkv_weight.detach().clone(), requires_grad=False)
        self.qkv_bias = None if qkv_bias is None else nn.Parameter(qkv_bias.detach().clone(), False)
        self.out_weight = nn.Parameter(out_weight.detach().clone(), requires_grad=False)
        self.out_bias = None if out_bias is None else nn.Parameter(out_bias.detach().clone(), False)
        self.ln_1, self.ln_2, self.mlp = ln_1, ln_2, mlp

    def attend(self, x: Tensor) -> Tensor:
        """Causal attention of the frozen pods over ``x`` ``(B, T, D)``; returns ``(B, T, D)``."""
        batch, seq, width = x.shape
        if self.n_pods == 0:  # every pod of this layer had died: only the output bias is left
            zeros = x.new_zeros(batch, seq, width)
            return zeros if self.out_bias is None else zeros + self.out_bias
        n, d = self.n_pods, self.head_dim
        qkv = F.linear(x, self.qkv_weight, self.qkv_bias)
        q, k, v = qkv.view(batch, seq, 3, n, d).permute(2, 0, 3, 1, 4).unbind(0)  # (B, n, T, d)
        heads, _ = _POOL_ATTENTION(
            q.contiguous(),
            k.contiguous(),
            v.contiguous(),
            key_padding_mask=None,
            alive=None,
            causal=True,
            scale=self.scale,
            backend=self.backend,
        )  # (B, n, T, d); the op's second output is the logsumexp, unused here
        merged = heads.permute(0, 2, 1, 3).reshape(batch, seq, n * d)
        return F.linear(merged, self.out_weight, self.out_bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attend(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class FrozenSlimeLM(nn.Module):
    """Inference-only causal LM: ``idx`` ``(B, T)`` int64 -> ``logits`` ``(B, T, V)``; a position
    whose id lies outside ``[0, V)`` gets NaN logits (the same in every export format).

    Build it with :func:`freeze`. Attributes ``config`` (the SlimeConfig as a dict) and
    ``live_slots`` (per layer, the slots the frozen pods held) describe what was captured.
    """

    def __init__(
        self,
        *,
        config: dict[str, Any],
        live_slots: list[list[int]],
        wte: nn.Embedding,
        wpe: nn.Embedding,
        blocks: list[FrozenBlock],
        ln_f: nn.Module,
    ):
        super().__init__()
        self.config = dict(config)
        self.live_slots = [list(s) for s in live_slots]
        self.block_size = int(config["block_size"])
        self.wte, self.wpe, self.ln_f = wte, wpe, ln_f
        self.blocks = nn.ModuleList(blocks)

    @property
    def n_pods(self) -> list[int]:
        """Frozen pods per layer, bottom first."""
        return [block.n_pods for block in self.blocks]

    def forward(self, idx: Tensor) -> Tensor:
        if not torch.jit.is_tracing():  # a trace would bake these Python checks in as constants
            if idx.dim() != 2 or idx.dtype != torch.long:
                raise DataError(f"idx must be (B, T) int64, got {tuple(idx.shape)} {idx.dtype}")
            if idx.shape[1] > self.block_size:
                raise ConfigError(
                    f"sequence length {idx.shape[1]} exceeds block_size {self.block_size}",
                    "block_size",
                )
        # Ids outside the vocabulary get NaN logits at their position, in PyTorch and in every
        # export alike (ONNX's Gather would otherwise wrap a negative id around silently); the
        # embedding reads a clamped id, so nothing else changes.
        vocab = self.wte.num_embeddings
        valid = (idx >= 0) & (idx < vocab)
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx.clamp(0, vocab - 1)) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # the head is tied to the embedding
        return torch.where(valid.unsqueeze(-1), logits, torch.nan)


def _stack_layer(model: SlimeModel, layer: int) -> dict[str, Any]:
    """The live slots of ``layer`` sliced out of its slot table (slot order), ready for a
    FrozenBlock: dead slots are dropped, so the frozen layer has exactly ``n`` heads."""
    organism = model.organisms[layer]
    live = organism.live_slots()
    d, width = organism.head_dim, organism.n_embd
    index = torch.tensor(live, dtype=torch.long, device=organism.qkv_weight.device)
    # qkv_weight (3, P, d, D) -> (3, n, d, D) -> (3 n d, D): q of every pod, then k, then v.
    qkv_weight = (
        organism.qkv_weight.detach().index_select(1, index).reshape(3 * len(live) * d, width)
    )
    qkv_bias = (
        None
        if organism.qkv_bias is None
        else organism.qkv_bias.detach().index_select(1, index).reshape(3 * len(live) * d)
    )
    # o_weight (D, P, d) -> (D, n, d) -> (D, n d), columns in the merged heads' order.
    out_weight = organism.o_weight.detach().index_select(1, index).reshape(width, len(live) * d)
    return {
        "n_pods": len(live),
        "head_dim": d,
        "qkv_weight": qkv_weight,
        "qkv_bias": qkv_bias,
        "out_weight": out_weight,
        "out_bias": organism.out_bias,
    }


@torch.no_grad()
def freeze(model: SlimeModel) -> FrozenSlimeLM:
    """Capture ``model``'s live pods now into an independent :class:`FrozenSlimeLM` (eval mode).

    Raises:
        ConfigError: ``model`` is not a SlimeModel, or one of its blocks is post-norm (SlimeModel
            builds pre-norm blocks only; anything else was modified by hand).
    """
    if not isinstance(model, SlimeModel):
        raise ConfigError(f"expected a SlimeModel, got {type(model).__name__}", "model")
    blocks = []
    for layer, block in enumerate(model.blocks):
        if not block.norm_first:
            raise ConfigError(
                f"block {layer} is post-norm; SlimeModel blocks are pre-norm", "model"
            )
        blocks.append(
            FrozenBlock(
                **_stack_layer(model, layer),
                ln_1=_frozen_copy(block.ln_1),
                ln_2=_frozen_copy(block.ln_2),
                mlp=_frozen_copy(block.mlp),
            )
        )
    frozen = FrozenSlimeLM(
        config=model.config.to_dict(),
        live_slots=[organism.live_slots() for organism in model.organisms],
        wte=_frozen_copy(model.wte),
        wpe=_frozen_copy(model.wpe),
        blocks=blocks,
        ln_f=_frozen_copy(model.ln_f),
    )
    return frozen.eval()
