"""On a CUDA device: bf16 autocast, fused AdamW, and the profiler's CUDA numbers.

The ``tiny`` preset's pods are 8 wide, below the Triton kernel's smallest head dim (16), so these
tests widen them to 16 to run the Triton path (``auto`` on CUDA).
"""

from __future__ import annotations

import math

import pytest
import torch
from slime.train.build import build_dataset
from slime.train.loader import load_config
from slime.train.trainer import Trainer

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("kind", ["slime", "baseline"])
def test_cuda_training_runs_in_bf16_autocast_and_stays_finite(kind: str) -> None:
    cfg = load_config("tiny").replace(
        model={"kind": kind, "kernel_backend": "auto", "head_dim": 16},
        train={"device": "cuda", "steps": 12},
    )
    trainer = Trainer(cfg, build_dataset(cfg.data, cfg.model.block_size))
    idx, _ = trainer.probe
    with trainer._autocast():
        logits, _ = trainer.model(idx)
    assert logits.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    summary = trainer.fit()
    assert summary["status"] == "completed" and math.isfinite(summary["val_loss"])
    assert trainer.optimizer.optimizer.defaults["fused"] is True


def test_cuda_profile_reports_peak_memory_and_mfu() -> None:
    from slime.train.compare import profile_model

    cfg = load_config("tiny").replace(
        train={"device": "cuda"}, model={"kernel_backend": "auto", "head_dim": 16}
    )
    dataset = build_dataset(cfg.data, cfg.model.block_size)
    prof = profile_model(cfg, dataset, torch.device("cuda"), steps=5, warmup=2)
    assert prof["peak_memory_mb"] > 0
    if "H100" in torch.cuda.get_device_name() or "H200" in torch.cuda.get_device_name():
        assert 0 < prof["mfu"] < 1


def _cuda_trainer(kind: str, observe_steps: int = 16, **train) -> Trainer:
    cfg = load_config("tiny").replace(
        model={"kind": kind, "kernel_backend": "auto", "head_dim": 16},
        train={"device": "cuda", "steps": 20, "log_interval": 10, "eval_interval": 20, **train},
        lifecycle={
            "medium_interval": 10,
            "slow_interval": 20,
            "cull_fraction": 0.5,
            "observe_steps": observe_steps,
        },
    )
    return Trainer(cfg, build_dataset(cfg.data, cfg.model.block_size))


@pytest.mark.parametrize("kind", ["slime", "baseline"])
def test_steps_between_events_never_synchronise_with_the_device(kind: str) -> None:
    """CUDA's sync debug mode raises on any synchronising call inside the steps between reads;
    the reads (log, lifecycle, eval) run with it off."""
    trainer = _cuda_trainer(kind)
    trainer.fit(steps=10)  # warm-up: lazy optimizer state, kernel autotuning, a lifecycle event
    train_step, reads_at = trainer.train_step, trainer._reads_at

    def strict_step():
        torch.cuda.set_sync_debug_mode("error")
        return train_step()

    def reads(step: int, total: int) -> bool:
        due = reads_at(step, total)
        if due:
            torch.cuda.set_sync_debug_mode("default")
        return due

    trainer.train_step, trainer._reads_at = strict_step, reads
    try:
        summary = trainer.fit()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert summary["status"] == "completed" and summary["steps"] == 20


def test_a_non_finite_cuda_step_changes_nothing_and_is_counted() -> None:
    trainer = _cuda_trainer("slime")
    trainer.fit(steps=2)
    forward = trainer.model.forward
    trainer.model.forward = lambda idx, targets=None: (lambda out: (out[0], out[1] * math.nan))(
        forward(idx, targets)
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    state = [v.clone() for s in trainer.optimizer.optimizer.state.values() for v in s.values()]
    trainer.fit(steps=3)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    after = [v for s in trainer.optimizer.optimizer.state.values() for v in s.values()]
    assert all(torch.equal(a, b) for a, b in zip(state, after))
    assert trainer.nonfinite == 1


def test_compiled_cuda_training_does_not_recompile_across_births_and_deaths() -> None:
    torch._dynamo.reset()
    trainer = _cuda_trainer("slime", compile=True)
    trainer.fit(steps=2)
    with torch._dynamo.config.patch(error_on_recompile=True):
        summary = trainer.fit()
    assert summary["status"] == "completed"
    assert trainer.lifecycle.births > 0 and trainer.lifecycle.deaths > 0


def test_cuda_graph_steps_train_through_births_and_deaths() -> None:
    """``train.cuda_graphs``: forward and backward replay as CUDA graphs; births and deaths write
    slots in place, so the graphs stay valid and the loss keeps falling."""
    from slime.train.build import build_dataset
    from slime.train.loader import load_config
    from slime.train.trainer import Trainer

    torch._dynamo.reset()
    cfg = load_config("tiny").replace(
        train={"device": "cuda", "compile": True, "cuda_graphs": True, "steps": 24},
        lifecycle={"cull_fraction": 0.5},
        model={"n_embd": 32, "head_dim": 16},
    )
    trainer = Trainer(cfg, build_dataset(cfg.data, cfg.model.block_size))
    before = trainer.evaluate()["val_loss"]
    summary = trainer.fit()
    assert summary["status"] == "completed", summary["status"]
    assert trainer.lifecycle.births > 0 and trainer.lifecycle.deaths > 0
    assert summary["val_loss"] < before
    torch._dynamo.reset()


def test_cuda_graph_training_captures_one_forward_across_observation_windows() -> None:
    """With ``train.cuda_graphs`` the tubes are fed every step, so the steps inside and outside
    the observation window replay the same graph: no recompile (and no second graph pool)."""
    torch._dynamo.reset()
    trainer = _cuda_trainer("slime", observe_steps=3, compile=True, cuda_graphs=True)
    trainer.fit(steps=2)
    assert not trainer._observing(5) and trainer._observing(9)  # the window toggles below
    with torch._dynamo.config.patch(error_on_recompile=True):
        summary = trainer.fit()
    assert summary["status"] == "completed"
    assert all(o.feeding_tubes for o in trainer.model.organisms)
    torch._dynamo.reset()


def test_ablation_stopwatch_keeps_a_diagnostics_spike_out_of_the_peak() -> None:
    from slime.train.ablations.diagnostics import Stopwatch

    device = torch.device("cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    watch = Stopwatch(device)
    run = torch.empty(2**20, device=device)  # 4 MiB of "training"
    del run
    with watch.timed():
        spike = torch.empty(64 * 2**20, device=device)  # 256 MiB of "diagnostic", freed inside
        del spike
    after = torch.empty(2**21, device=device)  # 8 MiB after the diagnostic: still counted
    peak = watch.peak_bytes()
    assert 8 * 2**20 <= peak < 64 * 2**20, peak
    assert watch.seconds > 0
    del after
