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


@pytest.mark.parametrize(
    ("head_dim", "name"), [(8, "torch"), (48, "torch"), (64, "triton"), (None, "triton")]
)
def test_auto_on_cuda_falls_back_for_a_head_dim_triton_does_not_take(head_dim, name):
    assert select_kernel("cuda", head_dim=head_dim).name == name


def test_forced_triton_keeps_triton_whatever_the_head_dim():
    assert select_kernel("cuda", backend="triton", head_dim=8).name == "triton"


def test_auto_pool_attention_resolves_by_head_dim_on_cuda():
    import torch
    from slime.kernels import functional

    cuda = torch.device("cuda")
    assert functional.resolve_backend("auto", cuda, 8) == "torch"
    assert functional.resolve_backend("auto", cuda, 32) == "triton"
    assert functional.resolve_backend("triton", cuda, 8) == "triton"
