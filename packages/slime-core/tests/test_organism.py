"""Organism: a pool of registered pods attending in one padded kernel call, with births, deaths,
ablation, an archive, chemotaxis and tubes that are all on the real path."""

import gc
import weakref

import pytest
import torch
from slime.core import FlowState, Organism, placement
from slime.core.pseudopod import hoyer_sparsity
from slime.memory import MAX_POOL_SIZE, GridArchive, TubeNetwork
from slime.proto import ConfigError, KernelError, PoolError
from slime.proto import Organism as OrganismProtocol
from slime.proto.testing import assert_conforms

D, d = 16, 4


def make(kernel, gen, *, n_pods=3, capacity=5, **kw):
    return Organism(
        D,
        pod_capacity=capacity,
        n_pods=n_pods,
        head_dim=d,
        kernel=kernel,
        generator=gen,
        init_std=0.3,
        **kw,
    )


def per_pod_reference(org, x, causal, skip=()):
    """The organism's output as a sum of each live pod run alone."""
    out = torch.zeros_like(x)
    for slot in org.live_slots():
        if slot not in skip:
            pod = org.pods[str(slot)]
            out = out + pod.contribution(pod(x, causal=causal))
    return out


def test_organism_implements_the_protocol(kernel, gen):
    assert_conforms(make(kernel, gen), OrganismProtocol)


@pytest.mark.parametrize("causal", [False, True])
def test_padded_pool_attention_equals_the_pods_run_one_by_one(kernel, gen, causal):
    org = make(kernel, gen)
    x = torch.randn(2, 6, D, generator=gen)
    out, state = org(x, causal=causal)
    torch.testing.assert_close(out, per_pod_reference(org, x, causal), atol=1e-5, rtol=1e-4)
    assert isinstance(state, FlowState)
    assert state.hidden.shape == (2, 5, 6, d)
    torch.testing.assert_close(state.residual, x + out)


def test_pods_are_registered_submodules_keyed_by_slot(kernel, gen):
    org = make(kernel, gen)
    assert list(org.pods.keys()) == ["0", "1", "2"]
    names = {n for n, _ in org.named_parameters()}
    assert {"pods.0.q_weight", "pods.2.o_weight"} <= names


def test_spawn_adds_parameters_and_tells_listeners(kernel, gen):
    org = make(kernel, gen)
    seen = []
    org.add_pool_listener(lambda added, removed: seen.append((added, removed)))
    slot = org.spawn()
    assert slot == 3 and org.live_slots() == [0, 1, 2, 3]
    pod_params = list(org.pods["3"].parameters())
    assert {id(p) for p in pod_params} <= {id(p) for p in org.parameters()}
    assert [id(p) for p in seen[0][0]] == [id(p) for p in pod_params] and seen[0][1] == []


def test_quiet_birth_does_not_change_the_output(kernel, gen):
    org = make(kernel, gen)
    x = torch.randn(2, 6, D, generator=gen)
    before, _ = org(x)
    org.spawn()
    after, _ = org(x)
    torch.testing.assert_close(after, before)


def test_cull_removes_pods_returns_genomes_and_leaves_no_reference(kernel, gen):
    org = make(kernel, gen)
    seen = []
    org.add_pool_listener(lambda added, removed: seen.append(removed))
    dead = weakref.ref(org.pods["1"])
    expected = org.pods["1"].q_weight.detach().clone()
    genomes = org.cull([1])
    assert org.live_slots() == [0, 2] and len(seen[0]) == 4
    assert torch.equal(genomes[0]["params"]["q_weight"], expected)
    seen.clear()
    gc.collect()
    assert dead() is None


def test_culled_slot_is_reused_by_the_next_spawn(kernel, gen):
    org = make(kernel, gen)
    org.cull([0])
    assert org.spawn() == 0


def test_spawning_into_a_full_pool_raises(kernel, gen):
    org = make(kernel, gen, n_pods=2, capacity=2)
    with pytest.raises(PoolError, match="full"):
        org.spawn()


@pytest.mark.parametrize("slots", [[7], [1, 1]])
def test_culling_unknown_or_repeated_slots_raises(kernel, gen, slots):
    with pytest.raises(PoolError):
        make(kernel, gen).cull(slots)


