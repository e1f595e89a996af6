"""Choosing a Kernel backend for a device."""

from __future__ import annotations

import torch
from slime.kernels.functional import resolve_backend
from slime.kernels.sdpa_impl import SDPAKernel
from slime.kernels.torch_fallback import TorchKernel
from slime.proto import Kernel, KernelError

__all__ = ["select_kernel"]


def select_kernel(
    device: torch.device | str | None = None, backend: str = "auto", head_dim: int | None = None
) -> Kernel:
    """The Kernel for ``device``.

    ``"auto"`` gives an :class:`SDPAKernel`: torch's fused attention for pool attention without key
    padding (every causal LM step), and for key padding the pool kernel, Triton on CUDA when triton
    imports and takes the head dim, the torch fallback otherwise.

    Args:
        device: where the tensors will live; None means CPU.
        backend: ``"auto"``, or ``"torch"`` / ``"triton"`` to force one pool kernel for every call.
        head_dim: the pods' head dim, when known: ``"auto"`` then picks the torch fallback for a
            head dim the Triton kernel does not take (a forced ``"triton"`` raises at its first call).

    Raises:
        KernelError: ``backend`` is not one of those three, or ``device`` is not a device.
    """
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as err:
        raise KernelError(f"device {device!r} is not a torch device") from err
    if resolve_backend(backend, dev, head_dim) == "triton":
        from slime.kernels.triton_impl import TritonKernel

        pool: Kernel = TritonKernel()
    else:
        pool = TorchKernel()
    return SDPAKernel(pool) if backend == "auto" else pool
