"""Flash-attention-style Triton kernels for pool attention (forward, and backward as two kernels).

One program per (query block, batch * pool slot) in the forward and the dQ kernel, one per
(key block, batch * pool slot) in the dK/dV kernel, so the backward needs no atomics. Logits,
softmax statistics and all accumulators are fp32; fp32 inputs use IEEE-precision ``tl.dot`` (no
TF32) so they match the torch fallback. The softmax runs in base 2 (``exp2``), with ``log2(e)``
folded into the scale; ``lse`` is stored in natural log, ``-inf`` for a query with no visible key.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from slime.kernels import utils
from torch import Tensor

__all__ = ["backward", "forward"]

_LOG2E = 1.4426950408889634  # log2(e): exp(x) == exp2(x * _LOG2E)


@triton.jit
def _visible(
    offs_m,
    offs_n,
    seq,
    kpm_row,
    live,
    CAUSAL: tl.constexpr,
    HAS_KPM: tl.constexpr,
):
    """(BLOCK_M, BLOCK_N) bool: query offs_m may see key offs_n."""
    vis = (offs_n[None, :] < seq) & (offs_m[:, None] >= 0) & live
    if CAUSAL:
        vis = vis & (offs_n[None, :] <= offs_m[:, None])
    if HAS_KPM:
        keep = tl.load(kpm_row + offs_n, mask=offs_n < seq, other=0)
        vis = vis & (keep[None, :] != 0)
    return vis


@triton.jit
def _fwd_kernel(
    Q, K, V, OUT, LSE, KPM, ALIVE,
    sq_b, sq_p, sq_t, sk_b, sk_p, sk_t, sv_b, sv_p, sv_t, so_b, so_p, so_t,
    pool, seq, qk_scale,
    CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_ALIVE: tl.constexpr,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    start_m = tl.program_id(0) * BLOCK_M
    bp = tl.program_id(1)
    b = (bp // pool).to(tl.int64)
    p = (bp % pool).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q = tl.load(
        Q + b * sq_b + p * sq_p + offs_m[:, None] * sq_t + offs_d[None, :],
        mask=offs_m[:, None] < seq,
        other=0.0,
    )
    live = True
    if HAS_ALIVE:
        live = tl.load(ALIVE + p) != 0
    hi = seq
    if CAUSAL:
        hi = tl.minimum(seq, start_m + BLOCK_M)
    hi = tl.where(live, hi, 0)
    kpm_row = KPM + b * seq
    k_base = K + b * sk_b + p * sk_p
    v_base = V + b * sv_b + p * sv_p
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        in_seq = offs_n[:, None] < seq
        k = tl.load(k_base + offs_n[:, None] * sk_t + offs_d[None, :], mask=in_seq, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * sv_t + offs_d[None, :], mask=in_seq, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        vis = _visible(offs_m, offs_n, seq, kpm_row, live, CAUSAL, HAS_KPM)
        s = tl.where(vis, s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        pr = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(pr, axis=1)
        acc = acc * alpha[:, None] + tl.dot(pr.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    has_key = l_i > 0
    out = acc / tl.where(has_key, l_i, 1.0)[:, None]
    lse = tl.where(
        has_key, (m_i + tl.log2(tl.where(has_key, l_i, 1.0))) / 1.4426950408889634, -float("inf")
    )
    tl.store(
        OUT + b * so_b + p * so_p + offs_m[:, None] * so_t + offs_d[None, :],
        out.to(OUT.dtype.element_ty),
        mask=offs_m[:, None] < seq,
    )
    tl.store(LSE + bp.to(tl.int64) * seq + offs_m, lse, mask=offs_m < seq)


@triton.jit
def _probabilities(q, k, lse2, offs_m, offs_n, seq, kpm_row, live, qk_scale,
                   CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """(BLOCK_M, BLOCK_N) softmax probabilities recomputed from the saved base-2 logsumexp."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    vis = _visible(offs_m, offs_n, seq, kpm_row, live, CAUSAL, HAS_KPM)
    return tl.where(vis, tl.exp2(s - lse2[:, None]), 0.0)


