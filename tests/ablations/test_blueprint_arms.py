"""Group 7's arms and probes: the hypernetwork GPT, the NAS search, head diversity, degradation."""

from __future__ import annotations

import pytest
import torch
from slime.core import SlimeModel
from slime.proto import ConfigError
from slime.train.ablations.degradation import (
    degradation_area,
    degradation_curves,
    head_importance,
    heads_per_layer,
    removal_plan,
    removed_heads,
)
from slime.train.ablations.hypernet import (
    HyperAttention,
    check_matched,
    hypernet_sizes,
    install_hypernet,
)
from slime.train.ablations.nas import (
    Architecture,
    architecture_params,
    install_architecture,
    random_search,
    sample_architectures,
)
from slime.train.ablations.probes import head_similarity, heldout_eval, mean_abs_cosine
from slime.train.baseline import GPT
from slime.train.config import ModelConfig
from slime.train.profile import live_parameter_count

SIZES = [
    dict(n_layer=2, n_embd=32, n_pods=2, head_dim=16),  # cpu-small
    dict(n_layer=2, n_embd=32, n_pods=2, head_dim=16, bias=True),
    dict(n_layer=3, n_embd=24, n_pods=3, head_dim=8),
    dict(n_layer=4, n_embd=256, n_pods=4, head_dim=64),  # gpu-full
]


def _cfg(**kw) -> ModelConfig:
    base = dict(kind="baseline", vocab_size=11, block_size=8, pod_capacity=4, n_layer=2)
    base.update(n_embd=16, n_pods=2, head_dim=8)
    base.update(kw)
    base["pod_capacity"] = max(base["pod_capacity"], base["n_pods"])
    return ModelConfig(**base)


def _gpt(seed: int = 0, **kw) -> GPT:
    return GPT(_cfg(**kw), generator=torch.Generator().manual_seed(seed))


def _batch(seed: int = 1, vocab: int = 11, shape=(3, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, vocab, shape, generator=gen)
    return idx, torch.randint(0, vocab, shape, generator=gen)


# -- the hypernetwork arm -------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", SIZES)
def test_hypernet_parameters_match_the_baseline_within_the_stated_shortfall(sizes) -> None:
    model = _gpt(**sizes)
    baseline = live_parameter_count(model)
    install_hypernet(model, generator=torch.Generator().manual_seed(1))
    hyper = live_parameter_count(model)
    cfg = model.config
    embed, hidden, shortfall = hypernet_sizes(
        cfg.n_layer, cfg.n_pods, cfg.n_embd, cfg.head_dim, cfg.bias
    )
    assert hidden == cfg.n_layer * cfg.n_pods - 2 and embed >= 1
    assert baseline - hyper == shortfall == check_matched(hyper, baseline, cfg)
    assert 0 <= shortfall < cfg.n_layer * cfg.n_pods + hidden
    assert all(isinstance(b.attn, HyperAttention) for b in model.blocks)
    # no attention weight of the baseline is left: only the hypernetwork holds head weights
    names = [n for n, _ in model.named_parameters()]
    assert not any("c_attn" in n or "attn.c_proj" in n for n in names)


def test_the_profiles_sizes_match_exactly_or_by_two_parameters() -> None:
    assert hypernet_sizes(2, 2, 32, 16, False) == (341, 2, 0)
    assert hypernet_sizes(4, 4, 256, 64, False) == (2184, 14, 2)


def test_check_matched_refuses_any_other_difference() -> None:
    cfg = _cfg(n_embd=32, head_dim=16)
    with pytest.raises(ConfigError, match="expected 0 fewer"):
        check_matched(999, 1000, cfg)


def test_too_few_heads_for_a_matched_hypernetwork_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="got 2 "):
        hypernet_sizes(1, 2, 16, 8, False)


def test_changing_one_embedding_changes_exactly_that_heads_weights() -> None:
    model = install_hypernet(_gpt(n_layer=2, n_pods=3), generator=torch.Generator().manual_seed(2))
    hyper = model.hypernet
    before = [hyper.layer_weights(layer).detach().clone() for layer in range(2)]
    with torch.no_grad():
        hyper.embeddings[1, 2] += 0.5
    after = [hyper.layer_weights(layer).detach() for layer in range(2)]
    assert torch.equal(before[0], after[0])  # the other layer: unchanged
    changed = (before[1] != after[1]).any(dim=1)
    assert changed.tolist() == [False, False, True]
    # and the attention really uses the generated weights: its output moves with them
    idx, _ = _batch()
    x = model.wte(idx)
    with torch.no_grad():
        out = model.blocks[1].attn(x)
        hyper.embeddings[1, 2] -= 0.5
        assert not torch.allclose(model.blocks[1].attn(x), out)


