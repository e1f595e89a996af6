"""SlimeModel: a causal LM whose pods really train, save, load and are counted like a GPT's heads."""

import json
import math
import os

import pytest
import torch
from slime.core import MetricsCollector, SlimeConfig, SlimeModel
from slime.memory import GridArchive
from slime.proto import ArchiveError, CheckpointError, ConfigError, DataError

V, T = 13, 8


def config(**kw):
    base = dict(vocab_size=V, block_size=T, n_layer=2, n_embd=16, n_pods=4, pod_capacity=6)
    return SlimeConfig(**{**base, **kw})


def make(kernel, seed=0, **kw):
    return SlimeModel(config(**kw), kernel=kernel, generator=torch.Generator().manual_seed(seed))


def batch(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (n, T), generator=g), torch.randint(0, V, (n, T), generator=g)


def gpt_param_count(c: SlimeConfig) -> int:
    """nanoGPT with n_head = n_pods, tied head, LayerNorm weights (+ biases when bias)."""
    D, hidden, b = c.n_embd, int(c.mlp_ratio * c.n_embd), int(c.bias)
    attn = 4 * D * D + b * 4 * D
    mlp = 2 * D * hidden + b * (hidden + D)
    norms = 2 * (D + b * D)
    return c.vocab_size * D + c.block_size * D + c.n_layer * (attn + mlp + norms) + D + b * D


@pytest.mark.parametrize("bias", [False, True])
def test_parameter_count_equals_a_plain_gpt_with_n_head_pods(kernel, bias):
    model = make(kernel, bias=bias, pod_capacity=4)
    assert model.num_params() == gpt_param_count(model.config)


def test_forward_returns_logits_and_loss(kernel):
    idx, targets = batch()
    logits, loss = make(kernel)(idx, targets)
    assert logits.shape == (3, T, V) and loss.shape == ()
    assert make(kernel)(idx)[1] is None


def _slot_slices(organism, slot):
    return [p.detach().select(dim, slot) for p, dim in organism.slot_parameters()]


def test_every_live_pod_gets_grads_and_moves_with_adam(kernel):
    model = make(kernel)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    live = [(o, s) for o in model.organisms for s in o.live_slots()]
    before = [w.clone() for o, s in live for w in _slot_slices(o, s)]
    idx, targets = batch()
    model(idx, targets)[1].backward()
    for o, s in live:
        for p, dim in o.slot_parameters():
            assert p.grad.select(dim, s).abs().sum() > 0
    opt.step()
    after = [w for o, s in live for w in _slot_slices(o, s)]
    assert all(not torch.equal(a, b) for a, b in zip(after, before))


def test_a_newborn_pod_trains_with_the_optimizer_it_already_had(kernel):
    model = make(kernel)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    organism = model.organisms[0]
    slot = organism.spawn()
    start = [w.clone() for w in _slot_slices(organism, slot)]
    idx, targets = batch()
    for _ in range(2):  # quiet birth: step 1 moves o_weight off zero, step 2 moves q/k/v
        opt.zero_grad()
        model(idx, targets)[1].backward()
        opt.step()
    for now, then in zip(_slot_slices(organism, slot), start):
        assert not torch.equal(now, then)


def test_a_culled_slot_stays_zero_through_training_once_its_moments_are_reset(kernel):
    model = make(kernel)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def reset_moments(organism, slots):
        for p, dim in organism.slot_parameters():
            for value in opt.state.get(p, {}).values():
                if value.shape == p.shape:
                    value.index_fill_(dim, torch.tensor(slots), 0.0)

    model.add_slot_listener(reset_moments)
    idx, targets = batch()
    model(idx, targets)[1].backward()
    opt.step()
    model.organisms[1].cull([2])
    for _ in range(2):
        opt.zero_grad()
        model(idx, targets)[1].backward()
        opt.step()
    assert all(w.abs().sum() == 0 for w in _slot_slices(model.organisms[1], 2))


def test_save_and_load_reproduce_outputs_exactly_after_spawns_and_culls(kernel, tmp_path):
    model = make(kernel)
    model.organisms[0].cull([1, 3])
    model.organisms[1].spawn(step=9)
    probe, _ = batch(1)
    model.measure_behaviour(probe)
    model.organisms[1].fitness[[0, 4]] = torch.tensor([1.0, 2.0])
    model.organisms[1].archive_elites([0, 4])
    model.organisms[1].pod(4).fitness = 0.5
    with torch.no_grad():
        model.organisms[1].pod(4).o_weight.normal_()
    model.save_pretrained(tmp_path)
    loaded = SlimeModel.from_pretrained(tmp_path, kernel=kernel)
    assert [o.live_slots() for o in loaded.organisms] == [[0, 2], [0, 1, 2, 3, 4]]
    assert loaded.organisms[1].pod(4).fitness == 0.5
    assert loaded.organisms[1].pod(4).born_step == 9
    assert loaded.organisms[1].archive.stats == model.organisms[1].archive.stats
    idx, targets = batch(2)
    a, la = model(idx, targets)
    b, lb = loaded(idx, targets)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert torch.equal(loaded.organisms[1].descriptors, model.organisms[1].descriptors)


