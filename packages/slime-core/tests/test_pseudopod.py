"""Pseudopod: an attention head that is a Component, computes through its kernel and measures
smoothed behavioural descriptors."""

import math

import pytest
import torch
from slime.core import DESCRIPTOR_NAMES, Pseudopod
from slime.core.pseudopod import hoyer_sparsity
from slime.proto import Component, ConfigError
from slime.proto import Pseudopod as PseudopodProtocol
from slime.proto.testing import assert_conforms, assert_roundtrip, payloads_equal

pytest.importorskip("hypothesis")  # CPU-only property tests; the GPU machine may lack it
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

D, d = 16, 4


def make_pod(kernel, gen, **kw):
    return Pseudopod(D, d, kernel=kernel, generator=gen, **kw)


def reference_head(pod, x, causal):
    """float64 softmax attention from the pod's weights."""
    x = x.double()
    q, k, v = (x @ getattr(pod, f"{p}_weight").double().T for p in "qkv")
    logits = q @ k.transpose(-1, -2) / math.sqrt(pod.head_dim)
    if causal:
        seq = x.shape[1]
        logits = logits.masked_fill(torch.ones(seq, seq).triu(1).bool(), -math.inf)
    return logits.softmax(-1) @ v


def test_pseudopod_implements_component_and_pseudopod_protocols(kernel, gen):
    pod = make_pod(kernel, gen)
    assert_conforms(pod, Component)
    assert_conforms(pod, PseudopodProtocol)


@pytest.mark.parametrize("causal", [False, True])
def test_forward_matches_float64_reference_attention(kernel, gen, causal):
    pod = make_pod(kernel, gen, init_std=0.5)
    x = torch.randn(2, 5, D, generator=gen)
    out = pod(x, causal=causal)
    assert out.shape == (2, 5, d)
    torch.testing.assert_close(out.double(), reference_head(pod, x, causal), atol=1e-5, rtol=1e-4)


def test_stimulus_is_a_key_padding_mask(kernel, gen):
    pod = make_pod(kernel, gen, init_std=0.5)
    x = torch.randn(1, 4, D, generator=gen)
    visible = torch.tensor([[True, True, False, False]])
    masked = pod(x, visible)
    altered = x.clone()
    altered[:, 2:] += 5.0  # keys that are masked out must not matter
    torch.testing.assert_close(pod(altered, visible)[:, :2], masked[:, :2])


def test_to_dict_round_trips_exactly(kernel, gen):
    pod = make_pod(kernel, gen, bias=True)
    pod.fitness = 0.75
    pod.measure(torch.randn(2, 6, D, generator=gen), causal=True)
    rebuilt = assert_roundtrip(pod)
    assert rebuilt.fitness == 0.75
    x = torch.randn(1, 6, D, generator=gen)
    torch.testing.assert_close(rebuilt(x), pod(x))  # rebuilt with the default (SDPA) kernel


def test_to_dict_holds_copies_not_references(kernel, gen):
    pod = make_pod(kernel, gen)
    genome = pod.to_dict()
    with torch.no_grad():
        pod.q_weight.add_(1.0)
    assert not torch.equal(genome["params"]["q_weight"], pod.q_weight)


def test_from_dict_rejects_a_genome_of_wrong_shape(kernel, gen):
    genome = make_pod(kernel, gen).to_dict()
    genome["params"]["q_weight"] = torch.zeros(d + 1, D)
    with pytest.raises(ConfigError, match="q_weight"):
        Pseudopod.from_dict(genome, kernel=kernel)


def test_from_dict_rejects_missing_keys(kernel, gen):
    genome = make_pod(kernel, gen).to_dict()
    del genome["params"]
    with pytest.raises(ConfigError, match="params"):
        Pseudopod.from_dict(genome, kernel=kernel)


def test_fitness_rejects_non_finite_values(kernel, gen):
    pod = make_pod(kernel, gen)
    with pytest.raises(ConfigError, match="fitness"):
        pod.fitness = float("nan")


