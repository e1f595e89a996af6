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
def _erank_kernel(
    M, DIAG, OFFD2, OUT,
    n, sm_p, sm_r, sm_c,
    BN: tl.constexpr, SHIFTS: tl.constexpr, ITERS: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)
    ridx = tl.arange(0, BN)
    cidx = tl.arange(0, BN)
    rows = ridx[:, None]
    cols = cidx[None, :]
    inside = (rows < n) & (cols < n)
    # Mirror the lower triangle: entry (r, c) is read from (max(r, c), min(r, c)).
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
    e = tl.sum(tl.where(rows == cols + 1, a, 0.0), axis=0)  # e[c] = T[c + 1, c]
    e = tl.where(cidx + 1 < n, e, 0.0)
    radius = tl.sum(tl.where((rows == cols + 1) | (cols == rows + 1), tl.abs(a), 0.0), axis=1)
    radius = tl.where(ridx < n, radius, 0.0)
    base = pid * BN
    tl.store(DIAG + base + ridx, d)
    tl.store(OFFD2 + base + cidx + 1, e * e, mask=cidx + 1 < BN)
    tl.store(OFFD2 + base + cidx, tl.zeros([BN], tl.float32), mask=cidx == 0)
    tl.debug_barrier()  # the scalar loads below read what other threads of this program stored

    in_n = ridx < n
    g_lo = tl.min(tl.where(in_n, d - radius, float("inf")), axis=0)
    g_hi = tl.max(tl.where(in_n, d + radius, -float("inf")), axis=0)
    slack = 1e-6 * tl.maximum(tl.abs(g_lo), tl.abs(g_hi)) + 1e-30
    g_lo = g_lo - slack
    g_hi = g_hi + slack
    pivmin = 1.2e-38 * tl.maximum(1.0, tl.max(e * e, axis=0))
    lo = tl.zeros([BN], tl.float32) + g_lo
    hi = tl.zeros([BN], tl.float32) + g_hi
    frac = (tl.arange(0, SHIFTS) + 1).to(tl.float32) / (SHIFTS + 1)
    for _ in range(ITERS):
        x = lo[:, None] + (hi - lo)[:, None] * frac[None, :]  # (BN, SHIFTS)
        q = tl.full([BN, SHIFTS], 1.0, tl.float32)
        below = tl.zeros([BN, SHIFTS], tl.int32)
        for i in range(0, n):
            q = tl.load(DIAG + base + i) - x - tl.load(OFFD2 + base + i) / q
            q = tl.where(tl.abs(q) < pivmin, -pivmin, q)
            below += (q < 0).to(tl.int32)
        at_or_above = below <= ridx[:, None]  # eigenvalue j >= x when fewer than j + 1 lie below x
        lo = tl.maximum(lo, tl.max(tl.where(at_or_above, x, -float("inf")), axis=1))
        hi = tl.minimum(hi, tl.min(tl.where(at_or_above, float("inf"), x), axis=1))

    lam = tl.where(in_n, tl.maximum(0.5 * (lo + hi), 0.0), 0.0)
    total = tl.sum(lam, axis=0)
    p = lam / tl.where(total > 0, total, 1.0)
    plogp = tl.where(p > 0, p * tl.log(tl.where(p > 0, p, 1.0)), 0.0)
    rank = tl.where(total > 0, tl.exp(-tl.sum(plogp, axis=0)), 0.0)
    tl.store(OUT + pid, rank)


def _launch_config(bn: int) -> dict[str, int]:
    return {"num_warps": max(1, min(8, bn * bn // 1024))}


def effective_rank(m: Tensor, *, shifts: int = 16, iters: int = 7) -> Tensor:
    """Roy & Vetterli effective rank of symmetric PSD ``(P, n, n)`` matrices -> ``(P,)`` float32.

    Args:
        m: ``(P, n, n)``, ``n <= 128``; the lower triangle is read. Computed in fp32.
        shifts: Sturm-count points per interval and iteration (a power of two).
        iters: multisection iterations; ``(shifts + 1) ** iters`` must pass fp32 resolution.

    Raises:
        KernelError: ``m`` is not a batch of square matrices of at most ``MAX_N`` rows.
    """
    utils.check_square_batch("m", m)
    pool, n, _ = m.shape
    if n == 0 or n > MAX_N:
        raise KernelError(f"m has n={n}; the Triton effective rank supports 1 <= n <= {MAX_N}")
    if pool == 0:
        return torch.zeros(0, dtype=torch.float32, device=m.device)
    bn = max(16, triton.next_power_of_2(n))
    diag = torch.empty((pool, bn), dtype=torch.float32, device=m.device)
    offd2 = torch.empty((pool, bn), dtype=torch.float32, device=m.device)
    out = torch.empty(pool, dtype=torch.float32, device=m.device)
    _erank_kernel[(pool,)](
        m, diag, offd2, out, n, *m.stride(),
        BN=bn, SHIFTS=shifts, ITERS=iters, **_launch_config(bn),
    )  # fmt: skip
    return out
