"""The custom ops' fake implementations report exactly the layouts the real ones return.

``torch.compile`` plans from the fake outputs: inductor asserts every real output has the fake's
strides, and AOT autograd turns a ``reshape`` into a ``view`` where the fake says one is possible.
Inputs come contiguous, as slices of one packed qkv projection (a model's layout) and transposed
(dense but not contiguous): ``empty_like`` keeps the stride order of both, the real outputs do not.
On CPU the Triton backend runs in the interpreter, in float32 and float16 (its bf16 values are
wrong); the GPU tests at the end repeat the check compiled, in bf16, and run inductor over a packed
qkv view. The SDPA path (torch ops, no custom op) runs the same compiled-vs-eager checks.
"""

from __future__ import annotations

import pytest
import torch
from slime.kernels import pool_attention
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensorMode

FORWARD = torch.ops.slime.pool_attention.default
BACKWARD = torch.ops.slime.pool_attention_backward.default
LAYOUTS = ("contiguous", "packed", "transposed")
BATCH, POOL, SEQ, D = 1, 2, 16, 16


def _qkv(layout, dtype, device, seed, shape=(BATCH, POOL, SEQ, D)):
    """q, k, v ``(B, P, T, d)`` in ``layout``, each with a contiguous last dim."""
    batch, pool, seq, d = shape
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(*size):
        return torch.randn(size, generator=gen, device=device).to(dtype)

    if layout == "contiguous":
        return [randn(batch, pool, seq, d) for _ in "qkv"]
    if layout == "packed":
        qkv = randn(batch, seq, 3 * pool * d).view(batch, seq, 3, pool, d)
        return list(qkv.permute(2, 0, 3, 1, 4).unbind(0))
    return [randn(batch, seq, pool, d).transpose(1, 2) for _ in "qkv"]


def _masks(masked, device, batch=BATCH, pool=POOL, seq=SEQ):
    if not masked:
        return None, None
    kpm = torch.ones(batch, seq, dtype=torch.bool, device=device)
    kpm[0, seq // 2 :] = False
    alive = torch.ones(pool, dtype=torch.bool, device=device)
    alive[-1] = False
    return kpm, alive


def _fake(op, *args):
    """``op`` on fake copies of ``args`` (tensors converted with ``from_tensor``)."""
    mode = FakeTensorMode()
    fakes = [mode.from_tensor(a) if isinstance(a, Tensor) else a for a in args]
    with mode:
        return op(*fakes)


def _assert_same_layouts(names, real, fake):
    for name, r, f in zip(names, real, fake, strict=True):
        got, want = [(tuple(t.shape), t.stride(), t.dtype) for t in (r, f)]
        assert got == want, f"{name}: real {got}, fake {want}"
        # The contract the fakes encode: every output is a fresh contiguous tensor.
        assert r.is_contiguous(), f"{name} has strides {r.stride()}"


def _check_layouts(backend, dtype, layout, masked, device, shape=(BATCH, POOL, SEQ, D)):
    q, k, v = _qkv(layout, dtype, device, seed=LAYOUTS.index(layout), shape=shape)
    kpm, alive = _masks(masked, device, *shape[:3])
    causal, scale = masked, shape[-1] ** -0.5
    args = (q, k, v, kpm, alive, causal, scale, backend)
    out, lse = FORWARD(*args)
    _assert_same_layouts(("out", "lse"), (out, lse), _fake(FORWARD, *args))
    assert out.dtype == dtype and lse.dtype == torch.float32
    # The autograd formula passes a contiguous grad_out; a direct call may pass any layout.
    grad_out = _qkv(layout, dtype, device, seed=7, shape=shape)[0]
    grad_lse = torch.randn(lse.shape, device=device) if masked else None
    bargs = (grad_out, q, k, v, out, lse, grad_lse, kpm, alive, causal, scale, backend)
    grads = BACKWARD(*bargs)
    _assert_same_layouts(("dq", "dk", "dv"), grads, _fake(BACKWARD, *bargs))
    assert all(g.dtype == dtype for g in grads)


CPU_CASES = [
    ("torch", torch.float32),
    ("torch", torch.bfloat16),
    ("triton", torch.float32),
    ("triton", torch.float16),
]


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("backend", "dtype"), CPU_CASES, ids=lambda x: str(x).split(".")[-1])
def test_fake_matches_real_layouts_on_cpu(backend, dtype, layout, masked):
    _check_layouts(backend, dtype, layout, masked, torch.device("cpu"))


class _PackedAttention(torch.nn.Module):
    """qkv projection -> packed (B, P, T, d) views -> pool attention -> merged heads -> projection,
    the layout path of ``slime.core``'s organisms."""

    def __init__(self, pool, d, backend):
        super().__init__()
        self.pool, self.d, self.backend = pool, d, backend
        self.qkv = torch.nn.Linear(pool * d, 3 * pool * d)
        self.out = torch.nn.Linear(pool * d, pool * d)

    def forward(self, x, key_padding_mask, alive):
        batch, seq, _ = x.shape
        qkv = self.qkv(x).view(batch, seq, 3, self.pool, self.d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        heads = pool_attention(
            q, k, v, causal=True, key_padding_mask=key_padding_mask, alive=alive,
            backend=self.backend,
        )  # fmt: skip
        # A view exactly when the op's output really is (B, T, P, d)-dense: the fake decides.
        return self.out(heads.permute(0, 2, 1, 3).reshape(batch, seq, self.pool * self.d))


def _compiled_matches_eager(backend, compile_backend, dtype, device, shape, tol):
    """Forward and every gradient of a compiled ``_PackedAttention`` vs eager, to relative
    Frobenius error ``tol`` (bf16 rounds differently once inductor fuses the pointwise ops)."""
    batch, pool, seq, d = shape
    torch.manual_seed(0)
    model = _PackedAttention(pool, d, backend).to(device=device, dtype=dtype)
    x = torch.randn(batch, seq, pool * d, device=device, dtype=dtype, requires_grad=True)
    probe = torch.randn(batch, seq, pool * d, device=device)  # O(1) gradients reach every output
    kpm, alive = _masks(True, device, batch, pool, seq)
    compiled = torch.compile(model, fullgraph=True, backend=compile_backend)
    params = [x, *model.parameters()]
    results = []
    for fn in (model, compiled):
        out = fn(x, kpm, alive)
        results.append((out, *torch.autograd.grad((out.float() * probe).sum(), params)))
    for name, want, got in zip(("out", "dx", "dW_qkv", "db_qkv", "dW_out", "db_out"), *results):
        assert got.shape == want.shape and got.dtype == want.dtype, name
        err = (got.float() - want.float()).norm() / want.float().norm()
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize("backend", ["torch", "triton", "sdpa"])
def test_compiled_packed_qkv_attention_matches_eager_on_cpu(backend):
    _compiled_matches_eager(backend, "aot_eager", torch.float32, "cpu", (2, 2, SEQ, D), 1e-5)


GPU_SHAPE = (2, 8, 256, 64)  # the shape of the reported inductor stride assertion


@pytest.mark.gpu
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fake_matches_real_layouts_on_cuda_bf16(backend, layout, masked):
    _check_layouts(backend, torch.bfloat16, layout, masked, torch.device("cuda"), GPU_SHAPE)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["auto", "torch", "sdpa"])
def test_inductor_compiles_packed_qkv_attention_on_cuda_bf16(backend):
    _compiled_matches_eager(backend, "inductor", torch.bfloat16, "cuda", GPU_SHAPE, 1e-2)