def test_capacity_beyond_max_pool_size_is_rejected(kernel, gen):
    with pytest.raises(ConfigError, match="pod_capacity"):
        make(kernel, gen, capacity=MAX_POOL_SIZE + 1)


def test_ablate_masks_pods_exactly_and_restores_them(kernel, gen):
    org = make(kernel, gen)
    x = torch.randn(2, 6, D, generator=gen)
    full, _ = org(x, causal=True)
    with org.ablate([0, 2]):
        masked, _ = org(x, causal=True)
    torch.testing.assert_close(
        masked, per_pod_reference(org, x, True, skip={0, 2}), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(org(x, causal=True)[0], full)


def test_batch_samples_do_not_mix(kernel, gen):
    org = make(kernel, gen)
    x = torch.randn(3, 6, D, generator=gen)
    out, _ = org(x, causal=True)
    changed = x.clone()
    changed[1] += 1.0
    out2, _ = org(changed, causal=True)
    torch.testing.assert_close(out2[[0, 2]], out[[0, 2]])


def test_causal_outputs_ignore_the_future(kernel, gen):
    org = make(kernel, gen)
    x = torch.randn(2, 6, D, generator=gen)
    out, _ = org(x, causal=True)
    changed = x.clone()
    changed[:, 4:] += 1.0
    torch.testing.assert_close(org(changed, causal=True)[0][:, :4], out[:, :4])


def _grads_after_backward(org, x):
    org.zero_grad()
    out, _ = org(x, causal=True)
    out.square().sum().backward()
    return {s: [p.grad for p in org.pods[str(s)].parameters()] for s in org.live_slots()}


def test_gradients_reach_a_pool_of_one(kernel, gen):
    grads = _grads_after_backward(
        make(kernel, gen, n_pods=1, capacity=1), torch.randn(2, 5, D, generator=gen)
    )
    assert all(g is not None and g.abs().sum() > 0 for g in grads[0])


def test_gradients_reach_every_pod_of_a_full_max_size_pool(kernel, gen):
    org = Organism(
        8,
        pod_capacity=MAX_POOL_SIZE,
        n_pods=MAX_POOL_SIZE,
        head_dim=2,
        kernel=kernel,
        generator=gen,
        init_std=0.3,
    )
    grads = _grads_after_backward(org, torch.randn(1, 3, 8, generator=gen))
    assert len(grads) == MAX_POOL_SIZE
    assert all(g.abs().sum() > 0 for gs in grads.values() for g in gs)


def test_all_pods_masked_gives_zero_output_and_zero_finite_gradients(kernel, gen):
    org = make(kernel, gen)
    x = torch.randn(2, 5, D, generator=gen, requires_grad=True)
    with org.ablate(org.live_slots()):
        out, _ = org(x, causal=True)
        (out.sum() + x.sum()).backward()
    assert torch.equal(out, torch.zeros_like(out))
    for p in org.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() == 0
    assert torch.equal(x.grad, torch.ones_like(x))


def test_an_empty_pool_outputs_zeros(kernel, gen):
    org = make(kernel, gen, n_pods=0)
    out, _ = org(torch.randn(1, 4, D, generator=gen))
    assert torch.equal(out, torch.zeros(1, 4, D))


def test_memory_budget_culls_the_least_fit_pods(kernel, gen):
    pod_bytes = 4 * D * d * 4
    org = make(kernel, gen, n_pods=5, capacity=5, memory_budget_bytes=4 * pod_bytes)
    for slot, fit in zip(range(5), [5.0, 1.0, 4.0, 3.0, 2.0]):
        org.pods[str(slot)].fitness = fit
    genomes = org.enforce_budget()
    assert org.live_slots() == [0, 2, 3, 4] and genomes[0]["fitness"] == 1.0
    assert org.enforce_budget() == []


def test_memory_budget_culls_repeatedly_until_it_fits(kernel, gen):
    pod_bytes = 4 * D * d * 4
    org = make(kernel, gen, n_pods=5, capacity=5, memory_budget_bytes=2 * pod_bytes)
    for slot, fit in zip(range(5), [4.0, 2.0, 0.0, 3.0, 1.0]):
        org.pods[str(slot)].fitness = fit
    genomes = org.enforce_budget()
    assert org.live_slots() == [0, 3]
    assert [g["fitness"] for g in genomes] == [0.0, 1.0, 2.0]


def test_loading_a_state_dict_with_another_composition_rebuilds_the_pool(kernel, gen):
    source = make(kernel, gen)
    source.cull([0])
    source.spawn(slot=4)
    target = make(kernel, torch.Generator().manual_seed(1))
    added = []
    target.add_pool_listener(lambda a, r: added.extend(a))
    target.load_state_dict(source.state_dict())
    assert target.live_slots() == [1, 2, 4] and len(added) == 4
    x = torch.randn(2, 6, D, generator=gen)
    torch.testing.assert_close(target(x)[0], source(x)[0], rtol=0, atol=0)


def test_training_forwards_feed_the_tubes_and_state_recalls_them(kernel, gen):
    tubes = TubeNetwork(4, 0.5)
    org = make(kernel, gen, tubes=tubes)
    x = torch.randn(2, 6, D, generator=gen)
    org.eval()
    assert org(x)[1].memory is None  # inference does not feed the tubes
    org.train()
    _, state = org(x)
    assert len(tubes) == 1 and state.memory.shape == (5,)
    per_slot = hoyer_sparsity(state.hidden.detach()).mean(dim=(0, 2))
    torch.testing.assert_close(state.memory, per_slot)


def test_measured_sparsity_comes_from_the_tubes_not_the_probe(kernel, gen):
    with_tubes = make(kernel, gen, tubes=TubeNetwork(4, 0.5))
    without = make(kernel, torch.Generator().manual_seed(0))
    without.load_state_dict(with_tubes.state_dict())
    train_x = torch.randn(2, 6, D, generator=gen)
    with_tubes(train_x)
    without(train_x)
    probe = 5 * torch.randn(2, 6, D, generator=gen)
    a = with_tubes.measure_behaviour(probe, causal=True)
    b = without.measure_behaviour(probe, causal=True)
    torch.testing.assert_close(a[:, 0], b[:, 0])  # attention distance: the probe's, both
    assert not torch.allclose(a[:, 1], b[:, 1])  # sparsity: remembered vs probed
    torch.testing.assert_close(a[:, 1], with_tubes.tubes.recall()[:3])


def test_reset_state_clears_the_tubes(kernel, gen):
    org = make(kernel, gen, tubes=TubeNetwork(4, 0.5))
    org(torch.randn(1, 4, D, generator=gen))
    org.reset_state()
    assert org.tubes.recall() is None


def _archived(kernel, gen):
    org = make(kernel, gen, capacity=6)
    org.measure_behaviour(torch.randn(2, 6, D, generator=gen), causal=True)
    result = org.archive_elites({0: 1.0, 1: 2.0, 2: 0.5})
    return org, result


def test_archive_elites_stores_live_pods_by_descriptor(kernel, gen):
    org, result = _archived(kernel, gen)
    assert result.status.shape == (3,)
    assert org.archive.stats.num_elites >= 1
    elite = max(org.archive, key=lambda e: e.objective)
    cell_of_pod1 = org.archive.cell_index(org.pods["1"].descriptors[:2][None])[0].item()
    assert elite.cell == cell_of_pod1 and elite.objective == 2.0


def test_birth_location_is_none_with_an_empty_archive(kernel, gen):
    assert make(kernel, gen).birth_location() is None


def test_spawn_grows_from_the_archive_where_chemotaxis_points(kernel, gen, monkeypatch):
    org, _ = _archived(kernel, gen)
    locations = []
    original = org.chemotaxis.sample

    def spy(*args):
        locations.append(original(*args))
        return locations[-1]

    monkeypatch.setattr(org.chemotaxis, "sample", spy)
    slot = org.spawn()
    assert len(locations) == 1 and locations[0] is not None
    expected = org.archive.interpolate(locations[0], k_neighbors=2)
    newborn = org.pods[str(slot)]
    for name in ("q_weight", "k_weight", "v_weight"):
        torch.testing.assert_close(getattr(newborn, name), expected["params"][name])
    assert newborn.fitness == 0.0 and torch.equal(newborn.o_weight, torch.zeros(D, d))


def test_stats_are_plain_data(kernel, gen):
    org, _ = _archived(kernel, gen)
    stats = org.stats()
    assert stats["live"] == 3 and stats["capacity"] == 6
    assert stats["archive"]["num_elites"] >= 1


def test_triton_kernel_computes_the_same_organism_as_the_torch_kernel(kernel, gen):
    from slime.kernels import TritonKernel

    torch_org = Organism(
        32, pod_capacity=3, n_pods=2, head_dim=16, kernel=kernel, generator=gen, init_std=0.3
    )
    triton_org = Organism(
        32, pod_capacity=3, n_pods=2, head_dim=16, kernel=TritonKernel(), init_std=0.3
    )
    triton_org.load_state_dict(torch_org.state_dict())
    x = torch.randn(1, 4, 32, generator=gen, requires_grad=True)
    a, _ = torch_org(x, causal=True)
    b, _ = triton_org(x, causal=True)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    (ga,) = torch.autograd.grad(a.square().sum(), x)
    (gb,) = torch.autograd.grad(b.square().sum(), x)
    torch.testing.assert_close(gb, ga, atol=1e-5, rtol=1e-4)


def test_pod_accessor_rejects_an_empty_slot(kernel, gen):
    org = make(kernel, gen)
    assert org.pod(1) is org.pods["1"]
    with pytest.raises(PoolError, match="slot 4"):
        org.pod(4)


def test_ages_count_pool_ticks_since_birth(kernel, gen):
    org = make(kernel, gen)
    org.tick(3)
    slot = org.spawn()
    org.tick(2)
    assert org.ages() == {0: 5, 1: 5, 2: 5, slot: 2}


def test_placement_follows_the_archive_cell_and_is_stable(kernel, gen):
    org = make(kernel, gen)
    org.measure_behaviour(torch.randn(2, 6, D, generator=gen), causal=True)
    first = org.placements(4)
    assert first == org.placements(4)
    cells = org.archive.cell_index(org.descriptors()).tolist()
    for slot, cell in zip(org.live_slots(), cells):
        assert first[slot] == placement((cell,), 4)
    assert set(org.placements(1).values()) == {0}


def test_spawning_a_genome_of_another_shape_is_rejected(kernel, gen):
    genome = Organism(D, pod_capacity=2, n_pods=1, head_dim=8, kernel=kernel).pods["0"].to_dict()
    with pytest.raises(ConfigError, match="head_dim"):
        make(kernel, gen).spawn(genome)


def test_stimulus_of_the_wrong_width_is_rejected(kernel, gen):
    with pytest.raises(KernelError, match=r"\(B, T, 16\)"):
        make(kernel, gen)(torch.randn(1, 4, D + 1))


def test_archives_with_more_dims_than_descriptors_are_rejected(kernel, gen):
    archive = GridArchive((2, 2, 2, 2), [(0.0, 1.0)] * 4)
    with pytest.raises(ConfigError, match="descriptor dims"):
        make(kernel, gen, archive=archive)


def test_spawn_with_a_genome_copies_it_and_starts_fresh(kernel, gen):
    org = make(kernel, gen)
    donor = org.pods["0"]
    donor.fitness = 4.0
    slot = org.spawn(donor.to_dict())
    child = org.pods[str(slot)]
    assert torch.equal(child.q_weight, donor.q_weight) and child.fitness == 0.0
    assert child.q_weight is not donor.q_weight


def test_hunger_rises_as_the_pool_empties(kernel, gen, monkeypatch):
    org, _ = _archived(kernel, gen)  # 3 of 6 slots live
    seen = []
    monkeypatch.setattr(
        org.chemotaxis, "sample", lambda b, rate, hunger: seen.append((rate, hunger))
    )
    org.birth_location()
    org.cull([0, 1])
    org.birth_location()
    assert seen == [(org.metabolic_rate, 0.5), (org.metabolic_rate, 1 - 1 / 6)]
