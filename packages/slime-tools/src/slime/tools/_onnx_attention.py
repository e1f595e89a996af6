"""The ``slime::pool_attention`` custom op in standard ONNX operators (opset 18).

torch.onnx's dynamo exporter cannot know what a custom op computes, so :func:`translation_table`
maps the op to :func:`pool_attention_onnx`, which the exporter calls with symbolic tensors (and
Python values for the op's scalar arguments) to emit the same function from MatMul, Softmax-style
reductions and Where. It follows slime.kernels.torch_fallback's definition: a key is visible when
it passes the causal rule, the key padding mask and its pod is alive; a query with no visible key
outputs 0 and has logsumexp ``-inf``. Every shape stays symbolic, so batch and sequence length
remain dynamic in the ONNX graph.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["pool_attention_onnx", "translation_table"]


def pool_attention_onnx(
    q: Any,
    k: Any,
    v: Any,
    key_padding_mask: Any | None,
    alive: Any | None,
    causal: bool,
    scale: float,
    backend: str,
) -> tuple[Any, Any]:
    """ONNX graph of the op: ``(B, P, T, d)`` q, k, v -> ``(out (B, P, T, d), lse (B, P, T))``.

    ``backend`` picks an implementation on the PyTorch side only; the ONNX graph is one function.
    """
    from onnxscript import opset18 as op

    del backend
    s = op.Mul(op.MatMul(q, op.Transpose(k, perm=[0, 1, 3, 2])), op.Constant(value_float=scale))
    visible = None  # broadcastable to (B, P, T, T); None: every key is visible
    if causal:
        seq = op.Squeeze(op.Shape(q, start=2, end=3))
        pos = op.Range(op.Constant(value_int=0), seq, op.Constant(value_int=1))
        visible = op.LessOrEqual(op.Unsqueeze(pos, [0]), op.Unsqueeze(pos, [1]))  # (T, T)
    if key_padding_mask is not None:
        kpm = op.Unsqueeze(key_padding_mask, [1, 2])  # (B, 1, 1, T)
        visible = kpm if visible is None else op.And(visible, kpm)
    if alive is not None:
        live = op.Unsqueeze(alive, [0, 2, 3])  # (1, P, 1, 1)
        visible = live if visible is None else op.And(visible, live)
    if visible is not None:
        s = op.Where(visible, s, op.Constant(value_float=-math.inf))
    zero = op.Constant(value_float=0.0)
    row_max = op.ReduceMax(s, [-1], keepdims=1)
    row_max = op.Where(op.IsInf(row_max), zero, row_max)  # rows with no visible key
    p = op.Exp(op.Sub(s, row_max))
    denom = op.ReduceSum(p, [-1], keepdims=1)
    safe = op.Where(op.Greater(denom, zero), denom, op.Constant(value_float=1.0))
    out = op.Div(op.MatMul(p, v), safe)
    lse = op.Squeeze(op.Add(op.Log(denom), row_max), [-1])  # log 0 = -inf with no visible key
    return out, lse


def translation_table() -> dict[Any, Any]:
    """``custom_translation_table`` for ``torch.onnx.export``: the op to its ONNX function."""
    import slime.kernels  # noqa: F401  (registers torch.ops.slime.pool_attention)

    return {torch.ops.slime.pool_attention.default: pool_attention_onnx}
