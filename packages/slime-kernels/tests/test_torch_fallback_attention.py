"""The torch fallback's pool attention against the float64 reference: values, gradients, limits.

Tolerances against the float64 reference:

| dtype   | forward atol / rtol | gradients atol / rtol |
|---------|---------------------|-----------------------|
| float32 | 1e-5 / 1e-4         | 5e-5 / 1e-4           |
| float16 | 2e-3 / 2e-3         | (not tested on CPU)   |
"""

from __future__ import annotations

import pytest
import torch
from slime.kernels import TorchKernel
from slime.kernels.torch_fallback import attention

FP32_FWD = {"atol": 1e-5, "rtol": 1e-4}
FP32_GRAD = {"atol": 5e-5, "rtol": 1e-4}


def _inputs(shape, dtype=torch.float32, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(shape, generator=gen) * scale).to(dtype).requires_grad_(True) for _ in range(3)
    ]


def _masks(batch, pool, seq, seed):
    gen = torch.Generator().manual_seed(seed)
    kpm = torch.rand(batch, seq, generator=gen) > 0.3
    kpm[0] = False  # batch row 0 sees no key at all: every query of it is fully masked
    alive = torch.ones(pool, dtype=torch.bool)
    alive[-1] = False
    return kpm, alive


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_forward_matches_float64_reference(causal, masked, reference_attention):
    q, k, v = _inputs((2, 3, 9, 8), seed=1)
    kpm, alive = _masks(2, 3, 9, seed=2) if masked else (None, None)
    kw = {"causal": causal, "key_padding_mask": kpm, "alive": alive}
    out = attention(q, k, v, **kw)
    torch.testing.assert_close(out.double(), reference_attention(q, k, v, **kw), **FP32_FWD)


@pytest.mark.parametrize("causal", [False, True])
def test_gradients_match_float64_reference(causal, reference_attention):
    q, k, v = _inputs((2, 3, 7, 8), seed=3)
    kpm, alive = _masks(2, 3, 7, seed=4)
    kw = {"causal": causal, "key_padding_mask": kpm, "alive": alive, "scale": 0.3}
    grad = torch.randn(2, 3, 7, 8, generator=torch.Generator().manual_seed(5))
    ours = torch.autograd.grad(attention(q, k, v, **kw), (q, k, v), grad)
    ref = torch.autograd.grad(reference_attention(q, k, v, **kw), (q, k, v), grad.double())
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.double(), b.double(), **FP32_GRAD)


def test_gradcheck_in_float64():
    q, k, v = _inputs((1, 2, 5, 4), dtype=torch.float64, seed=6)
    kpm = torch.tensor([[True, False, True, True, False]])
    alive = torch.tensor([True, False])

    def fn(q, k, v):
        return attention(q, k, v, causal=True, key_padding_mask=kpm, alive=alive)

    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_default_scale_is_inverse_sqrt_head_dim(reference_attention):
    q, k, v = _inputs((1, 1, 4, 16), seed=7)
    torch.testing.assert_close(attention(q, k, v), attention(q, k, v, scale=0.25))


def test_huge_logits_stay_finite_and_exact(reference_attention):
    q, k, v = _inputs((1, 2, 6, 8), seed=8, scale=300.0)  # logits ~ 1e5
    out = attention(q, k, v, causal=True)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), reference_attention(q, k, v, causal=True), **FP32_FWD)


def test_fully_masked_queries_output_zero_without_nan_in_forward_and_backward():
    q, k, v = _inputs((2, 2, 5, 4), seed=9)
    kpm = torch.ones(2, 5, dtype=torch.bool)
    kpm[1] = False
    out = attention(q, k, v, key_padding_mask=kpm)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    for g in grads:
        assert torch.isfinite(g).all()
        assert torch.equal(g[1], torch.zeros_like(g[1]))


def test_dead_pseudopods_output_zero_and_get_zero_gradients():
    q, k, v = _inputs((2, 3, 5, 4), seed=10)
    alive = torch.tensor([True, False, True])
    out = attention(q, k, v, causal=True, alive=alive)
    assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1]))
    for g in torch.autograd.grad(out.square().sum(), (q, k, v)):
        assert torch.equal(g[:, 1], torch.zeros_like(g[:, 1]))


def test_causal_query_zero_with_its_only_key_masked_outputs_zero():
    q, k, v = _inputs((1, 1, 4, 4), seed=11)
    kpm = torch.tensor([[False, True, True, True]])
    out = attention(q, k, v, causal=True, key_padding_mask=kpm)
    assert torch.equal(out[0, 0, 0], torch.zeros(4))
    assert torch.isfinite(out).all()


def test_float16_values_whose_logits_overflow_float16_are_computed_in_float32(
    reference_attention,
):
    q, k, v = _inputs((1, 2, 6, 16), dtype=torch.float16, seed=12, scale=150.0)
    logits = q.double() @ k.double().transpose(-1, -2) * 0.25
    assert logits.abs().max() > torch.finfo(torch.float16).max  # would be inf in fp16
    out = attention(q, k, v)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), reference_attention(q, k, v), atol=2e-3, rtol=2e-3)


def test_output_keeps_input_dtype_and_shape():
    q, k, v = _inputs((2, 3, 4, 8), dtype=torch.float16, seed=13)
    out = TorchKernel().attention(q, k, v)
    assert out.dtype == torch.float16
    assert out.shape == (2, 3, 4, 8)


def test_single_key_attention_returns_that_value():
    q, k, v = _inputs((1, 2, 1, 4), seed=14)
    torch.testing.assert_close(attention(q, k, v, causal=True), v.detach())
