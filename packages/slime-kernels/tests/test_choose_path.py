"""choose_path, the one rule for what computes a pool_attention call, and that calls follow it."""

from __future__ import annotations

import pytest
import torch
from slime.kernels import functional, pool_attention
from slime.kernels.functional import choose_path
from slime.proto import KernelError

CUDA, CPU = torch.device("cuda"), torch.device("cpu")
BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


def _path(backend="auto", device=CUDA, dtype=BF16, head_dim=64, key_padding=False, traced=False):
    return choose_path(backend, device, dtype, head_dim, key_padding=key_padding, traced=traced)


@pytest.mark.parametrize("dtype", [BF16, FP16])
def test_auto_takes_sdpa_for_eager_half_precision_without_key_padding_on_cuda(dtype):
    assert _path(dtype=dtype) == "sdpa"


@pytest.mark.parametrize("head_dim", [8, 48, 64, 256])
def test_auto_takes_sdpa_whatever_the_head_dim(head_dim):
    assert _path(head_dim=head_dim) == "sdpa"


@pytest.mark.parametrize("dtype", [BF16, FP16, FP32])
def test_auto_takes_sdpa_off_cuda_in_every_dtype(dtype):
    assert _path(device=CPU, dtype=dtype) == "sdpa"


def test_auto_keeps_fp32_on_cuda_in_the_triton_kernel():
    assert _path(dtype=FP32) == "triton"
    assert _path(dtype=FP32, head_dim=48) == "torch"


@pytest.mark.parametrize(("head_dim", "path"), [(16, "triton"), (128, "triton"), (48, "torch")])
def test_auto_sends_key_padding_to_the_pool_kernel_on_cuda(head_dim, path):
    assert _path(head_dim=head_dim, key_padding=True) == path


def test_auto_sends_key_padding_to_the_torch_fallback_off_cuda():
    assert _path(device=CPU, key_padding=True) == "torch"


@pytest.mark.parametrize(("device", "path"), [(CUDA, "triton"), (CPU, "torch")])
def test_auto_traced_calls_take_the_custom_op(device, path):
    assert _path(device=device, traced=True) == path


def test_auto_uses_the_fallback_on_cuda_when_triton_is_missing(monkeypatch):
    monkeypatch.setattr(functional, "_HAS_TRITON", False)
    assert _path(key_padding=True) == "torch"
    assert _path() == "sdpa"


@pytest.mark.parametrize("backend", ["sdpa", "triton", "torch"])
@pytest.mark.parametrize("key_padding", [False, True])
@pytest.mark.parametrize("traced", [False, True])
def test_a_named_backend_is_always_used(backend, key_padding, traced):
    for device, dtype in ((CUDA, BF16), (CUDA, FP32), (CPU, FP32)):
        path = _path(backend, device, dtype, 8, key_padding=key_padding, traced=traced)
        assert path == backend


def test_unknown_backend_is_named():
    with pytest.raises(KernelError, match="'flash'"):
        _path("flash")


def test_the_custom_op_rejects_sdpa_by_name():
    q = torch.randn(1, 1, 4, 16)
    with pytest.raises(KernelError, match="'sdpa'"):
        torch.ops.slime.pool_attention(q, q, q, None, None, True, 0.25, "sdpa")


def _qkv(shape=(2, 3, 6, 16)):
    return [torch.randn(shape, requires_grad=True) for _ in "qkv"]


def _grad_fn(out: torch.Tensor) -> str:
    return type(out.grad_fn).__name__


def test_auto_on_cpu_runs_sdpa_without_key_padding():
    q, k, v = _qkv()
    assert "ScaledDotProduct" in _grad_fn(pool_attention(q, k, v, causal=True))


def test_auto_on_cpu_runs_the_pool_kernel_with_key_padding():
    q, k, v = _qkv()
    kpm = torch.ones(2, 6, dtype=torch.bool)
    out = pool_attention(q, k, v, causal=True, key_padding_mask=kpm)
    assert _grad_fn(out) == "_EagerAttentionBackward"


@pytest.mark.parametrize("backend", ["auto", "sdpa"])
@pytest.mark.parametrize("scale", [None, 0.3, 2])
@pytest.mark.parametrize("dtype", [FP32, BF16])
def test_sdpa_without_masks_matches_the_pool_kernel_for_views_and_scales(scale, dtype, backend):
    # A slice of a packed projection (rows contiguous, not the whole tensor), as models pass it.
    packed = torch.randn(2, 5, 3, 3, 16, dtype=dtype).permute(2, 0, 3, 1, 4)  # (3, B, P, T, d)
    q, k, v = (t.detach().requires_grad_() for t in packed)
    out = pool_attention(q, k, v, causal=True, scale=scale, backend=backend)
    ref = pool_attention(q, k, v, causal=True, scale=scale, backend="torch")
    torch.testing.assert_close(out, ref, atol=2e-2 if dtype is BF16 else 1e-5, rtol=0)
    (out.float().square().sum()).backward()
    assert all(t.grad is not None and t.grad.isfinite().all() for t in (q, k, v))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda q, k, v: (q, k[:, :, :-1], v), "k has shape"),
        (lambda q, k, v: (q, k.half(), v), "k has dtype"),
        (lambda q, k, v: (q.double(), k.double(), v.double()), "q has dtype"),
        (lambda q, k, v: (q.transpose(-1, -2), k, v), "q must be contiguous in its last dim"),
        (lambda q, k, v: (q[:, :0], k[:, :0], v[:, :0]), "empty dim"),
        (lambda q, k, v: (q[0], k[0], v[0]), "4 dimensions"),
    ],
)
@pytest.mark.parametrize("backend", ["auto", "sdpa"])
def test_sdpa_without_masks_still_names_bad_inputs(change, match, backend):
    q, k, v = change(*(torch.randn(2, 3, 16, 16) for _ in "qkv"))
    with pytest.raises(KernelError, match=match):
        pool_attention(q, k, v, causal=True, backend=backend)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("inf"), float("nan"), "0.5"])
def test_auto_without_masks_still_names_a_bad_scale(scale):
    q = torch.randn(1, 2, 4, 16)
    with pytest.raises(KernelError, match="scale"):
        pool_attention(q, q, q, scale=scale)
