"""Pure-torch definitions of every kernel function: the reference both backends must agree with.

Runs on any device. Attention materialises the ``(B, P, T, T)`` fp32 logits, so it is the
readable definition and the CPU path, not the fast one; the Triton backend computes the same
function tile by tile.

Masking convention shared by both backends: a key is visible to a query when it passes the causal
rule, the key padding mask and its pseudopod is alive. A query with no visible key has
``logsumexp = -inf`` and outputs exactly 0; its gradients are exactly 0.
"""

from __future__ import annotations

import math

import torch
from slime.kernels import utils
from slime.proto import KernelError
from torch import Tensor

__all__ = [
    "TorchKernel",
    "attention",
    "attention_backward",
    "attention_forward",
    "coherence",
    "correlation",
    "effective_rank",
    "entropy_rank",
    "feed_tubes",
    "visible_keys",
]


def visible_keys(
    shape: torch.Size,
    device: torch.device,
    causal: bool,
    key_padding_mask: Tensor | None,
    alive: Tensor | None,
) -> Tensor | None:
    """Bool mask broadcastable to ``(B, P, T, T)``: True where query ``t`` may see key ``s``."""
    batch, pool, seq, _ = shape
    visible = None
    if causal:
        visible = torch.ones(seq, seq, dtype=torch.bool, device=device).tril()
    if key_padding_mask is not None:
        kpm = key_padding_mask.view(batch, 1, 1, seq)
        visible = kpm if visible is None else visible & kpm
    if alive is not None:
        live = alive.view(1, pool, 1, 1)
        visible = live if visible is None else visible & live
    return visible


def _work_dtype(x: Tensor) -> torch.dtype:
    """float64 stays float64 (for gradcheck); every other dtype accumulates in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _logits(q: Tensor, k: Tensor, scale: float, visible: Tensor | None) -> Tensor:
    work = _work_dtype(q)
    s = torch.matmul(q.to(work), k.to(work).transpose(-1, -2)) * scale
    return s if visible is None else s.masked_fill(~visible, -math.inf)


def _finite_or_zero(x: Tensor) -> Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros((), dtype=x.dtype, device=x.device))


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    key_padding_mask: Tensor | None = None,
    alive: Tensor | None = None,
) -> Tensor:
    """Pool attention from plain torch ops, differentiable by autograd (exportable anywhere).

    See :meth:`slime.proto.Kernel.attention` for shapes and semantics. Besides the protocol's
    dtypes it accepts float64 (computed in float64), which gradcheck needs.
    """
    utils.check_attention_inputs(q, k, v, key_padding_mask, alive, dtypes=utils.FALLBACK_DTYPES)
    utils.check_causal(causal)
    scale = utils.resolve_scale(scale, q.shape[-1])
    s = _logits(q, k, scale, visible_keys(q.shape, q.device, causal, key_padding_mask, alive))
    # The row max only shifts the exponent; detaching it keeps its (exactly cancelling) gradient out.
    m = _finite_or_zero(s.amax(dim=-1, keepdim=True)).detach()
    p = torch.exp(s - m)
    denom = p.sum(dim=-1, keepdim=True)
    out = torch.matmul(p, v.to(p.dtype)) / torch.where(denom > 0, denom, torch.ones_like(denom))
    return out.to(q.dtype)


def attention_forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool,
    scale: float,
    key_padding_mask: Tensor | None,
    alive: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Forward pass returning ``(out (B, P, T, d), lse (B, P, T) float32)``; no validation.

    ``lse`` is the natural-log logsumexp of each query's visible logits, ``-inf`` with none. Both
    are contiguous whatever the inputs' strides, as the custom op's fake declares.
    """
    s = _logits(q, k, scale, visible_keys(q.shape, q.device, causal, key_padding_mask, alive))
    lse = torch.logsumexp(s, dim=-1)  # -inf for rows with no visible key
    p = torch.exp(s - _finite_or_zero(lse).unsqueeze(-1))
    out = torch.matmul(p, v.to(p.dtype)).to(q.dtype)
    # No copy: matmul and logsumexp return fresh contiguous tensors; this pins the contract.
    return out.contiguous(), lse.float().contiguous()


