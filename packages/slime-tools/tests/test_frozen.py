"""FrozenSlimeLM computes what the live model computed at freezing time, and nothing lives on."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from slime.proto import ConfigError, DataError
from slime.tools import FrozenSlimeLM, freeze

VOCAB, BLOCK = 11, 8


def tokens(batch, seq, seed=0):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def live_logits(model, idx):
    model.eval()
    with torch.no_grad():
        return model(idx)[0]


def test_frozen_logits_equal_the_live_models(make_model):
    model = make_model()
    idx = tokens(3, BLOCK)
    torch.testing.assert_close(freeze(model)(idx), live_logits(model, idx), rtol=1e-5, atol=1e-6)


def test_frozen_pool_drops_dead_slots_and_keeps_quiet_newborns(make_model):
    model = make_model(bias=True)
    model.organisms[0].cull([1])
    model.organisms[1].spawn()  # quiet birth: zero output projection
    frozen = freeze(model)
    assert frozen.n_pods == [2, 4]
    assert frozen.live_slots == [[0, 2], [0, 1, 2, 3]]
    idx = tokens(2, 5)
    torch.testing.assert_close(frozen(idx), live_logits(model, idx), rtol=1e-5, atol=1e-6)


def test_layer_whose_pods_all_died_contributes_only_its_output_bias(make_model):
    model = make_model(bias=True)
    with torch.no_grad():
        model.organisms[0].out_bias.normal_()
    model.organisms[0].cull(model.organisms[0].live_slots())
    frozen = freeze(model)
    assert frozen.n_pods[0] == 0
    idx = tokens(2, 6)
    torch.testing.assert_close(frozen(idx), live_logits(model, idx), rtol=1e-5, atol=1e-6)


def test_frozen_model_does_not_follow_later_lifecycle_or_training(make_model):
    model = make_model()
    idx = tokens(2, BLOCK)
    frozen = freeze(model)
    before = frozen(idx).clone()
    model.organisms[0].cull([0])
    model.organisms[1].spawn()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    torch.testing.assert_close(frozen(idx), before, rtol=0, atol=0)
    assert not torch.allclose(live_logits(model, idx), before)


def test_frozen_model_has_no_trainable_parameters_and_no_lifecycle(make_model):
    frozen = freeze(make_model())
    assert not frozen.training
    assert all(not p.requires_grad for p in frozen.parameters())
    for name in ("spawn", "cull", "organisms", "archive_elites", "add_slot_listener"):
        assert not hasattr(frozen, name)


def test_frozen_head_is_tied_to_the_embedding(make_model):
    model = make_model()
    frozen = freeze(model)
    names = {n for n, _ in frozen.named_parameters()}
    assert "wte.weight" in names and not any("lm_head" in n for n in names)


@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 4), seq=st.integers(1, BLOCK), seed=st.integers(0, 2**16))
def test_frozen_equals_live_for_every_batch_and_sequence_length(batch, seq, seed):
    from slime.core import SlimeConfig, SlimeModel
    from slime.kernels import TorchKernel

    config = SlimeConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=1, n_embd=8, n_pods=2)
    model = SlimeModel(config, kernel=TorchKernel(), generator=torch.Generator().manual_seed(seed))
    idx = tokens(batch, seq, seed)
    torch.testing.assert_close(freeze(model)(idx), live_logits(model, idx), rtol=1e-5, atol=1e-6)


def test_sequence_longer_than_block_size_raises_config_error(make_model):
    with pytest.raises(ConfigError, match="exceeds block_size 8"):
        freeze(make_model())(tokens(1, BLOCK + 1))


def test_non_integer_tokens_raise_data_error(make_model):
    with pytest.raises(DataError, match="int64"):
        freeze(make_model())(torch.zeros(1, 3))


def test_freezing_something_other_than_a_slime_model_raises(make_model):
    with pytest.raises(ConfigError, match="expected a SlimeModel, got Linear"):
        freeze(torch.nn.Linear(2, 2))
    assert isinstance(freeze(make_model()), FrozenSlimeLM)
