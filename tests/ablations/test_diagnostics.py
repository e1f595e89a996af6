"""QD diagnostics: head similarity, held-out evaluation, the birth ledger, recorded correlations."""

from __future__ import annotations

import time

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


@pytest.mark.parametrize("dead_first", [False, True])
def test_slime_head_contributions_sum_to_the_organism_output(
    tiny_slime, tokens, dead_first
) -> None:
    organism = tiny_slime.organisms[0]
    if dead_first:  # live slots 1 and 2 around a dead slot 0 and a dead slot 3
        organism.spawn()
        with torch.no_grad():
            organism.o_weight[:, 2].normal_(0.0, 0.02)  # give the quiet newborn a voice
        organism.cull([0])
    (heads,) = head_contributions(tiny_slime, tokens)
    assert heads.shape[0] == len(organism.live_slots()) == 2
    block = tiny_slime.blocks[0]
    x = tiny_slime.wte(tokens) + tiny_slime.wpe(torch.arange(tokens.shape[1]))
    with torch.no_grad():
        out = block.attn(block.attention_input(x), causal=True)
    assert torch.allclose(heads.sum(0), out.flatten(), atol=1e-5)
    assert all(h.abs().sum() > 0 for h in heads)


def test_baseline_head_contributions_sum_to_the_attention_output(tiny_gpt, tokens) -> None:
    (heads,) = head_contributions(tiny_gpt, tokens)
    block = tiny_gpt.blocks[0]
    x = tiny_gpt.wte(tokens) + tiny_gpt.wpe(torch.arange(tokens.shape[1]))
    with torch.no_grad():
        out = block.attn(block.ln_1(x))
    assert torch.allclose(heads.sum(0), out.flatten(), atol=1e-5)


def test_identical_pods_have_head_similarity_one(tiny_slime, tokens) -> None:
    organism = tiny_slime.organisms[0]
    first, second = (organism.pod(s) for s in organism.live_slots())
    second.from_dict(first.to_dict())
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
    assert organism.live_slots() == [0, 1, 2, 3]
    tracker.observe_gradients(torch.tensor([[0.4, 0.1, 0.3, 0.2]]))  # (L, P) per-slot norms
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
    for slot in organism.live_slots():
        organism.pod(slot).fitness = 1.0
    organism.archive_elites()
    organism.spawn()  # stocked archive: bootstrapped
    ledger.expose()
    organism.cull([fresh])
    summary = ledger.summary()
    assert (summary["bootstrapped"], summary["survival_rate"]) == (1, 0.5)
    assert summary["bootstrapped_survival_rate"] == 1.0


def test_lifecycle_snapshot_takes_descriptor_variance_over_measured_live_pods(
    tiny_slime, tokens
) -> None:
    from slime.memory import descriptor_variance
    from slime.train.ablations import RecordingLifecycle
    from slime.train.config import LifecycleConfig

    organism = tiny_slime.organisms[0]
    organism.spawn()  # three live pods
    lifecycle = RecordingLifecycle(
        tiny_slime,
        LifecycleConfig(),
        RecordingFitness(
            FitnessConfig(),
            heldout=(tokens, tokens.roll(-1, dims=1)),
            stopwatch=Stopwatch(torch.device("cpu")),
        ),
        ledger=BirthLedger(tiny_slime, uses_archive=True),
        stopwatch=Stopwatch(torch.device("cpu")),
    )
    assert lifecycle.snapshot()["descriptor_variance"] is None  # nothing measured yet
    tiny_slime.measure_behaviour(tokens)
    organism.cull([0])
    organism.spawn()  # refills slot 0 unmeasured: left out, as is the dead pod's old record
    measured = organism.descriptors[[1, 2]]
    snapshot = lifecycle.snapshot()
    assert snapshot["pool_size"] == 3
    expected = descriptor_variance(measured).mean().item()
    assert snapshot["descriptor_variance"] == pytest.approx(expected)


def test_live_parameters_count_live_pods_only_and_match_the_baseline(tiny_slime, tiny_gpt) -> None:
    from slime.train.profile import live_parameter_count as live_parameters

    organism = tiny_slime.organisms[0]
    allocated = sum(p.numel() for p in tiny_slime.parameters())
    per_pod = 3 * 8 * 16 + 16 * 8  # q, k, v (d, D) and the output columns (D, d)
    assert live_parameters(tiny_slime) == allocated - 2 * per_pod  # two of four slots empty
    assert live_parameters(tiny_slime) == live_parameters(tiny_gpt)  # two heads each
    assert live_parameters(tiny_gpt) == sum(p.numel() for p in tiny_gpt.parameters())
    organism.spawn()
    assert live_parameters(tiny_slime) == allocated - per_pod
    organism.cull(organism.live_slots())
    assert live_parameters(tiny_slime) == allocated - 4 * per_pod


def test_stopwatch_counts_time_even_when_the_diagnostic_fails_and_has_no_cpu_peak() -> None:
    watch = Stopwatch(torch.device("cpu"))
    with pytest.raises(RuntimeError), watch.timed():
        time.sleep(0.01)
        raise RuntimeError("diagnostic failed")
    assert watch.seconds >= 0.01
    assert watch.peak_bytes() is None  # a CUDA allocator peak only (the GPU test covers it)
