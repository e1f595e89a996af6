"""Organism: a slot table of pods attending in one kernel call, with births, deaths, ablation,
an archive, chemotaxis and tubes that are all on the real path."""

import copy

import pytest
import torch
from slime.core import Organism, placement
from slime.core.pseudopod import hoyer_sparsity
from slime.kernels import TorchKernel, select_kernel
from slime.memory import MAX_POOL_SIZE, GridArchive
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


@pytest.fixture(params=["torch", "sdpa"])
def any_kernel(request):
    """The pool kernel (told which slots attend) and torch's SDPA (attends with every slot; the
    organism's gated values zero the others)."""
    return TorchKernel() if request.param == "torch" else select_kernel("cpu")


def per_pod_reference(org, x, causal, skip=()):
    """The organism's output as a sum of each live pod run alone."""
    out = torch.zeros_like(x)
    for slot in org.live_slots():
        if slot not in skip:
            pod = org.pod(slot)
            out = out + torch.nn.functional.linear(pod(x, causal=causal), pod.o_weight)
    return out


def test_organism_implements_the_protocol(kernel, gen):
    assert_conforms(make(kernel, gen), OrganismProtocol)


@pytest.mark.parametrize("causal", [False, True])
def test_slot_table_attention_equals_the_pods_run_one_by_one(kernel, gen, causal):
    org = make(kernel, gen)
    x = torch.randn(2, 6, D, generator=gen)
    out = org(x, causal=causal)
    torch.testing.assert_close(out, per_pod_reference(org, x, causal), atol=1e-5, rtol=1e-4)


def test_the_slot_table_is_a_few_stacked_parameters_and_per_slot_buffers(kernel, gen):
    org = make(kernel, gen, bias=True)
    shapes = {n: tuple(p.shape) for n, p in org.named_parameters()}
    assert shapes == {
        "qkv_weight": (3, 5, d, D),
        "qkv_bias": (3, 5, d),
        "o_weight": (D, 5, d),
        "out_bias": (D,),
    }
    assert org.alive.tolist() == [True, True, True, False, False]
    assert {"alive", "fitness", "descriptors", "born_step", "tube_trace"} <= set(org.state_dict())


def test_dead_slots_hold_zeros(kernel, gen):
    org = make(kernel, gen)
    org.cull([1])
    for param, dim in org.slot_parameters():
        dead = param.detach().index_select(dim, torch.tensor([1, 3, 4]))
        assert torch.equal(dead, torch.zeros_like(dead))


def test_spawn_and_cull_keep_parameter_storage_and_tell_listeners_the_slots(kernel, gen):
    org = make(kernel, gen)
    storage = [p.data_ptr() for p in org.parameters()]
    seen = []
    org.add_slot_listener(lambda organism, slots: seen.append((organism, slots)))
    slot = org.spawn(step=7)
    org.cull([0])
    assert slot == 3 and org.live_slots() == [1, 2, 3]
    assert seen == [(org, [3]), (org, [0])]
    assert [p.data_ptr() for p in org.parameters()] == storage
    assert org.pod(3).born_step == 7 and org.pod(1).born_step == -1


def test_quiet_birth_does_not_change_the_output(kernel, gen):
    org = make(kernel, gen)
    x = torch.randn(2, 6, D, generator=gen)
    before = org(x)
    org.spawn()
    after = org(x)
    torch.testing.assert_close(after, before)


def test_cull_returns_the_genomes_and_clears_the_slots(kernel, gen):
    org = make(kernel, gen)
    org.pod(1).fitness = 3.0
    expected = org.pod(1).q_weight.clone()
    genomes = org.cull([1])
    assert org.live_slots() == [0, 2]
    assert torch.equal(genomes[0]["params"]["q_weight"], expected)
    assert genomes[0]["fitness"] == 3.0 and org.fitness[1] == 0.0


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