def test_hypernet_heads_get_gradients_through_the_generator() -> None:
    model = install_hypernet(_gpt(n_layer=2, n_pods=2), generator=torch.Generator().manual_seed(3))
    idx, targets = _batch()
    _, loss = model(idx, targets)
    loss.backward()
    hyper = model.hypernet
    assert hyper.embeddings.grad.abs().sum(dim=-1).gt(0).all()
    assert hyper.out.weight.grad.abs().sum() > 0


# -- the NAS arm ----------------------------------------------------------------------------------


def test_random_search_spends_exactly_its_budget_and_keeps_the_lowest_score() -> None:
    cfg = _cfg(n_layer=2, n_embd=32, n_pods=2, head_dim=16)
    base = live_parameter_count(GPT(cfg, generator=torch.Generator().manual_seed(0)))
    candidates = sample_architectures(cfg, base, 5, 0.1, seed=3)
    assert len(set(candidates)) == 5
    calls = []

    def synthetic(arch: Architecture) -> float:  # a made-up loss: fewer, wider heads score lower
        calls.append(arch)
        return sum(arch.heads) - 0.01 * sum(arch.widths)

    result = random_search(candidates, synthetic)
    assert calls == candidates  # each once, none more
    want = min(candidates, key=synthetic)
    assert result.best == want and result.best_score == synthetic(want)
    assert [a for a, _ in result.scores] == candidates


def test_random_search_skips_non_finite_scores_and_refuses_an_empty_budget() -> None:
    a, b = Architecture((1, 2), (8, 8)), Architecture((2, 2), (8, 8))
    assert random_search([a, b], lambda arch: float("nan") if arch == a else 3.0).best == b
    with pytest.raises(ConfigError, match="got none"):
        random_search([], lambda arch: 0.0)
    with pytest.raises(ConfigError, match="got 0"):
        sample_architectures(_cfg(), 1000, 0, 0.05, seed=0)


@pytest.mark.parametrize("tolerance", [0.0, 0.05, 0.2])
def test_sampled_architectures_are_within_the_tolerance_and_build_to_their_count(
    tolerance,
) -> None:
    cfg = _cfg(n_layer=2, n_embd=32, n_pods=2, head_dim=16, pod_capacity=4)
    model = GPT(cfg, generator=torch.Generator().manual_seed(0))
    base = live_parameter_count(model)
    for arch in sample_architectures(cfg, base, 2, tolerance, seed=1):
        counted = architecture_params(arch, base, cfg)
        assert abs(counted - base) <= tolerance * base
        assert all(1 <= h <= cfg.pod_capacity for h in arch.heads)
        install_architecture(model, arch, generator=torch.Generator().manual_seed(2))
        assert live_parameter_count(model) == counted
        assert [b.attn.n_head for b in model.blocks] == list(arch.heads)
        idx, targets = _batch()
        assert torch.isfinite(model(idx, targets)[1])


def test_an_unreachable_candidate_count_is_a_clear_error() -> None:
    cfg = _cfg(n_layer=1, n_embd=16, n_pods=1, head_dim=8, pod_capacity=1)
    with pytest.raises(ConfigError, match="expected 5 candidates"):
        sample_architectures(cfg, 5000, 5, 0.0, seed=0)


# -- head diversity -------------------------------------------------------------------------------


def test_identical_heads_have_similarity_one_and_orthogonal_heads_zero() -> None:
    row = torch.randn(1, 12, generator=torch.Generator().manual_seed(0))
    assert mean_abs_cosine(row.repeat(4, 1)) == pytest.approx(1.0)
    assert mean_abs_cosine(torch.cat([row, -2 * row])) == pytest.approx(1.0)  # |cos|
    assert mean_abs_cosine(torch.eye(5, 12)) == pytest.approx(0.0)
    two = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert mean_abs_cosine(two) == pytest.approx(2**-0.5)
    assert mean_abs_cosine(torch.cat([row, torch.zeros(1, 12)])) is None  # one direction left
    with pytest.raises(ConfigError, match=r"got shape \(12,\)"):
        mean_abs_cosine(row[0])


def test_head_similarity_covers_the_hypernet_and_nas_models() -> None:
    idx, _ = _batch()
    hyper = install_hypernet(_gpt(n_pods=3), generator=torch.Generator().manual_seed(1))
    nas = install_architecture(_gpt(), Architecture((3, 1), (4, 8)))
    assert 0.0 <= head_similarity(hyper, idx) <= 1.0
    assert 0.0 <= head_similarity(nas, idx) <= 1.0  # the 1-head layer is left out


def test_hypernet_head_contributions_sum_to_its_attention_output() -> None:
    from slime.train.ablations.probes import head_contributions

    model = install_hypernet(_gpt(n_pods=3), generator=torch.Generator().manual_seed(1))
    idx, _ = _batch()
    heads = head_contributions(model, idx)[0]  # (H, B*T*D)
    x = model.wte(idx) + model.wpe(torch.arange(idx.shape[1]))
    with torch.no_grad():
        want = model.blocks[0].attn(model.blocks[0].ln_1(x)).reshape(-1)
    torch.testing.assert_close(heads.sum(0), want, rtol=1e-5, atol=1e-6)


