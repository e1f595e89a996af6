"""Triton kernels (interpreter on CPU, compiled on GPU) vs the torch fallback vs float64 math.

The attention cases also run the SDPA path (``backend="sdpa"``, torch's fused CPU kernel here),
which must meet the same contract. Every case draws its own random inputs. On CPU only float32 runs (the interpreter has no bf16);
the GPU module ``test_gpu.py`` repeats the comparison compiled, in every dtype. Tolerances:

| dtype    | vs float64 forward atol / rtol | vs float64 gradients atol / rtol |
|----------|--------------------------------|----------------------------------|
| float32  | 2e-5 / 1e-4                    | 1e-4 / 1e-3                      |
| float16  | 2e-3 / 2e-3                    | 1e-2 / 1e-2                      |
| bfloat16 | 1.6e-2 / 1.6e-2                | 6e-2 / 5e-2                      |

Effective rank: relative 1e-4 against ``torch.linalg.eigvalsh`` in float64, all devices.
"""

from __future__ import annotations

import pytest
import torch
from slime.kernels import TritonKernel, pool_attention
from slime.kernels import torch_fallback as fallback
from slime.kernels._triton_erank import MAX_N
from slime.proto import KernelError

FWD = {"atol": 2e-5, "rtol": 1e-4}
GRAD = {"atol": 1e-4, "rtol": 1e-3}
PATHS = ["triton", "sdpa"]


def _case(batch, pool, seq, d, seed, *, masked):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, pool, seq, d, generator=gen).requires_grad_(True) for _ in "qkv")
    kpm = alive = None
    if masked:
        kpm = torch.rand(batch, seq, generator=gen) > 0.25
        kpm[0] = False  # batch row 0: every query fully masked
        alive = torch.rand(pool, generator=gen) > 0.4
        alive[0] = True
    return q, k, v, kpm, alive


def _check_against_fallback_and_reference(q, k, v, kw, reference_attention, seed, backend):
    out = pool_attention(q, k, v, backend=backend, **kw)
    fb = fallback.attention(q, k, v, **kw)
    ref = reference_attention(q, k, v, **kw)
    torch.testing.assert_close(out, fb, **FWD)
    torch.testing.assert_close(out.double(), ref, **FWD)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1))
    ours = torch.autograd.grad(out, (q, k, v), grad)
    fbg = torch.autograd.grad(fb, (q, k, v), grad)
    refg = torch.autograd.grad(ref, (q, k, v), grad.double())
    for name, a, b, c in zip("qkv", ours, fbg, refg):
        assert torch.isfinite(a).all(), f"d{name} has non-finite values"
        torch.testing.assert_close(a, b, **GRAD)
        torch.testing.assert_close(a.double(), c.double(), **GRAD)


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("d", [16, 32, 64, 128])
def test_head_dims_with_seq_not_a_multiple_of_the_block(d, backend, reference_attention):
    q, k, v, kpm, alive = _case(1, 2, 37, d, seed=d, masked=True)
    kw = {"causal": d in (32, 128), "key_padding_mask": kpm, "alive": alive}
    _check_against_fallback_and_reference(q, k, v, kw, reference_attention, d, backend)


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("causal", [False, True])
def test_single_token_sequence(causal, backend, reference_attention):
    q, k, v, _, _ = _case(2, 2, 1, 16, seed=100 + causal, masked=False)
    kw = {"causal": causal}
    _check_against_fallback_and_reference(q, k, v, kw, reference_attention, 100, backend)


@pytest.mark.parametrize("backend", PATHS)
def test_single_pseudopod_pool(backend, reference_attention):
    q, k, v, kpm, _ = _case(2, 1, 33, 16, seed=200, masked=True)
    kw = {"causal": True, "key_padding_mask": kpm}
    _check_against_fallback_and_reference(q, k, v, kw, reference_attention, 200, backend)


@pytest.mark.parametrize("backend", PATHS)
def test_pool_at_capacity_with_every_slot_alive(backend, reference_attention):
    q, k, v, _, _ = _case(1, 4, 20, 16, seed=300, masked=False)
    kw = {"alive": torch.ones(4, dtype=torch.bool), "scale": 0.7}
    _check_against_fallback_and_reference(q, k, v, kw, reference_attention, 300, backend)


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("causal", [False, True])
def test_dead_slots_without_key_padding_match_the_reference(causal, backend, reference_attention):
    q, k, v, _, _ = _case(2, 3, 11, 16, seed=350 + causal, masked=False)
    kw = {"causal": causal, "alive": torch.tensor([False, True, False])}
    _check_against_fallback_and_reference(q, k, v, kw, reference_attention, 350, backend)


