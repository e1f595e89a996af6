"""Choosing a Kernel backend for a device."""

from __future__ import annotations

import torch
from slime.kernels.functional import triton_available
from slime.kernels.torch_fallback import TorchKernel
from slime.proto import Kernel, KernelError

__all__ = ["select_kernel"]


def select_kernel(device: torch.device | str | None = None, backend: str = "auto") -> Kernel:
    """The Kernel for ``device``: Triton on CUDA when triton imports, the torch fallback otherwise.

    Args:
        device: where the tensors will live; None means CPU.
        backend: ``"auto"``, or ``"torch"`` / ``"triton"`` to force one.

    Raises:
        KernelError: ``backend`` is not one of those three, or ``device`` is not a device.
    """
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as err:
        raise KernelError(f"device {device!r} is not a torch device") from err
    if backend == "torch":
        return TorchKernel()
    if backend == "triton":
        from slime.kernels.triton_impl import TritonKernel

        return TritonKernel()
    if backend == "auto":
        if dev.type == "cuda" and triton_available():
            from slime.kernels.triton_impl import TritonKernel

            return TritonKernel()
        return TorchKernel()
    raise KernelError(f"backend must be 'auto', 'torch' or 'triton', got {backend!r}")
