"""The ``slime::pool_attention`` custom op: registration, autograd, fake tensors, export."""

from __future__ import annotations

import pytest
import torch
from slime.kernels import pool_attention
from slime.kernels.functional import _attention_op


def _qkv(shape, seed, requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen).requires_grad_(requires_grad) for _ in range(3)]


@pytest.mark.parametrize("masked", [False, True])
def test_opcheck_passes_on_cpu(masked):
    q, k, v = _qkv((2, 3, 5, 8), seed=0)
    kpm = torch.tensor([[True, True, False, True, True], [False] * 5]) if masked else None
    alive = torch.tensor([True, False, True]) if masked else None
    torch.library.opcheck(_attention_op, (q, k, v, kpm, alive, True, 0.35, "torch"))


@pytest.mark.parametrize("backend", ["auto", "torch", "sdpa"])
def test_forward_and_gradients_match_float64_reference(backend, reference_attention):
    q, k, v = _qkv((2, 2, 6, 8), seed=1)
    kpm = torch.tensor([[True, False, True, True, True, False], [True] * 6])
    kw = {"causal": True, "key_padding_mask": kpm, "alive": torch.tensor([True, False])}
    out = pool_attention(q, k, v, backend=backend, **kw)
    ref = reference_attention(q, k, v, **kw)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-4)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, (q, k, v), grad)
    theirs = torch.autograd.grad(ref, (q, k, v), grad.double())
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.double(), b.double(), atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_gradient_through_logsumexp_output_is_exact(backend):
    q, k, v = _qkv((1, 2, 4, 16), seed=2)
    out, lse = _attention_op(q, k, v, None, None, False, 0.5, backend)
    loss = out.sum() + lse.square().sum()
    ours = torch.autograd.grad(loss, (q, k, v))
    s = (q @ k.transpose(-1, -2)) * 0.5
    ref_loss = (torch.softmax(s, -1) @ v).sum() + torch.logsumexp(s, -1).square().sum()
    theirs = torch.autograd.grad(ref_loss, (q, k, v))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_export_sees_one_pool_attention_op():
    class Pool(torch.nn.Module):
        def forward(self, q, k, v, alive):
            return pool_attention(q, k, v, causal=True, alive=alive)

    q, k, v = _qkv((1, 2, 4, 8), seed=3, requires_grad=False)
    program = torch.export.export(Pool(), (q, k, v, torch.tensor([True, False])))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert sum("slime.pool_attention" in t for t in targets) == 1
    assert not any("softmax" in t or "matmul" in t for t in targets)


def test_changing_alive_mask_keeps_the_same_shapes():
    q, k, v = _qkv((1, 3, 4, 8), seed=4, requires_grad=False)
    a = pool_attention(q, k, v, alive=torch.tensor([True, True, True]))
    b = pool_attention(q, k, v, alive=torch.tensor([True, False, True]))
    assert a.shape == b.shape
    torch.testing.assert_close(a[:, [0, 2]], b[:, [0, 2]])
    assert torch.equal(b[:, 1], torch.zeros_like(b[:, 1]))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_eager_path_matches_the_custom_op_bitwise(backend):
    q, k, v = _qkv((2, 2, 5, 16), seed=5)
    kpm = torch.tensor([[True, True, False, True, True], [True] * 5])
    alive = torch.tensor([True, False])
    eager = pool_attention(q, k, v, causal=True, key_padding_mask=kpm, alive=alive, backend=backend)
    op, _ = _attention_op(q, k, v, kpm, alive, True, 0.25, backend)
    assert torch.equal(eager, op)
    grad = torch.randn_like(op)
    for a, b in zip(
        torch.autograd.grad(eager, (q, k, v), grad), torch.autograd.grad(op, (q, k, v), grad)
    ):
        assert torch.equal(a, b)


def test_torch_compile_sees_the_custom_op_without_graph_breaks():
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("eager")
    q, k, v = _qkv((1, 2, 4, 8), seed=6)

    def step(q, k, v):
        return pool_attention(q, k, v, causal=True).sum()

    loss = torch.compile(step, backend=counter, fullgraph=True)(q, k, v)
    torch.testing.assert_close(loss, step(q, k, v))
    graph = counter.graphs[0]
    targets = [str(n.target) for n in graph.graph.nodes if n.op == "call_function"]
    assert any("slime.pool_attention" in t for t in targets)


@pytest.mark.parametrize("masked", [False, True])
def test_torch_compile_traces_the_sdpa_path_as_torch_ops(masked):
    """``backend="sdpa"`` is torch's own op under a compiler too: no custom op, no graph break."""
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("eager")
    q, k, v = _qkv((2, 3, 5, 8), seed=7)
    kpm = torch.tensor([[True, False, True, True, False], [False] * 5]) if masked else None
    alive = torch.tensor([True, False, True])

    def step(q, k, v):
        out = pool_attention(
            q, k, v, causal=True, key_padding_mask=kpm, alive=alive, backend="sdpa"
        )
        return out.square().sum()

    loss = torch.compile(step, backend=counter, fullgraph=True)(q, k, v)
    torch.testing.assert_close(loss, step(q, k, v))
    ours = torch.autograd.grad(loss, (q, k, v))
    theirs = torch.autograd.grad(step(q, k, v), (q, k, v))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
        assert torch.equal(a[:, 1], torch.zeros_like(a[:, 1]))
    targets = [str(n.target) for n in counter.graphs[0].graph.nodes if n.op == "call_function"]
    assert any("scaled_dot_product_attention" in t for t in targets)
    assert not any("slime" in t for t in targets)