def test_ablate_masks_pods_exactly_and_restores_them(any_kernel, gen):
    org = make(any_kernel, gen)
    x = torch.randn(2, 6, D, generator=gen)
    full = org(x, causal=True)
    with org.ablate([0, 2]):
        masked = org(x, causal=True)
        assert org.alive.tolist()[:3] == [True, True, True]  # ablated pods stay alive
    torch.testing.assert_close(
        masked, per_pod_reference(org, x, True, skip={0, 2}), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(org(x, causal=True), full)


def test_batch_samples_do_not_mix(kernel, gen):
    org = make(kernel, gen)
    x = torch.randn(3, 6, D, generator=gen)
    out = org(x, causal=True)
    changed = x.clone()
    changed[1] += 1.0
    out2 = org(changed, causal=True)
    torch.testing.assert_close(out2[[0, 2]], out[[0, 2]])


def test_causal_outputs_ignore_the_future(kernel, gen):
    org = make(kernel, gen)
    x = torch.randn(2, 6, D, generator=gen)
    out = org(x, causal=True)
    changed = x.clone()
    changed[:, 4:] += 1.0
    torch.testing.assert_close(org(changed, causal=True)[:, :4], out[:, :4])


def _grads_after_backward(org, x):
    """``{slot: [the slot's slice of each slot-stacked parameter's gradient]}``."""
    org.zero_grad()
    org(x, causal=True).square().sum().backward()
    return {
        s: [p.grad.select(dim, s) for p, dim in org.slot_parameters()] for s in org.live_slots()
    }


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
        out = org(x, causal=True)
        (out.sum() + x.sum()).backward()
    assert torch.equal(out, torch.zeros_like(out))
    for p in org.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() == 0
    assert torch.equal(x.grad, torch.ones_like(x))


def test_an_empty_pool_outputs_zeros(kernel, gen):
    org = make(kernel, gen, n_pods=0)
    out = org(torch.randn(1, 4, D, generator=gen))
    assert torch.equal(out, torch.zeros(1, 4, D))


def test_dead_slots_get_exactly_zero_gradients(any_kernel, gen):
    org = make(any_kernel, gen)
    org.cull([1])
    grads = _grads_after_backward(org, torch.randn(2, 5, D, generator=gen))
    assert set(grads) == {0, 2}
    for param, dim in org.slot_parameters():
        dead = param.grad.index_select(dim, torch.tensor([1, 3, 4]))
        assert torch.equal(dead, torch.zeros_like(dead))


def test_ablated_slots_output_zero_and_get_zero_gradients_on_every_kernel(any_kernel, gen):
    org = make(any_kernel, gen)
    x = torch.randn(2, 5, D, generator=gen)
    with org.ablate([1]):
        q, k, v = org.project(x)
        assert torch.equal(v[:, 1], torch.zeros_like(v[:, 1]))  # gated values
        assert not torch.equal(q[:, 1], torch.zeros_like(q[:, 1]))  # the weights are still there
        org(x, causal=True).square().sum().backward()
    for param, dim in org.slot_parameters():
        ablated = param.grad.index_select(dim, torch.tensor([1]))
        assert torch.equal(ablated, torch.zeros_like(ablated))
        live = param.grad.index_select(dim, torch.tensor([0, 2]))
        assert live.abs().sum() > 0
    assert org.value_gate[2].flatten().tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]  # restored


def test_memory_budget_culls_the_least_fit_pods(kernel, gen):
    pod_bytes = 4 * D * d * 4
    org = make(kernel, gen, n_pods=5, capacity=5, memory_budget_bytes=4 * pod_bytes)
    assert org.pod_bytes() == pod_bytes
    org.fitness.copy_(torch.tensor([5.0, 1.0, 4.0, 3.0, 2.0]))
    assert org.enforce_budget() == [1]
    assert org.live_slots() == [0, 2, 3, 4]
    assert org.enforce_budget() == []


def test_memory_budget_culls_the_excess_least_fit_first(kernel, gen):
    pod_bytes = 4 * D * d * 4
    org = make(kernel, gen, n_pods=5, capacity=5, memory_budget_bytes=2 * pod_bytes + 1)
    org.fitness.copy_(torch.tensor([4.0, 2.0, 0.0, 3.0, 1.0]))
    assert org.enforce_budget() == [2, 4, 1]
    assert org.live_slots() == [0, 3]


def test_cull_least_fit_archives_the_dying_first_and_respects_eligibility(kernel, gen):
    org = make(kernel, gen, n_pods=4, capacity=5)
    org.measure_behaviour(torch.randn(2, 6, D, generator=gen), causal=True)
    org.fitness.copy_(torch.tensor([0.1, 0.9, 0.2, 0.5, 0.0]))
    assert org.cull_least_fit(2, eligible=[1, 2, 3]) == [2, 3]
    assert org.live_slots() == [0, 1]
    assert org.archive.stats.num_elites >= 1
    assert max(e.objective for e in org.archive) == pytest.approx(0.5)


def test_loading_a_state_dict_with_another_composition_takes_its_membership(kernel, gen):
    source = make(kernel, gen)
    source.cull([0])
    source.spawn(slot=4, step=3)
    source.pod(4).fitness = 0.25
    target = make(kernel, torch.Generator().manual_seed(1))
    target.load_state_dict(source.state_dict())
    assert target.live_slots() == [1, 2, 4]
    assert target.pod(4).fitness == 0.25 and target.pod(4).born_step == 3
    x = torch.randn(2, 6, D, generator=gen)
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def _old_layout_state_dict(org):
    """What this organism's state_dict looked like when each pod was its own module."""
    state = {}
    for slot in org.live_slots():
        pod = org.pod(slot)
        for name in pod.projection_names():
            state[f"pods.{slot}.{name}"] = getattr(pod, name).clone()
        state[f"pods.{slot}.descriptors"] = pod.descriptors.clone()
        state[f"pods.{slot}.n_measurements"] = pod.n_measurements.clone()
        state[f"pods.{slot}._correlation"] = pod.correlation.clone()
    if org.out_bias is not None:
        state["out_bias"] = org.out_bias.detach().clone()
    return state


