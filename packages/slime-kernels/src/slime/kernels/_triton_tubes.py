"""One launch that writes a tube-ring entry: every slot's mean l1/l2 ratio of its head outputs.

The torch definition (:func:`slime.kernels.torch_fallback.feed_tubes`) is about fifteen small
kernels per call (abs, two reductions, a division, ``nanmean``'s five, the ring write and the
position's advance), launched for every layer of every training forward inside an observation
window: on an eager GPU step that is host time, not device time. Here one grid does all of it.

Program ``(p, c)`` reduces chunk ``c`` of slot ``p``'s ``B * T`` rows to a sum of finite ratios
and their count, in fp32, and stores them in its own scratch cell. The last chunk of a slot to
finish (an ``acq_rel`` counter per slot) adds the cells in chunk order (the same sum every run),
writes ``sum / count`` (NaN when the slot had no row with a non-zero output) at the ring
position, and re-arms its counter; the last slot to finish (a second counter) advances the
position. The counters are back at zero when the grid ends, so the workspace
(:func:`slime.kernels.functional.tube_workspace`) is zeroed once, when it is made; launches that share it must be
ordered (one stream), as a module's forwards are.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from slime.kernels._triton_launch import Launcher
from slime.kernels.functional import TUBE_MAX_CHUNKS as MAX_CHUNKS
from torch import Tensor

__all__ = ["MAX_CHUNKS", "feed_tubes"]

BLOCK_R = 64  # rows per tile


@triton.jit
def _tube_kernel(H, TRACE, POS, CELLS, COUNT, rows, seq, span, ring, s_b, s_p, s_t,
                 D: tl.constexpr, BD: tl.constexpr, BLOCK: tl.constexpr, CHUNKS: tl.constexpr):  # fmt: skip
    p = tl.program_id(0)
    c = tl.program_id(1)
    pool = tl.num_programs(0)
    offs_d = tl.arange(0, BD)
    d_in = offs_d < D
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    count = tl.zeros((BLOCK,), dtype=tl.float32)
    start = c * span
    stop = tl.minimum(start + span, rows)
    for r0 in range(start, stop, BLOCK):
        r = (r0 + tl.arange(0, BLOCK)).to(tl.int64)
        r_in = r < stop
        b = r // seq
        row = H + b * s_b + p.to(tl.int64) * s_p + (r - b * seq) * s_t
        x = tl.load(row[:, None] + offs_d[None, :], mask=r_in[:, None] & d_in[None, :], other=0.0)
        x = x.to(tl.float32)
        l1 = tl.sum(tl.abs(x), axis=1)
        l2 = tl.sqrt(tl.sum(x * x, axis=1))
        ratio = l1 / tl.where(l2 > 0, l2, 1.0)
        ok = r_in & (l2 > 0) & (ratio == ratio)  # what nanmean keeps: no 0/0, no NaN or inf
        total += tl.where(ok, ratio, 0.0)
        count += ok.to(tl.float32)
    cell = CELLS + (p * CHUNKS + c) * 2
    tl.store(cell, tl.sum(total, axis=0))
    tl.store(cell + 1, tl.sum(count, axis=0))
    tl.debug_barrier()
    done = tl.atomic_add(COUNT + p, 1, sem="acq_rel")  # publishes this chunk's cell
    if done == CHUNKS - 1:
        cells = CELLS + (p * CHUNKS + tl.arange(0, CHUNKS)) * 2
        s = tl.sum(tl.load(cells, cache_modifier=".cg"), axis=0)
        n = tl.sum(tl.load(cells + 1, cache_modifier=".cg"), axis=0)
        mean = tl.where(n > 0, s / tl.where(n > 0, n, 1.0), float("nan"))
        pos = tl.load(POS)
        tl.store(TRACE + pos * pool + p, mean.to(TRACE.dtype.element_ty))
        tl.atomic_xchg(COUNT + p, 0)  # re-armed for the next launch
        finished = tl.atomic_add(COUNT + pool, 1, sem="acq_rel")
        if finished == pool - 1:  # every slot has read the position: advance it
            tl.store(POS, (pos + 1) % ring)
            tl.atomic_xchg(COUNT + pool, 0)


_TUBES = Launcher(_tube_kernel)


@functools.cache
def _sm_count(index: int) -> int:
    """SMs of CUDA device ``index``, read once (this runs on every observed forward of a layer)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


def chunks_for(rows: int, pool: int, device: torch.device) -> int:
    """Programs per slot: enough for the grid to cover the SMs twice, at most one per tile of
    rows and :data:`MAX_CHUNKS`; a power of two. One in the interpreter."""
    if os.environ.get("TRITON_INTERPRET") == "1" or device.type != "cuda":
        return 1
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    want = min(MAX_CHUNKS, max(1, -(-2 * sms // max(pool, 1))), max(1, -(-rows // BLOCK_R)))
    return 1 << (want.bit_length() - 1)


def feed_tubes(
    heads: Tensor, trace: Tensor, pos: Tensor, workspace: Tensor, chunks: int | None = None
) -> None:
    """:func:`slime.kernels.torch_fallback.feed_tubes` in one launch (see the module docstring).

    ``heads`` ``(B, P, T, d)`` with a unit last stride; ``trace`` ``(R, P)`` contiguous,
    ``R > 0``; ``pos`` an integer scalar; ``workspace`` ``(tube_workspace_words(P),)`` int32, zero
    before its first use (its counters are zero again after each call; the cells are scratch).
    ``chunks``: programs per slot, a power of two up to :data:`MAX_CHUNKS` (None:
    :func:`chunks_for`). The caller checks all of this
    (:func:`slime.kernels.functional.feed_tubes`)."""
    batch, pool, seq, d = heads.shape
    rows = batch * seq
    chunks = chunks_for(rows, pool, heads.device) if chunks is None else chunks
    span = -(-rows // chunks)
    counters = workspace[: pool + 1]
    cells = workspace[pool + 1 : pool + 1 + 2 * pool * chunks].view(torch.float32)
    s_b, s_p, s_t, _ = heads.stride()
    _TUBES(
        (pool, chunks), heads, trace, pos, cells, counters, rows, seq, span, trace.shape[0],
        s_b, s_p, s_t, D=d, BD=max(16, triton.next_power_of_2(d)), BLOCK=BLOCK_R, CHUNKS=chunks,
    )  # fmt: skip
