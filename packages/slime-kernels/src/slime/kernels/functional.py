"""Functional kernel API; pool attention is one ``torch.library`` custom op, ``slime::pool_attention``.

Autograd, ``torch.compile`` and ``torch.export`` see that one op (its backward is a second op,
``slime::pool_attention_backward``), with a fake implementation for shape propagation. Plain
eager calls run the same implementations through a thin ``autograd.Function`` instead, because
the custom-op dispatcher costs more host time than a small attention kernel takes on a GPU.
Which code computes a call is :func:`choose_path`'s one rule: torch's
``F.scaled_dot_product_attention`` (``"sdpa"``), the Triton pool kernel or the torch fallback.
``"triton"`` also runs on CPU tensors through the Triton interpreter (tests only).

Pool size: ``P`` is the pool's *capacity*, fixed for a model's life, and ``alive`` (``(P,)`` bool)
marks the slots that hold a living pseudopod. Births and deaths flip bits of ``alive`` instead of
changing a shape, so a compiled model is never re-specialised or recompiled when the live count
changes; a dead slot costs its share of compute and outputs exactly 0 with zero gradients.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from slime.kernels import _sdpa_attention, torch_fallback, utils
from slime.kernels.torch_fallback import coherence, correlation
from slime.proto import KernelError
from torch import Tensor

__all__ = [
    "BACKENDS",
    "POOL_BACKENDS",
    "choose_path",
    "coherence",
    "correlation",
    "effective_rank",
    "feed_tubes",
    "pool_attention",
    "tube_workspace",
]

# The pool kernels: the custom op's backends, and select_kernel's names.
POOL_BACKENDS = ("auto", "torch", "triton")
BACKENDS = (*POOL_BACKENDS, "sdpa")
_HALF = (torch.float16, torch.bfloat16)
# Looked up once: torch.compile cannot trace importlib, and the answer cannot change in a process.
_HAS_TRITON = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported here."""
    return _HAS_TRITON


def resolve_backend(backend: str, device: torch.device, head_dim: int | None = None) -> str:
    """``"triton"`` or ``"torch"``: the pool kernel ``backend`` means on ``device`` for
    ``head_dim`` (behind :func:`choose_path`, ``select_kernel`` and the custom op).

    Raises:
        KernelError: ``backend`` is not one of :data:`POOL_BACKENDS`.
    """
    if backend not in POOL_BACKENDS:
        raise KernelError(f"backend must be one of {POOL_BACKENDS}, got {backend!r}")
    if backend == "auto":
        fits = head_dim is None or head_dim in utils.TRITON_HEAD_DIMS
        return "triton" if device.type == "cuda" and triton_available() and fits else "torch"
    return backend


def choose_path(
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    head_dim: int | None,
    *,
    key_padding: bool,
    traced: bool,
) -> str:
    """What computes a ``pool_attention`` call: ``"sdpa"``, ``"triton"`` or ``"torch"``.

    ``"auto"`` takes SDPA for an eager call without key padding, in fp16/bf16 on CUDA or in any
    dtype elsewhere. On an H200, cuDNN's device time is 7% below the Triton kernel's to 7% above
    it (BENCHMARKS.md), but one C++ call costs a fraction of the host time of the Triton kernels'
    four Python launches, which is what an eager step waits on. Key padding needs a mask, which
    limits SDPA on CUDA to its memory-efficient kernel (a third of cuDNN's speed), so it goes to
    the pool kernel, as does fp32 on CUDA (the Triton kernel's IEEE fp32 dot products, where
    SDPA's fp32 kernels may round through TF32) and a traced call (the custom op that
    ``torch.compile`` and ``torch.export`` see). The pool kernel is Triton on CUDA
    for the head dims it takes, the torch fallback otherwise. A named backend is always used.

    Raises:
        KernelError: ``backend`` is not one of :data:`BACKENDS`.
    """
    if backend not in BACKENDS:
        raise KernelError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto" and not (key_padding or traced):
        if device.type != "cuda" or dtype in _HALF:
            return "sdpa"
    if backend == "sdpa":
        return backend
    return resolve_backend(backend, device, head_dim)


