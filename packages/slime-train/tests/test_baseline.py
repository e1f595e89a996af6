"""The baseline GPT: causal, nanoGPT-shaped, with a parameter count fixed by the shared config."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from slime.proto import ConfigError
from slime.train.baseline import GPT
from slime.train.config import ModelConfig

CFG = ModelConfig(vocab_size=11, block_size=8, n_layer=2, n_embd=16, n_pods=2, head_dim=4)


def _model(cfg: ModelConfig = CFG) -> GPT:
    return GPT(cfg, generator=torch.Generator().manual_seed(0)).eval()


def test_parameter_count_matches_closed_form() -> None:
    V, T, L, D, H, d = 11, 8, 2, 16, 2, 4
    per_block = 2 * D + 4 * H * d * D + 2 * 4 * D * D  # two layernorms, attention, MLP
    assert _model().num_params() == V * D + T * D + L * per_block + D


def test_logits_shape_and_loss_is_mean_cross_entropy() -> None:
    idx = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(1))
    logits, loss = _model()(idx, idx)
    assert logits.shape == (3, 8, 11)
    assert torch.allclose(loss, F.cross_entropy(logits.reshape(-1, 11), idx.reshape(-1)))


def test_unscored_targets_are_ignored() -> None:
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(2))
    targets = idx.clone()
    targets[:, :5] = -1
    logits, loss = _model()(idx, targets)
    assert torch.allclose(
        loss, F.cross_entropy(logits[:, 5:].reshape(-1, 11), idx[:, 5:].reshape(-1))
    )


def test_future_tokens_do_not_change_past_logits() -> None:
    gen = torch.Generator().manual_seed(3)
    a = torch.randint(0, 11, (1, 8), generator=gen)
    b = a.clone()
    b[0, 5:] = (b[0, 5:] + 1) % 11
    model = _model()
    la, _ = model(a)
    lb, _ = model(b)
    assert torch.allclose(la[:, :5], lb[:, :5], atol=1e-6)
    assert not torch.allclose(la[:, 5:], lb[:, 5:])


def test_attention_matches_explicit_softmax_in_float64() -> None:
    model = _model().double()
    attn = model.blocks[0].attn
    x = torch.randn(2, 8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    q, k, v = attn.c_attn(x).split(8, dim=2)
    q, k, v = (t.view(2, 8, 2, 4).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / 2.0  # sqrt(head_dim)
    scores = scores.masked_fill(torch.ones(8, 8).triu(1).bool(), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 8, 8)
    assert torch.allclose(attn(x), attn.c_proj(y), atol=1e-12)


def test_weights_are_tied() -> None:
    model = _model()
    assert model.lm_head.weight is model.wte.weight


def test_same_generator_seed_gives_identical_weights() -> None:
    a, b = _model(), _model()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_sequence_longer_than_block_size_is_rejected() -> None:
    with pytest.raises(ConfigError, match="block_size"):
        _model()(torch.zeros(1, 9, dtype=torch.long))


def test_missing_vocab_size_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"model\.vocab_size"):
        GPT(ModelConfig())


def test_generate_appends_tokens() -> None:
    out = _model().generate(torch.zeros(2, 1, dtype=torch.long), 5, generator=torch.Generator())
    assert out.shape == (2, 6)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("n_pods", "head_dim"), [(2, 8), (4, 8), (3, 5)])
def test_parameter_count_equals_slime_model_at_matching_config(
    bias: bool, n_pods: int, head_dim: int
) -> None:
    from slime.core import SlimeModel
    from slime.train.build import to_slime_config
    from slime.train.profile import live_parameter_count

    cfg = ModelConfig(
        vocab_size=11,
        block_size=8,
        n_layer=2,
        n_embd=16,
        n_pods=n_pods,
        pod_capacity=4,
        head_dim=head_dim,
        bias=bias,
        kernel_backend="torch",
    )
    slime = SlimeModel(to_slime_config(cfg, 11))
    # the slime model allocates pod_capacity slots; its live pods match the baseline's heads
    assert GPT(cfg).num_params() == live_parameter_count(slime)
    assert live_parameter_count(GPT(cfg)) == GPT(cfg).num_params()
    if n_pods < 4:
        assert slime.num_params() > live_parameter_count(slime)