def test_saved_model_keeps_its_weights_tied(kernel, tmp_path):
    make(kernel).save_pretrained(tmp_path)
    loaded = SlimeModel.from_pretrained(tmp_path, kernel=kernel)
    assert loaded.lm_head.weight is loaded.wte.weight


def test_loading_a_state_dict_of_another_composition_rebuilds_pools(kernel):
    source = make(kernel)
    source.organisms[0].cull([0])
    source.organisms[1].spawn(slot=5)
    target = make(kernel, seed=1)
    target.load_state_dict(source.state_dict())
    assert [o.live_slots() for o in target.organisms] == [[1, 2, 3], [0, 1, 2, 3, 5]]
    idx, _ = batch()
    assert torch.equal(target(idx)[0], source(idx)[0])


def test_from_pretrained_without_files_raises_checkpoint_error(kernel, tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        SlimeModel.from_pretrained(tmp_path, kernel=kernel)


def test_from_pretrained_with_truncated_tensors_raises_checkpoint_error(kernel, tmp_path):
    make(kernel).save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        SlimeModel.from_pretrained(tmp_path, kernel=kernel)


def test_changing_one_sample_never_changes_another(kernel):
    model = make(kernel)
    idx, _ = batch()
    changed = idx.clone()
    changed[1] = (changed[1] + 1) % V
    a, b = model(idx)[0], model(changed)[0]
    assert torch.equal(a[[0, 2]], b[[0, 2]])
    assert not torch.equal(a[1], b[1])


def test_changing_token_t_never_changes_earlier_outputs(kernel):
    model = make(kernel)
    idx, _ = batch()
    changed = idx.clone()
    changed[:, 5] = (changed[:, 5] + 1) % V
    a, b = model(idx)[0], model(changed)[0]
    assert torch.equal(a[:, :5], b[:, :5])
    assert not torch.equal(a[:, 5], b[:, 5])


def test_ablation_changes_the_loss_and_is_undone_on_exit(kernel):
    model = make(kernel)
    idx, targets = batch()
    base = model(idx, targets)[1]
    with model.ablate({0: [0, 1], 1: [3]}):
        ablated = model(idx, targets)[1]
    assert not torch.equal(ablated, base)
    assert torch.equal(model(idx, targets)[1], base)


def test_ablating_a_missing_layer_raises(kernel):
    with pytest.raises(ConfigError, match="layers"), make(kernel).ablate({5: [0]}):
        pass


def test_slot_gradient_stats_are_each_slots_gradient_norm_and_taylor_estimate(kernel):
    model = make(kernel)
    idx, targets = batch()
    model(idx, targets)[1].backward()
    norms_sq, taylor = model.slot_gradient_stats()
    assert norms_sq.shape == taylor.shape == (2, 6)
    organism = model.organisms[0]
    grads = [p.grad.select(dim, 1).flatten() for p, dim in organism.slot_parameters()]
    torch.testing.assert_close(norms_sq[0, 1], torch.cat(grads).square().sum())
    o = organism.o_weight
    torch.testing.assert_close(taylor[0, 1], -(o[:, 1] * o.grad[:, 1]).sum())
    assert torch.equal(norms_sq[:, 4:], torch.zeros(2, 2))  # empty slots


@pytest.mark.parametrize("bias", [False, True])
def test_model_slot_gradient_stats_equal_each_organisms_own(kernel, bias):
    model = make(kernel, bias=bias)
    model.organisms[1].cull([2])
    idx, targets = batch()
    model(idx, targets)[1].backward()
    norms_sq, taylor = model.slot_gradient_stats()
    for layer, organism in enumerate(model.organisms):
        own_norms, own_taylor = organism.slot_gradient_stats()
        torch.testing.assert_close(norms_sq[layer], own_norms, atol=1e-7, rtol=1e-5)
        torch.testing.assert_close(taylor[layer], own_taylor, atol=1e-7, rtol=1e-5)
    model.organisms[0].o_weight.grad = None  # a layer without some gradient: per organism
    norms_sq, taylor = model.slot_gradient_stats()
    assert torch.equal(taylor[0], torch.zeros(6))
    torch.testing.assert_close(norms_sq[1], model.organisms[1].slot_gradient_stats()[0])


@pytest.mark.parametrize("latents", [[[0.0]], "latents", 5])
def test_latents_that_are_no_tensor_are_named(kernel, latents):
    model = make(kernel)
    with pytest.raises(ConfigError, match=r"latents: latents must be a \(2, B, T, 16\) tensor"):
        model.measure_behaviour(batch()[0], latents=latents)  # AttributeError before


def test_measure_behaviour_updates_every_pod(kernel):
    model = make(kernel)
    probe, _ = batch()
    measured = model.measure_behaviour(probe)
    assert [m.shape for m in measured] == [(4, 3), (4, 3)]
    assert all(o.n_measurements.tolist() == [1] * 4 + [0] * 2 for o in model.organisms)


@pytest.mark.parametrize("budget", [None, 1])
def test_measuring_all_layers_at_once_equals_measuring_each_apart(kernel, budget, monkeypatch):
    """The model measures every layer in one batched pass (in groups under PROBS_BUDGET; 1 byte
    forces one layer per group); each organism's own measure_behaviour gives the same numbers."""
    from slime.core import organism as organism_module

    if budget is not None:
        monkeypatch.setattr(organism_module, "PROBS_BUDGET", budget)
    together, apart = make(kernel), make(kernel)
    probe, targets = batch()
    for model in (together, apart):
        model.organisms[1].cull([2])
        model(probe, targets)[1].backward()  # feeds the tubes of both layers
        model.organisms[0].tube_trace[:, 1] = float("nan")  # slot 1 remembers nothing
    together.measure_behaviour(probe)
    apart.eval()
    with torch.no_grad():
        x = apart._embed(probe)
        for block in apart.blocks:
            block.attn.measure_behaviour(block.attention_input(x), causal=True)
            x = block(x)
    for a, b in zip(together.organisms, apart.organisms):
        torch.testing.assert_close(a.descriptors, b.descriptors, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.correlation, b.correlation, rtol=1e-5, atol=1e-5)
        assert torch.equal(a.n_measurements, b.n_measurements)
    assert together.organisms[1].n_measurements.tolist() == [1, 1, 0, 1, 0, 0]


def test_offering_every_layer_at_once_equals_offering_each_organism(kernel):
    together, apart = make(kernel), make(kernel)
    probe, _ = batch()
    for model in (together, apart):
        model.measure_behaviour(probe)
        for layer, o in enumerate(model.organisms):
            o.fitness.copy_(torch.arange(6.0) + layer)
        model.organisms[1].cull([0, 1, 2, 3])  # a layer with no live pod
    results = together.archive_elites()
    assert results[1] is None and len(together.organisms[1].archive) == 0
    expected = apart.organisms[0].archive_elites()
    assert torch.equal(results[0].status, expected.status)
    for a, b in zip(together.organisms[0].archive, apart.organisms[0].archive):
        assert (a.cell, a.objective) == (b.cell, b.objective)
        assert all(torch.equal(a.genome[k], b.genome[k]) for k in b.genome)


@pytest.mark.parametrize(
    "options",
    [{}, {"threshold_min": 0.5, "learning_rate": 0.5}, {"max_size": 3}],
    ids=["map-elites", "cma-mae", "eviction"],
)
def test_offering_only_pods_above_their_threshold_keeps_every_result(kernel, options):
    from slime.memory import GridArchive

    filtered, everything = make(kernel), make(kernel)
    probe, _ = batch()
    for model in (filtered, everything):
        model.measure_behaviour(probe)
        for o in model.organisms:
            o.replace_archive(GridArchive([3, 3], o.archive.ranges[:2], **options))
    offered = []
    for o in filtered.organisms:  # count the genomes the filtered model gathers
        original = o.elite_genomes
        o.elite_genomes = lambda slots, f=original: offered.append(len(slots)) or f(slots)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        fitness = [torch.randn(6, generator=g) for _ in range(2)]
        for model in (filtered, everything):
            for o, f in zip(model.organisms, fitness):
                o.fitness.copy_(f)
        results = filtered.archive_elites()
        for o, got in zip(everything.organisms, results):
            live = o.live_slots()
            want = o.archive.add(*o.elite_batch(live))
            assert torch.equal(got.status, want.status)
            torch.testing.assert_close(got.value, want.value)
        for a, b in zip(filtered.organisms, everything.organisms):
            assert torch.equal(a.archive._state, b.archive._state)
            for x, y in zip(a.archive, b.archive):
                assert all(torch.equal(x.genome[k], y.genome[k]) for k in y.genome)
    assert sum(offered) < 4 * 2 * 4  # rounds x layers x live pods: some genomes were skipped


def test_a_non_finite_fitness_is_still_named_by_the_archive(kernel):
    model = make(kernel)
    model.measure_behaviour(batch()[0])
    model.archive_elites()
    model.organisms[1].fitness[2] = float("nan")
    with pytest.raises(ArchiveError, match="objectives"):
        model.archive_elites()


def test_generate_extends_the_sequence_reproducibly(kernel):
    model = make(kernel)
    idx = torch.zeros(2, 3, dtype=torch.long)
    a = model.generate(idx, 7, top_k=4, generator=torch.Generator().manual_seed(3))
    b = model.generate(idx, 7, top_k=4, generator=torch.Generator().manual_seed(3))
    assert a.shape == (2, 10) and torch.equal(a, b) and torch.equal(a[:, :3], idx)


def test_metrics_record_each_forward(kernel):
    metrics = MetricsCollector()
    model = SlimeModel(config(), kernel=kernel, metrics=metrics)
    idx, _ = batch()
    model(idx)
    model(idx)
    summary = metrics.flush()
    assert summary["forwards"] == 2 and summary["tokens"] == 2 * 3 * T


def test_forward_spans_are_traced(kernel):
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from slime.core import make_tracer

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    model = SlimeModel(config(), kernel=kernel, tracer=make_tracer(provider))
    model(batch()[0])
    model.organisms[0].spawn()
    names = [s.name for s in exporter.get_finished_spans()]
    assert "slime.forward" in names and "organism.spawn" in names


def test_bad_input_is_rejected(kernel):
    model = make(kernel)
    with pytest.raises(DataError, match="int64"):
        model(torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="block_size"):
        model(torch.zeros(1, T + 1, dtype=torch.long))


def spawn_recording_location(organism):
    """Spawn, returning the slot and the location chemotaxis sampled for it."""
    sampled, sample = [], organism.chemotaxis.sample

    def recording(*args):
        sampled.append(sample(*args))
        return sampled[-1]

    organism.chemotaxis.sample = recording
    try:
        return organism.spawn(), sampled[0]
    finally:
        organism.chemotaxis.sample = sample


def test_a_full_lifecycle_inside_training_keeps_learning(kernel):
    """measure -> archive -> cull -> chemotaxis-guided spawn, between optimizer steps."""
    model = make(kernel)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx, targets = batch()
    losses = []
    for step in range(12):
        loss = model(idx, targets)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step == 5:
            organism = model.organisms[0]
            model.measure_behaviour(idx)
            organism.fitness.copy_(torch.arange(6.0))
            organism.archive_elites()
            organism.cull([0])
            slot, location = spawn_recording_location(organism)
            expected = organism.archive.interpolate(location, k_neighbors=2)
            assert torch.equal(organism.pod(slot).k_weight, expected["qkv_weight"][1])
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def reference_logits(model, idx):
    """nanoGPT's forward written with torch SDPA from the model's own weights, pod by pod."""
    F = torch.nn.functional
    x = model.wte(idx) + model.wpe(torch.arange(idx.shape[1]))
    for block in model.blocks:
        h = block.ln_1(x)
        pods = [block.attn.pod(s) for s in block.attn.live_slots()]
        q, k, v = (torch.stack([h @ getattr(p, f"{n}_weight").T for p in pods], 1) for n in "qkv")
        heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, d)
        x = x + sum(heads[:, i] @ p.o_weight.T for i, p in enumerate(pods))
        x = x + block.mlp(block.ln_2(x))
    return model.ln_f(x) @ model.wte.weight.T


