"""SlimeMoldEncoder: a drop-in for nn.TransformerEncoder that trains inside a user's module."""

import pytest
import torch
from slime.core import SlimeMoldEncoder
from slime.proto import ConfigError, KernelError
from torch import nn

D, H, T = 16, 4, 6


def make(kernel, **kw):
    return SlimeMoldEncoder(
        D,
        H,
        2,
        dim_feedforward=32,
        dropout=0.0,
        kernel=kernel,
        generator=torch.Generator().manual_seed(0),
        **kw,
    )


def test_output_has_the_input_shape(kernel):
    x = torch.randn(3, T, D)
    assert make(kernel)(x).shape == (3, T, D)


def test_sequence_first_layout_matches_batch_first(kernel):
    x = torch.randn(3, T, D)
    a = make(kernel)(x)
    b = make(kernel, batch_first=False)(x.transpose(0, 1)).transpose(0, 1)
    torch.testing.assert_close(a, b)


def test_padded_keys_do_not_affect_other_positions(kernel):
    enc = make(kernel)
    x = torch.randn(2, T, D)
    pad = torch.zeros(2, T, dtype=torch.bool)
    pad[:, 4:] = True
    out = enc(x, src_key_padding_mask=pad)
    changed = x.clone()
    changed[:, 4:] += 3.0
    torch.testing.assert_close(enc(changed, src_key_padding_mask=pad)[:, :4], out[:, :4])


def test_causal_mask_and_is_causal_agree_and_ignore_the_future(kernel):
    enc = make(kernel)
    x = torch.randn(2, T, D)
    mask = nn.Transformer.generate_square_subsequent_mask(T).isinf()
    a = enc(x, mask=mask)
    torch.testing.assert_close(enc(x, is_causal=True), a)
    changed = x.clone()
    changed[:, 3:] += 1.0
    torch.testing.assert_close(enc(changed, mask=mask)[:, :3], a[:, :3])


def test_arbitrary_masks_are_refused(kernel):
    with pytest.raises(KernelError, match="causal"):
        make(kernel)(torch.randn(1, T, D), mask=torch.eye(T, dtype=torch.bool))


def test_float_masks_are_refused(kernel):
    with pytest.raises(KernelError, match="bool"):
        make(kernel)(torch.randn(1, T, D), src_key_padding_mask=torch.zeros(1, T))


def test_heads_must_divide_the_width(kernel):
    with pytest.raises(ConfigError, match="nhead"):
        SlimeMoldEncoder(10, 4, 1, kernel=kernel)


def test_same_parameter_count_as_torch_transformer_encoder(kernel):
    ours = make(kernel)
    layer = nn.TransformerEncoderLayer(D, H, 32, 0.0, batch_first=True)
    theirs = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


class Classifier(nn.Module):
    """A user's module with the encoder inside: classify whether token 0 equals the last token."""

    def __init__(self, kernel):
        super().__init__()
        self.embed = nn.Embedding(4, D)
        self.pos = nn.Parameter(torch.randn(T, D) * 0.1)
        self.encoder = make(kernel)
        self.head = nn.Linear(D, 2)

    def forward(self, idx):
        return self.head(self.encoder(self.embed(idx) + self.pos)[:, -1])


def test_encoder_trains_inside_a_users_module(kernel):
    torch.manual_seed(0)
    model = Classifier(kernel)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(250):
        idx = torch.randint(0, 4, (32, T), generator=g)
        y = (idx[:, 0] == idx[:, -1]).long()
        loss = nn.functional.cross_entropy(model(idx), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.1  # chance level is ln 2 = 0.69


def copy_torch_encoder_into(ours: SlimeMoldEncoder, theirs: nn.TransformerEncoder) -> None:
    """Move nn.TransformerEncoder weights into the organisms: head h of in_proj/out_proj is pod h."""
    d = D // H
    with torch.no_grad():
        for mine, layer in zip(ours.layers, theirs.layers):
            attn = layer.self_attn
            mine.attn.qkv_weight[:, :H].copy_(attn.in_proj_weight.view(3, H, d, D))
            mine.attn.qkv_bias[:, :H].copy_(attn.in_proj_bias.view(3, H, d))
            mine.attn.o_weight[:, :H].copy_(attn.out_proj.weight.view(D, H, d))
            mine.attn.out_bias.copy_(attn.out_proj.bias)
            mine.mlp.c_fc.load_state_dict(layer.linear1.state_dict())
            mine.mlp.c_proj.load_state_dict(layer.linear2.state_dict())
            mine.ln_1.load_state_dict(layer.norm1.state_dict())
            mine.ln_2.load_state_dict(layer.norm2.state_dict())


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_outputs_equal_nn_transformer_encoder_with_the_same_weights(kernel, norm_first, causal):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D, H, 32, 0.0, batch_first=True, norm_first=norm_first)
    theirs = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    ours = make(kernel, norm_first=norm_first).eval()
    copy_torch_encoder_into(ours, theirs)
    x = torch.randn(3, T, D)
    pad = torch.zeros(3, T, dtype=torch.bool)
    pad[1, 4:] = True
    mask = nn.Transformer.generate_square_subsequent_mask(T).isinf() if causal else None
    expected = theirs(x, mask=mask, src_key_padding_mask=pad, is_causal=causal)
    got = ours(x, src_key_padding_mask=pad, is_causal=causal)
    torch.testing.assert_close(got[:, :4], expected[:, :4], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-4)
