"""GradientMonitor: one fused norm gives the clipped total; per-slot tables give the pods' statistics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from slime.core import SlimeConfig, SlimeModel
from slime.train.baseline import GPT
from slime.train.config import ModelConfig
from slime.train.stability import GradientMonitor


def _slime() -> SlimeModel:
    c = SlimeConfig(
        vocab_size=8,
        block_size=8,
        n_layer=2,
        n_embd=16,
        n_pods=2,
        pod_capacity=4,
        head_dim=8,
        bias=True,
        kernel_backend="torch",
    )
    return SlimeModel(c, generator=torch.Generator().manual_seed(0))


def _backward(model) -> None:
    idx = torch.randint(0, 8, (4, 8), generator=torch.Generator().manual_seed(1))
    model(idx, idx)[1].backward()


def _slot_reference(model: SlimeModel) -> torch.Tensor:
    """(L, P) gradient norms summed slot by slot from each pod's own views of the gradients."""
    table = torch.zeros(len(model.organisms), model.config.pod_capacity)
    for layer, organism in enumerate(model.organisms):
        for param, dim in organism.slot_parameters():
            for slot in range(organism.pod_capacity):
                table[layer, slot] += param.grad.select(dim, slot).pow(2).sum()
    return table.sqrt()


def test_slot_norms_are_each_slots_gradient_norm_and_dead_slots_read_zero() -> None:
    model = _slime()
    _backward(model)
    stats = GradientMonitor(model, max_norm=0.0).clip_and_measure()
    assert stats.slot_norms.shape == stats.slot_taylor.shape == (2, 4)
    assert torch.allclose(stats.slot_norms, _slot_reference(model), rtol=1e-5)
    assert (stats.slot_norms[:, :2] > 0).all() and (stats.slot_norms[:, 2:] == 0).all()
    assert (stats.slot_taylor[:, 2:] == 0).all()


def test_total_is_the_norm_of_all_gradients_and_clipping_scales_to_max_norm() -> None:
    model = _slime()
    _backward(model)
    expected = torch.stack([p.grad.norm() for p in model.parameters()]).norm()
    total = GradientMonitor(model, max_norm=1e-3).clip_and_measure().total
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    clipped = torch.stack([p.grad.norm() for p in model.parameters()]).norm()
    assert clipped.item() == pytest.approx(1e-3, rel=1e-3)


def test_statistics_are_measured_before_clipping() -> None:
    model = _slime()
    _backward(model)
    reference = _slot_reference(model)
    stats = GradientMonitor(model, max_norm=1e-6).clip_and_measure()
    assert torch.allclose(stats.slot_norms, reference, rtol=1e-5)


def test_small_gradients_are_not_clipped() -> None:
    model = _slime()
    _backward(model)
    before = [p.grad.clone() for p in model.parameters()]
    GradientMonitor(model, max_norm=1e6).clip_and_measure()
    assert all(torch.allclose(a, p.grad) for a, p in zip(before, model.parameters()))


def test_slots_follow_births_with_no_layout_to_rebuild() -> None:
    model = _slime()
    monitor = GradientMonitor(model, max_norm=0.0)
    _backward(model)
    assert (monitor.clip_and_measure().slot_norms[1, 2] == 0).all()
    model.zero_grad()
    model.organisms[1].spawn()
    _backward(model)
    norms = monitor.clip_and_measure().slot_norms
    assert norms[1, 2] > 0 and norms[0, 2] == 0


def test_per_slot_statistics_can_be_left_out() -> None:
    model = _slime()
    _backward(model)
    stats = GradientMonitor(model, max_norm=0.0).clip_and_measure(per_slot=False)
    assert stats.slot_norms.numel() == 0 and stats.total > 0


def test_a_model_without_pods_has_empty_slot_tables() -> None:
    model = GPT(ModelConfig(vocab_size=8, block_size=8, n_layer=1, n_embd=16, n_pods=2, head_dim=8))
    _backward(model)
    expected = torch.stack([p.grad.norm() for p in model.parameters()]).norm()
    stats = GradientMonitor(model, max_norm=0.0).clip_and_measure()
    assert stats.slot_norms.numel() == 0 and stats.slot_taylor.numel() == 0
    assert stats.total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_taylor_estimate_is_minus_the_derivative_of_the_loss_in_the_pod_gate() -> None:
    """Differential test: -<W_o, dL/dW_o> against a central finite difference of L(g), computed in
    float64 from the logits, with the pod's output projection scaled by a gate g around 1."""
    model = _slime().double().eval()  # no dropout; eval also leaves the (float32) tubes alone
    idx = torch.randint(0, 8, (4, 8), generator=torch.Generator().manual_seed(1))
    model(idx, idx)[1].backward()
    stats = GradientMonitor(model, max_norm=0.0).clip_and_measure()
    eps = 1e-5
    for layer, organism in enumerate(model.organisms):
        for slot in organism.live_slots():
            w = organism.o_weight.detach()[:, slot]
            losses = []
            with torch.no_grad():
                for gate in (1 + eps, 1 - eps):
                    original = w.clone()
                    w.mul_(gate)
                    logits = model(idx)[0]
                    losses.append(F.cross_entropy(logits.reshape(-1, 8), idx.reshape(-1)).item())
                    w.copy_(original)
            derivative = (losses[0] - losses[1]) / (2 * eps)
            estimate = stats.slot_taylor[layer, slot]
            assert estimate.item() == pytest.approx(-derivative, rel=1e-4, abs=1e-9)