def test_logits_equal_a_reference_gpt_with_the_same_weights(kernel):
    model = make(kernel)
    model.organisms[1].cull([2])  # also with a gap in the pool
    idx, _ = batch()
    torch.testing.assert_close(model(idx)[0], reference_logits(model, idx), atol=1e-5, rtol=1e-4)


def test_measure_behaviour_ignores_dropout_and_keeps_the_training_mode(kernel):
    probe, _ = batch()
    a, b = make(kernel, dropout=0.5), make(kernel, dropout=0.5)
    first, second = a.measure_behaviour(probe), b.measure_behaviour(probe)
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert a.training


def test_triton_and_torch_kernels_train_alike_in_the_interpreter(kernel):
    """A CPU stand-in for the GPU loss-curve test: three AdamW steps, Triton (interpreted) vs torch."""
    from slime.kernels import TritonKernel

    curves = []
    for k in (TritonKernel(), kernel):
        model = make(k, n_embd=32, n_pods=2, pod_capacity=3)  # head_dim 16, a Triton size
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        idx, targets = batch(n=1)
        losses = []
        for _ in range(3):
            loss = model(idx[:, :4], targets[:, :4])[1]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        curves.append(torch.stack(losses))
    torch.testing.assert_close(curves[0], curves[1], atol=1e-5, rtol=1e-4)


