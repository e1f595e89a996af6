"""Organism options an nn.MultiheadAttention user expects: additive attention masks, dropout on
the attention probabilities and torch's initialisation, all without touching the fused path."""

import math

import pytest
import torch
from slime.core import Organism
from slime.proto import ConfigError
from torch import nn

D, d, H, T = 16, 4, 4, 6


def make(kernel, *, n_pods=3, capacity=5, generator=None, **kw):
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    kw.setdefault("init_std", 0.3)
    return Organism(
        D, pod_capacity=capacity, n_pods=n_pods, head_dim=d, kernel=kernel, generator=gen, **kw
    )


def causal_float_mask(seq: int) -> torch.Tensor:
    return torch.full((seq, seq), -math.inf).triu(1)


def reference(org, x, additive):
    """float64 softmax attention of the live slots with an additive ``(B, P, T, T)`` mask."""
    q, k, v = (t.double() for t in org.project(x))
    logits = q @ k.transpose(-1, -2) / math.sqrt(d) + additive.double()
    heads = logits.softmax(-1) @ v
    heads = torch.where(org.alive[:, None, None], heads, 0.0)
    merged = heads.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
    out = merged @ org.o_weight.double().view(D, -1).T
    return out.float()


def test_a_causal_attention_mask_equals_the_kernels_causal_masking(kernel):
    org = make(kernel)
    x = torch.randn(2, T, D)
    torch.testing.assert_close(
        org(x, attn_mask=causal_float_mask(T)), org(x, causal=True), atol=1e-5, rtol=1e-4
    )


def test_attention_mask_with_key_padding_equals_the_kernels_padding(kernel):
    org = make(kernel)
    x = torch.randn(2, T, D)
    visible = torch.ones(2, T, dtype=torch.bool)
    visible[1, 4:] = False
    zero = torch.zeros(T, T)
    got = org(x, attn_mask=zero, key_padding_mask=visible, causal=True)
    torch.testing.assert_close(
        got, org(x, key_padding_mask=visible, causal=True), atol=1e-5, rtol=1e-4
    )


def test_per_sample_per_slot_masks_follow_a_float64_reference(kernel):
    org = make(kernel)
    x = torch.randn(2, T, D)
    additive = torch.randn(2, 5, T, T)
    additive[0, 1, :, 2] = -math.inf  # slot 1 never sees key 2 in sample 0
    torch.testing.assert_close(
        org(x, attn_mask=additive), reference(org, x, additive), atol=1e-5, rtol=1e-4
    )


def test_dead_slots_stay_silent_and_get_no_gradient_on_the_masked_path(kernel):
    org = make(kernel)
    org.cull([1])
    x = torch.randn(2, T, D)
    mask = torch.randn(2, 5, T, T)
    with torch.no_grad():
        before = org(x, attn_mask=mask)
        org.o_weight[:, 1] = 5.0  # a dead slot's weights must not reach the output
        torch.testing.assert_close(org(x, attn_mask=mask), before)
        org.o_weight[:, 1] = 0.0
    org(x, attn_mask=mask).sum().backward()
    assert org.qkv_weight.grad[:, 1].abs().max() == 0
    assert org.qkv_weight.grad[:, 0].abs().max() > 0


def test_dead_and_ablated_slots_stay_silent_and_get_no_gradient_under_attention_dropout(kernel):
    org = make(kernel, attn_dropout=0.5).train()
    org.cull([1])
    x = torch.randn(2, T, D)

    def run(seed, backward=False):
        torch.manual_seed(seed)
        with org.ablate([2]):  # backward inside: leaving it rewrites the value gates
            out = org(x, causal=True)
            if backward:
                out.square().sum().backward()
        return out

    with torch.no_grad():
        before = run(0)
        org.o_weight[:, 1] = 5.0  # neither a dead nor an ablated slot may reach the output
        org.o_weight[:, 2] = 5.0
        torch.testing.assert_close(run(0), before, atol=0, rtol=0)
        org.o_weight[:, 1] = 0.0
    run(1, backward=True)
    assert org.qkv_weight.grad[:, 1].abs().max() == 0
    assert org.qkv_weight.grad[:, 2].abs().max() == 0
    assert org.qkv_weight.grad[:, 0].abs().max() > 0


def test_attention_dropout_acts_only_while_training(kernel):
    org = make(kernel, attn_dropout=0.5)
    x = torch.randn(2, T, D)
    org.eval()
    plain = org(x, causal=True)
    org.train()
    dropped = org(x, causal=True)
    assert not torch.allclose(dropped, plain)
    org.attn_dropout = 0.0
    torch.testing.assert_close(org(x, causal=True), plain)