@pytest.mark.parametrize("bias", [False, True])
def test_a_per_pod_state_dict_from_before_the_slot_table_still_loads(kernel, gen, bias):
    source = make(kernel, gen, bias=bias)
    source.cull([1])
    source.spawn(slot=4)
    source.measure_behaviour(torch.randn(2, 6, D, generator=gen), causal=True)
    target = make(kernel, torch.Generator().manual_seed(1), bias=bias)
    target.load_state_dict(_old_layout_state_dict(source))
    assert target.live_slots() == [0, 2, 4]
    torch.testing.assert_close(target.descriptors, source.descriptors)
    x = torch.randn(2, 6, D, generator=gen)
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_training_forwards_feed_the_tube_ring_on_the_device(kernel, gen):
    org = make(kernel, gen, tube_capacity=4, tube_decay=0.5)
    x = torch.randn(2, 6, D, generator=gen)
    org.eval()
    org(x)
    assert not org.tube_recall()[1].any()  # inference does not feed the tubes
    org.train()
    org(x)
    recalled, remembered = org.tube_recall()
    assert remembered.tolist() == [True, True, True, False, False]
    assert int(org.tube_pos) == 1
    cap = org.pod_capacity
    qkv = torch.nn.functional.linear(x, org.qkv_weight.view(3 * cap * d, D))
    q, k, v = qkv.view(2, 6, 3, cap, d).permute(2, 0, 3, 1, 4).unbind(0)
    heads = org.kernel.attention(q, k, v, alive=org.alive)
    torch.testing.assert_close(recalled[:3], hoyer_sparsity(heads).mean(dim=(0, 2))[:3])


def test_the_tube_ring_wraps_and_fades(kernel, gen):
    org = make(kernel, gen, tube_capacity=2, tube_decay=0.5)
    sparsities = []
    for _ in range(3):
        x = torch.randn(1, 4, D, generator=gen)
        org(x)
        with torch.no_grad():
            cap = org.pod_capacity
            qkv = torch.nn.functional.linear(x, org.qkv_weight.view(3 * cap * d, D))
            q, k, v = qkv.view(1, 4, 3, cap, d).permute(2, 0, 3, 1, 4).unbind(0)
            heads = org.kernel.attention(q, k, v, alive=org.alive)
        sparsities.append(hoyer_sparsity(heads).mean(dim=(0, 2))[:3])
    assert int(org.tube_pos) == 1
    recalled, _ = org.tube_recall()  # the first forward fell out of the ring of two
    torch.testing.assert_close(recalled[:3], (sparsities[2] + 0.5 * sparsities[1]) / 1.5)


def test_training_forwards_feed_the_tubes_only_while_feeding(kernel, gen):
    org = make(kernel, gen)
    org.feeding_tubes = False
    org(torch.randn(1, 4, D, generator=gen))
    assert not org.tube_recall()[1].any() and int(org.tube_pos) == 0
    org.feeding_tubes = True
    org(torch.randn(1, 4, D, generator=gen))
    assert org.tube_recall()[1].tolist() == [True, True, True, False, False]


def test_a_newborn_starts_without_tube_memory(kernel, gen):
    org = make(kernel, gen)
    org(torch.randn(1, 4, D, generator=gen))
    org.cull([0])
    assert org.spawn() == 0
    assert org.tube_recall()[1].tolist()[:3] == [False, True, True]


def test_measured_sparsity_comes_from_the_tubes_not_the_probe(kernel, gen):
    with_tubes = make(kernel, gen, tube_capacity=4, tube_decay=0.5)
    without = make(kernel, torch.Generator().manual_seed(0), tube_capacity=0)
    without.load_state_dict(
        {k: v for k, v in with_tubes.state_dict().items() if not k.startswith("tube_")},
        strict=False,
    )
    train_x = torch.randn(2, 6, D, generator=gen)
    with_tubes(train_x)
    without(train_x)
    probe = 5 * torch.randn(2, 6, D, generator=gen)
    a = with_tubes.measure_behaviour(probe, causal=True)
    b = without.measure_behaviour(probe, causal=True)
    torch.testing.assert_close(a[:, 0], b[:, 0])  # attention distance: the probe's, both
    assert not torch.allclose(a[:, 1], b[:, 1])  # sparsity: remembered vs probed
    torch.testing.assert_close(a[:, 1], with_tubes.tube_recall()[0][:3])


def test_reset_state_clears_the_tubes(kernel, gen):
    org = make(kernel, gen, tube_capacity=4, tube_decay=0.5)
    org(torch.randn(1, 4, D, generator=gen))
    org.reset_state()
    assert not org.tube_recall()[1].any() and int(org.tube_pos) == 0