def test_a_flipped_byte_in_the_saved_tensors_is_refused(kernel, tmp_path):
    make(kernel).save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor's values: safetensors itself would load it
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        SlimeModel.from_pretrained(tmp_path, kernel=kernel)


@pytest.mark.parametrize(
    "damage",
    [
        lambda meta: b"\xff\xfe not utf-8",
        lambda meta: b"[]",
        lambda meta: json.dumps({k: v for k, v in meta.items() if k != "layers"}).encode(),
        lambda meta: json.dumps({**meta, "layers": meta["layers"][:1]}).encode(),
        lambda meta: json.dumps({**meta, "layers": [{"live": "0,1"}, *meta["layers"][1:]]}).encode(),
        lambda meta: json.dumps({**meta, "config": []}).encode(),
        lambda meta: json.dumps({**meta, "config": {**meta["config"], "n_layer": 0}}).encode(),
        lambda meta: json.dumps({k: v for k, v in meta.items() if k != "model_sha256"}).encode(),
    ],
    ids=["not-utf8", "a-list", "no-layers", "too-few-layers", "bad-live", "config-list",
         "bad-config", "no-digest"],
)  # fmt: skip
def test_a_malformed_config_json_is_a_checkpoint_error(kernel, tmp_path, damage):
    make(kernel).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_bytes(damage(json.loads(path.read_text())))
    with pytest.raises(CheckpointError):
        SlimeModel.from_pretrained(tmp_path, kernel=kernel)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
