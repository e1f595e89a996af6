"""Validation run before every kernel launch.

Each check raises :class:`slime.proto.KernelError` whose message names the argument, the value it got
and what was expected. None of them reads tensor values, so none synchronises with the device.
"""

from __future__ import annotations

import sys
from collections.abc import Collection

import torch
from slime.proto import KernelError

__all__ = [
    "ATTENTION_DTYPES",
    "FALLBACK_DTYPES",
    "TRITON_HEAD_DIMS",
    "check_attention_inputs",
    "check_causal",
    "check_free_memory",
    "check_head_dim",
    "check_rows_contiguous",
    "check_square_batch",
    "check_tensor",
    "resolve_scale",
]

ATTENTION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The torch fallback also takes float64, computed in float64, so gradcheck can run on it.
FALLBACK_DTYPES = (*ATTENTION_DTYPES, torch.float64)
# The Triton attention kernels load whole head rows as one tile; tl.dot needs a power of two >= 16.
TRITON_HEAD_DIMS = (16, 32, 64, 128)


def check_tensor(name: str, x: object, *, ndim: int, dtypes: Collection[torch.dtype]) -> None:
    """Check ``x`` is a tensor of ``ndim`` dimensions and one of ``dtypes``."""
    if not isinstance(x, torch.Tensor):
        raise KernelError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        raise KernelError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if x.dtype not in dtypes:
        raise KernelError(f"{name} has dtype {x.dtype}; expected one of {tuple(dtypes)}")


def check_head_dim(d: int, supported: Collection[int] | None) -> None:
    """Check the head dim ``d`` is positive and, if ``supported`` is given, one of those values."""
    if d < 1 or (supported is not None and d not in supported):
        allowed = "a positive int" if supported is None else f"one of {tuple(supported)}"
        raise KernelError(f"head dim d={d} is not supported; expected {allowed}")


def check_rows_contiguous(name: str, x: torch.Tensor) -> None:
    """Check the last dim of ``x`` is contiguous (stride 1), as the Triton kernels' row loads need."""
    if x.stride(-1) != 1 and x.shape[-1] > 1:  # stride first: the common case reads one attribute
        raise KernelError(
            f"{name} must be contiguous in its last dim (stride 1), got strides {tuple(x.stride())}"
        )


def check_square_batch(name: str, m: object) -> None:
    """Check ``m`` is a floating ``(P, n, n)`` batch of square matrices."""
    check_tensor(
        name, m, ndim=3, dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16)
    )
    if m.shape[-1] != m.shape[-2]:
        raise KernelError(f"{name} must be (P, n, n) square matrices, got shape {tuple(m.shape)}")


def check_free_memory(nbytes: int, device: torch.device, what: str) -> None:
    """Check a CUDA device has ``nbytes`` free for ``what``; CPU memory, captures and code being
    compiled are not checked.

    Reads the driver's free-memory counter (no stream synchronisation) plus what PyTorch's caching
    allocator holds reserved but unused, since that is available to the launch too.
    """
    # A graph capture replays allocations it already made: no driver calls inside. Dynamo cannot
    # put the driver queries in a graph (fullgraph compiles would fail), and the free memory at
    # trace time says nothing about the compiled code's later runs.
    if (
        device.type != "cuda"
        or torch.compiler.is_compiling()
        or torch.cuda.is_current_stream_capturing()
    ):
        return
    free, _ = torch.cuda.mem_get_info(device)
    if nbytes <= free:
        return  # the common case costs one driver query; the allocator's stats are slow to read
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if nbytes > free + cached:
        raise KernelError(
            f"{what} needs {nbytes / 2**20:.1f} MiB on {device}, "
            f"only {(free + cached) / 2**20:.1f} MiB free"
        )


def check_causal(causal: object) -> None:
    """Check ``causal`` is a bool: the torch fallback would read any truthy object as True."""
    if not isinstance(causal, bool):
        raise KernelError(f"causal must be True or False, got {causal!r}")


def resolve_scale(scale: float | None, d: int) -> float:
    """The logit scale: ``d ** -0.5`` when ``scale`` is None; must be a finite positive float."""
    if scale is None:
        return d**-0.5
    if (
        isinstance(scale, bool)
        or not isinstance(scale, int | float)
        or not (0.0 < scale <= sys.float_info.max)  # an int of any size, without float()
    ):
        raise KernelError(f"scale must be a finite positive float or None, got {scale!r}")
    return float(scale)


def check_attention_inputs(
    q: object,
    k: object,
    v: object,
    key_padding_mask: object,
    alive: object,
    *,
    head_dims: Collection[int] | None = None,
    dtypes: Collection[torch.dtype] = ATTENTION_DTYPES,
) -> None:
    """Check pool-attention arguments against the Kernel protocol's contract.

    Args:
        q, k, v: ``(B, P, T, d)``, same shape, float32/float16/bfloat16, same device, last dim
            contiguous.
        key_padding_mask: None or ``(B, T)`` bool on the same device.
        alive: None or ``(P,)`` bool on the same device.
        head_dims: head dims the backend supports; None accepts any positive ``d``.
        dtypes: dtypes the backend supports.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, x, ndim=4, dtypes=dtypes)
        check_rows_contiguous(name, x)
    for name, x in (("k", k), ("v", v)):
        if x.shape != q.shape:
            raise KernelError(f"{name} has shape {tuple(x.shape)}; expected q's {tuple(q.shape)}")
        if x.dtype != q.dtype:
            raise KernelError(f"{name} has dtype {x.dtype}; expected q's {q.dtype}")
        if x.device != q.device:
            raise KernelError(f"{name} is on {x.device}; expected q's device {q.device}")
    batch, pool, seq, d = q.shape
    if batch == 0 or pool == 0 or seq == 0:
        raise KernelError(f"q has an empty dim: shape {tuple(q.shape)}")
    check_head_dim(d, head_dims)
    masks = (("key_padding_mask", key_padding_mask, (batch, seq)), ("alive", alive, (pool,)))
    for name, mask, shape in masks:
        if mask is None:
            continue
        check_tensor(name, mask, ndim=len(shape), dtypes=(torch.bool,))
        if tuple(mask.shape) != shape:
            raise KernelError(f"{name} has shape {tuple(mask.shape)}; expected {shape}")
        if mask.device != q.device:
            raise KernelError(f"{name} is on {mask.device}; expected q's device {q.device}")
