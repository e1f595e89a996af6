"""Export: with the torch kernel, SlimeModel traces through torch.export unchanged."""

import torch
from slime.core import SlimeConfig, SlimeModel


def test_torch_export_reproduces_the_eager_logits(kernel):
    cfg = SlimeConfig(vocab_size=13, block_size=8, n_layer=2, n_embd=16, n_pods=2, pod_capacity=4)
    model = SlimeModel(cfg, kernel=kernel, generator=torch.Generator().manual_seed(0)).eval()
    model.organisms[0].spawn()
    idx = torch.randint(0, 13, (2, 8), generator=torch.Generator().manual_seed(1))
    program = torch.export.export(model, (idx,))
    assert torch.equal(program.module()(idx)[0], model(idx)[0])