@pytest.mark.parametrize("kind", ["a character device", "a FIFO", "a folder"])
def test_a_model_file_that_is_no_regular_file_is_refused_before_any_read(
    kernel, tmp_path, name, kind
):
    # read whole, a link to /dev/zero filled memory and a FIFO blocked forever
    make(kernel).save_pretrained(tmp_path)
    path = tmp_path / name
    path.unlink()
    if kind == "a character device":
        path.symlink_to("/dev/zero")
    elif kind == "a FIFO":
        os.mkfifo(path)
    else:
        path.mkdir()
    with pytest.raises(CheckpointError, match=f"{name} is {kind}, not a regular file"):
        SlimeModel.from_pretrained(tmp_path, kernel=kernel)


@pytest.mark.parametrize("bad", [-1, V])
def test_token_ids_outside_the_vocabulary_are_a_data_error(kernel, bad):
    model = make(kernel)
    idx, targets = batch()
    idx[1, 3] = bad
    with pytest.raises(DataError, match=f"token id {bad} is outside the vocabulary"):
        model(idx, targets)


@pytest.mark.parametrize("group", [None, 2, 1])
def test_ablation_losses_equal_one_ablated_forward_each_in_any_order_and_grouping(kernel, group):
    model = make(kernel, n_layer=3)
    model.organisms[1].cull([2])
    idx, targets = batch(4, n=2)
    targets[:, :3] = -1
    ablations = [(2, 0), (0, 1), (1, 3), (0, 0), (2, 5)]  # unsorted; (2, 5) is an empty slot
    max_logits = 2**26 if group is None else (group + 1) * idx.numel() * V
    model.train()
    losses, latents = model.ablation_losses(idx, targets, ablations, max_logits=max_logits)
    assert model.training
    model.eval()
    with torch.no_grad():
        expected = [model(idx, targets)[1]]
        for layer, slot in ablations:
            if slot not in model.organisms[layer].live_slots():
                expected.append(expected[0])  # masking an empty slot changes nothing
                continue
            with model.ablate({layer: [slot]}):
                expected.append(model(idx, targets)[1])
        torch.testing.assert_close(losses, torch.stack(expected), atol=1e-5, rtol=0)
        torch.testing.assert_close(latents, model._probe_latents(idx), atol=1e-6, rtol=0)


def test_ablation_losses_compute_every_slot_whatever_the_pool(kernel, monkeypatch):
    # A batch that grows layer by layer over only the attending slots would be a new attention
    # shape at every birth and death (an eager backend's first call at a shape is slow).
    model = make(kernel, n_layer=2)
    model.organisms[0].cull([1])
    calls = []
    for organism in model.organisms:
        monkeypatch.setattr(organism, "attend_slots", lambda *a, **k: calls.append(1) / 0)
    losses, _ = model.ablation_losses(*batch(3), [(0, 0), (1, 2)])
    assert not calls and torch.isfinite(losses).all()
    assert model.organisms[0]._attends_in_part(None)  # outside the probe, in part again


def test_ablation_losses_without_ablations_is_the_whole_pools_loss(kernel):
    model = make(kernel).eval()
    idx, targets = batch(5)
    losses, latents = model.ablation_losses(idx, targets, [])
    with torch.no_grad():
        torch.testing.assert_close(losses, model(idx, targets)[1].view(1), atol=1e-6, rtol=0)
    assert latents.shape == (2, *idx.shape, 16)


@pytest.mark.parametrize("ablation", [(2, 0), (-1, 0), (0, 6), (0, -1)])
def test_an_ablation_outside_the_model_is_named(kernel, ablation):
    model = make(kernel)
    with pytest.raises(ConfigError, match=str(ablation).replace("(", r"\(").replace(")", r"\)")):
        model.ablation_losses(*batch(), [ablation])


def test_measuring_from_given_latents_equals_measuring_with_a_forward(kernel):
    a, b = make(kernel, seed=3), make(kernel, seed=3)
    idx = batch(6)[0]
    _, latents = b.ablation_losses(idx, batch(6)[1], [])
    for x, y in zip(a.measure_behaviour(idx), b.measure_behaviour(idx, latents=latents)):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "targets",
    [
        lambda t: t.view(-1, 2),  # the same count of targets, another shape: scored silently
        lambda t: t.float(),
        lambda t: t.int(),
        lambda t: t.clamp(max=0) + V,
        lambda t: t.clamp(max=0) - 2,
        lambda t: t.tolist(),
    ],
    ids=["reshaped", "float", "int32", "vocab", "minus-two", "list"],
)
def test_targets_not_like_idx_or_outside_the_vocabulary_are_a_data_error(kernel, targets):
    model = make(kernel)
    idx, good = batch()
    with pytest.raises(DataError, match="target"):
        model(idx, targets(good))
    with pytest.raises(DataError, match="target"):
        model.ablation_losses(idx, targets(good), [(0, 1)])


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"max_new_tokens": -1}, "max_new_tokens"),  # returned idx unchanged
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"max_new_tokens": None}, "max_new_tokens"),
        ({"temperature": float("inf")}, "temperature"),
        ({"temperature": "1"}, "temperature"),
        ({"top_k": 1.5}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"top_k": "3"}, "top_k"),
        ({"generator": 5}, "generator"),  # multinomial raised a TypeError
    ],
)
def test_generate_arguments_of_the_wrong_type_or_range_are_named(kernel, kw, field):
    model = make(kernel)
    with pytest.raises(ConfigError) as info:
        model.generate(batch()[0], **{"max_new_tokens": 1, **kw})
    assert info.value.path == field