def attention_backward(
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
    """Gradients ``(dq, dk, dv)`` from the saved ``lse`` and ``delta`` (both ``(B, P, T)`` fp32).

    ``delta = rowsum(grad_out * out) - grad_lse``: with it, ``dS = P * (dP - delta)`` covers the
    gradient reaching the logits through both outputs. The gradients are contiguous, in the dtypes
    of ``q``, ``k`` and ``v``, as the custom op's fake declares.
    """
    s = _logits(q, k, scale, visible_keys(q.shape, q.device, causal, key_padding_mask, alive))
    p = torch.exp(s - _finite_or_zero(lse.to(s.dtype)).unsqueeze(-1))
    do = grad_out.to(p.dtype)
    dv = torch.matmul(p.transpose(-1, -2), do)
    dp = torch.matmul(do, v.to(p.dtype).transpose(-1, -2))
    ds = p * (dp - delta.to(p.dtype).unsqueeze(-1))
    dq = torch.matmul(ds, k.to(p.dtype)) * scale
    dk = torch.matmul(ds.transpose(-1, -2), q.to(p.dtype)) * scale
    # No copy: the matmuls return fresh contiguous tensors; this pins the contract.
    return dq.to(q.dtype).contiguous(), dk.to(k.dtype).contiguous(), dv.to(v.dtype).contiguous()


def correlation(x: Tensor) -> Tensor:
    """Pearson correlation of each pseudopod's output features: ``(P, N, d) -> (P, d, d)`` float32.

    ``x[p]`` holds pseudopod ``p``'s head outputs (its attention result, before the output
    projection) flattened over batch and time, so ``N = B * T`` samples of ``d`` features. Outputs,
    not keys or values, because they are what downstream layers consume: two output features that
    move together carry one feature's worth of information, and that redundancy is what the
    effective rank of this matrix measures.

    A feature whose spread is at rounding level (standard deviation <= ``64 * eps * max|x|`` of the
    working dtype, including an all-zero feature) is constant: it is uncorrelated with every other
    feature (off-diagonal 0) and has diagonal 1, so the matrix stays a valid correlation matrix.
    Float64 input is computed in float64, everything else in float32; the result is float32.
    """
    utils.check_tensor(
        "x", x, ndim=3, dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16)
    )
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise KernelError(
            f"x must have N >= 1 samples and d >= 1 features, got shape {tuple(x.shape)}"
        )
    work = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    centred = work - work.mean(dim=1, keepdim=True)
    cov = torch.matmul(centred.transpose(1, 2), centred) / x.shape[1]  # (P, d, d)
    cov = 0.5 * (cov + cov.transpose(1, 2))  # exactly symmetric, whatever the matmul's rounding
    std = torch.sqrt(torch.diagonal(cov, dim1=1, dim2=2).clamp_min(0))  # (P, d)
    floor = 64 * torch.finfo(work.dtype).eps * work.abs().amax(dim=1)
    varies = std > floor
    inv = torch.where(varies, 1.0 / torch.where(varies, std, torch.ones_like(std)), 0.0)
    corr = (cov * (inv.unsqueeze(2) * inv.unsqueeze(1))).clamp(-1.0, 1.0)
    eye = torch.eye(x.shape[2], dtype=torch.bool, device=x.device)
    corr = torch.where(eye, torch.ones_like(corr), corr)
    return corr.float()


