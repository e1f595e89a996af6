"""torch.compile: the whole model is one graph, and births and deaths never recompile it."""

import pytest
import torch
from slime.core import SlimeConfig, SlimeModel

V, T = 13, 8


def make(kernel, **kw):
    base = dict(vocab_size=V, block_size=T, n_layer=2, n_embd=16, n_pods=2, pod_capacity=4)
    cfg = SlimeConfig(**{**base, **kw})
    return SlimeModel(cfg, kernel=kernel, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (2, T), generator=g), torch.randint(0, V, (2, T), generator=g)


def test_spawn_cull_and_ablate_do_not_recompile_the_full_graph(kernel):
    from torch._dynamo.testing import CompileCounter

    model = make(kernel)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    idx, targets = batch()
    compiled(idx, targets)[1].backward()
    compiled(idx, targets)[1].backward()
    assert counter.frame_count == 1
    model.organisms[0].spawn()
    model.organisms[1].cull([0])
    model.organisms[1].spawn(slot=3)
    with model.ablate({0: [1]}):
        compiled(idx, targets)[1].backward()
    compiled(idx, targets)[1].backward()
    assert counter.frame_count == 1


@pytest.mark.parametrize("bias", [False, True])
def test_fullgraph_compiled_forward_and_backward_equal_eager(kernel, bias):
    eager = make(kernel, bias=bias, dropout=0.0)
    eager.organisms[1].cull([1])
    compiled_model = make(kernel, bias=bias, dropout=0.0)
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)
    idx, targets = batch()
    logits_e, loss_e = eager(idx, targets)
    logits_c, loss_c = compiled(idx, targets)
    torch.testing.assert_close(logits_c, logits_e, atol=1e-5, rtol=1e-4)
    loss_e.backward()
    loss_c.backward()
    grads = dict(compiled_model.named_parameters())
    for name, p in eager.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)
    # the compiled training forward fed the tube ring as the eager one did
    for a, b in zip(compiled_model.organisms, eager.organisms):
        assert torch.equal(a.tube_pos, b.tube_pos)
        torch.testing.assert_close(a.tube_trace, b.tube_trace, equal_nan=True)


def test_inductor_compiles_a_training_step(kernel):
    model = make(kernel)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    compiled = torch.compile(model, fullgraph=True)
    idx, targets = batch()
    losses = []
    for step in range(4):
        loss = compiled(idx, targets)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step == 1:
            model.organisms[0].spawn()
    assert losses[-1] < losses[0]


def test_a_compiled_ablation_pass_equals_eager_and_survives_births_and_deaths(kernel):
    import functools

    from torch._dynamo.testing import CompileCounterWithBackend

    model = make(kernel, n_pods=3, head_dim=4)
    idx, targets = batch()
    every = [(layer, slot) for layer in range(2) for slot in range(4)]
    counter = CompileCounterWithBackend("aot_eager")
    compiler = functools.partial(torch.compile, backend=counter, fullgraph=True, dynamic=False)
    for change in (
        lambda: None,
        lambda: model.organisms[0].spawn(),
        lambda: model.organisms[1].cull([0]),
    ):
        change()
        eager = model.ablation_losses(idx, targets, every)
        compiled = model.ablation_losses(idx, targets, every, compiler=compiler)
        for got, want in zip(compiled, eager):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert counter.frame_count == 1
    assert model.training


def test_a_compiled_measurement_equals_eager_and_survives_births_and_deaths(kernel):
    import functools

    from torch._dynamo.testing import CompileCounterWithBackend

    eager = make(kernel, n_pods=3, head_dim=4)
    compiled = make(kernel, n_pods=3, head_dim=4)
    compiled.load_state_dict(eager.state_dict())
    idx, _ = batch()
    counter = CompileCounterWithBackend("aot_eager")
    compiler = functools.partial(torch.compile, backend=counter, fullgraph=True, dynamic=False)
    for change in (
        lambda m: None,
        lambda m: m.organisms[0].spawn(),
        lambda m: m.organisms[1].cull([0]),
        lambda m: None,  # a second measurement: the smoothing step
    ):
        for model in (eager, compiled):
            change(model)
            model(idx)[0].sum().backward()  # a training forward: feeds the tubes
        want = eager.measure_behaviour(idx)
        got = compiled.measure_behaviour(idx, compiler=compiler)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)
        for a, b in zip(compiled.organisms, eager.organisms):
            torch.testing.assert_close(a.descriptors, b.descriptors, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(a.correlation, b.correlation, atol=1e-5, rtol=1e-4)
            assert torch.equal(a.n_measurements, b.n_measurements)
    assert counter.frame_count == 1
    assert compiled.organisms[0].n_measurements.sum() > 0