def test_generate_from_a_one_dimensional_prompt_is_a_data_error(kernel):
    with pytest.raises(DataError, match=r"\(B, T\)"):
        make(kernel).generate(batch()[0][0], 1)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.ablate({True: [0]}).__enter__(),
        lambda m: m.ablate([0]).__enter__(),
        lambda m: m.ablation_losses(*batch(), [(0, True)]),
        lambda m: m.ablation_losses(*batch(), [(0, 1.0)]),
        lambda m: m.ablation_losses(*batch(), [(0, 1, 2)]),
    ],
    ids=["layer-True", "not-a-dict", "slot-True", "slot-float", "triple"],
)
def test_an_ablation_that_is_no_pair_of_ints_is_named(kernel, call):
    with pytest.raises(ConfigError):
        call(make(kernel))


@pytest.mark.parametrize(
    ("idx", "message"),
    [
        ([[1, 2, 3]], "tensor"),  # a list raised AttributeError
        (torch.zeros(2, 0, dtype=torch.long), "at least one token"),  # empty T: a KernelError
        (torch.zeros(0, 4, dtype=torch.long), "at least one token"),
    ],
)
def test_an_idx_that_is_no_token_batch_is_a_data_error(kernel, idx, message):
    with pytest.raises(DataError, match=message):
        make(kernel)(idx)


def test_a_zero_dimensional_idx_is_a_data_error(kernel):
    with pytest.raises(DataError, match=r"\(B, T\) int64, got \(\)"):  # IndexError before
        make(kernel)(torch.tensor(3))


@pytest.mark.parametrize(
    "head_mask",
    [torch.tensor(True), torch.ones(2, dtype=torch.bool), [[[True]]]],
    ids=["0-d", "1-d", "a list"],
)
def test_a_head_mask_that_is_no_per_layer_tensor_is_named(kernel, head_mask):
    # 0-d: IndexError from head_mask.shape[0]; a list: AttributeError
    with pytest.raises(ConfigError, match=r"head_mask: .*\(n_layer=2, B, P\) tensor, got"):
        make(kernel)(batch()[0], head_mask=head_mask)


@pytest.mark.parametrize("max_logits", [0, -5, True, 1.5, "big"])
def test_ablation_losses_refuses_a_max_logits_that_is_no_positive_int(kernel, max_logits):
    # each was taken (as groups of one copy, or a TypeError for the string)
    with pytest.raises(ConfigError, match=r"max_logits: expected an int >= 1, got"):
        make(kernel).ablation_losses(*batch(), [(0, 0)], max_logits=max_logits)


def test_ablation_losses_takes_any_iterable_of_pairs_and_names_a_non_iterable(kernel):
    model = make(kernel)
    idx, targets = batch()
    listed, _ = model.ablation_losses(idx, targets, [(0, 0), (1, 2)])
    generated, _ = model.ablation_losses(
        idx, targets, ((layer, 0 if layer == 0 else 2) for layer in (0, 1))
    )
    torch.testing.assert_close(listed, generated)  # a generator raised TypeError (len)
    with pytest.raises(ConfigError, match="ablations: expected a list of .* got None"):
        model.ablation_losses(idx, targets, None)


@pytest.mark.parametrize("device", ["nvidia", "meta", 1.5])
def test_a_model_on_a_device_that_cannot_hold_it_is_named(kernel, device):
    with pytest.raises(ConfigError, match="device: "):  # RuntimeError, TypeError before
        SlimeModel(config(), kernel=kernel, device=device)


def test_a_model_of_no_config_is_named(kernel):
    with pytest.raises(ConfigError, match="config: expected a SlimeConfig, got {'vocab_size': 13}"):
        SlimeModel({"vocab_size": V}, kernel=kernel)  # AttributeError before


def _forge(tmp_path, kernel, meta=None, tensors=None):
    """A saved model whose config.json (``meta(dict)``) or tensors (``tensors(dict)``, the sha256
    recomputed, as a forger would) were rewritten; returns the directory and its files' bytes."""
    import hashlib

    from safetensors.torch import load, save

    make(kernel).save_pretrained(tmp_path)
    config_path, tensor_path = tmp_path / "config.json", tmp_path / "model.safetensors"
    data = json.loads(config_path.read_text())
    if tensors is not None:
        state = load(tensor_path.read_bytes())
        tensors(state)
        blob = save(state)
        tensor_path.write_bytes(blob)
        data["model_sha256"] = hashlib.sha256(blob).hexdigest()
    if meta is not None:
        meta(data)
    config_path.write_text(json.dumps(data))
    return {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}


def _set(key, value):
    return lambda mapping: mapping.__setitem__(key, value)


