"""A pod seen through its organism's slot table: the Component and Pseudopod protocols, its genome,
and the behavioural descriptors the organism measures for it."""

import math

import pytest
import torch
from slime.core import DESCRIPTOR_NAMES, Organism, PodView
from slime.core.pseudopod import hoyer_sparsity
from slime.proto import Component, ConfigError
from slime.proto import Pseudopod as PseudopodProtocol
from slime.proto.testing import assert_conforms, payloads_equal

pytest.importorskip("hypothesis")  # CPU-only property tests; the GPU machine may lack it
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

D, d = 16, 4


def organism(kernel, gen, **kw):
    base = dict(pod_capacity=3, n_pods=2, head_dim=d, kernel=kernel, generator=gen, tube_capacity=0)
    return Organism(D, **{**base, **kw})


def reference_head(pod, x, causal):
    """float64 softmax attention from the pod's weights."""
    x = x.double()
    q, k, v = (x @ getattr(pod, f"{p}_weight").double().T for p in "qkv")
    logits = q @ k.transpose(-1, -2) / math.sqrt(pod.head_dim)
    if causal:
        seq = x.shape[1]
        logits = logits.masked_fill(torch.ones(seq, seq).triu(1).bool(), -math.inf)
    return logits.softmax(-1) @ v


def test_a_pod_view_implements_component_and_pseudopod_protocols(kernel, gen):
    pod = organism(kernel, gen).pod(0)
    assert_conforms(pod, Component)
    assert_conforms(pod, PseudopodProtocol)


@pytest.mark.parametrize("causal", [False, True])
def test_the_head_alone_matches_float64_reference_attention(kernel, gen, causal):
    pod = organism(kernel, gen, init_std=0.3).pod(1)
    x = torch.randn(2, 6, D, generator=gen)
    torch.testing.assert_close(
        pod(x, causal=causal).double(), reference_head(pod, x, causal), atol=1e-5, rtol=1e-4
    )


def test_stimulus_is_a_key_padding_mask(kernel, gen):
    pod = organism(kernel, gen, init_std=0.3).pod(0)
    x = torch.randn(2, 6, D, generator=gen)
    visible = torch.ones(2, 6, dtype=torch.bool)
    visible[:, 2:] = False
    masked = pod(x, visible)
    altered = x.clone()
    altered[:, 2:] += 5.0  # keys that are masked out must not matter
    torch.testing.assert_close(pod(altered, visible)[:, :2], masked[:, :2])


def test_a_genome_round_trips_exactly_through_another_slot(kernel, gen):
    org = organism(kernel, gen, bias=True)
    with torch.no_grad():
        org.qkv_bias.normal_(generator=gen)
    org.measure_behaviour(torch.randn(2, 6, D, generator=gen), causal=True)
    pod = org.pod(0)
    pod.fitness = 0.75
    genome = pod.to_dict()
    copy = org.pod(1).from_dict(genome)
    assert payloads_equal(copy.to_dict(), genome)
    x = torch.randn(1, 6, D, generator=gen)
    assert torch.equal(copy(x), pod(x))


def test_to_dict_holds_copies_not_references(kernel, gen):
    pod = organism(kernel, gen).pod(0)
    genome = pod.to_dict()
    with torch.no_grad():
        pod.q_weight.add_(1.0)
    assert not torch.equal(genome["params"]["q_weight"], pod.q_weight)


def test_a_genome_of_the_wrong_shape_or_without_params_is_refused(kernel, gen):
    org = organism(kernel, gen)
    genome = org.pod(0).to_dict()
    genome["params"]["q_weight"] = torch.zeros(d + 1, D)
    with pytest.raises(ConfigError, match="q_weight"):
        org.pod(1).from_dict(genome)
    del genome["params"]["k_weight"]
    with pytest.raises(ConfigError, match="k_weight"):
        org.spawn(genome)
    with pytest.raises(ConfigError, match="genome"):
        org.spawn({"n_embd": D})
    with pytest.raises(ConfigError, match="list"):
        org.spawn([1, 2])


