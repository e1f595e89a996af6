"""QD diagnostics: head similarity, held-out evaluation, the birth ledger, recorded correlations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from slime.train.ablations import BirthLedger, RecordingFitness, head_similarity, heldout_eval
from slime.train.ablations.diagnostics import Stopwatch
from slime.train.ablations.probes import head_contributions
from slime.train.baseline import GPT
from slime.train.config import FitnessConfig, ModelConfig


@pytest.fixture
def tiny_gpt() -> GPT:
    cfg = ModelConfig(
        kind="baseline", vocab_size=8, block_size=8, n_layer=1, n_embd=16, n_pods=2, head_dim=8
    )
    return GPT(cfg, generator=torch.Generator().manual_seed(0))


def test_slime_head_contributions_sum_to_the_organism_output(tiny_slime, tokens) -> None:
    (heads,) = head_contributions(tiny_slime, tokens)
    block = tiny_slime.blocks[0]
    x = tiny_slime.wte(tokens) + tiny_slime.wpe(torch.arange(tokens.shape[1]))
    with torch.no_grad():
        out, _ = block.attn(block.attention_input(x), causal=True)
    assert torch.allclose(heads.sum(0), out.flatten(), atol=1e-5)


def test_baseline_head_contributions_sum_to_the_attention_output(tiny_gpt, tokens) -> None:
    (heads,) = head_contributions(tiny_gpt, tokens)
    block = tiny_gpt.blocks[0]
    x = tiny_gpt.wte(tokens) + tiny_gpt.wpe(torch.arange(tokens.shape[1]))
    with torch.no_grad():
        out = block.attn(block.ln_1(x))
    assert torch.allclose(heads.sum(0), out.flatten(), atol=1e-5)


def test_identical_pods_have_head_similarity_one(tiny_slime, tokens) -> None:
    organism = tiny_slime.organisms[0]
    first, second = (organism.pods[str(s)] for s in organism.live_slots())
    second.load_state_dict(first.state_dict())
    assert head_similarity(tiny_slime, tokens) == pytest.approx(1.0, abs=1e-5)


def test_identical_baseline_heads_have_head_similarity_one(tiny_gpt, tokens) -> None:
    attn = tiny_gpt.blocks[0].attn
    with torch.no_grad():
        w = attn.c_attn.weight.view(3, 2, 8, 16)  # (q|k|v, head, d, D)
        w[:, 1] = w[:, 0]
        attn.c_proj.weight[:, 8:] = attn.c_proj.weight[:, :8]
    assert head_similarity(tiny_gpt, tokens) == pytest.approx(1.0, abs=1e-5)


def test_quiet_newborns_are_left_out_of_head_similarity(tiny_slime, tokens) -> None:
    before = head_similarity(tiny_slime, tokens)
    tiny_slime.organisms[0].spawn()  # quiet birth: zero output projection, no direction
    assert head_similarity(tiny_slime, tokens) == pytest.approx(before)


def test_heldout_eval_matches_cross_entropy_over_scored_targets(tiny_slime, tokens) -> None:
    targets = tokens.roll(-1, dims=1)
    targets[:, :3] = -1
    got = heldout_eval(tiny_slime, [(tokens, targets)])
    with torch.no_grad():
        logits, _ = tiny_slime(tokens)
    scored = targets >= 0
    expected = F.cross_entropy(logits[scored], targets[scored])
    accuracy = (logits[scored].argmax(-1) == targets[scored]).float().mean()
    assert got["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert got["accuracy"] == pytest.approx(accuracy.item())


def test_birth_ledger_counts_newborns_that_survive_a_cull(tiny_slime) -> None:
    organism = tiny_slime.organisms[0]
    ledger = BirthLedger(tiny_slime, uses_archive=True)
    ledger.step = 5
    first, second = organism.spawn(), organism.spawn()
    ledger.expose()
    organism.cull([first])
    late = organism.spawn()  # born after the cull: never exposed
    summary = ledger.summary()
    assert summary == {
        "births": 3,
        "bootstrapped": 0,  # the archive was empty at every birth
        "exposed": 2,
        "survived": 1,
        "survival_rate": 0.5,
        "bootstrapped_survival_rate": None,  # no bootstrapped newborn faced a cull
    }
    assert late in organism.live_slots() and second in organism.live_slots()


def test_recording_fitness_records_one_correlation_event_per_assessment(tiny_slime, tokens) -> None:
    targets = tokens.roll(-1, dims=1)
    organism = tiny_slime.organisms[0]
    organism.spawn()
    organism.spawn()  # four pods: Spearman needs three or more
    tracker = RecordingFitness(
        FitnessConfig(), heldout=(tokens, targets), stopwatch=Stopwatch(torch.device("cpu"))
    )
    keys = [(0, s) for s in organism.live_slots()]
    tracker.observe_gradients(keys, torch.tensor([0.4, 0.1, 0.3, 0.2]))
    scores = tracker.assess(tiny_slime, tokens, targets)
    (event,) = tracker.events
    assert event["pods"] == len(scores) == 4
    assert event["distinct_costs"] == 1  # equal-width pods: parameter bytes never differ
    assert tracker.stopwatch.seconds > 0


def test_birth_ledger_separates_bootstrapped_newborns(tiny_slime, tokens) -> None:
    organism = tiny_slime.organisms[0]
    ledger = BirthLedger(tiny_slime, uses_archive=True)
    fresh = organism.spawn()  # empty archive: a fresh pod
    tiny_slime.measure_behaviour(tokens)
    organism.archive_elites({s: 1.0 for s in organism.live_slots()})
    organism.spawn()  # stocked archive: bootstrapped
    ledger.expose()
    organism.cull([fresh])
    summary = ledger.summary()
    assert (summary["bootstrapped"], summary["survival_rate"]) == (1, 0.5)
    assert summary["bootstrapped_survival_rate"] == 1.0
