"""Effective rank in one Triton program per matrix, with no eigensolver library and no host sync.

Exact method, two classical stages (Golub & Van Loan ch. 8), both in fp32 registers:

1. Householder tridiagonalisation ``A -> Q^T A Q = tridiag(d, e)``: ``n - 2`` symmetric rank-2
   updates of the ``(n, n)`` tile (a 64-square tile shrinks to its trailing block as columns
   finish), each a handful of row/column reductions; orthogonal, so the eigenvalues are kept to
   ``O(n * eps * |A|)``.
2. All eigenvalues of the tridiagonal at once by Sturm-count *multisection*: eigenvalue ``j`` lies
   in ``[lo_j, hi_j]`` (Gershgorin bounds at first); each iteration evaluates the Sturm count
   (number of negative pivots of ``T - x I``, which is the number of eigenvalues below ``x``) at
   ``SHIFTS`` points of every interval together, shrinking it ``SHIFTS + 1``-fold.

Then ``exp(-sum p log p)`` with ``p = lambda / sum(lambda)`` (negatives from rounding count as 0; the
zero matrix has effective rank 0), as :func:`slime.kernels.torch_fallback.entropy_rank` defines it.
The lower triangle is read, as ``torch.linalg.eigvalsh`` does.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from slime.kernels import utils
from slime.proto import KernelError
from torch import Tensor

__all__ = ["MAX_N", "effective_rank"]

MAX_N = 128  # the (n, n) fp32 tile lives in registers: 64 per thread at 8 warps


@triton.jit
def _add_pairs(a0, a1, b0, b1):
    return a0 + b0, a1 + b1


@triton.jit
def _householder_steps(a, steps, BN: tl.constexpr):
    """Apply Householder steps ``k = 0 .. steps - 1`` to the symmetric ``(BN, BN)`` tile ``a``:
    step ``k`` zeroes column ``k`` below its sub-diagonal with a symmetric rank-2 update."""
    ridx = tl.arange(0, BN)
    cols = tl.arange(0, BN)[None, :]
    for k in range(0, steps):
        x = tl.sum(tl.where(cols == k, a, 0.0), axis=1)  # column k, rows below the diagonal
        x = tl.where(ridx > k, x, 0.0)
        # |x|^2 and x[k + 1] in one reduction: one cross-warp exchange instead of two.
        norm2, x0 = tl.reduce((x * x, tl.where(ridx == k + 1, x, 0.0)), 0, _add_pairs)
        norm = tl.sqrt(norm2)
        alpha = tl.where(x0 >= 0, -norm, norm)  # opposite sign to x0: no cancellation in v
        v = x - tl.where(ridx == k + 1, alpha, 0.0)
        vn2 = 2.0 * (norm2 + norm * tl.abs(x0))  # |v|^2, without another reduction
        tau = tl.where(vn2 > 0, 2.0 / tl.where(vn2 > 0, vn2, 1.0), 0.0)
        # One copy of v and w serves rows and columns (the compiler moves it between layouts),
        # so the update stays symmetric; recomputing the column copies from column sums instead
        # let rounding asymmetry grow ~5x per step.
        p = tau * tl.sum(a * v[None, :], axis=1)
        kk = 0.5 * tau * tl.sum(v * p, axis=0)
        w = p - kk * v
        a = a - (v[:, None] * w[None, :] + w[:, None] * v[None, :])
    return a


@triton.jit
def _store_tridiagonal(a, DIAG, OFFD2, d_rows, e_lo, e_hi, BN: tl.constexpr):
    """Store the tile's diagonal (rows ``< d_rows``) and squared sub-diagonal ``T[r, r - 1]^2``
    (rows ``e_lo <= r <= e_hi``) at ``DIAG[r]`` and ``OFFD2[r]``."""
    ridx = tl.arange(0, BN)
    rows = ridx[:, None]
    cols = tl.arange(0, BN)[None, :]
    d = tl.sum(tl.where(rows == cols, a, 0.0), axis=1)
    e = tl.sum(tl.where(cols == rows - 1, a, 0.0), axis=1)
    tl.store(DIAG + ridx, d, mask=ridx < d_rows)
    tl.store(OFFD2 + ridx, e * e, mask=(ridx >= e_lo) & (ridx <= e_hi))


@triton.jit
def _trailing_block(a, BN: tl.constexpr):
    """``a[BN/2:, BN/2:]`` as a ``(BN/2, BN/2)`` tile, moved between registers (no memory)."""
    HALF: tl.constexpr = BN // 2
    t = tl.permute(tl.reshape(a, (2, HALF, 2, HALF)), (1, 3, 0, 2))  # [r, c, row half, col half]
    _, t = tl.split(t)  # the column half from BN/2
    _, t = tl.split(t)  # the row half from BN/2
    return t


@triton.jit
def _tridiagonalize(M, DIAG, OFFD2, sm_p, sm_r, sm_c, n, pid, BN: tl.constexpr):
    """Reduce matrix ``pid`` (lower triangle mirrored) to tridiagonal form; store its diagonal at
    ``DIAG[0:BN]`` and squared sub-diagonal ``e[r - 1]^2`` at ``OFFD2[r]`` (0 at row 0 and past n).

    For a 64-square tile, steps 0-31 run on the whole tile, 32-47 on its trailing 32-square block and
    the rest on the trailing 16-square block of that: only the trailing rows are left to reduce, and
    a step on a block half as wide does a quarter of the arithmetic. (Staging 128-square tiles
    measured slower: the block is moved through 64 KB of shared memory.)
    """
    ridx = tl.arange(0, BN)
    rows = ridx[:, None]
    cols = tl.arange(0, BN)[None, :]
    inside = (rows < n) & (cols < n)
    src = M + pid * sm_p + tl.maximum(rows, cols) * sm_r + tl.minimum(rows, cols) * sm_c
    a = tl.load(src, mask=inside, other=0.0).to(tl.float32)
    if BN == 64:
        # After 32 steps (or all n - 2, if fewer) columns 0 .. 31 are final and the rest of the
        # matrix is the trailing 32-square block; T[32, 31] stays in the whole tile. Likewise
        # from the 32-square block to its trailing 16-square block after 16 more steps.
        a = _householder_steps(a, tl.minimum(n - 2, 32), 64)
        _store_tridiagonal(a, DIAG, OFFD2, 32, 0, 32, 64)
        b = _householder_steps(_trailing_block(a, 64), tl.minimum(n - 34, 16), 32)
        _store_tridiagonal(b, DIAG + 32, OFFD2 + 32, 16, 1, 16, 32)
        c = _householder_steps(_trailing_block(b, 32), n - 50, 16)
        _store_tridiagonal(c, DIAG + 48, OFFD2 + 48, 16, 1, 15, 16)
    else:
        a = _householder_steps(a, n - 2, BN)
        _store_tridiagonal(a, DIAG, OFFD2, BN, 0, BN, BN)


@triton.jit
def _eigenvalues(DIAG, OFFD2, n, first, g_lo, g_hi, pivmin,
                 ROWS: tl.constexpr, SHIFTS: tl.constexpr, ITERS: tl.constexpr):  # fmt: skip
    """Eigenvalues ``first .. first + ROWS - 1`` (ascending) of the tridiagonal whose diagonal is
    ``DIAG[0:n]`` and squared sub-diagonal ``OFFD2[i] = e[i - 1]^2`` (``OFFD2[0] = 0``); 0 past n."""
    j = first + tl.arange(0, ROWS)
    lo = tl.zeros([ROWS], tl.float32) + g_lo
    hi = tl.zeros([ROWS], tl.float32) + g_hi
    frac = (tl.arange(0, SHIFTS) + 1).to(tl.float32) / (SHIFTS + 1)
    for _ in range(ITERS):
        x = lo[:, None] + (hi - lo)[:, None] * frac[None, :]  # (ROWS, SHIFTS)
        q = tl.full([ROWS, SHIFTS], 1.0, tl.float32)
        below = tl.zeros([ROWS, SHIFTS], tl.int32)
        d_next = tl.load(DIAG)
        e_next = tl.load(OFFD2)
        for i in range(0, n):
            d_i = d_next
            e_i = e_next
            d_next = tl.load(DIAG + i + 1)  # issued a step early: the loop is latency-bound
            e_next = tl.load(OFFD2 + i + 1)
            q = d_i - x - e_i / q
            q = tl.where(tl.abs(q) < pivmin, -pivmin, q)
            below += (q < 0).to(tl.int32)
        at_or_above = below <= j[:, None]  # eigenvalue j >= x when fewer than j + 1 lie below x
        lo = tl.maximum(lo, tl.max(tl.where(at_or_above, x, -float("inf")), axis=1))
        hi = tl.minimum(hi, tl.min(tl.where(at_or_above, float("inf"), x), axis=1))
    return tl.where(j < n, tl.maximum(0.5 * (lo + hi), 0.0), 0.0)


@triton.jit
def _erank_kernel(M, SCRATCH, COUNT, OUT, n, sm_p, sm_r, sm_c,
                  BN: tl.constexpr, CHUNKS: tl.constexpr, SHIFTS: tl.constexpr,
                  ITERS: tl.constexpr):  # fmt: skip
    """Program (matrix, chunk): tridiagonalise the matrix (every chunk redundantly, in parallel),
    find its ``BN / CHUNKS`` eigenvalues of the chunk, and the last chunk to finish turns the
    per-chunk sums into the effective rank, in a fixed order (deterministic)."""
    pid = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    ROWS: tl.constexpr = BN // CHUNKS
    # This program's scratch row: diag[0:BN+1], offd2[0:BN+1], then its two partial sums.
    ROW: tl.constexpr = 2 * BN + 4
    diag = SCRATCH + (pid * CHUNKS + chunk) * ROW
    offd2 = diag + BN + 1
    partial = diag + 2 * BN + 2
    _tridiagonalize(M, diag, offd2, sm_p, sm_r, sm_c, n, pid, BN)
    tl.debug_barrier()  # the loads below read what other threads of this program stored
    idx = tl.arange(0, BN)
    in_n = idx < n
    d = tl.load(diag + idx)
    e2 = tl.load(offd2 + idx)  # e[r - 1]^2 at row r: Gershgorin radius |e[r - 1]| + |e[r]|
    radius = tl.sqrt(e2) + tl.sqrt(tl.load(offd2 + idx + 1))
    g_lo = tl.min(tl.where(in_n, d - radius, float("inf")), axis=0)
    g_hi = tl.max(tl.where(in_n, d + radius, -float("inf")), axis=0)
    scale = tl.maximum(tl.abs(g_lo), tl.abs(g_hi))  # 0 only for the zero matrix
    slack = 1e-6 * scale + 1e-30
    pivmin = 1.2e-38 * tl.maximum(1.0, tl.max(e2, axis=0))
    lam = _eigenvalues(diag, offd2, n, chunk * ROWS, g_lo - slack, g_hi + slack, pivmin,
                       ROWS, SHIFTS, ITERS)  # fmt: skip
    lam = tl.where(scale > 0, lam, 0.0)
    # -sum p log p with p = lam / S equals log S - sum(lam log lam) / S.
    total = tl.sum(lam, axis=0)
    lam_log = tl.sum(tl.where(lam > 0, lam * tl.log(tl.where(lam > 0, lam, 1.0)), 0.0), axis=0)
    tl.store(partial, total)
    tl.store(partial + 1, lam_log)
    tl.debug_barrier()
    done = tl.atomic_add(COUNT + pid, 1, sem="acq_rel")  # publishes this chunk's partial sums
    if done == CHUNKS - 1:
        parts = SCRATCH + (pid * CHUNKS + tl.arange(0, CHUNKS)) * ROW + 2 * BN + 2
        s = tl.sum(tl.load(parts, cache_modifier=".cg"), axis=0)
        t = tl.sum(tl.load(parts + 1, cache_modifier=".cg"), axis=0)
        rank = tl.where(
            s > 0, tl.exp(tl.log(tl.where(s > 0, s, 1.0)) - t / tl.where(s > 0, s, 1.0)), 0.0
        )
        tl.store(OUT + pid, rank)


def default_chunks(pool: int, n: int, device: torch.device) -> int:
    """Programs per matrix: enough to fill the GPU's SMs (each program repeats the
    tridiagonalisation in parallel, then searches ``n / chunks`` eigenvalues), at most one per 8
    eigenvalues. One in the interpreter, where programs run one after another.

    Measured (BENCHMARKS.md): 8 matrices of 64 want 8 (H200; 4 costs 3% more), 64 want 2-4.
    """
    if device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    fill = 1 << max(0, (sms // max(pool, 1)).bit_length() - 1)  # largest power of two <= sms / P
    return max(1, min(fill, triton.next_power_of_2(max(n, 16)) // 8))


def effective_rank(
    m: Tensor,
    *,
    shifts: int | None = None,
    iters: int | None = None,
    chunks: int | None = None,
    num_warps: int = 4,
) -> Tensor:
    """Roy & Vetterli effective rank of symmetric PSD ``(P, n, n)`` matrices -> ``(P,)`` float32.

    Args:
        m: ``(P, n, n)``, ``n <= 128``; the lower triangle is read. Computed in fp32.
        shifts: Sturm-count points per interval and iteration (a power of two); None: 32 up to
            64 rows, else 16 (measured fastest on an H200, BENCHMARKS.md).
        iters: multisection iterations; ``(shifts + 1) ** iters`` must pass fp32 resolution
            (2 ** 24); None: 5 with 32 shifts, else 7.
        chunks: programs per matrix sharing its eigenvalue search (a power of two); None picks
            :func:`default_chunks`.
        num_warps: warps per program.

    Raises:
        KernelError: ``m`` is not a batch of square matrices of at most ``MAX_N`` rows, or a
            tuning argument is out of range.
    """
    utils.check_square_batch("m", m)
    pool, n, _ = m.shape
    if n == 0 or n > MAX_N:
        raise KernelError(f"m has n={n}; the Triton effective rank supports 1 <= n <= {MAX_N}")
    bn = max(16, triton.next_power_of_2(n))
    chunks = default_chunks(pool, n, m.device) if chunks is None else chunks
    if shifts is None:
        shifts = 32 if n <= 64 else 16
    if iters is None:
        iters = 5 if shifts == 32 else 7  # 33 ** 5 and 17 ** 7 both pass 2 ** 24
    if iters < 1 or shifts < 1 or shifts & (shifts - 1) or chunks & (chunks - 1) or chunks > bn:
        raise KernelError(
            f"shifts={shifts} and chunks={chunks} must be powers of two (chunks <= {bn}), "
            f"iters={iters} >= 1"
        )
    if pool == 0:
        return torch.zeros(0, dtype=torch.float32, device=m.device)
    # One zeroed buffer (one allocation, one memset): per-program scratch rows, then the result,
    # then the chunk counters (int32, reinterpreted; they must start at zero). Each part starts
    # on a 16-byte boundary whatever the pool size: Triton specialises a kernel on its pointers'
    # alignment, so an unaligned part would compile a second kernel for some pool sizes (it did,
    # mid-run, when a cull changed the live count).
    row = 2 * bn + 4
    start = pool * chunks * row
    counters = start + -(-pool // 4) * 4
    buf = torch.zeros(counters + pool, dtype=torch.float32, device=m.device)
    scratch = buf[:start]
    out = buf[start : start + pool]
    count = buf[counters:].view(torch.int32)
    _erank_kernel[(pool, chunks)](
        m, scratch, count, out, n, *m.stride(),
        BN=bn, CHUNKS=chunks, SHIFTS=shifts, ITERS=iters, num_warps=num_warps,
    )  # fmt: skip
    return out