def test_attention_dropout_drops_probabilities_as_multihead_attention_does(kernel):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(D, H, dropout=0.3, batch_first=True)
    torch.manual_seed(0)
    org = Organism(
        D,
        pod_capacity=H,
        n_pods=H,
        head_dim=D // H,
        kernel=kernel,
        bias=True,
        init="torch",
        attn_dropout=0.3,
    )
    x = torch.randn(2, T, D)
    torch.manual_seed(1)
    expected = mha(x, x, x, need_weights=False)[0]
    torch.manual_seed(1)
    torch.testing.assert_close(org(x), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("bias", [False, True])
def test_torch_init_draws_multihead_attentions_numbers_in_its_order(kernel, bias):
    torch.manual_seed(3)
    mha = nn.MultiheadAttention(D, H, bias=bias)
    after_torch = torch.randn(4)
    torch.manual_seed(3)
    org = Organism(
        D, pod_capacity=H + 2, n_pods=H, head_dim=D // H, kernel=kernel, bias=bias, init="torch"
    )
    assert torch.equal(torch.randn(4), after_torch)  # the global stream moved as torch's did
    assert torch.equal(org.qkv_weight[:, :H].reshape(3 * D, D), mha.in_proj_weight.detach())
    assert torch.equal(org.o_weight[:, :H].reshape(D, D), mha.out_proj.weight.detach())
    assert org.qkv_weight[:, H:].abs().max() == 0 and org.o_weight[:, H:].abs().max() == 0
    if bias:
        assert org.qkv_bias.abs().max() == 0 and org.out_bias.abs().max() == 0


def test_torch_init_from_a_generator_leaves_the_global_stream_alone(kernel):
    state = torch.get_rng_state()
    make(kernel, init="torch")
    assert torch.equal(torch.get_rng_state(), state)


def test_torch_init_newborns_draw_within_the_founders_bounds(kernel):
    org = make(kernel, init="torch", quiet_birth=False)
    slot = org.spawn()
    qkv_bound = math.sqrt(6 / (D + 3 * 3 * d))
    newborn = org.qkv_weight[:, slot]
    assert newborn.abs().max() <= qkv_bound and newborn.abs().max() > qkv_bound / 2
    assert org.o_weight[:, slot].abs().max() <= (3 * d) ** -0.5


def test_unknown_init_and_out_of_range_attention_dropout_are_refused(kernel):
    with pytest.raises(ConfigError, match="init"):
        make(kernel, init="xavier")
    with pytest.raises(ConfigError, match="attn_dropout"):
        make(kernel, attn_dropout=1.0)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.zeros(T + 1, T + 1), "does not broadcast"),  # torch raised deep inside attention
        (torch.zeros(3, 1, T, T), "does not broadcast"),  # a batch of 3 for a batch of 2
        (torch.zeros(T, T, dtype=torch.long), "bool or floating"),
        ([[0.0] * T] * T, "bool or floating"),
    ],
)
def test_an_attention_mask_that_cannot_apply_is_a_kernel_error_naming_it(kernel, mask, message):
    from slime.proto import KernelError

    org = make(kernel)
    x = torch.randn(2, T, D)
    with pytest.raises(KernelError, match=message):
        org(x, attn_mask=mask)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.zeros(T, T).index_fill(1, torch.tensor([2]), math.nan), r"nan at \(0, 2\)"),
        (torch.zeros(T, T).index_fill(0, torch.tensor([3]), math.inf), r"inf at \(3, 0\)"),
        (torch.zeros(T, T, dtype=torch.float64), "float32 .*, got torch.float64"),
        (torch.zeros(T, T, dtype=torch.float16), "float32 .*, got torch.float16"),
    ],
    ids=["nan", "+inf", "float64", "float16"],
)
def test_a_float_mask_that_would_give_nan_or_fail_inside_attention_is_named(kernel, mask, message):
    # NaN and +inf gave NaN outputs silently; the dtypes raised torch's RuntimeError.
    from slime.proto import KernelError

    with pytest.raises(KernelError, match=message):
        make(kernel)(torch.randn(2, T, D), attn_mask=mask)


def test_a_query_that_sees_no_key_outputs_zeros_as_multihead_attention_does(kernel):
    org = make(kernel, n_pods=H, capacity=H, init="torch")
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(D, H, bias=False, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(org.qkv_weight.reshape(3 * H * d, D))
        mha.out_proj.weight.copy_(org.o_weight.reshape(D, H * d))
    x = torch.randn(2, T, D)
    mask = torch.zeros(T, T).index_fill(0, torch.tensor([1]), -math.inf)  # query 1 sees nothing
    out = org(x, attn_mask=mask)
    theirs = mha(x, x, x, attn_mask=mask, need_weights=False)[0]
    assert torch.equal(out[:, 1], torch.zeros(2, D))
    torch.testing.assert_close(out, theirs, atol=1e-5, rtol=1e-4)