def _archived(kernel, gen):
    org = make(kernel, gen, capacity=6)
    org.measure_behaviour(torch.randn(2, 6, D, generator=gen), causal=True)
    org.fitness[:3] = torch.tensor([1.0, 2.0, 0.5])
    result = org.archive_elites([0, 1, 2])
    return org, result


def test_archive_elites_stores_live_pods_by_descriptor(kernel, gen):
    org, result = _archived(kernel, gen)
    assert result.status.shape == (3,)
    assert org.archive.stats.num_elites >= 1
    elite = max(org.archive, key=lambda e: e.objective)
    cell_of_pod1 = org.archive.cell_index(org.pod(1).descriptors[:2][None])[0].item()
    assert elite.cell == cell_of_pod1 and elite.objective == 2.0
    assert org.archive.genome_form == "columns"
    torch.testing.assert_close(elite.genome["qkv_weight"][0], org.pod(1).q_weight)


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
    newborn = org.pod(slot)
    for i, name in enumerate(("q_weight", "k_weight", "v_weight")):
        torch.testing.assert_close(getattr(newborn, name), expected["qkv_weight"][i])
    assert newborn.fitness == 0.0 and torch.equal(newborn.o_weight, torch.zeros(D, d))


def test_stats_are_plain_data(kernel, gen):
    org, _ = _archived(kernel, gen)
    stats = org.stats()
    assert stats["live"] == 3 and stats["capacity"] == 6
    assert stats["archive"]["num_elites"] >= 1
    assert sorted(stats["effective_rank"]) == [0, 1, 2]
    for slot, rank in stats["effective_rank"].items():
        assert rank == pytest.approx(org.pod(slot).effective_rank().item())
        assert stats["coherence"][slot] == pytest.approx(org.pod(slot).coherence().item())
        assert 1.0 <= rank <= d + 1e-4


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
    a = torch_org(x, causal=True)
    b = triton_org(x, causal=True)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    (ga,) = torch.autograd.grad(a.square().sum(), x)
    (gb,) = torch.autograd.grad(b.square().sum(), x)
    torch.testing.assert_close(gb, ga, atol=1e-5, rtol=1e-4)


def test_pod_accessor_rejects_an_empty_slot(kernel, gen):
    org = make(kernel, gen)
    assert org.pod(1).slot == 1
    with pytest.raises(PoolError, match="slot 4"):
        org.pod(4)


def test_a_pod_view_reads_and_writes_its_slot_in_place(kernel, gen):
    org = make(kernel, gen)
    pod = org.pod(2)
    with torch.no_grad():
        pod.k_weight.fill_(0.5)
    assert torch.equal(org.qkv_weight[1, 2], torch.full((d, D), 0.5))
    pod.fitness = 1.5
    assert org.fitness[2] == 1.5
    genome = pod.to_dict()
    org.pod(0).from_dict(genome)
    assert torch.equal(org.pod(0).k_weight, pod.k_weight) and org.pod(0).fitness == 1.5
    with pytest.raises(ConfigError, match="fitness"):
        pod.fitness = float("nan")


def test_a_pod_view_measures_its_correlation_statistics(kernel, gen):
    org = make(kernel, gen)
    pod = org.pod(0)
    assert pod.effective_rank().item() == pytest.approx(d, rel=1e-4)  # identity before measuring
    org.measure_behaviour(torch.randn(2, 6, D, generator=gen))
    assert 1.0 <= pod.effective_rank().item() <= d + 1e-4
    assert 0.0 <= pod.coherence().item() <= 1.0


def test_placement_follows_the_archive_cell_and_is_stable(kernel, gen):
    org = make(kernel, gen)
    org.measure_behaviour(torch.randn(2, 6, D, generator=gen), causal=True)
    first = org.placements(4)
    assert first == org.placements(4)
    cells = org.archive.cell_index(org.live_descriptors()).tolist()
    for slot, cell in zip(org.live_slots(), cells):
        assert first[slot] == placement((cell,), 4)
    assert set(org.placements(1).values()) == {0}


def test_spawning_a_genome_of_another_shape_is_rejected(kernel, gen):
    genome = Organism(D, pod_capacity=2, n_pods=1, head_dim=8, kernel=kernel).pod(0).to_dict()
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
    donor = org.pod(0)
    donor.fitness = 4.0
    slot = org.spawn(donor.to_dict())
    child = org.pod(slot)
    assert torch.equal(child.q_weight, donor.q_weight) and child.fitness == 0.0
    assert child.q_weight.data_ptr() != donor.q_weight.data_ptr()


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


