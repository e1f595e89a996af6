"""select_kernel and the Kernel protocol conformance of both backends."""

from __future__ import annotations

import pytest
from slime.kernels import TorchKernel, TritonKernel, select_kernel
from slime.proto import Kernel, KernelError
from slime.proto.testing import assert_conforms


@pytest.mark.parametrize("kernel", [TorchKernel(), TritonKernel()], ids=["torch", "triton"])
def test_backend_conforms_to_kernel_protocol(kernel):
    assert_conforms(kernel, Kernel)


def test_auto_on_cpu_picks_torch():
    assert select_kernel("cpu").name == "torch"
    assert select_kernel().name == "torch"


def test_auto_on_cuda_picks_triton():
    assert select_kernel("cuda").name == "triton"


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_backend_can_be_forced(backend):
    assert select_kernel("cpu", backend=backend).name == backend


def test_unknown_backend_is_named():
    with pytest.raises(KernelError, match="'flash'"):
        select_kernel("cpu", backend="flash")


def test_bad_device_is_named():
    with pytest.raises(KernelError, match="'gpu0'"):
        select_kernel("gpu0")
