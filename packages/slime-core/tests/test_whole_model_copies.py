"""Whole models, not just state dicts, survive torch.save/torch.load and copy.deepcopy: SlimeModel
and SlimeMoldEncoder, with their pools, tubes and generators."""

import copy

import pytest
import torch
from slime.core import SlimeConfig, SlimeModel, SlimeMoldEncoder, SlimeMoldEncoderLayer

D, H, T, B = 16, 4, 6, 2


def encoder(kernel):
    layer = SlimeMoldEncoderLayer(
        D, H, 32, 0.0, pod_capacity=H + 2, kernel=kernel, generator=torch.Generator().manual_seed(0)
    )
    enc = SlimeMoldEncoder(layer, 2)
    enc.organisms[1].spawn()
    enc.organisms[0].cull([2])
    enc(torch.randn(T, B, D))  # a training forward writes the tube rings
    return enc.eval()


def slime_model(kernel):
    config = SlimeConfig(
        vocab_size=11, block_size=T, n_layer=2, n_embd=D, n_pods=2, pod_capacity=4, dropout=0.0
    )
    model = SlimeModel(config, kernel=kernel, generator=torch.Generator().manual_seed(0))
    model.organisms[0].spawn()
    idx = torch.randint(0, 11, (B, T), generator=torch.Generator().manual_seed(1))
    model(idx, idx)
    return model.eval()


def run(model):
    if isinstance(model, SlimeModel):
        idx = torch.randint(0, 11, (B, T), generator=torch.Generator().manual_seed(2))
        return model(idx)[0]
    return model(torch.randn(T, B, D, generator=torch.Generator().manual_seed(2)))


def saved_and_loaded(model, path):
    torch.save(model, path / "whole.pt")
    return torch.load(path / "whole.pt", weights_only=False)


def deep_copied(model, path):
    return copy.deepcopy(model)


BUILDERS = {"encoder": encoder, "slime_model": slime_model}
COPIES = {"torch.save": saved_and_loaded, "deepcopy": deep_copied}


@pytest.mark.parametrize("copy_with", list(COPIES))
@pytest.mark.parametrize("build", list(BUILDERS))
def test_a_copy_computes_the_same_with_the_same_pools_and_tubes(kernel, tmp_path, build, copy_with):
    model = BUILDERS[build](kernel)
    twin = COPIES[copy_with](model, tmp_path)
    torch.testing.assert_close(run(twin), run(model), atol=0, rtol=0)
    state, twin_state = model.state_dict(), twin.state_dict()
    assert state.keys() == twin_state.keys()
    for key, value in state.items():
        torch.testing.assert_close(twin_state[key], value, equal_nan=True, msg=key)
    for ours, theirs in zip(twin.organisms, model.organisms):
        assert (ours.name, ours.live_slots()) == (theirs.name, theirs.live_slots())


@pytest.mark.parametrize("copy_with", list(COPIES))
@pytest.mark.parametrize("build", list(BUILDERS))
def test_a_copy_lives_apart_and_can_still_grow_pods(kernel, tmp_path, build, copy_with):
    model = BUILDERS[build](kernel)
    twin = COPIES[copy_with](model, tmp_path)
    before = [o.live_slots() for o in model.organisms]
    slot = twin.organisms[0].spawn()  # draws from the copy's generator
    assert slot in twin.organisms[0].live_slots()
    assert [o.live_slots() for o in model.organisms] == before
    with torch.no_grad():
        twin.organisms[0].qkv_weight.add_(1.0)
    assert not torch.equal(twin.organisms[0].qkv_weight, model.organisms[0].qkv_weight)


def test_a_model_pickled_before_attention_dropout_and_torch_init_still_runs(kernel, tmp_path):
    model = slime_model(kernel)
    expected = run(model)
    for block in model.blocks:  # what an earlier slime pickled: none of these existed
        del block.attn.attn_dropout, block.attn.init, block.attn._uniform_bounds
        del block.mlp._modules["hidden_dropout"]
    loaded = saved_and_loaded(model, tmp_path)
    torch.testing.assert_close(run(loaded), expected, atol=0, rtol=0)
    assert loaded.organisms[0].attn_dropout == 0.0 and loaded.organisms[0].init == "normal"
