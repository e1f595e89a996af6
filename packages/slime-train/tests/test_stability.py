"""GradientMonitor: one fused norm gives the clipped total and the pods' gradient norms."""

from __future__ import annotations

import pytest
import torch
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
    _, pods, keys = GradientMonitor(model, max_norm=0.0).clip_and_measure(version=0)
    assert keys == sorted(reference)
    for key, norm in zip(keys, pods):
        assert norm.item() == pytest.approx(reference[key].item(), rel=1e-5)


def test_total_is_the_norm_of_all_gradients_and_clipping_scales_to_max_norm() -> None:
    model = _slime()
    _backward(model)
    expected = torch.stack([p.grad.norm() for p in model.parameters()]).norm()
    total, _, _ = GradientMonitor(model, max_norm=1e-3).clip_and_measure(version=0)
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
    assert len(monitor.clip_and_measure(version=0)[2]) == 4
    model.zero_grad()
    model.organisms[1].spawn()
    _backward(model)
    assert len(monitor.clip_and_measure(version=0)[2]) == 4  # cached until the version moves
    model.zero_grad()
    _backward(model)
    assert monitor.clip_and_measure(version=1)[2] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]


def test_a_model_without_pods_reports_none() -> None:
    model = GPT(ModelConfig(vocab_size=8, block_size=8, n_layer=1, n_embd=16, n_pods=2, head_dim=8))
    _backward(model)
    total, pods, keys = GradientMonitor(model, max_norm=1.0).clip_and_measure(version=0)
    assert keys == [] and pods.shape == (0,) and total > 0
