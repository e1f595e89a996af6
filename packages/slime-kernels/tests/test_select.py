"""select_kernel and the Kernel protocol conformance of both backends."""

from __future__ import annotations

import pytest
import torch
from slime.kernels import SDPAKernel, TorchKernel, TritonKernel, pool_attention, select_kernel
from slime.proto import Kernel, KernelError
from slime.proto.testing import assert_conforms


@pytest.mark.parametrize(
    "kernel",
    [TorchKernel(), TritonKernel(), SDPAKernel(TorchKernel())],
    ids=["torch", "triton", "sdpa"],
)
def test_backend_conforms_to_kernel_protocol(kernel):
    assert_conforms(kernel, Kernel)


def test_auto_on_cpu_picks_sdpa_over_the_torch_pool_kernel():
    for kernel in (select_kernel("cpu"), select_kernel()):
        assert kernel.name == "sdpa" and kernel.masked.name == "torch"


def test_auto_on_cuda_picks_sdpa_over_the_triton_pool_kernel():
    kernel = select_kernel("cuda")
    assert kernel.name == "sdpa" and kernel.masked.name == "triton"


def _pool_inputs(gen, shape=(2, 3, 7, 8)):
    q, k, v = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3))
    return [x.float().requires_grad_() for x in (q, k, v)]


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_kernel_computes_pool_attention_with_exact_zeros_for_dead_slots(causal):
    gen = torch.Generator().manual_seed(0)
    q, k, v = _pool_inputs(gen)
    alive = torch.tensor([True, False, True])
    out = SDPAKernel(TorchKernel()).attention(q, k, v, causal=causal, alive=alive)
    ref = pool_attention(q, k, v, causal=causal, alive=alive, backend="torch")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    refs = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for g, r in zip(grads, refs):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)
        assert torch.equal(g[:, 1], torch.zeros_like(g[:, 1]))
    assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1]))


def test_sdpa_kernel_hands_key_padding_to_the_pool_kernel():
    gen = torch.Generator().manual_seed(1)
    q, k, v = _pool_inputs(gen)
    pad = torch.ones(2, 7, dtype=torch.bool)
    pad[1, :] = False  # no visible key at all: the pool kernel's rule gives zeros, SDPA NaN
    out = SDPAKernel(TorchKernel()).attention(q, k, v, key_padding_mask=pad)
    ref = pool_attention(q, k, v, key_padding_mask=pad, backend="torch")
    torch.testing.assert_close(out, ref)
    assert torch.equal(out[1], torch.zeros_like(out[1]))


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
    assert select_kernel("cuda", head_dim=head_dim).masked.name == name


def test_forced_triton_keeps_triton_whatever_the_head_dim():
    assert select_kernel("cuda", backend="triton", head_dim=8).name == "triton"


def test_auto_pool_attention_resolves_by_head_dim_on_cuda():
    import torch
    from slime.kernels import functional

    cuda = torch.device("cuda")
    assert functional.resolve_backend("auto", cuda, 8) == "torch"
    assert functional.resolve_backend("auto", cuda, 32) == "triton"
    assert functional.resolve_backend("triton", cuda, 8) == "triton"


@pytest.mark.parametrize("padded", [False, True])
def test_the_sdpa_kernel_attends_in_float64_like_the_torch_fallback(padded):
    # the fused and pool kernels take fp32 and narrower: a float64 call raised a KernelError
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 5, 8, dtype=torch.float64, generator=gen) for _ in range(3))
    alive = torch.tensor([True, False, True])
    pad = torch.ones(2, 5, dtype=torch.bool)
    pad[1, 3:] = False
    kwargs = {"causal": True, "alive": alive, "key_padding_mask": pad if padded else None}
    out = select_kernel("cpu").attention(q, k, v, **kwargs)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, TorchKernel().attention(q, k, v, **kwargs), rtol=0, atol=0)
    assert out[:, 1].abs().sum() == 0