def test_a_per_sample_head_mask_ablates_each_sample_on_its_own(kernel, gen):
    org = make(kernel, gen)
    x = torch.randn(2, 6, D, generator=gen)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 2] = False
    out = org(x, causal=True, head_mask=mask)
    torch.testing.assert_close(out[0], org(x[:1], causal=True)[0])
    with org.ablate([2]):
        torch.testing.assert_close(out[1], org(x[1:], causal=True)[0])
    with pytest.raises(KernelError, match="head_mask"):
        org(x, head_mask=torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize("bias", [False, True])
def test_an_eager_forward_with_every_slot_attending_skips_the_gate_with_the_same_numbers(
    any_kernel, gen, bias
):
    org = make(any_kernel, gen, n_pods=5, capacity=5, bias=bias)
    assert org._all_attend
    x = torch.randn(2, 6, D, generator=torch.Generator().manual_seed(1), requires_grad=True)

    def run(gated: bool):
        org.zero_grad(set_to_none=True)
        org._all_attend = not gated  # gated: multiply by the all-ones gate, as compiled code does
        out = org(x, causal=True)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in org.parameters()]

    skipped, gated = run(False), run(True)
    org._refresh_attending()
    assert torch.equal(skipped[0], gated[0])
    assert all(torch.equal(a, b) for a, b in zip(skipped[1], gated[1]))


def test_the_all_attending_flag_follows_births_deaths_ablation_and_loading(any_kernel, gen):
    org = make(any_kernel, gen, n_pods=3, capacity=3)
    assert org._all_attend
    org.cull([1])
    assert not org._all_attend
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2))
    gated = org(x, causal=True)
    torch.testing.assert_close(gated, per_pod_reference(org, x, causal=True))
    org.spawn(slot=1)
    assert org._all_attend
    with org.ablate([0]):
        assert not org._all_attend
        torch.testing.assert_close(org(x), per_pod_reference(org, x, causal=False, skip=[0]))
    assert org._all_attend
    other = make(any_kernel, torch.Generator().manual_seed(3), n_pods=2, capacity=3)
    assert not other._all_attend
    other.load_state_dict(org.state_dict())
    assert other._all_attend


def unchanged(org, before):
    after = org.state_dict()
    return all(torch.equal(before[k].nan_to_num(), after[k].nan_to_num()) for k in before)


def spawn_into_free_slot_one(org):
    return org.spawn(slot=True)  # True == 1 passes a membership test, then indexes every slot


@pytest.mark.parametrize(
    "act",
    [
        spawn_into_free_slot_one,
        lambda o: o.spawn(slot=3.0),
        lambda o: o.spawn(step="x"),
        lambda o: o.cull([True]),
        lambda o: o.cull([1.0]),
        lambda o: o.cull(1),
        lambda o: o.ablate([True]).__enter__(),
        lambda o: o.cull_least_fit(True),
        lambda o: o.cull_least_fit(1.5),
        lambda o: o.archive_elites([True]),
        lambda o: o.write_slot(True, {k: v[0] for k, v in o.genome_columns([0]).items()}, keep_state=False),
        lambda o: o.write_slot(-1, {k: v[0] for k, v in o.genome_columns([0]).items()}, keep_state=False),
        lambda o: o.write_slot(5, {k: v[0] for k, v in o.genome_columns([0]).items()}, keep_state=False),
    ],
    ids=["spawn-True", "spawn-float", "step-str", "cull-True", "cull-float", "cull-int",
         "ablate-True", "least-fit-True", "least-fit-float", "archive-True", "write-True",
         "write-negative", "write-beyond"],
)  # fmt: skip
def test_a_slot_that_is_no_int_in_range_is_a_typed_error_and_changes_nothing(kernel, gen, act):
    org = make(kernel, gen)
    if act is spawn_into_free_slot_one:
        org.cull([1])
    before = {k: v.clone() for k, v in org.state_dict().items()}
    with pytest.raises((PoolError, ConfigError)):
        act(org)
    assert unchanged(org, before) and org._ablated == frozenset()
    assert org(torch.randn(1, 4, D)).shape == (1, 4, D)  # still usable


