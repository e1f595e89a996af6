"""torch.compile: births and deaths change which pods are alive, never the compiled graphs."""

import torch
from slime.core import SlimeConfig, SlimeModel


def test_spawn_and_cull_do_not_recompile(kernel):
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    cfg = SlimeConfig(vocab_size=13, block_size=8, n_layer=2, n_embd=16, n_pods=2, pod_capacity=4)
    model = SlimeModel(cfg, kernel=kernel, generator=torch.Generator().manual_seed(0))
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    idx = torch.randint(0, 13, (2, 8), generator=torch.Generator().manual_seed(1))
    compiled(idx, idx)[1].backward()
    compiled(idx, idx)[1].backward()
    warm = counter.frame_count
    model.organisms[0].spawn()
    model.organisms[1].cull([0])
    with model.ablate({0: [1]}):
        compiled(idx, idx)[1].backward()
    compiled(idx, idx)[1].backward()
    assert counter.frame_count == warm
    torch._dynamo.reset()
