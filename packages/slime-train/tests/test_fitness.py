"""Fitness: masked-loss task term, cost, gradient EMA, normalised and weighted; it tracks the loss."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy.stats import spearmanr
from slime.core import SlimeConfig, SlimeModel
from slime.train.config import FitnessConfig
from slime.train.fitness import FitnessTracker, masked_loss_contributions, normalise
from slime.train.tasks import RecallTask


def _model(n_layer: int = 1, n_pods: int = 3) -> SlimeModel:
    c = SlimeConfig(
        vocab_size=8,
        block_size=16,
        n_layer=n_layer,
        n_embd=16,
        n_pods=n_pods,
        pod_capacity=4,
        head_dim=8,
        kernel_backend="torch",
    )
    return SlimeModel(c, generator=torch.Generator().manual_seed(0))


def _batch(seed: int, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return RecallTask(8, 15).batch("train", n, torch.Generator().manual_seed(seed))


def test_normalise_maps_to_unit_interval_and_constants_to_zero() -> None:
    assert normalise([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]
    assert normalise([5.0, 5.0]) == [0.0, 0.0]


def test_task_term_is_loss_increase_when_the_pod_is_masked() -> None:
    model = _model(n_layer=2)
    idx, targets = _batch(0)
    contributions = masked_loss_contributions(model, idx, targets)
    assert sorted(contributions) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    model.eval()
    with torch.no_grad():
        base = model(idx, targets)[1]
        with model.ablate({1: [2]}):
            masked = model(idx, targets)[1]
    assert contributions[(1, 2)] == pytest.approx(float(masked - base), abs=1e-6)


def test_batched_masking_equals_ablating_each_pod_in_turn_in_any_chunking() -> None:
    model = _model(n_layer=2)
    model.organisms[1].cull([1])  # a gap in the pool
    idx, targets = _batch(1)
    targets[:, :5] = -1  # unscored positions
    model.eval()
    with torch.no_grad():
        base = model(idx, targets)[1]
        expected = {}
        for layer, organism in enumerate(model.organisms):
            for slot in organism.live_slots():
                with model.ablate({layer: [slot]}):
                    expected[(layer, slot)] = float(model(idx, targets)[1] - base)
    model.train()
    whole = masked_loss_contributions(model, idx, targets)
    one_copy_per_chunk = masked_loss_contributions(model, idx, targets, max_logits=1)
    assert list(whole) == list(expected) == list(one_copy_per_chunk)
    for key, value in expected.items():
        assert whole[key] == pytest.approx(value, abs=1e-5)
        assert one_copy_per_chunk[key] == pytest.approx(value, abs=1e-5)


def test_masking_restores_training_mode() -> None:
    model = _model()
    model.train()
    masked_loss_contributions(model, *_batch(0))
    assert model.training


def _table(values: list[float], capacity: int = 4) -> torch.Tensor:
    """A (1, capacity) per-slot table with ``values`` in the first slots."""
    return torch.tensor([values + [0.0] * (capacity - len(values))])


def test_taylor_task_needs_no_forward_and_uses_the_moving_average() -> None:
    model = _model()
    tracker = FitnessTracker(FitnessConfig(task="taylor", w_task=1.0, w_eff=0.0, w_grad=0.0))
    tracker.attach(model)
    keys = [(0, 0), (0, 1), (0, 2)]
    tracker.observe_gradients(_table([1.0, 1.0, 1.0]), _table([0.3, -0.1, 0.2]))
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    scores = tracker.assess(model, *_batch(1))
    assert calls == []
    assert list(scores) == keys
    assert [scores[k].task for k in keys] == pytest.approx([0.3, -0.1, 0.2])
    assert [scores[k].fitness for k in keys] == pytest.approx([1.0, 0.0, 0.75])


def test_gradient_ema_follows_the_decay() -> None:
    tracker = FitnessTracker(FitnessConfig(grad_ema_decay=0.5))
    tracker.observe_gradients(torch.tensor([[2.0, 4.0]]))
    tracker.observe_gradients(torch.tensor([[4.0, 0.0]]))
    assert tracker.grad_ema.tolist() == [[3.0, 2.0]]


def test_averages_live_on_the_device_as_one_layer_by_slot_table() -> None:
    model = _model(n_layer=2)
    tracker = FitnessTracker(FitnessConfig())
    tracker.attach(model)
    assert tracker.ema.shape == (2, 2, 4) and tracker.fresh.shape == (2, 4)
    assert tracker.fresh.all()


def test_a_birth_or_death_restarts_that_slots_average_and_keeps_the_others() -> None:
    model = _model()
    tracker = FitnessTracker(FitnessConfig(grad_ema_decay=0.5))
    tracker.attach(model)
    tracker.observe_gradients(_table([2.0, 4.0, 6.0]))
    organism = model.organisms[0]
    organism.cull([0])
    assert organism.spawn() == 0  # a newborn where a pod just died
    tracker.observe_gradients(_table([8.0, 8.0, 8.0, 8.0]))
    # slot 0 restarts at its first value after the change; the others blend 0.5 old + 0.5 new
    assert tracker.grad_ema[0].tolist() == [8.0, 6.0, 7.0, 4.0]


def test_a_non_finite_step_leaves_the_averages_unchanged() -> None:
    tracker = FitnessTracker(FitnessConfig(grad_ema_decay=0.5))
    tracker.observe_gradients(torch.tensor([[2.0, 4.0]]), finite=torch.tensor(True))
    before = tracker.ema.clone()
    tracker.observe_gradients(torch.tensor([[math.nan, 1.0]]), finite=torch.tensor(False))
    assert torch.equal(tracker.ema, before)
    tracker.observe_gradients(torch.tensor([[4.0, 0.0]]), finite=torch.tensor(True))
    assert tracker.grad_ema.tolist() == [[3.0, 2.0]]


def test_a_fresh_slot_stays_fresh_through_a_non_finite_step() -> None:
    tracker = FitnessTracker(FitnessConfig(grad_ema_decay=0.5))
    tracker.observe_gradients(torch.tensor([[math.nan, 1.0]]), finite=torch.tensor(False))
    tracker.observe_gradients(torch.tensor([[4.0, 2.0]]), finite=torch.tensor(True))
    assert tracker.grad_ema.tolist() == [[4.0, 2.0]]


def test_observing_gradients_never_reads_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = FitnessTracker(FitnessConfig())
    tracker.attach(_model())
    reads = []
    for name in ("tolist", "item", "__bool__", "__float__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name, lambda self, *a, _o=original, **k: reads.append(1) or _o(self, *a)
        )
    tracker.observe_gradients(_table([1.0, 2.0]), _table([0.1, 0.2]), torch.tensor(True))
    assert reads == []


def test_fitness_is_the_weighted_sum_of_normalised_terms_and_lands_in_the_buffer() -> None:
    model = _model()
    tracker = FitnessTracker(FitnessConfig(w_task=0.7, w_eff=0.2, w_grad=0.1))
    tracker.attach(model)
    keys = [(0, 0), (0, 1), (0, 2)]
    tracker.observe_gradients(_table([1.0, 3.0, 2.0]))
    costs = {(0, 0): 10.0, (0, 1): 30.0, (0, 2): 20.0}
    scores = tracker.assess(model, *_batch(1), costs=costs)
    task = normalise([scores[k].task for k in keys])
    eff = [1.0, 0.0, 0.5]
    grad = [0.0, 1.0, 0.5]
    for i, k in enumerate(keys):
        expected = 0.7 * task[i] + 0.2 * eff[i] + 0.1 * grad[i]
        assert scores[k].fitness == pytest.approx(expected)
        assert scores[k].gradient == pytest.approx([1.0, 3.0, 2.0][i])
        assert model.organisms[0].fitness[k[1]].item() == pytest.approx(expected)
    assert model.organisms[0].fitness[3].item() == 0.0  # the empty slot is not scored


def test_default_cost_is_the_pods_parameter_bytes() -> None:
    model = _model()
    scores = FitnessTracker(FitnessConfig()).assess(model, *_batch(1))
    assert {s.cost for s in scores.values()} == {float(model.organisms[0].pod_bytes())}


def test_equal_costs_leave_the_ranking_to_task_and_gradient() -> None:
    model = _model()
    tracker = FitnessTracker(FitnessConfig(w_task=1.0, w_eff=1.0, w_grad=0.0))
    scores = tracker.assess(model, *_batch(1))  # default cost: parameter bytes, equal for all
    by_fitness = sorted(scores, key=lambda k: scores[k].fitness)
    by_task = sorted(scores, key=lambda k: scores[k].task)
    assert by_fitness == by_task


def test_state_round_trips_exactly() -> None:
    model = _model()
    tracker = FitnessTracker(FitnessConfig(grad_ema_decay=0.7))
    tracker.attach(model)
    tracker.observe_gradients(_table([0.123, 4.5, 6.7]), _table([0.3, -0.1, 0.2]))
    model.organisms[0].spawn()
    other_model = _model()
    other = FitnessTracker(FitnessConfig(grad_ema_decay=0.7))
    other.attach(other_model)
    other.load_state_dict(copy.deepcopy(tracker.state_dict()))
    assert torch.equal(other.ema, tracker.ema) and torch.equal(other.fresh, tracker.fresh)
    for t in (tracker, other):
        t.observe_gradients(_table([1.0, 2.0, 3.0, 4.0]), _table([0.5, 0.5, 0.5, 0.5]))
    assert torch.equal(other.ema, tracker.ema)


def test_a_state_written_before_the_slot_table_loads_by_pod_keys() -> None:
    model = _model(n_layer=2)
    tracker = FitnessTracker(FitnessConfig())
    tracker.attach(model)
    old = {"keys": [[0, 1], [1, 3]], "ema": torch.tensor([[2.0, 5.0], [0.1, -0.2]])}
    tracker.load_state_dict(old)
    assert tracker.averages([(0, 1), (1, 3), (0, 0)]) == {
        (0, 1): (2.0, pytest.approx(0.1)),
        (1, 3): (5.0, pytest.approx(-0.2)),
        (0, 0): (0.0, 0.0),
    }
    assert tracker.fresh.tolist() == [[True, False, True, True], [True, True, True, False]]


def _trained(tracker: FitnessTracker) -> tuple[SlimeModel, list]:
    """A 2-layer, 4-pod model after 60 steps of recall, ``tracker`` fed every step."""
    from slime.train.stability import GradientMonitor

    torch.manual_seed(0)
    model = _model(n_layer=2, n_pods=4)
    tracker.attach(model)
    monitor = GradientMonitor(model, max_norm=1.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    task, gen = RecallTask(8, 15), torch.Generator().manual_seed(5)
    for _ in range(60):
        idx, targets = task.batch("train", 16, gen)
        model(idx, targets)[1].backward()
        stats = monitor.clip_and_measure()
        tracker.observe_gradients(stats.slot_norms, stats.slot_taylor)
        opt.step()
        opt.zero_grad()
    keys = [(layer, s) for layer, o in enumerate(model.organisms) for s in o.live_slots()]
    return model, keys


@pytest.mark.parametrize("task", ["masked", "taylor"])
def test_fitness_ranks_pods_like_their_held_out_masked_loss_contribution(task: str) -> None:
    """Blueprint invariant 8: fitness must correlate with loss reduction.

    A 2-layer model learns associative recall for a while; fitness (task term from masking on a
    probe batch, or from the training gradients' Taylor estimate) is compared with each pod's
    masked-loss contribution on a different, held-out batch.
    """
    tracker = FitnessTracker(FitnessConfig(task=task))
    model, keys = _trained(tracker)
    scores = tracker.assess(model, *_batch(100, n=32))
    held_out = masked_loss_contributions(model, *_batch(200, n=32))
    rho = spearmanr([scores[k].fitness for k in keys], [held_out[k] for k in keys]).statistic
    print(f"Spearman(fitness[{task}], held-out masked-loss contribution) = {rho:.3f}, 8 pods")
    assert max(held_out.values()) - min(held_out.values()) > 1e-3, "pods must differ"
    assert rho > 0.5


def test_live_keys_read_every_layer_at_once_in_layer_then_slot_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from slime.core.organism import Organism
    from slime.train.fitness import _live_keys

    model = _model(n_layer=3, n_pods=3)
    model.organisms[0].cull([1])
    model.organisms[2].cull([0, 2])
    expected = [(0, 0), (0, 2), (1, 0), (1, 1), (1, 2), (2, 1)]

    def per_layer_read(self):  # the read this replaces: one per layer
        raise AssertionError("live_slots read per layer")

    monkeypatch.setattr(Organism, "live_slots", per_layer_read)
    assert _live_keys(model) == expected
    monkeypatch.undo()
    assert _live_keys(model) == [
        (layer, slot) for layer, o in enumerate(model.organisms) for slot in o.live_slots()
    ]
