"""Compiled Triton kernels and the SDPA path on a CUDA device vs the torch fallback vs float64
math, every dtype (the SDPA path in fp16/bf16, where ``backend="auto"`` takes it).

Tolerances are the table in ``test_triton_equivalence.py``'s docstring. Run on the GPU machine
with ``nox -s gpu`` or ``pytest packages/slime-kernels/tests -m gpu``.
"""

from __future__ import annotations

import pytest
import torch
from slime.kernels import TritonKernel, effective_rank, pool_attention, select_kernel
from slime.kernels import torch_fallback as fallback
from slime.kernels.functional import choose_path

pytestmark = pytest.mark.gpu

TOL = {
    torch.float32: ({"atol": 2e-5, "rtol": 1e-4}, {"atol": 1e-4, "rtol": 1e-3}),
    torch.float16: ({"atol": 2e-3, "rtol": 2e-3}, {"atol": 1e-2, "rtol": 1e-2}),
    torch.bfloat16: ({"atol": 1.6e-2, "rtol": 1.6e-2}, {"atol": 6e-2, "rtol": 5e-2}),
}


def _case(batch, pool, seq, d, dtype, seed, masked):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (
        torch.randn(batch, pool, seq, d, generator=gen, device="cuda", dtype=dtype).requires_grad_()
        for _ in "qkv"
    )
    kpm = alive = None
    if masked:
        kpm = torch.rand(batch, seq, generator=gen, device="cuda") > 0.25
        kpm[0] = False
        alive = torch.ones(pool, dtype=torch.bool, device="cuda")
        alive[-1] = False
    return q, k, v, kpm, alive


def _check(q, k, v, kw, reference_attention, seed, backend="auto"):
    fwd_tol, grad_tol = TOL[q.dtype]
    out = pool_attention(q, k, v, backend=backend, **kw)
    ref = reference_attention(q, k, v, **kw)
    fb = fallback.attention(q, k, v, **kw)
    assert out.dtype == q.dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, **fwd_tol)
    torch.testing.assert_close(out.float(), fb.float(), **fwd_tol)
    gen = torch.Generator(device="cuda").manual_seed(seed + 1)
    grad = torch.randn(out.shape, generator=gen, device="cuda", dtype=out.dtype)
    ours = torch.autograd.grad(out, (q, k, v), grad)
    refs = torch.autograd.grad(ref, (q, k, v), grad.double())
    fbs = torch.autograd.grad(fb, (q, k, v), grad)
    for a, b, c in zip(ours, refs, fbs):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b.double(), **grad_tol)
        torch.testing.assert_close(a.float(), c.float(), **grad_tol)


PATHS = ["triton", "sdpa"]


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_single_token_and_single_pseudopod(dtype, backend, reference_attention):
    q, k, v, _, _ = _case(3, 1, 1, 64, dtype, 11, masked=False)
    _check(q, k, v, {"causal": True}, reference_attention, 11, backend)


@pytest.mark.parametrize("backend", PATHS)
def test_long_sequence_bf16_unmasked(backend, reference_attention):
    q, k, v, _, _ = _case(1, 2, 1024, 64, torch.bfloat16, 12, masked=False)
    _check(q, k, v, {"causal": True}, reference_attention, 12, backend)


@pytest.mark.parametrize("backend", PATHS)
def test_bf16_values_near_overflow_stay_finite(backend, reference_attention):
    q, k, v, _, _ = _case(1, 2, 64, 64, torch.bfloat16, 13, masked=False)
    with torch.no_grad():
        q.mul_(1e3)
        k.mul_(1e3)  # logits ~ 1e7: fine in the fp32 accumulator
    out = pool_attention(q, k, v, causal=True, backend=backend)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(
        out.double(), reference_attention(q, k, v, causal=True), **TOL[torch.bfloat16][0]
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True], ids=["alive", "alive+padding"])
def test_sdpa_path_matches_reference_and_fallback(dtype, causal, padded, reference_attention):
    q, k, v, kpm, alive = _case(2, 3, 201, 64, dtype, 40 + causal, masked=True)
    kw = {"causal": causal, "alive": alive, "key_padding_mask": kpm if padded else None}
    _check(q, k, v, kw, reference_attention, 40 + causal, "sdpa")