def test_reset_forgets_fitness_and_descriptors_but_keeps_weights(kernel, gen):
    pod = make_pod(kernel, gen)
    pod.fitness = 3.0
    pod.measure(torch.randn(2, 6, D, generator=gen))
    weights = pod.q_weight.detach().clone()
    pod.reset()
    assert pod.fitness == 0.0 and int(pod.n_measurements) == 0
    assert torch.equal(pod.descriptors, torch.zeros(len(DESCRIPTOR_NAMES)))
    assert torch.equal(pod.q_weight, weights)


def test_uniform_causal_attention_has_distance_one_quarter(kernel, gen):
    pod = make_pod(kernel, gen)
    with torch.no_grad():
        pod.q_weight.zero_()  # all logits 0: query t attends uniformly to keys 0..t
    raw = pod.measure(torch.randn(3, 9, D, generator=gen), causal=True)
    # mean over t of (t / 2) / (T - 1) = 1/4
    assert raw[0].item() == pytest.approx(0.25, abs=1e-6)


def test_equal_magnitude_weights_have_zero_spread(kernel, gen):
    pod = make_pod(kernel, gen)
    with torch.no_grad():
        for p in pod.parameters():
            p.copy_(torch.randint(0, 2, p.shape, generator=gen).float() * 2 - 1)
    assert pod.weight_spread().item() == pytest.approx(0.0, abs=1e-6)


def test_descriptors_lie_in_unit_interval(kernel, gen):
    pod = make_pod(kernel, gen, init_std=1.0)
    raw = pod.measure(torch.randn(2, 7, D, generator=gen), causal=True)
    assert ((raw >= 0) & (raw <= 1)).all()


def test_descriptors_are_smoothed_by_ema(kernel, gen):
    pod = make_pod(kernel, gen, descriptor_momentum=0.9)
    first = pod.measure(torch.randn(2, 6, D, generator=gen), causal=True)
    assert torch.equal(pod.descriptors, first)  # the first measurement is taken as is
    second = pod.measure(10 * torch.randn(2, 6, D, generator=gen), causal=True)
    torch.testing.assert_close(pod.descriptors, 0.9 * first + 0.1 * second)


def test_given_activation_sparsity_replaces_the_probe_value(kernel, gen):
    pod = make_pod(kernel, gen)
    raw = pod.measure(torch.randn(2, 6, D, generator=gen), activation_sparsity=torch.tensor(0.3))
    assert raw[1].item() == pytest.approx(0.3)


def test_correlation_effective_rank_and_coherence_follow_the_last_measurement(kernel, gen):
    pod = make_pod(kernel, gen, init_std=0.5)
    assert pod.effective_rank().item() == pytest.approx(d, rel=1e-4)  # identity before measuring
    pod.measure(torch.randn(4, 8, D, generator=gen))
    assert pod.correlation.shape == (d, d)
    assert torch.allclose(pod.correlation.diagonal(), torch.ones(d), atol=1e-4)
    assert 1.0 <= pod.effective_rank().item() <= d + 1e-4
    assert 0.0 <= pod.coherence().item() <= 1.0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_hoyer_sparsity_is_in_unit_interval_and_scale_invariant(seed):
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(seed))
    s = hoyer_sparsity(x)
    assert ((s >= 0) & (s <= 1)).all()
    torch.testing.assert_close(hoyer_sparsity(3.0 * x), s)


def test_hoyer_sparsity_extremes():
    assert hoyer_sparsity(torch.tensor([[0.0, 0.0, 2.0, 0.0]])).item() == pytest.approx(1.0)
    assert hoyer_sparsity(torch.ones(1, 4)).item() == pytest.approx(0.0)


def test_genome_is_plain_data(kernel, gen):
    genome = make_pod(kernel, gen).to_dict()
    assert payloads_equal(genome, make_pod(kernel, torch.Generator().manual_seed(0)).to_dict())
