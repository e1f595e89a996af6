"""Fitness: masked-loss task term, cost, gradient EMA, normalised and weighted; it tracks the loss."""

from __future__ import annotations

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


def test_masking_restores_training_mode() -> None:
    model = _model()
    model.train()
    masked_loss_contributions(model, *_batch(0))
    assert model.training


def test_taylor_task_needs_no_forward_and_uses_the_moving_average() -> None:
    model = _model()
    tracker = FitnessTracker(FitnessConfig(task="taylor", w_task=1.0, w_eff=0.0, w_grad=0.0))
    keys = [(0, 0), (0, 1), (0, 2)]
    tracker.observe_gradients(keys, torch.ones(3), torch.tensor([0.3, -0.1, 0.2]))
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    scores = tracker.assess(model, *_batch(1))
    assert calls == []
    assert [scores[k].task for k in keys] == pytest.approx([0.3, -0.1, 0.2])
    assert [scores[k].fitness for k in keys] == pytest.approx([1.0, 0.0, 0.75])


def test_gradient_ema_follows_the_decay() -> None:
    tracker = FitnessTracker(FitnessConfig(grad_ema_decay=0.5))
    keys = [(0, 0), (0, 1)]
    tracker.observe_gradients(keys, torch.tensor([2.0, 4.0]))
    tracker.observe_gradients(keys, torch.tensor([4.0, 0.0]))
    assert tracker.grad_ema.tolist() == [3.0, 2.0]


def test_gradient_ema_keeps_survivors_when_the_pool_changes() -> None:
    tracker = FitnessTracker(FitnessConfig(grad_ema_decay=0.5))
    tracker.observe_gradients([(0, 0), (0, 1)], torch.tensor([2.0, 4.0]))
    tracker.observe_gradients([(0, 1), (0, 3)], torch.tensor([8.0, 1.0]))  # 0 died, 3 was born
    assert tracker.keys == [(0, 1), (0, 3)]
    assert tracker.grad_ema.tolist() == [4.0, 1.0]


def test_fitness_is_the_weighted_sum_of_normalised_terms() -> None:
    model = _model()
    tracker = FitnessTracker(FitnessConfig(w_task=0.7, w_eff=0.2, w_grad=0.1))
    keys = [(0, 0), (0, 1), (0, 2)]
    tracker.observe_gradients(keys, torch.tensor([1.0, 3.0, 2.0]))
    costs = {(0, 0): 10.0, (0, 1): 30.0, (0, 2): 20.0}
    scores = tracker.assess(model, *_batch(1), costs=costs)
    task = normalise([scores[k].task for k in keys])
    eff = [1.0, 0.0, 0.5]
    grad = [0.0, 1.0, 0.5]
    for i, k in enumerate(keys):
        expected = 0.7 * task[i] + 0.2 * eff[i] + 0.1 * grad[i]
        assert scores[k].fitness == pytest.approx(expected)
        assert model.organisms[0].pods[str(k[1])].fitness == pytest.approx(expected)


def test_equal_costs_leave_the_ranking_to_task_and_gradient() -> None:
    model = _model()
    tracker = FitnessTracker(FitnessConfig(w_task=1.0, w_eff=1.0, w_grad=0.0))
    scores = tracker.assess(model, *_batch(1))  # default cost: parameter bytes, equal for all
    by_fitness = sorted(scores, key=lambda k: scores[k].fitness)
    by_task = sorted(scores, key=lambda k: scores[k].task)
    assert by_fitness == by_task


def _trained(tracker: FitnessTracker) -> tuple[SlimeModel, list]:
    """A 2-layer, 4-pod model after 60 steps of recall, ``tracker`` fed every step."""
    from slime.train.stability import GradientMonitor

    torch.manual_seed(0)
    model = _model(n_layer=2, n_pods=4)
    monitor = GradientMonitor(model, max_norm=1.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    task, gen = RecallTask(8, 15), torch.Generator().manual_seed(5)
    for _ in range(60):
        idx, targets = task.batch("train", 16, gen)
        model(idx, targets)[1].backward()
        stats = monitor.clip_and_measure(version=0)
        tracker.observe_gradients(stats.keys, stats.pod_norms, stats.pod_taylor)
        opt.step()
        opt.zero_grad()
    return model, stats.keys


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