def test_reset_forgets_fitness_and_descriptors_but_keeps_weights(kernel, gen):
    org = organism(kernel, gen)
    pod = org.pod(0)
    pod.fitness = 3.0
    org.measure_behaviour(torch.randn(2, 6, D, generator=gen))
    weights = pod.q_weight.clone()
    pod.reset()
    assert pod.fitness == 0.0 and int(pod.n_measurements) == 0
    assert torch.equal(pod.descriptors, torch.zeros(len(DESCRIPTOR_NAMES)))
    assert torch.equal(pod.q_weight, weights)


def test_uniform_causal_attention_has_distance_one_quarter(kernel, gen):
    org = organism(kernel, gen)
    with torch.no_grad():
        org.qkv_weight[0].zero_()  # all logits 0: query t attends uniformly to keys 0..t
    measured = org.measure_behaviour(torch.randn(3, 9, D, generator=gen), causal=True)
    # mean over t of (t / 2) / (T - 1) = 1/4
    torch.testing.assert_close(measured[:, 0], torch.full((2,), 0.25))


def test_equal_magnitude_weights_have_zero_spread(kernel, gen):
    org = organism(kernel, gen, n_pods=1, pod_capacity=1)
    with torch.no_grad():
        for p in org.parameters():
            p.copy_(torch.randint(0, 2, p.shape, generator=gen).float() * 2 - 1)
    measured = org.measure_behaviour(torch.randn(2, 5, D, generator=gen))
    assert measured[0, 2].item() == pytest.approx(0.0, abs=1e-6)


def test_spread_is_measured_over_the_pods_own_weights(kernel, gen):
    org = organism(kernel, gen, init_std=1.0)
    measured = org.measure_behaviour(torch.randn(2, 5, D, generator=gen))
    for slot in (0, 1):
        pod = org.pod(slot)
        w = torch.cat([getattr(pod, n).flatten() for n in pod.projection_names()])
        expected = 1 - w.abs().mean().square() / w.square().mean()
        assert measured[slot, 2].item() == pytest.approx(expected.item(), rel=1e-5)


def test_sparsity_without_tubes_is_the_probes_hoyer_sparsity(kernel, gen):
    org = organism(kernel, gen, init_std=0.5)
    probe = torch.randn(2, 6, D, generator=gen)
    measured = org.measure_behaviour(probe, causal=True)
    for slot in (0, 1):
        head = reference_head(org.pod(slot), probe, True).float()
        expected = hoyer_sparsity(head).mean()
        assert measured[slot, 1].item() == pytest.approx(expected.item(), rel=1e-4)


def test_descriptors_lie_in_unit_interval(kernel, gen):
    org = organism(kernel, gen, init_std=1.0)
    measured = org.measure_behaviour(torch.randn(2, 7, D, generator=gen), causal=True)
    assert ((measured >= 0) & (measured <= 1)).all()


def test_descriptors_are_smoothed_by_ema(kernel, gen):
    org = organism(kernel, gen, descriptor_momentum=0.9)
    first = org.measure_behaviour(torch.randn(2, 6, D, generator=gen), causal=True).clone()
    twin = organism(kernel, torch.Generator().manual_seed(0), descriptor_momentum=0.9)
    twin.load_state_dict(org.state_dict())
    probe = 10 * torch.randn(2, 6, D, generator=gen)
    second = org.measure_behaviour(probe, causal=True)
    twin.reset_state()
    for slot in (0, 1):
        twin.pod(slot).reset()
    raw = twin.measure_behaviour(probe, causal=True)  # a first measurement is taken as is
    torch.testing.assert_close(second, 0.9 * first + 0.1 * raw)


def test_correlation_effective_rank_and_coherence_follow_the_last_measurement(kernel, gen):
    org = organism(kernel, gen, init_std=0.5)
    pod = org.pod(0)
    assert pod.effective_rank().item() == pytest.approx(d, rel=1e-4)  # identity before measuring
    org.measure_behaviour(torch.randn(4, 8, D, generator=gen))
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


def test_genome_is_plain_data_and_reproducible(kernel, gen):
    genome = organism(kernel, gen).pod(1).to_dict()
    again = organism(kernel, torch.Generator().manual_seed(0)).pod(1).to_dict()
    assert payloads_equal(genome, again)


def test_a_view_of_an_empty_slot_is_refused(kernel, gen):
    from slime.proto import PoolError

    with pytest.raises(PoolError, match="slot 2"):
        organism(kernel, gen).pod(2)
    assert isinstance(organism(kernel, gen).pod(1), PodView)
