"""Flash-attention-style Triton kernels for pool attention (forward, and backward as two kernels).

One program per (query block, batch * pool slot) in the forward and the dQ kernel, one per
(key block, batch * pool slot) in the dK/dV kernel, so the backward needs no atomics. Logits,
softmax statistics and all accumulators are fp32; fp32 inputs use IEEE-precision ``tl.dot`` (no
TF32) so they match the torch fallback. The softmax runs in base 2 (``exp2``), with ``log2(e)``
folded into the scale; ``lse`` is stored in natural log, ``-inf`` for a query with no visible key.

Each key loop runs in two phases: blocks that every query of the program sees in full (no causal
or sequence-end compare) and the few blocks on the diagonal or at the sequence end (masked). A
dead pseudopod's loops are empty, so it costs a launch slot and writes zeros. Launches after the
first of each specialisation skip Triton's dispatcher (:mod:`slime.kernels._triton_launch`).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from slime.kernels import utils
from slime.kernels._triton_launch import Launcher
from torch import Tensor

__all__ = ["Config", "backward", "default_config", "forward"]

_LOG2E = 1.4426950408889634  # log2(e): exp(x) == exp2(x * _LOG2E)

Config = dict[str, int]  # BLOCK_M, BLOCK_N, num_warps, num_stages


@triton.jit
def _visible(offs_m, offs_n, seq, kpm_row,
             CAUSAL_MASK: tl.constexpr, SEQ_MASK: tl.constexpr, HAS_KPM: tl.constexpr):  # fmt: skip
    """(BLOCK_M, BLOCK_N) bool: query offs_m may see key offs_n (only the checks asked for)."""
    vis = (offs_m[:, None] >= 0) & (offs_n[None, :] >= 0)
    if SEQ_MASK:
        vis = vis & (offs_n[None, :] < seq)
    if CAUSAL_MASK:
        vis = vis & (offs_n[None, :] <= offs_m[:, None])
    if HAS_KPM:
        keep = tl.load(kpm_row + offs_n, mask=offs_n < seq, other=0)
        vis = vis & (keep[None, :] != 0)
    return vis


@triton.jit
def _fwd_phase(acc, l_i, m_i, q, k_base, v_base, sk_t, sv_t, offs_m, offs_d, kpm_row, seq,
               qk_scale, lo, hi,
               CAUSAL_MASK: tl.constexpr, SEQ_MASK: tl.constexpr, HAS_KPM: tl.constexpr,
               BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        in_seq = offs_n[:, None] < seq
        k = tl.load(k_base + offs_n[:, None] * sk_t + offs_d[None, :], mask=in_seq, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * sv_t + offs_d[None, :], mask=in_seq, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        if CAUSAL_MASK or SEQ_MASK or HAS_KPM:
            vis = _visible(offs_m, offs_n, seq, kpm_row, CAUSAL_MASK, SEQ_MASK, HAS_KPM)
            s = tl.where(vis, s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        pr = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(pr, axis=1)
        acc = acc * alpha[:, None] + tl.dot(pr.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


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
    m_in = offs_m[:, None] < seq
    q = tl.load(
        Q + b * sq_b + p * sq_p + offs_m[:, None] * sq_t + offs_d[None, :], mask=m_in, other=0.0
    )
    live = True
    if HAS_ALIVE:
        live = tl.load(ALIVE + p) != 0
    if CAUSAL:
        full_end = (start_m // BLOCK_N) * BLOCK_N  # keys below start_m: seen by every query here
        hi = tl.minimum(seq, start_m + BLOCK_M)
    else:
        full_end = (seq // BLOCK_N) * BLOCK_N
        hi = seq
    full_end = tl.where(live, full_end, 0)
    hi = tl.where(live, hi, 0)
    kpm_row = KPM + b * seq
    k_base = K + b * sk_b + p * sk_p
    v_base = V + b * sv_b + p * sv_p
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    acc, l_i, m_i = _fwd_phase(acc, l_i, m_i, q, k_base, v_base, sk_t, sv_t, offs_m, offs_d,
                               kpm_row, seq, qk_scale, 0, full_end,
                               False, False, HAS_KPM, BLOCK_N, PRECISION)  # fmt: skip
    acc, l_i, m_i = _fwd_phase(acc, l_i, m_i, q, k_base, v_base, sk_t, sv_t, offs_m, offs_d,
                               kpm_row, seq, qk_scale, full_end, hi,
                               CAUSAL, True, HAS_KPM, BLOCK_N, PRECISION)  # fmt: skip
    has_key = l_i > 0
    l_safe = tl.where(has_key, l_i, 1.0)
    out = acc / l_safe[:, None]
    lse = tl.where(has_key, (m_i + tl.log2(l_safe)) / 1.4426950408889634, -float("inf"))
    tl.store(OUT + b * so_b + p * so_p + offs_m[:, None] * so_t + offs_d[None, :],
             out.to(OUT.dtype.element_ty), mask=m_in)  # fmt: skip
    tl.store(LSE + bp.to(tl.int64) * seq + offs_m, lse, mask=offs_m < seq)


@triton.jit
def _dkdv_phase(dk, dv, k, v, q_base, do_base, sq_t, sd_t, LSE, DELTA, row_base, offs_n, offs_d,
                kpm_row, seq, qk_scale, lo, hi,
                CAUSAL_MASK: tl.constexpr, HAS_KPM: tl.constexpr,
                BLOCK_M: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    # Keys past the sequence end are never stored, and queries past it load as zeros (do = 0,
    # delta = 0), contributing nothing: only the causal and padding masks matter here.
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
        # Transposed tile (BLOCK_N, BLOCK_M): keys on rows, so no transpose of P or dS is needed.
        st = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale
        pt = tl.exp2(st - lse2[None, :])
        if CAUSAL_MASK:
            pt = tl.where(offs_n[:, None] <= offs_m[None, :], pt, 0.0)
        if HAS_KPM:
            keep = tl.load(kpm_row + offs_n, mask=offs_n < seq, other=0)
            pt = tl.where(keep[:, None] != 0, pt, 0.0)
        dv += tl.dot(pt.to(do.dtype), do, input_precision=PRECISION)
        dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(q.dtype), q, input_precision=PRECISION)
    return dk, dv


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
    if CAUSAL:
        lo = (start_n // BLOCK_M) * BLOCK_M
        # Query blocks from here on see every key of this block.
        mid = lo + tl.cdiv(start_n + BLOCK_N - lo, BLOCK_M) * BLOCK_M
    else:
        lo = 0
        mid = 0
    hi = tl.where(live, seq, lo)
    mid = tl.minimum(mid, hi)
    kpm_row = KPM + b * seq
    q_base = Q + b * sq_b + p * sq_p
    do_base = DO + b * sd_b + p * sd_p
    row_base = bp.to(tl.int64) * seq
    dk = tl.zeros([BLOCK_N, D], tl.float32)
    dv = tl.zeros([BLOCK_N, D], tl.float32)
    dk, dv = _dkdv_phase(dk, dv, k, v, q_base, do_base, sq_t, sd_t, LSE, DELTA, row_base, offs_n,
                         offs_d, kpm_row, seq, qk_scale, lo, mid,
                         CAUSAL, HAS_KPM, BLOCK_M, PRECISION)  # fmt: skip
    dk, dv = _dkdv_phase(dk, dv, k, v, q_base, do_base, sq_t, sd_t, LSE, DELTA, row_base, offs_n,
                         offs_d, kpm_row, seq, qk_scale, mid, hi,
                         False, HAS_KPM, BLOCK_M, PRECISION)  # fmt: skip
    dk = dk * scale
    tile = b * sd_b + p * sd_p + offs_n[:, None] * sd_t + offs_d[None, :]
    tl.store(DK + tile, dk.to(DK.dtype.element_ty), mask=in_seq)
    tl.store(DV + tile, dv.to(DV.dtype.element_ty), mask=in_seq)


@triton.jit
def _dq_phase(dq, q, do, lse2, delta, k_base, v_base, sk_t, sv_t, offs_m, offs_d, kpm_row, seq,
              qk_scale, lo, hi,
              CAUSAL_MASK: tl.constexpr, HAS_KPM: tl.constexpr,
              BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    # Keys past the sequence end load as zeros, so their dS * K term is 0: no sequence mask.
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        in_seq = offs_n[:, None] < seq
        k = tl.load(k_base + offs_n[:, None] * sk_t + offs_d[None, :], mask=in_seq, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * sv_t + offs_d[None, :], mask=in_seq, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        pr = tl.exp2(s - lse2[:, None])
        if CAUSAL_MASK or HAS_KPM:
            vis = _visible(offs_m, offs_n, seq, kpm_row, CAUSAL_MASK, False, HAS_KPM)
            pr = tl.where(vis, pr, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = pr * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    return dq


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
    if CAUSAL:
        full_end = (start_m // BLOCK_N) * BLOCK_N
        hi = tl.minimum(seq, start_m + BLOCK_M)
    else:
        full_end = seq
        hi = seq
    full_end = tl.where(live, full_end, 0)
    hi = tl.where(live, hi, 0)
    kpm_row = KPM + b * seq
    k_base = K + b * sk_b + p * sk_p
    v_base = V + b * sv_b + p * sv_p
    dq = tl.zeros([BLOCK_M, D], tl.float32)
    dq = _dq_phase(dq, q, do, lse2, delta, k_base, v_base, sk_t, sv_t, offs_m, offs_d, kpm_row,
                   seq, qk_scale, 0, full_end, False, HAS_KPM, BLOCK_N, PRECISION)  # fmt: skip
    dq = _dq_phase(dq, q, do, lse2, delta, k_base, v_base, sk_t, sv_t, offs_m, offs_d, kpm_row,
                   seq, qk_scale, full_end, hi, CAUSAL, HAS_KPM, BLOCK_N, PRECISION)  # fmt: skip
    dq = dq * scale
    tl.store(DQ + b * sd_b + p * sd_p + offs_m[:, None] * sd_t + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=m_in[:, None])  # fmt: skip


@triton.jit
def _bwd_delta_kernel(OUT, DO, GLSE, DELTA, rows, HAS_GLSE: tl.constexpr,
                      D: tl.constexpr, BLOCK_R: tl.constexpr):  # fmt: skip
    """``delta = rowsum(out * dO) - dlse`` over contiguous ``(rows, D)`` tensors, in fp32."""
    offs_r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, D)
    r_in = offs_r < rows
    tile = offs_r[:, None] * D + offs_d[None, :]
    o = tl.load(OUT + tile, mask=r_in[:, None], other=0.0).to(tl.float32)
    do = tl.load(DO + tile, mask=r_in[:, None], other=0.0).to(tl.float32)
    delta = tl.sum(o * do, axis=1)
    if HAS_GLSE:
        delta -= tl.load(GLSE + offs_r, mask=r_in, other=0.0)
    tl.store(DELTA + offs_r, delta, mask=r_in)


# One launcher per kernel: each caches the compiled handles of its specialisations.
_FWD = Launcher(_fwd_kernel)
_BWD_DELTA = Launcher(_bwd_delta_kernel)
_BWD_DKDV = Launcher(_bwd_dkdv_kernel)
_BWD_DQ = Launcher(_bwd_dq_kernel)


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def default_config(kernel: str, d: int, device: torch.device) -> Config:
    """Block sizes and launch shape of ``kernel`` in ``("fwd", "dkdv", "dq")``.

    The interpreter pays per op, not per element: one large block shape for all. GPU values come
    from the sweep in ``slime.kernels.bench`` (see BENCHMARKS.md).
    """
    if device.type != "cuda" or _interpreted():
        return {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}
    big = d > 64
    if kernel == "fwd":
        if big:
            return {"BLOCK_M": 128, "BLOCK_N": 32, "num_warps": 8, "num_stages": 4}
        return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
    if kernel == "dkdv":
        return {"BLOCK_M": 32 if big else 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
    return {"BLOCK_M": 64, "BLOCK_N": 32 if big else 64, "num_warps": 4, "num_stages": 3}


def _mask_args(q: Tensor, key_padding_mask: Tensor | None, alive: Tensor | None):
    dummy = q  # never read: HAS_KPM / HAS_ALIVE are False when a mask is absent
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
    config: Config | None = None,
) -> tuple[Tensor, Tensor]:
    """``(out (B, P, T, d), lse (B, P, T) float32)``; inputs already validated by the caller.

    Both are fresh contiguous tensors whatever the inputs' strides (the custom op's fake says so).
    """
    utils.check_head_dim(q.shape[-1], utils.TRITON_HEAD_DIMS)
    batch, pool, seq, d = q.shape
    # No free-memory query here (~7 us of host time per call): the outputs are the size of q,
    # and an allocation that does not fit raises torch's OutOfMemoryError naming its size.
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, pool, seq), dtype=torch.float32, device=q.device)
    kpm, live = _mask_args(q, key_padding_mask, alive)
    cfg = config or default_config("fwd", d, q.device)
    grid = (triton.cdiv(seq, cfg["BLOCK_M"]), batch * pool)
    _FWD(
        grid, q, k, v, out, lse, kpm, live,
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
    out: Tensor,
    lse: Tensor,
    grad_lse: Tensor | None,
    causal: bool,
    scale: float,
    key_padding_mask: Tensor | None,
    alive: Tensor | None,
    configs: tuple[Config, Config] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` from the forward's ``out`` and ``lse`` and the output gradients.

    The gradients are fresh contiguous tensors in the dtypes of ``q``, ``k`` and ``v``, whatever the
    inputs' strides (the custom op's fake says so).

    ``configs``: the dK/dV and dQ kernels' launch configs; None uses :func:`default_config`.
    """
    batch, pool, seq, d = q.shape
    grad_out, out, lse = grad_out.contiguous(), out.contiguous(), lse.contiguous()
    rows = batch * pool * seq
    delta = torch.empty((batch, pool, seq), dtype=torch.float32, device=q.device)
    glse = lse if grad_lse is None else grad_lse.contiguous().float()
    block_r = 64 if _interpreted() or q.device.type != "cuda" else 32
    _BWD_DELTA(
        (triton.cdiv(rows, block_r),), out, grad_out, glse, delta, rows,
        HAS_GLSE=grad_lse is not None, D=d, BLOCK_R=block_r,
    )  # fmt: skip
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    kpm, live = _mask_args(q, key_padding_mask, alive)
    if configs is None:
        configs = (default_config("dkdv", d, q.device), default_config("dq", d, q.device))
    flags = dict(
        CAUSAL=causal, HAS_KPM=key_padding_mask is not None, HAS_ALIVE=alive is not None,
        D=d, PRECISION=_precision(q.dtype),
    )  # fmt: skip
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *grad_out.stride()[:3])
    cfg = configs[0]
    _BWD_DKDV(
        (triton.cdiv(seq, cfg["BLOCK_N"]), batch * pool), q, k, v, grad_out, lse, delta, dk, dv,
        kpm, live,
        *strides, pool, seq, scale * _LOG2E, scale, **flags, **cfg,
    )  # fmt: skip
    cfg = configs[1]
    _BWD_DQ(
        (triton.cdiv(seq, cfg["BLOCK_M"]), batch * pool), q, k, v, grad_out, lse, delta, dq, kpm,
        live,
        *strides, pool, seq, scale * _LOG2E, scale, **flags, **cfg,
    )  # fmt: skip
    return dq, dk, dv