@triton.jit
def _bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, KPM, ALIVE,
    sq_b, sq_p, sq_t, sk_b, sk_p, sk_t, sv_b, sv_p, sv_t, sd_b, sd_p, sd_t,
    pool, seq, qk_scale, scale,
    CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_ALIVE: tl.constexpr,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """dK, dV for one key block; ``DO``, ``DK``, ``DV`` share strides ``sd_*`` (contiguous)."""
    start_n = tl.program_id(0) * BLOCK_N
    bp = tl.program_id(1)
    b = (bp // pool).to(tl.int64)
    p = (bp % pool).to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    in_seq = offs_n[:, None] < seq
    k = tl.load(
        K + b * sk_b + p * sk_p + offs_n[:, None] * sk_t + offs_d[None, :], mask=in_seq, other=0.0
    )
    v = tl.load(
        V + b * sv_b + p * sv_p + offs_n[:, None] * sv_t + offs_d[None, :], mask=in_seq, other=0.0
    )
    live = True
    if HAS_ALIVE:
        live = tl.load(ALIVE + p) != 0
    lo = 0
    if CAUSAL:
        lo = (start_n // BLOCK_M) * BLOCK_M
    hi = tl.where(live, seq, lo)
    kpm_row = KPM + b * seq
    q_base = Q + b * sq_b + p * sq_p
    do_base = DO + b * sd_b + p * sd_p
    row_base = bp.to(tl.int64) * seq
    dk = tl.zeros([BLOCK_N, D], tl.float32)
    dv = tl.zeros([BLOCK_N, D], tl.float32)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_in = offs_m < seq
        q = tl.load(
            q_base + offs_m[:, None] * sq_t + offs_d[None, :], mask=m_in[:, None], other=0.0
        )
        do = tl.load(
            do_base + offs_m[:, None] * sd_t + offs_d[None, :], mask=m_in[:, None], other=0.0
        )
        lse = tl.load(LSE + row_base + offs_m, mask=m_in, other=0.0)
        lse2 = tl.where(lse == -float("inf"), 0.0, lse * 1.4426950408889634)
        delta = tl.load(DELTA + row_base + offs_m, mask=m_in, other=0.0)
        pr = _probabilities(
            q, k, lse2, offs_m, offs_n, seq, kpm_row, live, qk_scale, CAUSAL, HAS_KPM, PRECISION
        )
        dv += tl.dot(tl.trans(pr.to(do.dtype)), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = pr * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
    dk = dk * scale
    tile = b * sd_b + p * sd_p + offs_n[:, None] * sd_t + offs_d[None, :]
    tl.store(DK + tile, dk.to(DK.dtype.element_ty), mask=in_seq)
    tl.store(DV + tile, dv.to(DV.dtype.element_ty), mask=in_seq)


@triton.jit
def _bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, KPM, ALIVE,
    sq_b, sq_p, sq_t, sk_b, sk_p, sk_t, sv_b, sv_p, sv_t, sd_b, sd_p, sd_t,
    pool, seq, qk_scale, scale,
    CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_ALIVE: tl.constexpr,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """dQ for one query block; ``DO`` and ``DQ`` share strides ``sd_*`` (contiguous)."""
    start_m = tl.program_id(0) * BLOCK_M
    bp = tl.program_id(1)
    b = (bp // pool).to(tl.int64)
    p = (bp % pool).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    m_in = offs_m < seq
    row_base = bp.to(tl.int64) * seq
    q = tl.load(
        Q + b * sq_b + p * sq_p + offs_m[:, None] * sq_t + offs_d[None, :],
        mask=m_in[:, None],
        other=0.0,
    )
    do = tl.load(
        DO + b * sd_b + p * sd_p + offs_m[:, None] * sd_t + offs_d[None, :],
        mask=m_in[:, None],
        other=0.0,
    )
    lse = tl.load(LSE + row_base + offs_m, mask=m_in, other=0.0)
    lse2 = tl.where(lse == -float("inf"), 0.0, lse * 1.4426950408889634)
    delta = tl.load(DELTA + row_base + offs_m, mask=m_in, other=0.0)
    live = True
    if HAS_ALIVE:
        live = tl.load(ALIVE + p) != 0
    hi = seq
    if CAUSAL:
        hi = tl.minimum(seq, start_m + BLOCK_M)
    hi = tl.where(live, hi, 0)
    kpm_row = KPM + b * seq
    k_base = K + b * sk_b + p * sk_p
    v_base = V + b * sv_b + p * sv_p
    dq = tl.zeros([BLOCK_M, D], tl.float32)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        in_seq = offs_n[:, None] < seq
        k = tl.load(k_base + offs_n[:, None] * sk_t + offs_d[None, :], mask=in_seq, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * sv_t + offs_d[None, :], mask=in_seq, other=0.0)
        pr = _probabilities(
            q, k, lse2, offs_m, offs_n, seq, kpm_row, live, qk_scale, CAUSAL, HAS_KPM, PRECISION
        )
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = pr * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    dq = dq * scale
    tl.store(
        DQ + b * sd_b + p * sd_p + offs_m[:, None] * sd_t + offs_d[None, :],
        dq.to(DQ.dtype.element_ty),
        mask=m_in[:, None],
    )


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _config(d: int, device: torch.device, backward: bool) -> dict[str, int]:
    """Block sizes and launch shape. The interpreter pays per op, not per element: large blocks."""
    if device.type != "cuda" or _interpreted():
        return {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}
    if backward:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
    big = d > 64
    return {
        "BLOCK_M": 128,
        "BLOCK_N": 32 if big else 64,
        "num_warps": 8 if big else 4,
        "num_stages": 3,
    }


def _mask_args(q: Tensor, key_padding_mask: Tensor | None, alive: Tensor | None):
    dummy = q.new_empty(1, dtype=torch.uint8)
    kpm = dummy if key_padding_mask is None else key_padding_mask.contiguous().view(torch.uint8)
    live = dummy if alive is None else alive.contiguous().view(torch.uint8)
    return kpm, live


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool,
    scale: float,
    key_padding_mask: Tensor | None,
    alive: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """``(out (B, P, T, d), lse (B, P, T) float32)``; inputs already validated by the caller."""
    utils.check_head_dim(q.shape[-1], utils.TRITON_HEAD_DIMS)
    batch, pool, seq, d = q.shape
    nbytes = q.numel() * q.element_size() + batch * pool * seq * 4
    utils.check_free_memory(nbytes, q.device, "triton pool attention output")
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, pool, seq), dtype=torch.float32, device=q.device)
    kpm, live = _mask_args(q, key_padding_mask, alive)
    cfg = _config(d, q.device, backward=False)
    grid = (triton.cdiv(seq, cfg["BLOCK_M"]), batch * pool)
    _fwd_kernel[grid](
        q, k, v, out, lse, kpm, live,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        pool, seq, scale * _LOG2E,
        CAUSAL=causal, HAS_KPM=key_padding_mask is not None, HAS_ALIVE=alive is not None,
        D=d, PRECISION=_precision(q.dtype), **cfg,
    )  # fmt: skip
    return out, lse


def backward(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lse: Tensor,
    delta: Tensor,
    causal: bool,
    scale: float,
    key_padding_mask: Tensor | None,
    alive: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` from the saved ``lse`` and ``delta = rowsum(dO * O) - dlse``."""
    batch, pool, seq, d = q.shape
    grad_out = grad_out.contiguous()
    lse, delta = lse.contiguous(), delta.contiguous().float()
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    kpm, live = _mask_args(q, key_padding_mask, alive)
    cfg = _config(d, q.device, backward=True)
    common = dict(
        CAUSAL=causal, HAS_KPM=key_padding_mask is not None, HAS_ALIVE=alive is not None,
        D=d, PRECISION=_precision(q.dtype), **cfg,
    )  # fmt: skip
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *grad_out.stride()[:3])
    grid_n = (triton.cdiv(seq, cfg["BLOCK_N"]), batch * pool)
    _bwd_dkdv_kernel[grid_n](
        q, k, v, grad_out, lse, delta, dk, dv, kpm, live,
        *strides, pool, seq, scale * _LOG2E, scale, **common,
    )  # fmt: skip
    grid_m = (triton.cdiv(seq, cfg["BLOCK_M"]), batch * pool)
    _bwd_dq_kernel[grid_m](
        q, k, v, grad_out, lse, delta, dq, kpm, live,
        *strides, pool, seq, scale * _LOG2E, scale, **common,
    )  # fmt: skip
    return dq, dk, dv