@pytest.mark.parametrize(
    ("damage", "path"),
    [
        (lambda g: {**g, "o_weight": torch.full_like(g["o_weight"], float("nan"))}, "o_weight"),
        (lambda g: {**g, "qkv_weight": g["qkv_weight"] / 0.0}, "qkv_weight"),
        (lambda g: {**g, "o_weight": g["o_weight"].long()}, "o_weight"),
        (lambda g: {**g, "o_weight": g["o_weight"].to(torch.complex64)}, "o_weight"),
        (lambda g: {**g, "o_weight": g["o_weight"].tolist()}, "o_weight"),
        (lambda g: {**g, "o_weight": g["o_weight"].numpy()}, "o_weight"),
        (lambda g: {**g, "qkv_bias": torch.zeros(7)}, "qkv_bias"),
        (lambda g: {**g, "fitness": "high"}, "genome"),
        (lambda g: {**g, "descriptors": [0.1, 0.2]}, "descriptors"),
        (lambda g: {**g, "correlation": torch.eye(2)}, "correlation"),
    ],
    ids=["nan", "inf", "int", "complex", "list", "numpy", "bias-shape", "fitness-str",
         "descriptors-shape", "correlation-shape"],
)  # fmt: skip
def test_a_malformed_genome_is_refused_whole_before_any_write(kernel, gen, damage, path):
    org = make(kernel, gen, bias=True)
    genome = damage({k: v[0] for k, v in org.genome_columns([1]).items()})
    before = {k: v.clone() for k, v in org.state_dict().items()}
    with pytest.raises(ConfigError, match=path):
        org.write_slot(0, genome, keep_state=True)
    if path in ("qkv_weight", "o_weight", "qkv_bias"):  # spawn takes the weights only
        with pytest.raises(ConfigError, match=path):
            org.spawn(genome)
    assert unchanged(org, before) and org.live_slots() == [0, 1, 2]


def test_a_pod_view_genome_with_a_nan_weight_is_refused(kernel, gen):
    org = make(kernel, gen)
    genome = org.cull([2])[0]
    genome["params"]["q_weight"][0, 0] = float("nan")
    with pytest.raises(ConfigError, match="params.q_weight"):
        org.spawn(genome)
    assert org.live_slots() == [0, 1]


@pytest.mark.parametrize(
    "kw",
    [
        {"n_pods": 1.5},
        {"pod_capacity": 5.0},
        {"dropout": 2.0},
        {"dropout": float("nan")},
        {"attn_dropout": "x"},
        {"init_std": float("nan")},
        {"init_std": -1.0},
        {"out_std": float("inf")},
        {"metabolic_rate": float("inf")},
        {"memory_budget_bytes": -5},  # would cull every pod at the first enforce_budget
        {"memory_budget_bytes": 1.5},
    ],
)
def test_constructor_arguments_out_of_range_or_of_the_wrong_type_are_named(kernel, gen, kw):
    args = dict(pod_capacity=5, n_pods=3, head_dim=d, kernel=kernel, generator=gen)
    with pytest.raises(ConfigError, match=next(iter(kw))):
        Organism(D, **{**args, **kw})


@pytest.mark.parametrize(
    ("stimulus", "message"),
    [
        (torch.randn(2, 6, D, dtype=torch.float64), "torch.float64; organism computes in float32"),
        (torch.randn(2, 6, D).bfloat16(), "torch.bfloat16; organism computes in float32"),
        (torch.ones(2, 6, D, dtype=torch.long), "torch.int64; organism computes in float32"),
        (torch.randn(2, 6, D, device="meta"), "on meta; organism's parameters are on cpu"),
        ([[0.0] * D] * 6, r"stimulus must be a \(B, T, 16\) tensor, got \[\["),
    ],
    ids=["float64", "bfloat16", "int64", "another device", "a list"],
)
def test_a_stimulus_the_parameters_cannot_compute_on_is_named(kernel, gen, stimulus, message):
    # torch's linear raised "expected m1 and m2 to have the same dtype" (a list: AttributeError)
    with pytest.raises(KernelError, match=message.replace("float32", r"torch\.float32")):
        make(kernel, gen)(stimulus)


@pytest.mark.parametrize("kernel_name", ["torch", "sdpa"])
def test_autocast_computes_a_float32_stimulus_but_not_a_float64_one(gen, kernel_name):
    org = make(TorchKernel() if kernel_name == "torch" else select_kernel("cpu"), gen)
    x = torch.randn(2, 6, D, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert org(x).dtype == torch.bfloat16
        assert org(x.bfloat16()).dtype == torch.bfloat16
        with pytest.raises(KernelError, match="float64"):
            org(x.double())


@pytest.mark.parametrize("head_mask", [torch.tensor(True), torch.ones(5, dtype=torch.bool), [True]])
def test_a_head_mask_of_the_wrong_shape_or_type_is_named_before_attention(kernel, gen, head_mask):
    org = make(kernel, gen)
    calls = []
    org.kernel = type("Spy", (), {"attention": lambda self, *a, **k: calls.append(1)})()
    with pytest.raises(KernelError, match=r"head_mask must be a \(2, 5\) bool tensor"):
        org(torch.randn(2, 6, D), head_mask=head_mask)
    assert calls == []  # checked before the kernel ran


@pytest.mark.parametrize("shape", [(0, 6, D), (2, 0, D)], ids=["no sample", "no token"])
def test_an_empty_batch_gives_an_empty_output_and_feeds_no_tube(kernel, gen, shape):
    # torch's attention returns an empty output; the kernel raised "q has an empty dim"
    org = make(kernel, gen)
    org.train()
    out = org(torch.randn(shape))
    assert out.shape == shape
    assert int(org.tube_pos) == 0 and bool(org.tube_trace.isnan().all())


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("meta", "device 'meta' holds no data"),  # Tensor.item() cannot be called on meta tensors
        ("nvidia", "device 'nvidia' is not a torch device"),  # torch's RuntimeError
        (3.5, "device must be a torch.device or a string"),  # torch's TypeError
    ],
)
def test_a_device_that_cannot_hold_the_slot_table_is_named(kernel, device, message):
    with pytest.raises(ConfigError, match=f"device: {message}"):
        Organism(D, pod_capacity=2, n_pods=1, head_dim=d, kernel=kernel, device=device)