def _set_config(key, value):
    return lambda meta: meta["config"].__setitem__(key, value)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (lambda m: m["config"].pop("vocab_size"), "missing keys \\['vocab_size'\\]"),  # TypeError
        (_set_config("n_embd", 65536), r"'wte.weight' has shape \(13, 16\), .* give \(13, 65536\)"),
        (_set_config("tube_capacity", 1 << 20), r"'blocks.0.attn.tube_trace' has shape"),
        (_set_config("archive_dims", [1024, 1024, 1024]), "config.json: .*MAX_ARCHIVE_CELLS"),
        (_set("version", True), "vTrue"),  # read as version 1
        (lambda m: m["layers"][0].__setitem__("live", [0.0, 1.0, 2.0, 3.0]), "slot numbers"),
        (lambda m: m["layers"][0].__setitem__("live", [10**30]), r"lists \[1000000"),
    ],
    ids=["missing key", "huge width", "huge tube ring", "huge archive", "version True",
         "float slots", "huge slot"],
)  # fmt: skip
def test_a_forged_config_json_is_a_checkpoint_error_before_anything_is_allocated(
    kernel, tmp_path, meta, message
):
    # the missing key raised TypeError, the huge sizes allocated (or tried to) the model first,
    # the huge archive raised ConfigError naming no file, True was read as version 1
    files = _forge(tmp_path, kernel, meta=meta)
    with pytest.raises(CheckpointError, match=message):
        SlimeModel.from_pretrained(tmp_path, kernel=kernel)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (lambda t: t.__setitem__("blocks.0.attn.alive", t["blocks.0.attn.alive"].long() * 3),
         "'blocks.0.attn.alive' is torch.int64, expected torch.bool"),
        (lambda t: t.__setitem__("wpe.weight", t["wpe.weight"].long()),
         "'wpe.weight' is torch.int64, expected a floating dtype"),
        (lambda t: t.__setitem__("blocks.1.attn.n_measurements", torch.full((6,), 0.5)),
         "'blocks.1.attn.n_measurements' is torch.float32, expected torch.int64"),
        (lambda t: t.__setitem__("lm_head.weight", torch.zeros(V, 16)), "lm_head.weight"),
        (lambda t: t["blocks.0.attn.tube_pos"].fill_(10**6), "tube_pos 1000000 is outside"),
        (lambda t: t["blocks.0.attn.tube_pos"].fill_(-3), "tube_pos -3 is outside"),
        (lambda t: t.pop("wpe.weight"), r"lacks 'wpe.weight' \(8, 16\)"),
    ],
    ids=["int alive", "int weight", "float counts", "untied head", "tube_pos huge",
         "tube_pos negative", "missing"],
)  # fmt: skip
def test_forged_tensors_are_a_checkpoint_error_naming_the_tensor(
    kernel, tmp_path, tensors, message
):
    # each was cast or ignored silently; a tube position outside the ring failed the first
    # training forward
    files = _forge(tmp_path, kernel, tensors=tensors)
    with pytest.raises(CheckpointError, match=message):
        SlimeModel.from_pretrained(tmp_path, kernel=kernel)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_a_model_saved_in_bfloat16_still_loads_into_float32(kernel, tmp_path):
    model = make(kernel).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    loaded = SlimeModel.from_pretrained(tmp_path, kernel=kernel)
    assert loaded.wte.weight.dtype == torch.float32
    assert torch.equal(loaded.wte.weight, model.wte.weight.float())


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000 + b"]" * 100_000, b'{"version": ' + b"9" * 5000 + b"}"],
    ids=["nested too deep", "a 5000-digit int"],
)
def test_a_config_json_python_cannot_parse_is_a_checkpoint_error(kernel, tmp_path, raw):
    make(kernel).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_bytes(raw)  # RecursionError / ValueError before
    with pytest.raises(CheckpointError, match="cannot read .*config.json"):
        SlimeModel.from_pretrained(tmp_path, kernel=kernel)


def test_a_missing_archive_folder_is_a_checkpoint_error(kernel, tmp_path):
    import shutil

    make(kernel).save_pretrained(tmp_path)
    shutil.rmtree(tmp_path / "archive_1")  # ArchiveError before: not what the docstring says
    with pytest.raises(CheckpointError, match="archive_1"):
        SlimeModel.from_pretrained(tmp_path, kernel=kernel)


@pytest.mark.parametrize("directory", [None, 5])
def test_a_model_directory_that_is_no_path_is_named(kernel, directory):
    with pytest.raises(ConfigError, match="directory: expected a path"):  # TypeError before
        SlimeModel.from_pretrained(directory, kernel=kernel)
    with pytest.raises(ConfigError, match="directory: expected a path"):
        make(kernel).save_pretrained(directory)