# -- degradation ----------------------------------------------------------------------------------


def _models(tiny_slime: SlimeModel):
    yield "baseline", _gpt(n_pods=3)
    yield "hypernet", install_hypernet(_gpt(n_pods=3), generator=torch.Generator().manual_seed(1))
    yield "nas", install_architecture(_gpt(), Architecture((3, 2), (4, 8)))
    yield "slime", tiny_slime


def _zeroed_reference(model, plan) -> torch.Tensor:
    """Logits with the planned heads' output columns zeroed in the weights themselves."""
    import copy

    ref = copy.deepcopy(model)
    with torch.no_grad():
        for layer, heads in plan.items():
            attn = ref.blocks[layer].attn
            if isinstance(attn, HyperAttention):
                attn.head_mask[heads] = 0.0
                continue
            for h in heads:
                attn.c_proj.weight[:, h * attn.head_dim : (h + 1) * attn.head_dim] = 0.0
    return ref(_batch()[0])[0]


@pytest.mark.parametrize("k", [0, 1, 2])
def test_removing_k_heads_zeroes_exactly_k_heads_per_layer(k, tiny_slime) -> None:
    for name, model in _models(tiny_slime):
        model.eval()
        heads = heads_per_layer(model)
        importance = [{h: float(h) for h in layer} for layer in heads]
        plan = removal_plan(importance, k, most_first=True)
        assert [len(v) for v in plan.values()] == [min(k, len(layer)) for layer in heads]
        assert all(set(plan[i]) <= set(layer) for i, layer in enumerate(heads))
        idx = _batch()[0] if name != "slime" else _batch(vocab=8, shape=(3, 8))[0]
        intact = model(idx)[0]
        with removed_heads(model, plan), torch.no_grad():
            cut = model(idx)[0]
        assert torch.equal(model(idx)[0], intact), name  # restored afterwards
        if k == 0:
            assert torch.equal(cut, intact), name
            continue
        assert not torch.allclose(cut, intact), name
        if name != "slime":
            torch.testing.assert_close(cut, _zeroed_reference(model, plan))
        else:  # slime: the same as the organism's own ablate of those slots
            organism = model.organisms[0]
            with organism.ablate(plan[0]), torch.no_grad():
                torch.testing.assert_close(cut, model(idx)[0])


def test_removal_order_follows_importance(tiny_slime) -> None:
    importance = [{0: 0.5, 1: 2.0, 2: -1.0}, {0: 1.0, 3: 0.0}]
    assert removal_plan(importance, 2, most_first=True) == {0: [1, 0], 1: [0, 3]}
    assert removal_plan(importance, 1, most_first=False) == {0: [2], 1: [3]}
    with pytest.raises(ConfigError, match="got -1"):
        removal_plan(importance, -1, most_first=True)


def test_unknown_heads_are_refused_with_their_ids() -> None:
    with pytest.raises(ConfigError, match=r"got \[5\] to remove"):
        with removed_heads(_gpt(), {0: [5]}):
            pass


def test_curves_start_at_the_intact_loss_and_end_with_every_head_removed(tiny_slime) -> None:
    for name, model in _models(tiny_slime):
        vocab = 8 if name == "slime" else 11
        heldout = [_batch(seed=s, vocab=vocab, shape=(2, 8)) for s in (4, 5)]
        probe = _batch(seed=6, vocab=vocab, shape=(2, 8))
        importance = head_importance(model, probe)
        curves = degradation_curves(model, heldout, importance)
        top = max(len(h) for h in heads_per_layer(model))
        assert curves["k"] == list(range(top + 1))
        intact = heldout_eval(model, heldout)["loss"]
        assert curves["most_first"][0] == curves["least_first"][0] == intact
        assert curves["most_first"][-1] == pytest.approx(curves["least_first"][-1])
        if name != "slime":  # importance = measured single-ablation loss increase
            for layer, scores in enumerate(importance):
                for head, rise in scores.items():
                    with removed_heads(model, {layer: [head]}):
                        alone = heldout_eval(model, [probe])["loss"]
                    assert alone - heldout_eval(model, [probe])["loss"] == pytest.approx(rise)


def test_slime_importance_is_its_fitness(tiny_slime) -> None:
    organism = tiny_slime.organisms[0]
    with torch.no_grad():
        organism.fitness[organism.live_slots()[0]] = 3.0
    importance = head_importance(tiny_slime, _batch(vocab=8))
    assert importance[0][organism.live_slots()[0]] == 3.0
    assert set(importance[0]) == set(organism.live_slots())


def test_degradation_area() -> None:
    assert degradation_area([2.0, 2.0, 2.0]) == 0.0
    assert degradation_area([1.0, 3.0]) == pytest.approx(1.0)  # triangle of height 2
    assert degradation_area([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match=r"got \[1.0\]"):
        degradation_area([1.0])
