"""GradientMonitor: one fused norm gives the clipped total and the pods' gradient norms."""

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


def test_pod_norms_match_core_pod_gradient_norms() -> None:
    model = _slime()
    _backward(model)
    reference = model.pod_gradient_norms()
    stats = GradientMonitor(model, max_norm=0.0).clip_and_measure(version=0)
    assert stats.keys == sorted(reference)
    for key, norm in zip(stats.keys, stats.pod_norms):
        assert norm.item() == pytest.approx(reference[key].item(), rel=1e-5)


def test_total_is_the_norm_of_all_gradients_and_clipping_scales_to_max_norm() -> None:
    model = _slime()
    _backward(model)
    expected = torch.stack([p.grad.norm() for p in model.parameters()]).norm()
    total = GradientMonitor(model, max_norm=1e-3).clip_and_measure(version=0).total
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    clipped = torch.stack([p.grad.norm() for p in model.parameters()]).norm()
    assert clipped.item() == pytest.approx(1e-3, rel=1e-3)


def test_small_gradients_are_not_clipped() -> None:
    model = _slime()
    _backward(model)
    before = [p.grad.clone() for p in model.parameters()]
    GradientMonitor(model, max_norm=1e6).clip_and_measure(version=0)
    assert all(torch.allclose(a, p.grad) for a, p in zip(before, model.parameters()))


def test_layout_follows_the_pool_when_the_version_changes() -> None:
    model = _slime()
    monitor = GradientMonitor(model, max_norm=0.0)
    _backward(model)
    assert len(monitor.clip_and_measure(version=0).keys) == 4
    model.zero_grad()
    model.organisms[1].spawn()
    _backward(model)
    assert len(monitor.clip_and_measure(version=0).keys) == 4  # cached until the version moves
    model.zero_grad()
    _backward(model)
    assert monitor.clip_and_measure(version=1).keys == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]


def test_a_model_without_pods_reports_none() -> None:
    model = GPT(ModelConfig(vocab_size=8, block_size=8, n_layer=1, n_embd=16, n_pods=2, head_dim=8))
    _backward(model)
    stats = GradientMonitor(model, max_norm=1.0).clip_and_measure(version=0)
    assert stats.keys == [] and stats.pod_norms.shape == (0,) and stats.pod_taylor.shape == (0,)
    assert stats.total > 0


def test_taylor_estimate_is_minus_the_derivative_of_the_loss_in_the_pod_gate() -> None:
    """Differential test: -<W_o, dL/dW_o> against a central finite difference of L(g), computed in
    float64 from the logits, with the pod's output projection scaled by a gate g around 1."""
    model = _slime().double()
    idx = torch.randint(0, 8, (4, 8), generator=torch.Generator().manual_seed(1))
    model(idx, idx)[1].backward()
    stats = GradientMonitor(model, max_norm=0.0).clip_and_measure(version=0)
    eps = 1e-5
    for (layer, slot), estimate in zip(stats.keys, stats.pod_taylor):
        w = model.organisms[layer].pods[str(slot)].o_weight
        losses = []
        with torch.no_grad():
            for gate in (1 + eps, 1 - eps):
                original = w.clone()
                w.mul_(gate)
                logits = model(idx)[0]
                losses.append(F.cross_entropy(logits.reshape(-1, 8), idx.reshape(-1)).item())
                w.copy_(original)
        derivative = (losses[0] - losses[1]) / (2 * eps)
        assert estimate.item() == pytest.approx(-derivative, rel=1e-4, abs=1e-9)