def _forward_impl(q, k, v, key_padding_mask, alive, causal, scale, backend):
    if resolve_backend(backend, q.device, q.shape[-1]) == "triton":
        from slime.kernels import _triton_attention

        return _triton_attention.forward(q, k, v, causal, scale, key_padding_mask, alive)
    return torch_fallback.attention_forward(q, k, v, causal, scale, key_padding_mask, alive)


def _backward_impl(
    grad_out, q, k, v, out, lse, grad_lse, key_padding_mask, alive, causal, scale, backend
):
    if resolve_backend(backend, q.device, q.shape[-1]) == "triton":
        from slime.kernels import _triton_attention

        return _triton_attention.backward(
            grad_out, q, k, v, out, lse, grad_lse, causal, scale, key_padding_mask, alive
        )
    # delta = rowsum(dO * O) - dlse: with it dS = P * (dP - delta) covers both outputs.
    delta = (grad_out.float() * out.float()).sum(dim=-1)
    if grad_lse is not None:
        delta = delta - grad_lse
    return torch_fallback.attention_backward(
        grad_out, q, k, v, lse, delta, causal, scale, key_padding_mask, alive
    )


@torch.library.custom_op("slime::pool_attention", mutates_args=())
def _attention_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None,
    alive: Tensor | None,
    causal: bool,
    scale: float,
    backend: str,
) -> tuple[Tensor, Tensor]:
    return _forward_impl(q, k, v, key_padding_mask, alive, causal, scale, backend)


# The fakes must report the real outputs' exact strides (inductor asserts them, and AOT autograd
# turns a reshape of an output into a view when its fake says one is possible). Every backend
# returns fresh contiguous tensors, so the fakes are new_empty, never empty_like: empty_like keeps
# the stride order of a non-contiguous q, such as a slice of a packed qkv projection.
@_attention_op.register_fake
def _(q, k, v, key_padding_mask, alive, causal, scale, backend):
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("slime::pool_attention_backward", mutates_args=())
def _attention_backward_op(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    grad_lse: Tensor | None,
    key_padding_mask: Tensor | None,
    alive: Tensor | None,
    causal: bool,
    scale: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    return _backward_impl(
        grad_out, q, k, v, out, lse, grad_lse, key_padding_mask, alive, causal, scale, backend
    )


@_attention_backward_op.register_fake
def _(grad_out, q, k, v, out, lse, grad_lse, key_padding_mask, alive, causal, scale, backend):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, key_padding_mask, alive, causal, scale, backend = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, key_padding_mask, alive)
    ctx.causal, ctx.scale, ctx.backend = causal, scale, backend


def _backward(ctx, grad_out: Tensor | None, grad_lse: Tensor | None):
    q, k, v, out, lse, key_padding_mask, alive = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv = _attention_backward_op(
        grad_out.contiguous(), q, k, v, out, lse, grad_lse, key_padding_mask, alive,
        ctx.causal, ctx.scale, ctx.backend,
    )  # fmt: skip
    return dq, dk, dv, None, None, None, None, None


_attention_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerAttention(torch.autograd.Function):
    """The custom op's eager twin: the same two implementations, called without the dispatcher.

    Measured on this project's CPUs, one custom-op call costs ~0.3 ms of host time (dispatch,
    dynamo-disable wrapper, autograd wrapper), which made an eager forward+backward host-bound at
    both benchmark shapes. Traced code (torch.compile, torch.export, fake tensors) takes the op.
    """

    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, alive, causal, scale, backend):
        out, lse = _forward_impl(q, k, v, key_padding_mask, alive, causal, scale, backend)
        ctx.save_for_backward(q, k, v, out, lse, key_padding_mask, alive)
        ctx.causal, ctx.scale, ctx.backend = causal, scale, backend
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, key_padding_mask, alive = ctx.saved_tensors
        dq, dk, dv = _backward_impl(
            grad_out.contiguous(), q, k, v, out, lse, None, key_padding_mask, alive,
            ctx.causal, ctx.scale, ctx.backend,
        )  # fmt: skip
        return dq, dk, dv, None, None, None, None, None