@pytest.mark.parametrize("backend", PATHS)
def test_masks_that_remove_whole_rows_give_zero_output_and_gradients(backend):
    q, k, v, _, _ = _case(2, 3, 9, 16, seed=400, masked=False)
    kpm = torch.ones(2, 9, dtype=torch.bool)
    kpm[1] = False
    kpm[0, 0] = False  # with causal, query 0 of batch 0 sees nothing either
    alive = torch.tensor([True, False, True])
    out = pool_attention(q, k, v, causal=True, key_padding_mask=kpm, alive=alive, backend=backend)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1]))
    assert torch.equal(out[0, :, 0], torch.zeros_like(out[0, :, 0]))
    for g in torch.autograd.grad(out.square().sum(), (q, k, v)):
        assert torch.isfinite(g).all()
        assert torch.equal(g[1], torch.zeros_like(g[1]))
        assert torch.equal(g[:, 1], torch.zeros_like(g[:, 1]))


@pytest.mark.parametrize("backend", PATHS)
def test_huge_logits_match_fallback(backend):
    q, k, v, _, _ = _case(1, 2, 12, 16, seed=500, masked=False)
    with torch.no_grad():
        q.mul_(200.0)
    out = pool_attention(q, k, v, causal=True, backend=backend)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, fallback.attention(q, k, v, causal=True), **FWD)


def _psd(pool, n, rank, seed):
    x = torch.randn(
        pool, rank, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return x.transpose(1, 2) @ x


def _eigvalsh_erank(m):
    return fallback.entropy_rank(torch.linalg.eigvalsh(m.double()))


@pytest.mark.parametrize(
    ("n", "rank"), [(1, 1), (5, 5), (16, 3), (33, 40), (40, 12), (56, 20), (64, 64), (100, 100)]
)
def test_triton_effective_rank_matches_eigvalsh_in_float64(n, rank):
    m = _psd(3, n, rank, seed=n + rank)
    got = TritonKernel().effective_rank(m)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _eigvalsh_erank(m), rtol=1e-4, atol=0)


@pytest.mark.parametrize("chunks", [2, 4])
def test_triton_effective_rank_split_over_programs_matches_eigvalsh(chunks):
    from slime.kernels import _triton_erank

    m = _psd(2, 20, 20, seed=chunks)
    got = _triton_erank.effective_rank(m, chunks=chunks)
    torch.testing.assert_close(got.double(), _eigvalsh_erank(m), rtol=1e-4, atol=0)


def test_triton_effective_rank_of_correlation_with_clustered_spectrum():
    base = torch.randn(2, 200, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x = base.repeat(1, 1, 8) + 1e-3 * torch.randn(2, 200, 32, dtype=torch.float64)
    corr = fallback.correlation(x).double()
    got = TritonKernel().effective_rank(corr)
    torch.testing.assert_close(got.double(), _eigvalsh_erank(corr), rtol=1e-4, atol=0)


def test_triton_effective_rank_reads_the_lower_triangle():
    m = _psd(2, 8, 8, seed=9)
    upper_garbage = m + torch.triu(torch.full_like(m, 5.0), diagonal=1)
    torch.testing.assert_close(
        TritonKernel().effective_rank(upper_garbage), TritonKernel().effective_rank(m)
    )


def test_triton_effective_rank_of_zero_matrix_is_zero():
    assert torch.equal(TritonKernel().effective_rank(torch.zeros(2, 6, 6)), torch.zeros(2))


def test_triton_effective_rank_rejects_matrices_above_its_limit():
    with pytest.raises(KernelError, match=f"n={MAX_N + 1}"):
        TritonKernel().effective_rank(torch.zeros(1, MAX_N + 1, MAX_N + 1))


@pytest.mark.parametrize(("block_m", "block_n"), [(16, 32), (32, 16)])
@pytest.mark.parametrize("causal", [False, True])
def test_unequal_query_and_key_blocks_split_the_masked_phases_correctly(block_m, block_n, causal):
    from slime.kernels import _triton_attention as kernels

    q, k, v, kpm, alive = _case(1, 2, 45, 16, seed=600 + block_m + causal, masked=True)
    cfg = {"BLOCK_M": block_m, "BLOCK_N": block_n, "num_warps": 4, "num_stages": 1}
    args = (causal, 0.25, kpm, alive)
    out, lse = kernels.forward(q.detach(), k.detach(), v.detach(), *args, config=cfg)
    ref_out, ref_lse = fallback.attention_forward(q.detach(), k.detach(), v.detach(), *args)
    torch.testing.assert_close(out, ref_out, **FWD)
    torch.testing.assert_close(lse, ref_lse, **FWD)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    delta = (grad * out).sum(-1)
    got = kernels.backward(grad, q.detach(), k.detach(), v.detach(), out, lse, None, *args,
                           configs=(cfg, cfg))  # fmt: skip
    want = fallback.attention_backward(grad, q.detach(), k.detach(), v.detach(), lse, delta, *args)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **GRAD)