def test_a_generator_that_is_no_torch_generator_is_named(kernel):
    with pytest.raises(ConfigError, match="generator: expected a torch.Generator or None, got 5"):
        Organism(D, pod_capacity=2, n_pods=1, head_dim=d, kernel=kernel, generator=5)


@pytest.mark.parametrize(
    ("key", "index", "value", "message"),
    [
        ("qkv_weight", (1, 4, 0, 0), float("nan"), r"qkv_weight holds nan in slot 4 \(dead\)"),
        ("o_weight", (3, 2, 1), float("-inf"), r"o_weight holds -inf in slot 2 \(live\)"),
        ("fitness", 0, float("inf"), r"fitness holds inf in slot 0 \(live\)"),
        ("descriptors", (1, 2), float("nan"), r"descriptors holds nan in slot 1 \(live\)"),
    ],
)
def test_loading_non_finite_weights_or_scores_is_a_pool_error_naming_tensor_and_slot(
    kernel, gen, key, index, value, message
):
    # each loaded silently (a dead slot's NaN reaches the forward through its zero value gate)
    source, target = make(kernel, gen), make(kernel, torch.Generator().manual_seed(1))
    state = source.state_dict()
    state[key] = state[key].clone()
    state[key][index] = value
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(PoolError, match=message):
        target.load_state_dict(state)
    after = target.state_dict()
    for k, v in before.items():  # the refused state changed nothing
        torch.testing.assert_close(after[k], v, rtol=0, atol=0, equal_nan=True)


def test_a_per_pod_state_dict_with_a_nan_weight_is_a_pool_error(kernel, gen):
    source = make(kernel, gen)
    state = _old_layout_state_dict(source)
    state["pods.2.k_weight"][0, 0] = float("nan")
    with pytest.raises(PoolError, match=r"qkv_weight holds nan in slot 2 \(live\)"):
        make(kernel, torch.Generator().manual_seed(1)).load_state_dict(state)


def _full_and_attending(org, x, monkeypatch, **kwargs):
    """Output and parameter gradients of an eager forward over the attending slots only, then
    of the full forward over every slot (the path compiled graphs take), from the same state."""
    results = []
    for part in (True, False):
        org.zero_grad(set_to_none=True)
        if not part:
            monkeypatch.setattr(org, "_attends_in_part", lambda attn_mask: False)
        out = org(x, **kwargs)
        out.square().sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in org.named_parameters()}))
    monkeypatch.undo()
    return results


@pytest.mark.parametrize("bias", [False, True])
def test_an_eager_forward_with_dead_slots_computes_only_the_attending_ones(
    any_kernel, gen, bias, monkeypatch
):
    org = make(any_kernel, gen, n_pods=4, capacity=6, bias=bias)
    org.cull([1])
    assert org._attending_slots == [0, 2, 3] and org._attends_in_part(None)
    x = torch.randn(2, 7, D, generator=torch.Generator().manual_seed(4), requires_grad=True)
    pad = torch.ones(2, 7, dtype=torch.bool)
    pad[1, 5:] = False
    heads = torch.ones(2, 6, dtype=torch.bool)
    heads[0, 2] = False
    for kwargs in ({"causal": True}, {"key_padding_mask": pad}, {"head_mask": heads}):
        (part, part_grads), (full, full_grads) = _full_and_attending(org, x, monkeypatch, **kwargs)
        torch.testing.assert_close(part, full)
        for name, grad in full_grads.items():
            torch.testing.assert_close(part_grads[name], grad, msg=name)
        for name in ("qkv_weight", "o_weight"):  # slots not computed get exact zeros
            dead = part_grads[name].select(1, 1)  # slot 1 (slots are dim 1 of both)
            assert torch.equal(dead, torch.zeros_like(dead)), name
    torch.testing.assert_close(org(x, causal=True), per_pod_reference(org, x, causal=True))