@pytest.mark.parametrize("backend", ["auto", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_sdpa_path_gives_dead_slots_and_keyless_queries_exact_zeros(backend, dtype):
    gen = torch.Generator(device="cuda").manual_seed(21)
    q, k, v = (
        torch.randn(2, 4, 96, 64, generator=gen, device="cuda", dtype=dtype).requires_grad_()
        for _ in "qkv"
    )
    alive = torch.tensor([True, False, True, False], device="cuda")
    kpm = None
    if backend == "sdpa":  # "auto" sends key padding to the Triton kernel
        kpm = torch.ones(2, 96, dtype=torch.bool, device="cuda")
        kpm[1] = False  # batch row 1: no query has a visible key
        kpm[0, :5] = False  # with causal, queries 0..4 of row 0 see nothing either
    out = pool_attention(q, k, v, causal=True, key_padding_mask=kpm, alive=alive, backend=backend)
    assert torch.isfinite(out).all()
    zero = [(slice(None), ~alive.cpu())]
    if kpm is not None:
        zero += [(1,), (0, slice(None), slice(0, 5))]
    for index in zero:
        assert torch.equal(out[index], torch.zeros_like(out[index])), index
    grad = torch.randn(out.shape, generator=gen, device="cuda", dtype=dtype)
    for g in torch.autograd.grad(out, (q, k, v), grad):
        assert torch.isfinite(g).all()
        assert torch.equal(g[:, ~alive.cpu()], torch.zeros_like(g[:, ~alive.cpu()]))
        if kpm is not None:
            assert torch.equal(g[1], torch.zeros_like(g[1]))


@pytest.mark.parametrize(
    ("dtype", "padded", "head_dim", "path"),
    [
        (torch.bfloat16, False, 64, "sdpa"),
        (torch.float16, False, 48, "sdpa"),
        (torch.bfloat16, True, 64, "triton"),
        (torch.float32, False, 64, "triton"),
        (torch.bfloat16, True, 48, "torch"),
    ],
)
def test_auto_runs_the_path_choose_path_names_on_cuda(dtype, padded, head_dim, path):
    device = torch.device("cuda")
    assert choose_path("auto", device, dtype, head_dim, key_padding=padded, traced=False) == path
    q, k, v = (
        torch.randn(2, 3, 32, head_dim, device=device, dtype=dtype, requires_grad=True)
        for _ in "qkv"
    )
    kpm = torch.ones(2, 32, dtype=torch.bool, device=device) if padded else None
    out = pool_attention(q, k, v, causal=True, key_padding_mask=kpm)
    ran = type(out.grad_fn).__name__
    if path == "sdpa":
        assert "ScaledDotProduct" in ran, ran
    else:
        assert ran == "_EagerAttentionBackward", ran
        torch.testing.assert_close(
            out, pool_attention(q, k, v, causal=True, key_padding_mask=kpm, backend=path)
        )


def test_triton_launches_after_the_first_use_a_cached_handle():
    """On this Triton the launcher caches (a False here means every launch pays the dispatcher,
    not a wrong result), and the cached launches compute what the dispatched one did."""
    from slime.kernels import _triton_attention as kernels

    q, k, v, kpm, alive = _case(2, 3, 77, 64, torch.bfloat16, 31, masked=True)
    args = (q.detach(), k.detach(), v.detach(), True, 0.125, kpm, alive)
    first = kernels.forward(*args)
    grad = torch.randn_like(first[0])
    first_grads = kernels.backward(grad, *args[:3], *first, None, *args[3:])
    for launcher in (kernels._FWD, kernels._BWD_DELTA, kernels._BWD_DKDV, kernels._BWD_DQ):
        assert launcher.handles, f"{launcher.kernel} was not cached"
    again = kernels.forward(*args)
    again_grads = kernels.backward(grad, *args[:3], *again, None, *args[3:])
    for a, b in zip((*first, *first_grads), (*again, *again_grads)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("offset", [0, 1, 8])
def test_cached_launches_respect_the_alignment_of_each_call(offset, reference_attention):
    """A view 2 or 16 bytes into a buffer is a different specialisation from an aligned tensor:
    each must get its own kernel, in either order."""
    shape = (1, 2, 40, 64)
    numel = torch.Size(shape).numel()
    gen = torch.Generator(device="cuda").manual_seed(32)
    bufs = [
        torch.randn(numel + 8, generator=gen, device="cuda", dtype=torch.bfloat16) for _ in "qkv"
    ]
    aligned = [b[:numel].view(shape) for b in bufs]
    shifted = [b[offset : offset + numel].view(shape) for b in bufs]
    for q, k, v in (aligned, shifted, aligned, shifted):
        out = pool_attention(q, k, v, causal=True, backend="triton")
        ref = reference_attention(q, k, v, causal=True)
        torch.testing.assert_close(out.double(), ref, **TOL[torch.bfloat16][0])


def test_torch_compile_traces_the_custom_op_without_graph_breaks():
    q, k, v, _, alive = _case(2, 3, 64, 32, torch.bfloat16, 14, masked=True)

    def step(q, k, v, alive):
        return pool_attention(q, k, v, causal=True, alive=alive).float().square().sum()

    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(q, k, v, alive)
    torch.testing.assert_close(loss, step(q, k, v, alive), rtol=1e-3, atol=1e-3)
    loss.backward()
    assert torch.isfinite(q.grad).all()


def test_auto_selects_sdpa_with_triton_for_key_padding_on_cuda():
    kernel = select_kernel("cuda")
    assert kernel.name == "sdpa" and kernel.masked.name == "triton"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_sdpa_kernel_matches_the_triton_pool_kernel_on_cuda(dtype):
    from slime.kernels import SDPAKernel, TritonKernel

    gen = torch.Generator(device="cuda").manual_seed(0)
    shape = (4, 6, 128, 64)
    q, k, v = (
        torch.randn(shape, generator=gen, device="cuda", dtype=dtype).requires_grad_()
        for _ in "qkv"
    )
    alive = torch.tensor([True, True, False, True, False, True], device="cuda")
    out = SDPAKernel(TritonKernel()).attention(q, k, v, causal=True, alive=alive)
    ref = TritonKernel().attention(q, k, v, causal=True, alive=alive)
    tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(out, ref, **tol)
    grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    refs = torch.autograd.grad(ref.float().square().sum(), (q, k, v))
    for g, r in zip(grads, refs):
        torch.testing.assert_close(g, r, **tol)
        assert torch.equal(g[:, 2], torch.zeros_like(g[:, 2]))


def test_auto_runs_the_fallback_for_a_head_dim_triton_does_not_take():
    q, k, v = (torch.randn(2, 3, 16, 8, device="cuda") for _ in "qkv")
    out = pool_attention(q, k, v, causal=True)
    torch.testing.assert_close(out, fallback.attention(q, k, v, causal=True))


@pytest.mark.parametrize("pool", [8, 64])
@pytest.mark.parametrize("n", [32, 64, 128])
@pytest.mark.parametrize("chunks", [None, 1])
def test_effective_rank_matches_float64_eigvalsh(pool, n, chunks):
    from slime.kernels import _triton_erank

    x = torch.randn(pool, 3 * n, n, device="cuda", dtype=torch.float64)
    x[:, :, n // 2 :] += 2 * x[:, :, : n - n // 2]
    m = fallback.correlation(x).double()
    exact = fallback.entropy_rank(torch.linalg.eigvalsh(m))
    got = _triton_erank.effective_rank(m, chunks=chunks)
    torch.testing.assert_close(got.double(), exact, rtol=1e-4, atol=0)


def test_effective_rank_does_not_synchronise_with_the_host():
    m = fallback.correlation(torch.randn(8, 256, 64, device="cuda"))
    TritonKernel().effective_rank(m)  # compile outside the checked region
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        effective_rank(m)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_effective_rank_compiles_once_whatever_the_pool_size():
    """The lifecycle calls it with the live count of a layer, which culls and births change: a
    pool size must not pick a new kernel specialisation (it did through a buffer's alignment)."""
    from slime.kernels import _triton_erank

    caches = getattr(_triton_erank._erank_kernel, "device_caches", None)
    if caches is None:
        pytest.skip("this Triton keeps no per-device kernel cache to count")

    def compiled() -> int:
        return sum(len(cache[0]) for cache in caches.values())

    m = fallback.correlation(torch.randn(4, 128, 64, device="cuda"))
    _triton_erank.effective_rank(m, chunks=4)
    before = compiled()
    for pool in (1, 2, 3, 5, 6, 7):
        m = fallback.correlation(torch.randn(pool, 128, 64, device="cuda"))
        _triton_erank.effective_rank(m, chunks=4)
    assert compiled() == before


def test_effective_rank_is_deterministic_across_calls():
    m = fallback.correlation(torch.randn(64, 256, 64, device="cuda"))
    first = effective_rank(m)
    for _ in range(3):
        assert torch.equal(effective_rank(m), first)


# Last: the fp32 (IEEE dot) specialisations take 4-6x longer to compile than bf16 ones, so a time
# limit cuts these rather than the cheaper tests above.
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("d", [16, 32, 64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_compiled_kernels_match_reference(dtype, d, causal, reference_attention):
    seed = d + 7 * causal
    q, k, v, kpm, alive = _case(2, 3, 201, d, dtype, seed, masked=True)
    kw = {"causal": causal, "key_padding_mask": kpm, "alive": alive}
    _check(q, k, v, kw, reference_attention, seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_tube_write_in_one_launch_matches_the_torch_definition_on_cuda(dtype):
    from slime.kernels import feed_tubes, tube_workspace
    from slime.kernels.functional import _tubes_in_one_launch

    gen = torch.Generator(device="cuda").manual_seed(7)
    x = torch.randn(16, 256, 8, 64, generator=gen, device="cuda").to(dtype)
    x[:, :, 3] = 0.0  # a dead slot: NaN in the ring
    heads = x.transpose(1, 2)  # (B, P, T, d), the layout attention leaves
    want, want_pos = (
        torch.full((5, 8), float("nan"), device="cuda"),
        torch.zeros((), dtype=torch.long, device="cuda"),
    )
    got, pos = want.clone(), want_pos.clone()
    work = tube_workspace(8, "cuda")
    assert _tubes_in_one_launch(heads, got, pos, work)
    for _ in range(7):  # round the ring of 5 and on
        fallback.feed_tubes(heads, want, want_pos)
        feed_tubes(heads, got, pos, work)
    torch.cuda.synchronize()
    assert pos.item() == want_pos.item() == 2
    torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-5, atol=1e-5)
    assert not work[:9].any()
