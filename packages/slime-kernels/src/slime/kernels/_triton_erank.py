"""Effective rank in one Triton program per matrix, with no eigensolver library and no host sync.

Exact method, two classical stages (Golub & Van Loan ch. 8), both in fp32 registers:

1. Householder tridiagonalisation ``A -> Q^T A Q = tridiag(d, e)``: ``n - 2`` symmetric rank-2
   updates of the ``(n, n)`` tile, each a handful of row/column reductions; orthogonal, so the
   eigenvalues are kept to ``O(n * eps * |A|)``.
2. All eigenvalues of the tridiagonal at once by Sturm-count *multisection*: eigenvalue ``j`` lies
   in ``[lo_j, hi_j]`` (Gershgorin bounds at first); each iteration evaluates the Sturm count
   (number of negative pivots of ``T - x I``, which is the number of eigenvalues below ``x``) at
   ``SHIFTS`` points of every interval together, shrinking it ``SHIFTS + 1``-fold.

Then ``exp(-sum p log p)`` with ``p = lambda / sum(lambda)`` (negatives from rounding count as 0; the
zero matrix has effective rank 0), as :func:`slime.kernels.torch_fallback.entropy_rank` defines it.
The lower triangle is read, as ``torch.linalg.eigvalsh`` does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from slime.kernels import utils
from slime.proto import KernelError
from torch import Tensor

__all__ = ["MAX_N", "effective_rank"]

MAX_N = 128  # the (n, n) fp32 tile lives in registers: 64 per thread at 8 warps


@triton.jit
def _tridiagonalize(M, sm_p, sm_r, sm_c, n, pid, BN: tl.constexpr):
    """Load matrix ``pid`` (lower triangle mirrored) and reduce it to tridiagonal form.

    Returns ``(d, e, radius)``: the diagonal (indexed by row), the sub-diagonal ``e[c] = T[c+1, c]``
    (indexed by column) and each row's Gershgorin radius.
    """
    ridx = tl.arange(0, BN)
    cidx = tl.arange(0, BN)
    rows = ridx[:, None]
    cols = cidx[None, :]
    inside = (rows < n) & (cols < n)
    src = M + pid * sm_p + tl.maximum(rows, cols) * sm_r + tl.minimum(rows, cols) * sm_c
    a = tl.load(src, mask=inside, other=0.0).to(tl.float32)
    diagonal = rows == cols
    for k in range(0, n - 2):
        x = tl.sum(tl.where(cols == k, a, 0.0), axis=1)  # column k, indexed by row
        x = tl.where(ridx > k, x, 0.0)
        norm = tl.sqrt(tl.sum(x * x, axis=0))
        x0 = tl.sum(tl.where(ridx == k + 1, x, 0.0), axis=0)
        alpha = tl.where(x0 >= 0, -norm, norm)  # opposite sign to x0: no cancellation in v
        v_r = x - tl.where(ridx == k + 1, alpha, 0.0)
        vn2 = tl.sum(v_r * v_r, axis=0)
        tau = tl.where(vn2 > 0, 2.0 / tl.where(vn2 > 0, vn2, 1.0), 0.0)
        # The column-indexed copies are transposed through the diagonal, not recomputed from
        # column sums: two independently rounded copies let asymmetry grow ~5x per step.
        v_c = tl.sum(tl.where(diagonal, v_r[:, None], 0.0), axis=0)
        p_r = tau * tl.sum(a * v_c[None, :], axis=1)
        kk = 0.5 * tau * tl.sum(v_r * p_r, axis=0)
        w_r = p_r - kk * v_r
        w_c = tl.sum(tl.where(diagonal, w_r[:, None], 0.0), axis=0)
        a = a - (v_r[:, None] * w_c[None, :] + w_r[:, None] * v_c[None, :])
    d = tl.sum(tl.where(diagonal, a, 0.0), axis=1)
    e = tl.sum(tl.where(rows == cols + 1, a, 0.0), axis=0)
    e = tl.where(cidx + 1 < n, e, 0.0)
    radius = tl.sum(tl.where((rows == cols + 1) | (cols == rows + 1), tl.abs(a), 0.0), axis=1)
    return d, e, tl.where(ridx < n, radius, 0.0)


@triton.jit
def _store_tridiagonal(DIAG, OFFD2, BOUNDS, d, e, radius, n, pid, BN: tl.constexpr):
    """Store ``d``, ``e^2`` shifted by one (``OFFD2[i] = e[i-1]^2``, ``OFFD2[0] = 0``) and the
    Gershgorin interval and pivot floor ``BOUNDS = (lo, hi, pivmin)`` of matrix ``pid``."""
    idx = tl.arange(0, BN)
    base = pid * BN
    tl.store(DIAG + base + idx, d)
    tl.store(OFFD2 + base + idx + 1, e * e, mask=idx + 1 < BN)
    tl.store(OFFD2 + base + idx, tl.zeros([BN], tl.float32), mask=idx == 0)
    in_n = idx < n
    g_lo = tl.min(tl.where(in_n, d - radius, float("inf")), axis=0)
    g_hi = tl.max(tl.where(in_n, d + radius, -float("inf")), axis=0)
    slack = 1e-6 * tl.maximum(tl.abs(g_lo), tl.abs(g_hi)) + 1e-30
    pivmin = 1.2e-38 * tl.maximum(1.0, tl.max(e * e, axis=0))
    tl.store(BOUNDS + pid * 4 + 0, g_lo - slack)
    tl.store(BOUNDS + pid * 4 + 1, g_hi + slack)
    tl.store(BOUNDS + pid * 4 + 2, pivmin)


@triton.jit
def _eigenvalues(DIAG, OFFD2, BOUNDS, n, pid, first,
                 BN: tl.constexpr, ROWS: tl.constexpr, SHIFTS: tl.constexpr, ITERS: tl.constexpr):  # fmt: skip
    """Eigenvalues ``first .. first + ROWS - 1`` (ascending) of tridiagonal ``pid``; 0 past ``n``."""
    j = first + tl.arange(0, ROWS)
    base = pid * BN
    pivmin = tl.load(BOUNDS + pid * 4 + 2)
    lo = tl.zeros([ROWS], tl.float32) + tl.load(BOUNDS + pid * 4 + 0)
    hi = tl.zeros([ROWS], tl.float32) + tl.load(BOUNDS + pid * 4 + 1)
    frac = (tl.arange(0, SHIFTS) + 1).to(tl.float32) / (SHIFTS + 1)
    for _ in range(ITERS):
        x = lo[:, None] + (hi - lo)[:, None] * frac[None, :]  # (ROWS, SHIFTS)
        q = tl.full([ROWS, SHIFTS], 1.0, tl.float32)
        below = tl.zeros([ROWS, SHIFTS], tl.int32)
        for i in range(0, n):
            q = tl.load(DIAG + base + i) - x - tl.load(OFFD2 + base + i) / q
            q = tl.where(tl.abs(q) < pivmin, -pivmin, q)
            below += (q < 0).to(tl.int32)
        at_or_above = below <= j[:, None]  # eigenvalue j >= x when fewer than j + 1 lie below x
        lo = tl.maximum(lo, tl.max(tl.where(at_or_above, x, -float("inf")), axis=1))
        hi = tl.minimum(hi, tl.min(tl.where(at_or_above, float("inf"), x), axis=1))
    return tl.where(j < n, tl.maximum(0.5 * (lo + hi), 0.0), 0.0)


@triton.jit
def _entropy_rank(lam):
    total = tl.sum(lam, axis=0)
    p = lam / tl.where(total > 0, total, 1.0)
    plogp = tl.where(p > 0, p * tl.log(tl.where(p > 0, p, 1.0)), 0.0)
    return tl.where(total > 0, tl.exp(-tl.sum(plogp, axis=0)), 0.0)


@triton.jit
def _fused_kernel(M, DIAG, OFFD2, BOUNDS, OUT, n, sm_p, sm_r, sm_c,
                  BN: tl.constexpr, SHIFTS: tl.constexpr, ITERS: tl.constexpr):  # fmt: skip
    """One program per matrix: tridiagonalise, all eigenvalues, entropy."""
    pid = tl.program_id(0).to(tl.int64)
    d, e, radius = _tridiagonalize(M, sm_p, sm_r, sm_c, n, pid, BN)
    _store_tridiagonal(DIAG, OFFD2, BOUNDS, d, e, radius, n, pid, BN)
    tl.debug_barrier()  # the scalar loads below read what other threads of this program stored
    lam = _eigenvalues(DIAG, OFFD2, BOUNDS, n, pid, 0, BN, BN, SHIFTS, ITERS)
    tl.store(OUT + pid, _entropy_rank(lam))


@triton.jit
def _tridiagonal_kernel(M, DIAG, OFFD2, BOUNDS, n, sm_p, sm_r, sm_c, BN: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    d, e, radius = _tridiagonalize(M, sm_p, sm_r, sm_c, n, pid, BN)
    _store_tridiagonal(DIAG, OFFD2, BOUNDS, d, e, radius, n, pid, BN)


@triton.jit
def _eigenvalue_kernel(DIAG, OFFD2, BOUNDS, LAM, n,
                       BN: tl.constexpr, ROWS: tl.constexpr, SHIFTS: tl.constexpr, ITERS: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)
    first = tl.program_id(1) * ROWS
    lam = _eigenvalues(DIAG, OFFD2, BOUNDS, n, pid, first, BN, ROWS, SHIFTS, ITERS)
    tl.store(LAM + pid * BN + first + tl.arange(0, ROWS), lam)


@triton.jit
def _entropy_kernel(LAM, OUT, BN: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    tl.store(OUT + pid, _entropy_rank(tl.load(LAM + pid * BN + tl.arange(0, BN))))


def effective_rank(
    m: Tensor,
    *,
    shifts: int = 16,
    iters: int = 7,
    rows: int | None = None,
    num_warps: int | None = None,
) -> Tensor:
    """Roy & Vetterli effective rank of symmetric PSD ``(P, n, n)`` matrices -> ``(P,)`` float32.

    Args:
        m: ``(P, n, n)``, ``n <= 128``; the lower triangle is read. Computed in fp32.
        shifts: Sturm-count points per interval and iteration (a power of two).
        iters: multisection iterations; ``(shifts + 1) ** iters`` must pass fp32 resolution.
        rows: None runs one fused program per matrix; an int splits the eigenvalue search over
            ``n / rows`` programs per matrix (three launches instead of one).
        num_warps: warps of the tridiagonalisation program; None picks by size.

    Raises:
        KernelError: ``m`` is not a batch of square matrices of at most ``MAX_N`` rows.
    """
    utils.check_square_batch("m", m)
    pool, n, _ = m.shape
    if n == 0 or n > MAX_N:
        raise KernelError(f"m has n={n}; the Triton effective rank supports 1 <= n <= {MAX_N}")
    if iters < 1 or shifts < 1 or shifts & (shifts - 1):
        raise KernelError(f"shifts={shifts} must be a power of two and iters={iters} >= 1")
    if pool == 0:
        return torch.zeros(0, dtype=torch.float32, device=m.device)
    bn = max(16, triton.next_power_of_2(n))
    warps = num_warps or max(1, min(8, bn * bn // 1024))
    diag = torch.empty((pool, bn), dtype=torch.float32, device=m.device)
    offd2 = torch.empty((pool, bn), dtype=torch.float32, device=m.device)
    bounds = torch.empty((pool, 4), dtype=torch.float32, device=m.device)
    out = torch.empty(pool, dtype=torch.float32, device=m.device)
    if rows is None:
        _fused_kernel[(pool,)](
            m, diag, offd2, bounds, out, n, *m.stride(),
            BN=bn, SHIFTS=shifts, ITERS=iters, num_warps=warps,
        )  # fmt: skip
        return out
    rows = min(rows, bn)
    lam = torch.empty((pool, bn), dtype=torch.float32, device=m.device)
    _tridiagonal_kernel[(pool,)](m, diag, offd2, bounds, n, *m.stride(), BN=bn, num_warps=warps)
    _eigenvalue_kernel[(pool, bn // rows)](
        diag, offd2, bounds, lam, n, BN=bn, ROWS=rows, SHIFTS=shifts, ITERS=iters, num_warps=1 if rows * shifts <= 128 else 4,
    )  # fmt: skip
    _entropy_kernel[(pool,)](lam, out, BN=bn, num_warps=1)
    return out
