"""GPU (device) tests: a training step never synchronises with the host, and the Triton and torch
kernels train the same model along the same loss curve.

Run on the GPU machine:
``PYTHONPATH=$(ls -d packages/*/src | paste -sd:) python3 -m pytest packages/slime-core/tests -m gpu``
"""

import pytest
import torch
from slime.core import MetricsCollector, SlimeConfig, SlimeModel
from slime.kernels import TorchKernel, TritonKernel

pytestmark = pytest.mark.gpu

V, T = 64, 64


def cfg(**kw):
    base = dict(vocab_size=V, block_size=T, n_layer=2, n_embd=64, n_pods=4, pod_capacity=8)
    return SlimeConfig(**{**base, **kw})


def make(kernel, seed=0, **kw):
    return SlimeModel(
        cfg(**kw), kernel=kernel, device="cuda", generator=torch.Generator().manual_seed(seed)
    )


def data(steps, batch=16, seed=1):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randint(0, V, (batch, T + 1), generator=g, device="cuda") for _ in range(steps)]


def step(model, opt, chunk):
    _, loss = model(chunk[:, :-1], chunk[:, 1:])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


@pytest.mark.parametrize("kernel", [TritonKernel(), TorchKernel()], ids=["triton", "torch"])
def test_training_step_never_synchronises_with_the_host(kernel):
    metrics = MetricsCollector(device="cuda")
    model = SlimeModel(cfg(), kernel=kernel, device="cuda", metrics=metrics)
    model.organisms[0].spawn()  # a pool below capacity, one quiet newborn
    model.organisms[1].cull([1])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = data(4)
    step(model, opt, batches[0])  # warm-up: lazy CUDA/Triton initialisation may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for chunk in batches[1:]:
            step(model, opt, chunk)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert metrics.flush()["forwards"] == 4


def test_triton_and_torch_kernels_give_the_same_loss_curve():
    batches = data(50)
    curves = []
    for kernel in (TritonKernel(), TorchKernel()):
        model = make(kernel)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        curves.append(torch.stack([step(model, opt, chunk) for chunk in batches]).cpu())
    triton, torch_ = curves
    torch.testing.assert_close(triton, torch_, atol=2e-2, rtol=1e-2)
    assert triton[-5:].mean() < triton[:5].mean()


def test_model_round_trips_through_a_checkpoint_on_the_gpu(tmp_path):
    pytest.importorskip("safetensors")
    model = make(TritonKernel())
    model.organisms[1].cull([0])
    model.save_pretrained(tmp_path)
    loaded = SlimeModel.from_pretrained(tmp_path, kernel=TritonKernel(), device="cuda")
    idx = data(1)[0][:, :-1]
    assert torch.equal(model(idx)[0], loaded(idx)[0])


@pytest.mark.parametrize("where", ["cpu", "model"])
def test_archives_live_where_the_config_says_and_births_and_reloads_cross_devices(tmp_path, where):
    """``archive_device``: the default keeps elite genomes in host memory (no accelerator bytes)
    while the slots train on the GPU; elites go in, newborns grow from them, and a saved model's
    archives load back onto the same device."""
    pytest.importorskip("safetensors")
    model = make(TritonKernel(), archive_device=where)
    expected = torch.device("cpu") if where == "cpu" else torch.device("cuda", 0)
    idx = data(1)[0][:, :-1]
    model.measure_behaviour(idx)
    for organism in model.organisms:
        assert organism.archive.device.type == expected.type
        organism.fitness[organism.alive] = torch.arange(4.0, device="cuda")
    added = [int((result.status > 0).sum()) for result in model.archive_elites()]
    assert all(n > 0 for n in added)  # the whole model's columns moved in one copy per dtype
    for organism in model.organisms:
        slot = organism.spawn(step=3)  # bootstraps from the elites
        assert organism.qkv_weight[:, slot].abs().sum() > 0
    model.save_pretrained(tmp_path)
    loaded = SlimeModel.from_pretrained(tmp_path, kernel=TritonKernel(), device="cuda")
    for a, b in zip(model.organisms, loaded.organisms):
        assert b.archive.device.type == expected.type and len(b.archive) == len(a.archive)
    assert torch.equal(model(idx)[0], loaded(idx)[0])


def test_fullgraph_compile_on_cuda_trains_through_births_and_deaths_without_recompiling():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    model = make(TritonKernel())
    eager = make(TritonKernel())
    eager.load_state_dict(model.state_dict())
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = data(6)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        idx, targets = batches[0][:, :-1], batches[0][:, 1:]
        torch.testing.assert_close(
            compiled(idx, targets)[0], eager(idx, targets)[0], atol=3e-2, rtol=3e-2
        )
        losses = []
        for i, chunk in enumerate(batches):
            losses.append(step(compiled, opt, chunk))
            if i == 2:
                model.organisms[0].spawn()
                model.organisms[1].cull([1])
    assert counter.frame_count == 1
    assert torch.isfinite(torch.stack(losses)).all()
    torch._dynamo.reset()


def test_inductor_compiles_the_probe_and_the_measurement_once_across_births_and_deaths():
    import functools

    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    eager = make(TritonKernel())
    model = make(TritonKernel())
    model.load_state_dict(eager.state_dict())
    counter = CompileCounterWithBackend("inductor")
    compiler = functools.partial(torch.compile, backend=counter, dynamic=False)
    (chunk,) = data(1, batch=4)
    idx, targets = chunk[:, :-1], chunk[:, 1:]
    every = [(layer, slot) for layer in range(2) for slot in range(8)]
    try:
        for change in (
            lambda m: None,
            lambda m: m.organisms[0].spawn(),
            lambda m: m.organisms[1].cull([2]),
        ):
            for m in (eager, model):
                change(m)
            want_losses, latents = eager.ablation_losses(idx, targets, every)
            got_losses, got_latents = model.ablation_losses(idx, targets, every, compiler=compiler)
            torch.testing.assert_close(got_losses, want_losses, atol=2e-4, rtol=2e-4)
            eager.measure_behaviour(idx, latents=latents)
            model.measure_behaviour(idx, latents=got_latents, compiler=compiler)
            for a, b in zip(model.organisms, eager.organisms):
                torch.testing.assert_close(a.descriptors, b.descriptors, atol=2e-4, rtol=2e-4)
                torch.testing.assert_close(a.correlation, b.correlation, atol=2e-3, rtol=2e-3)
    finally:
        torch._dynamo.reset()
    assert counter.frame_count == 2  # one graph each, kept across the births and deaths
