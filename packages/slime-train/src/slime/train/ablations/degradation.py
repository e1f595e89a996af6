"""Graceful degradation: held-out loss as heads are removed at test time, most or least important
first.

For ``k = 0..P`` (``P`` the most heads any layer has) every layer loses ``min(k, its heads)``
heads at once, in the order of each head's importance within its layer, and the loss on the fixed
held-out batches is measured. A removed head's output is zeroed before the output projection:
slime through :meth:`Organism.ablate` (the pod stays alive but leaves the attention), the GPTs
(baseline, NAS) through a pre-hook on ``c_proj`` that zeroes the head's slice of its input, the
hypernetwork arm through its attentions' ``head_mask``.

Importance is each head's single-ablation loss increase on a probe batch (the trainer's lifecycle
probe, a training batch); for slime it is the pod's fitness, what the lifecycle itself ranks by.
:func:`degradation_area` summarises a curve as the area under ``loss(k) - loss(0)`` against the
fraction ``k / P`` of heads removed (trapezoids; 0 = removing heads costs nothing), so arms with
different head counts are compared over the same axis.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from slime.core import SlimeModel
from slime.proto import ConfigError
from slime.train.ablations.hypernet import HyperAttention
from slime.train.ablations.probes import heldout_eval
from torch import Tensor, nn

__all__ = [
    "degradation_area",
    "degradation_curves",
    "head_importance",
    "heads_per_layer",
    "removal_plan",
    "removed_heads",
]

Plan = dict[int, list[int]]  # layer -> heads (slots for slime) removed


def heads_per_layer(model: nn.Module) -> list[list[int]]:
    """Each layer's heads: slime's live slots, or ``range(n_head)`` of a GPT-style attention."""
    if isinstance(model, SlimeModel):
        return [o.live_slots() for o in model.organisms]
    return [list(range(block.attn.n_head)) for block in model.blocks]


def _zero_head_inputs(heads: list[int], width: int):
    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        (y,) = args
        keep = torch.ones(y.shape[-1], dtype=y.dtype, device=y.device)
        for h in heads:
            keep[h * width : (h + 1) * width] = 0
        return (y * keep,)

    return hook


@contextlib.contextmanager
def removed_heads(model: nn.Module, plan: Plan) -> Iterator[None]:
    """Inside the block, the heads of ``plan`` contribute nothing; everything is restored after.

    Raises:
        ConfigError: a layer or head the model does not have.
    """
    present = heads_per_layer(model)
    for layer, heads in plan.items():
        if not 0 <= layer < len(present):
            raise ConfigError(f"expected a layer in 0..{len(present) - 1}, got {layer}", "plan")
        unknown = sorted(set(heads) - set(present[layer]))
        if unknown:
            raise ConfigError(
                f"layer {layer} has heads {present[layer]}, got {unknown} to remove", "plan"
            )
    with contextlib.ExitStack() as stack:
        for layer, heads in plan.items():
            if not heads:
                continue
            if isinstance(model, SlimeModel):
                stack.enter_context(model.organisms[layer].ablate(heads))
                continue
            attn = model.blocks[layer].attn
            if isinstance(attn, HyperAttention):
                saved = attn.head_mask.clone()
                attn.head_mask[heads] = 0.0
                stack.callback(attn.head_mask.copy_, saved)
            else:
                hook = _zero_head_inputs(heads, attn.head_dim)
                stack.callback(attn.c_proj.register_forward_pre_hook(hook).remove)
        yield


def head_importance(model: nn.Module, probe: tuple[Tensor, Tensor]) -> list[dict[int, float]]:
    """Per layer ``{head: importance}``: slime's fitness, else each head's single-ablation loss
    increase on ``probe`` ``(idx, targets)``."""
    if isinstance(model, SlimeModel):
        return [{slot: float(o.fitness[slot]) for slot in o.live_slots()} for o in model.organisms]
    batches = [probe]
    base = heldout_eval(model, batches)["loss"]
    out = []
    for layer, heads in enumerate(heads_per_layer(model)):
        scores = {}
        for head in heads:
            with removed_heads(model, {layer: [head]}):
                scores[head] = heldout_eval(model, batches)["loss"] - base
        out.append(scores)
    return out


def removal_plan(importance: list[dict[int, float]], k: int, *, most_first: bool) -> Plan:
    """The ``min(k, n)`` most (or least) important heads of each layer (ties: lower id first)."""
    if k < 0:
        raise ConfigError(f"expected k >= 0 heads to remove, got {k}", "k")
    plan = {}
    for layer, scores in enumerate(importance):
        order = sorted(scores, key=lambda h: (-scores[h] if most_first else scores[h], h))
        plan[layer] = order[:k]
    return plan


def degradation_curves(
    model: nn.Module, heldout: list[tuple[Tensor, Tensor]], importance: list[dict[int, float]]
) -> dict[str, Any]:
    """Held-out loss for ``k = 0..P`` heads removed per layer, most and least important first."""
    counts = [len(scores) for scores in importance]
    top = max(counts)
    if top < 1:
        raise ConfigError(f"expected at least one head, got {counts} per layer", "importance")
    intact = heldout_eval(model, heldout)["loss"]
    curves: dict[str, Any] = {"heads": counts, "k": list(range(top + 1))}
    for key, most in (("most_first", True), ("least_first", False)):
        losses = [intact]
        for k in range(1, top + 1):
            with removed_heads(model, removal_plan(importance, k, most_first=most)):
                losses.append(heldout_eval(model, heldout)["loss"])
        curves[key] = losses
    return curves


def degradation_area(losses: list[float]) -> float:
    """Area under ``loss(k) - loss(0)`` over ``k / P`` in ``[0, 1]`` (trapezoids).

    Raises:
        ConfigError: fewer than two points (no head was removed).
    """
    if len(losses) < 2:
        raise ConfigError(f"expected losses for k = 0..P with P >= 1, got {losses}", "losses")
    rise = [v - losses[0] for v in losses]
    step = 1.0 / (len(losses) - 1)
    return sum((a + b) / 2 * step for a, b in zip(rise, rise[1:]))