def test_the_attending_slots_follow_births_ablation_and_device_moves(any_kernel, gen):
    org = make(any_kernel, gen, n_pods=3, capacity=5)
    x = torch.randn(1, 4, D, generator=torch.Generator().manual_seed(5))
    org(x)
    assert org._attending_index.tolist() == [0, 1, 2]
    with org.ablate([1]):
        assert org._attending_slots == [0, 2]
        torch.testing.assert_close(org(x), per_pod_reference(org, x, causal=False, skip=[1]))
        assert org._attending_index.tolist() == [0, 2]
    org.spawn(slot=4)
    assert org._attending_slots == [0, 1, 2, 4] and org._attending_index is None
    torch.testing.assert_close(org(x), per_pod_reference(org, x, causal=False))
    made = org._attending_index
    org(x)
    assert org._attending_index is made  # made once per membership
    org._attending_index = made.to("meta")  # as if made before the organism moved
    torch.testing.assert_close(org(x), per_pod_reference(org, x, causal=False))
    assert org._attending_index.device == x.device
    every = make(any_kernel, gen, n_pods=5, capacity=5)
    assert every._all_attend and not every._attends_in_part(None)


def test_every_slot_makes_an_eager_forward_compute_every_slot_with_the_same_numbers(
    any_kernel, gen, monkeypatch
):
    org = make(any_kernel, gen, n_pods=3, capacity=5)
    org.cull([1])
    x = torch.randn(2, 6, D, generator=torch.Generator().manual_seed(8))
    part = org(x, causal=True)
    gathered = []
    monkeypatch.setattr(org, "attend_slots", lambda *a, **k: gathered.append(1) / 0)
    with org.every_slot():
        assert not org._attends_in_part(None)
        with org.every_slot():  # re-entrant: the inner exit keeps the outer one's
            pass
        assert not org._attends_in_part(None)
        full = org(x, causal=True)
    assert not gathered
    assert org._attends_in_part(None)  # restored on exit
    torch.testing.assert_close(full, part)
    with pytest.raises(RuntimeError, match="inside"), org.every_slot():
        raise RuntimeError("inside")
    assert org._attends_in_part(None)  # restored when the block raises


def test_an_organism_pickled_before_every_slot_existed_computes_in_part(any_kernel, gen):
    org = make(any_kernel, gen, n_pods=3, capacity=5)
    org.cull([0])
    state = org.__getstate__()
    del state["_every_slot"]
    old = Organism.__new__(Organism)
    old.__setstate__(state)
    assert old._every_slot is False and old._attends_in_part(None)


@pytest.mark.parametrize("kernel_name", ["sdpa", "triton"])
def test_a_float64_organism_attends_with_torch_whatever_its_kernel(gen, kernel_name):
    # the pool kernels take fp32 and narrower: a .double() organism with the default kernel
    # raised "q has dtype torch.float64" where nn.MultiheadAttention computes
    kernel = select_kernel("cpu", "triton" if kernel_name == "triton" else "auto")
    org = make(kernel, gen, n_pods=3, capacity=5).double()
    org.cull([1])  # a dead slot: the eager forward would otherwise compute attending slots only
    x = torch.randn(2, 6, D, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    pad = torch.ones(2, 6, dtype=torch.bool)
    pad[1, 4:] = False
    reference = copy.deepcopy(org)
    reference.kernel = TorchKernel()  # the torch fallback computes in float64
    for train in (True, False):
        org.train(train)
        reference.train(train)
        out = org(x, causal=True)
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, reference(x, causal=True))
        torch.testing.assert_close(out, per_pod_reference(reference, x, causal=True))
        padded = org(x, key_padding_mask=pad)
        assert padded.dtype == torch.float64
        torch.testing.assert_close(padded, reference(x, key_padding_mask=pad))
    org.train()
    x.requires_grad_(True)
    org(x, causal=True).square().sum().backward()
    assert x.grad.dtype == torch.float64 and org.qkv_weight.grad[:, 1].abs().sum() == 0


def test_a_training_forward_over_the_attending_slots_feeds_the_same_tube_entry(
    any_kernel, gen, monkeypatch
):
    org = make(any_kernel, gen, n_pods=3, capacity=5)
    org.cull([0])
    org.train()
    x = torch.randn(2, 6, D, generator=torch.Generator().manual_seed(6))
    org(x)
    part = org.tube_trace[0].clone()
    monkeypatch.setattr(org, "_attends_in_part", lambda attn_mask: False)
    org(x)
    full = org.tube_trace[1].clone()
    torch.testing.assert_close(part, full, equal_nan=True)
    assert part[[0, 3, 4]].isnan().all() and not part[[1, 2]].isnan().any()
    assert int(org.tube_pos) == 2


def test_attending_slots_first_read_under_inference_mode_still_train(any_kernel, gen):
    org = make(any_kernel, gen, n_pods=3, capacity=5)
    org.cull([2])
    x = torch.randn(2, 4, D, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        generated = org(x)
    org.train()
    out = org(x)
    out.square().sum().backward()  # index_select saved the index for its backward
    torch.testing.assert_close(out.detach(), generated)
    assert org.qkv_weight.grad[:, 2].abs().sum() == 0
