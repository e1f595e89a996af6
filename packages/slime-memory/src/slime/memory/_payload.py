"""Genome payloads: ``to_dict()`` trees of tensors and plain data, checked, copied and blended."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from slime.proto import ArchiveError

__all__ = [
    "INDEXABLE_DTYPES",
    "as_numbers",
    "blend_payloads",
    "check_storable",
    "copy_payload",
    "is_storable",
    "tensor_leaves",
]

_PLAIN = (str, int, float, bool, type(None))

INDEXABLE_DTYPES = frozenset(
    {
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
    }
)
"""Dtypes that genome buffers take: ``index_copy_`` is not implemented for the others (float8,
uint16/32/64, complex32 on the CPU), so those are only ever held as separate tensors."""

# Dtypes safetensors cannot write (save would fail on them), besides the quantized ones.
_UNSAVABLE = frozenset({torch.complex32})


def check_storable(tensor: torch.Tensor, path: str, *, meta_ok: bool = False) -> None:
    """Raise ArchiveError naming ``path`` unless the archive can copy, read back and save
    ``tensor``: a dense tensor holding data (not sparse, nested, quantized or on ``meta``;
    ``meta_ok``: an archive on the meta device, which only follows shapes, takes meta tensors)."""
    if not is_storable(tensor, meta_ok=meta_ok):
        kind = "nested" if tensor.is_nested else f"{tensor.layout}, {tensor.dtype}"
        raise ArchiveError(
            f"{path} is a tensor ({kind}, on {tensor.device}) the archive cannot store; a genome "
            "tensor must be plain and dense (not sparse, nested or quantized) and hold data (not "
            "on the meta device)"
        )


def is_storable(tensor: torch.Tensor, *, meta_ok: bool = False) -> bool:
    """Whether :func:`check_storable` passes ``tensor`` (without building its message)."""
    return not (
        tensor.layout != torch.strided
        or tensor.is_nested
        or tensor.is_quantized
        or (tensor.is_meta and not meta_ok)
        or tensor.dtype in _UNSAVABLE
    )


def as_numbers(
    tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``tensor`` detached from autograd on ``device`` (in ``dtype``), copying only if needed.

    Skips the no-op calls when possible: at small batch sizes each dispatch costs microseconds.
    """
    if tensor.requires_grad:
        tensor = tensor.detach()
    if tensor.device != device or (dtype is not None and tensor.dtype != dtype):
        tensor = tensor.to(device=device, dtype=dtype)
    return tensor


def copy_payload(payload: Any, path: str) -> Any:
    """Deep-copy a payload, cloning tensors (detached), so later edits by the caller cannot leak in.

    Raises:
        ArchiveError: ``path`` names the first value that is neither a tensor nor plain data, or
            a tensor the archive cannot store (see :func:`check_storable`).
    """
    if isinstance(payload, torch.Tensor):
        check_storable(payload, path)
        return payload.detach().clone()
    if isinstance(payload, _PLAIN):
        return payload
    if isinstance(payload, dict):
        copied = {}
        for key, value in payload.items():
            if not isinstance(key, str):
                raise ArchiveError(f"{path} has non-string key {key!r}; payload keys must be str")
            copied[key] = copy_payload(value, f"{path}[{key!r}]")
        return copied
    if isinstance(payload, list | tuple):
        items = [copy_payload(value, f"{path}[{i}]") for i, value in enumerate(payload)]
        return items if isinstance(payload, list) else tuple(items)
    raise ArchiveError(
        f"{path} is a {type(payload).__name__}; a genome holds only tensors and plain data "
        "(str, int, float, bool, None, lists, tuples and str-keyed dicts of those)"
    )


def tensor_leaves(payload: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a payload keyed by its path (``"a/0/b"``), in traversal order."""
    found: dict[str, torch.Tensor] = {}
    if isinstance(payload, torch.Tensor):
        found[prefix] = payload
    elif isinstance(payload, dict):
        for key, value in payload.items():
            found.update(tensor_leaves(value, f"{prefix}/{key}"))
    elif isinstance(payload, list | tuple):
        for i, value in enumerate(payload):
            found.update(tensor_leaves(value, f"{prefix}/{i}"))
    return found


def _map_tensors(payload: Any, fn: Callable[[str, torch.Tensor], torch.Tensor], prefix: str) -> Any:
    if isinstance(payload, torch.Tensor):
        return fn(prefix, payload)
    if isinstance(payload, dict):
        return {k: _map_tensors(v, fn, f"{prefix}/{k}") for k, v in payload.items()}
    if isinstance(payload, list | tuple):
        items = [_map_tensors(v, fn, f"{prefix}/{i}") for i, v in enumerate(payload)]
        return items if isinstance(payload, list) else tuple(items)
    return payload


def blend_payloads(payloads: Sequence[Any], weights: Sequence[float]) -> Any:
    """Weighted blend of payloads; the structure and plain data come from ``payloads[0]``.

    Each floating-point tensor of ``payloads[0]`` becomes the weighted mean of the tensors at the
    same path in every payload where that tensor has the same shape and dtype (weights renormalised
    over those). Other tensors (integer, bool) and plain data are copied from ``payloads[0]``.
    """
    leaves = [tensor_leaves(p) for p in payloads]

    def blend(path: str, first: torch.Tensor) -> torch.Tensor:
        if not first.is_floating_point():
            return first.detach().clone()
        acc = torch.zeros(first.shape, dtype=torch.float64, device=first.device)
        total = 0.0
        for leaf, weight in zip(leaves, weights):
            other = leaf.get(path)
            if other is None or other.shape != first.shape or other.dtype != first.dtype:
                continue
            acc += weight * other.detach().to(device=first.device, dtype=torch.float64)
            total += weight
        return (acc / total).to(first.dtype)

    return _map_tensors(copy_payload(payloads[0], "genome"), blend, "")