def _traced(*tensors: Tensor) -> bool:
    """Whether a compiler is tracing, or an input is a tensor subclass (fake, functional, ...)."""
    return torch.compiler.is_compiling() or any(type(t) is not Tensor for t in tensors)


def _plain(q: object, k: object, v: object, backend: str) -> bool:
    """Whether ``(q, k, v)`` is an eager call ``backend`` (``"auto"`` or ``"sdpa"``) sends to SDPA
    with nothing to check: plain tensors of one non-empty 4-d shape, dtype and device, rows
    contiguous, half precision or fp32 (fp32 on CUDA only for ``"sdpa"``)."""
    if type(q) is not Tensor or type(k) is not Tensor or type(v) is not Tensor:
        return False
    shape, dtype = q.shape, q.dtype
    if len(shape) != 4 or 0 in shape or k.shape != shape or v.shape != shape:
        return False
    if k.dtype is not dtype or v.dtype is not dtype:
        return False
    if dtype not in _HALF and (dtype is not torch.float32 or (q.is_cuda and backend == "auto")):
        return False
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        return False
    return k.device == q.device and v.device == q.device and not torch.compiler.is_compiling()


def pool_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    key_padding_mask: Tensor | None = None,
    alive: Tensor | None = None,
    backend: str = "auto",
) -> Tensor:
    """Scaled dot-product attention of every pseudopod in a pool, as one differentiable op.

    Args:
        q, k, v: ``(B, P, T, d)`` float32/float16/bfloat16, same device; last dim contiguous.
        causal: query ``t`` sees keys ``<= t`` only.
        scale: logit scale; None means ``d ** -0.5``.
        key_padding_mask: ``(B, T)`` bool, True where a key may be attended.
        alive: ``(P,)`` bool, False for the empty slots of a pool below capacity.
        backend: ``"auto"`` (the fastest exact path, :func:`choose_path`), ``"sdpa"`` (torch's
            ``F.scaled_dot_product_attention``), ``"triton"`` (head dims 16/32/64/128) or
            ``"torch"`` (the readable fallback).

    Returns:
        ``(B, P, T, d)`` in the input dtype, accumulated in fp32. Queries with no visible key and
        dead pseudopods output exactly 0, with zero (never NaN) gradients.

    Raises:
        KernelError: an argument violates the shapes, dtypes, devices or limits above.
    """
    if (
        key_padding_mask is None
        and alive is None
        and (causal is True or causal is False)
        and (backend == "auto" or backend == "sdpa")
        and _plain(q, k, v, backend)
    ):
        # The eager SDPA call every causal LM step makes: what the checks below would accept,
        # tested in a few attribute reads; anything else takes the full checks (and their errors).
        if scale is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        if type(scale) is float and 0.0 < scale < float("inf"):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    utils.check_attention_inputs(q, k, v, key_padding_mask, alive)
    utils.check_causal(causal)
    scale = utils.resolve_scale(scale, q.shape[-1])
    traced = _traced(q, k, v)
    path = choose_path(
        backend, q.device, q.dtype, q.shape[-1],
        key_padding=key_padding_mask is not None, traced=traced,
    )  # fmt: skip
    if path == "sdpa":
        return _sdpa_attention.attention(q, k, v, causal, scale, key_padding_mask, alive)
    if path == "triton":
        utils.check_head_dim(q.shape[-1], utils.TRITON_HEAD_DIMS)
    else:
        batch, pool, seq, _ = q.shape
        utils.check_free_memory(3 * 4 * batch * pool * seq * seq, q.device, "torch pool attention")
    if traced:  # the op keeps backend "auto" unresolved: an exported program runs on any device
        return _attention_op(q, k, v, key_padding_mask, alive, causal, scale, backend)[0]
    return _EagerAttention.apply(q, k, v, key_padding_mask, alive, causal, scale, path)