def _poison(key, index, value):
    return lambda t: t[key].__setitem__(index, value)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (_poison("blocks.0.attn.qkv_weight", (2, 1, 0, 3), math.nan),
         r"'?blocks.0.attn.qkv_weight holds nan in slot 1 \(live\)"),
        (_poison("blocks.1.attn.o_weight", (0, 5, 2), math.inf),
         r"'?blocks.1.attn.o_weight holds inf in slot 5 \(dead\)"),
        (_poison("blocks.0.attn.fitness", 2, math.nan), r"'?blocks.0.attn.fitness holds nan in slot 2"),
        (_poison("blocks.1.attn.descriptors", (0, 1), -math.inf),
         r"'?blocks.1.attn.descriptors holds -inf in slot 0"),
        (_poison("wte.weight", (3, 2), math.nan), r"'wte.weight' holds nan at \(3, 2\)"),
        (_poison("blocks.1.mlp.c_fc.weight", (0, 0), math.inf), "'blocks.1.mlp.c_fc.weight' holds inf"),
    ],
    ids=["nan weight live slot", "inf weight dead slot", "nan fitness", "inf descriptor",
         "nan embedding", "inf mlp"],
)  # fmt: skip
def test_non_finite_tensors_under_a_matching_sha256_are_refused_naming_tensor_and_slot(
    kernel, tmp_path, tensors, message
):
    # each loaded silently: every forward NaN (a dead slot's NaN passes its zero value gate too),
    # a NaN fitness culled at random
    files = _forge(tmp_path, kernel, tensors=tensors)
    with pytest.raises(CheckpointError, match=message):
        SlimeModel.from_pretrained(tmp_path, kernel=kernel)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_a_model_whose_culled_slots_a_plain_optimizer_moved_still_loads(kernel, tmp_path):
    # torch's AdamW keeps a culled pod's moments and moves its zeroed weights: a legitimate save
    # can hold finite nonzero weights in dead slots, which no forward reads
    model = make(kernel)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx, targets = batch()
    for step in range(2):
        opt.zero_grad()
        model(idx, targets)[1].backward()
        opt.step()
        if step == 0:
            model.organisms[0].cull([1])
    assert model.organisms[0].qkv_weight[:, 1].abs().max() > 0
    model.save_pretrained(tmp_path)
    loaded = SlimeModel.from_pretrained(tmp_path, kernel=kernel)
    assert loaded.organisms[0].live_slots() == [0, 2, 3]
    torch.testing.assert_close(loaded(idx)[0], model(idx)[0], rtol=0, atol=0)


def _write_v1(model, directory):
    """``model`` as save_pretrained wrote it before the slot table (format v1): each live pod's
    tensors under its own keys, membership and fitness in config.json."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().contiguous()
        for k, v in model.state_dict().items()
        if k != "lm_head.weight" and (".attn." not in k or k.endswith("attn.out_bias"))
    }
    layers = []
    for i, organism in enumerate(model.organisms):
        live = organism.live_slots()
        for slot in live:
            pod, prefix = organism.pod(slot), f"blocks.{i}.attn.pods.{slot}."
            for name in pod.projection_names():
                tensors[prefix + name] = getattr(pod, name).detach().contiguous()
            tensors[prefix + "descriptors"] = pod.descriptors.contiguous()
            tensors[prefix + "n_measurements"] = pod.n_measurements.clone()
            tensors[prefix + "_correlation"] = pod.correlation.contiguous()
        layers.append({"live": live, "fitness": [organism.pod(s).fitness for s in live]})
        GridArchive(model.config.archive_dims, [(0.0, 1.0)] * organism.descriptor_dims).save(
            directory / f"archive_{i}"
        )
    save_file(tensors, str(directory / "model.safetensors"))
    meta = {"format": "slime-model", "version": 1, "config": model.config.to_dict()}
    (directory / "config.json").write_text(json.dumps({**meta, "layers": layers}))
    return meta


def test_a_v1_model_directory_still_loads(kernel, tmp_path):
    model = make(kernel)
    model.organisms[1].cull([2])
    _write_v1(model, tmp_path)
    loaded = SlimeModel.from_pretrained(tmp_path, kernel=kernel)
    assert loaded.organisms[1].live_slots() == [0, 1, 3]
    idx = batch()[0]
    torch.testing.assert_close(loaded(idx)[0], model(idx)[0], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        (lambda m: m["config"].__setitem__("head_dim", 1024),
         r"'blocks.0.attn.pods.0.q_weight' has shape \(4, 16\), .* give \(1024, 16\)"),
        (lambda m: m["layers"][0].update(live=[0, 1, 2, 3, 40], fitness=[0.0] * 5),
         r"layers\[0\].live lists slots \[40\] outside pod_capacity 6"),
        (lambda m: m["layers"][1].update(live=[0, 1, 2, 3, 5], fitness=[0.0] * 5),
         r"lacks 'blocks.1.attn.pods.5.q_weight' \(4, 16\)"),
    ],
    ids=["huge head_dim", "slot outside capacity", "listed pod missing"],
)  # fmt: skip
def test_a_forged_v1_config_is_refused_before_the_model_is_allocated(
    kernel, tmp_path, monkeypatch, forge, message
):
    # the attention of a v1 file was not size-checked: the model of the forged config was
    # allocated first (head_dim 1024: (pod_capacity, 1024, 1024) correlations per layer)
    _write_v1(make(kernel), tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    forge(meta)
    (tmp_path / "config.json").write_text(json.dumps(meta))

    def allocate(*args, **kwargs):
        raise AssertionError("the model was allocated before its tensors were checked")

    monkeypatch.setattr(SlimeModel, "__init__", allocate)
    with pytest.raises(CheckpointError, match=message):
        SlimeModel.from_pretrained(tmp_path, kernel=kernel)