def entropy_rank(eigenvalues: Tensor) -> Tensor:
    """``exp(H(p))``, ``p = s / sum(s)`` over the last dim (negatives from rounding count as 0).

    A batch entry whose values are all zero gets 0, the rank of the zero matrix.
    """
    s = eigenvalues.clamp_min(0)
    total = s.sum(dim=-1, keepdim=True)
    p = s / torch.where(total > 0, total, torch.ones_like(total))
    plogp = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), 0.0)
    rank = torch.exp(-plogp.sum(dim=-1))
    return torch.where(total.squeeze(-1) > 0, rank, torch.zeros_like(rank))


def effective_rank(m: Tensor) -> Tensor:
    """Roy & Vetterli (2007) effective rank of symmetric PSD matrices: ``(P, n, n) -> (P,)`` float32.

    Uses ``torch.linalg.eigvalsh`` (float64 input stays float64, the rest runs in float32). On CUDA
    eigvalsh synchronises with the host; the Triton backend has a sync-free tridiagonal (Householder + Sturm) solver.
    """
    utils.check_square_batch("m", m)
    work = m.to(torch.float64 if m.dtype == torch.float64 else torch.float32)
    try:
        eigenvalues = torch.linalg.eigvalsh(work)
    except torch.linalg.LinAlgError as e:  # NaN or Inf entries (the CPU solver reports them)
        raise KernelError(f"effective_rank: eigvalsh failed on m (NaN or Inf entries?): {e}") from e
    return entropy_rank(eigenvalues).float()


def coherence(corr: Tensor) -> Tensor:
    """Mean absolute off-diagonal correlation: ``(P, d, d) -> (P,)`` float32 in ``[0, 1]``.

    0 when the features are pairwise uncorrelated (identity matrix), 1 when every pair is perfectly
    correlated or anti-correlated (all features are one feature up to sign). A ``d <= 1`` matrix has
    no pairs and coherence 0. ``corr`` must be a correlation matrix (entries in ``[-1, 1]``), as
    :func:`correlation` returns; values are not read, to avoid a host sync.
    """
    utils.check_square_batch("corr", corr)
    d = corr.shape[-1]
    if d <= 1:  # no pairs (d = 0 divided 0 by 0)
        return torch.zeros(corr.shape[0], dtype=torch.float32, device=corr.device)
    a = corr.float().abs()
    off = a.sum(dim=(1, 2)) - torch.diagonal(a, dim1=1, dim2=2).sum(dim=1)
    return off / (d * (d - 1))


def feed_tubes(heads: Tensor, trace: Tensor, pos: Tensor) -> None:
    """Write at row ``pos`` of the ring ``trace`` ``(R, P)`` each slot's mean l1/l2 ratio of its
    head outputs ``heads`` ``(B, P, T, d)`` over batch and tokens, and advance ``pos`` (an integer
    scalar) by one modulo ``R``. Rows whose output is all zero (0/0) or not finite are left out of
    the mean; a slot with no row left is NaN. Everything stays on the device (no host sync)."""
    wide = torch.promote_types(heads.dtype, torch.float32)
    l1 = torch.linalg.vector_norm(heads, ord=1, dim=-1, dtype=wide)
    l2 = torch.linalg.vector_norm(heads, dim=-1, dtype=wide)
    ratio = torch.nanmean(l1 / l2, dim=(0, 2))
    trace.index_copy_(0, pos.view(1), ratio.view(1, -1).to(trace))
    pos.add_(1).remainder_(trace.shape[0])


class TorchKernel:
    """The Kernel protocol in plain torch: any device, any head dim, exportable."""

    name = "torch"

    def attention(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        causal: bool = False,
        scale: float | None = None,
        key_padding_mask: Tensor | None = None,
        alive: Tensor | None = None,
    ) -> Tensor:
        return attention(
            q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask, alive=alive
        )

    def correlation(self, x: Tensor) -> Tensor:
        return correlation(x)

    def effective_rank(self, matrices: Tensor) -> Tensor:
        return effective_rank(matrices)

    def coherence(self, corr: Tensor) -> Tensor:
        return coherence(corr)

    def __repr__(self) -> str:
        return "TorchKernel()"