def effective_rank(m: Tensor) -> Tensor:
    """Roy & Vetterli effective rank ``(P, n, n) -> (P,)`` float32; Triton (tridiagonalisation + Sturm) on CUDA.

    On CUDA (with triton) no host synchronisation happens; elsewhere ``torch.linalg.eigvalsh``.
    """
    if isinstance(m, Tensor) and resolve_backend("auto", m.device) == "triton":
        from slime.kernels import _triton_erank

        return _triton_erank.effective_rank(m)
    return torch_fallback.effective_rank(m)


_TUBE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
TUBE_MAX_CHUNKS = 16  # programs per slot of the one-launch tube write, at most


def tube_workspace_words(pool: int) -> int:
    """int32 words of :func:`feed_tubes`' workspace for ``pool`` slots: a counter per slot, one
    for the grid, then two fp32 cells (sum, count) per slot and chunk."""
    return pool + 1 + 2 * pool * TUBE_MAX_CHUNKS


def tube_workspace(pool: int, device: torch.device | str | None = None) -> Tensor:
    """The zeroed int32 scratch :func:`feed_tubes` needs for ``pool`` slots on one stream (a
    module keeps one and passes it to every call; the kernel leaves its counters at zero).
    Making it imports no Triton."""
    words = tube_workspace_words(pool) if triton_available() else 1  # 1: nothing reads it
    return torch.zeros(words, dtype=torch.int32, device=device)


def feed_tubes(heads: Tensor, trace: Tensor, pos: Tensor, workspace: Tensor | None = None) -> None:
    """Write each slot's mean l1/l2 ratio of ``heads`` ``(B, P, T, d)`` at row ``pos`` of the tube
    ring ``trace`` ``(R, P)`` and advance ``pos`` (see
    :func:`slime.kernels.torch_fallback.feed_tubes`, the definition). Nothing is read back to the
    host.

    With a ``workspace`` from :func:`tube_workspace`, CUDA tensors (fp16, bf16 or fp32 heads with
    a unit last stride) and triton installed, and outside a ``torch.compile`` trace, one Triton
    launch does it all; otherwise the torch definition's ~fifteen kernels do. ``R == 0`` (no
    tubes) writes nothing.

    Raises:
        KernelError: the shapes or dtypes do not fit together.
    """
    utils.check_tensor("heads", heads, ndim=4, dtypes=(*_TUBE_DTYPES, torch.float64))
    utils.check_tensor("trace", trace, ndim=2, dtypes=(*_TUBE_DTYPES, torch.float64))
    if trace.shape[1] != heads.shape[1]:
        raise KernelError(
            f"trace {tuple(trace.shape)} must have one column per slot of heads "
            f"{tuple(heads.shape)}"
        )
    if (
        not isinstance(pos, Tensor)
        or pos.numel() != 1
        or pos.dtype not in (torch.int32, torch.long)
    ):
        raise KernelError(f"pos must be an integer scalar tensor, got {pos!r:.60}")
    if trace.shape[0] == 0:
        return
    if _tubes_in_one_launch(heads, trace, pos, workspace):
        from slime.kernels import _triton_tubes

        _triton_tubes.feed_tubes(heads, trace, pos, workspace)
        return
    torch_fallback.feed_tubes(heads, trace, pos)


def _tubes_in_one_launch(heads: Tensor, trace: Tensor, pos: Tensor, workspace) -> bool:
    if workspace is None or torch.compiler.is_compiling() or not heads.is_cuda:
        return False
    if resolve_backend("auto", heads.device) != "triton" or heads.dtype not in _TUBE_DTYPES:
        return False
    return (
        heads.stride(-1) == 1
        and trace.is_contiguous()
        and trace.device == pos.device == workspace.device == heads.device
        and workspace.dtype == torch.int32
        and workspace.numel() >= tube_workspace_words(heads.shape[1])
    )
