"""Run directories built the way `slime train` leaves them, without importing slime.train.

A tiny SlimeModel trains for a few steps in a plain torch loop; its pods are measured, scored and
archived, one dies and one is born, and ``save_pretrained`` writes ``RUN_DIR/model``. The
metrics.jsonl lines follow slime.train's schema (``step``, ``kind``; ``loss`` on train records,
``val_loss`` on eval records, lifecycle events with ``births``, ``deaths``, ``pool_size`` and the
archive statistics).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from matplotlib.image import imread
from slime.core import SlimeConfig, SlimeModel
from slime.kernels import TorchKernel

VOCAB, BLOCK = 11, 8
STEPS = 6


def tiny_config(**overrides) -> SlimeConfig:
    base = dict(
        vocab_size=VOCAB,
        block_size=BLOCK,
        n_layer=2,
        n_embd=16,
        n_pods=3,
        pod_capacity=4,
        head_dim=4,
    )
    return SlimeConfig(**{**base, **overrides})


def tiny_model(seed: int = 0, **overrides) -> SlimeModel:
    return SlimeModel(
        tiny_config(**overrides),
        kernel=TorchKernel(),
        generator=torch.Generator().manual_seed(seed),
    )


def write_metrics(run_dir: Path, records: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (run_dir / "metrics.jsonl").write_text(lines, encoding="utf-8")


def train_run(run_dir: Path, seed: int = 0) -> tuple[SlimeModel, list[dict]]:
    """Train, evolve and save a tiny model into ``run_dir``; returns it and its records."""
    torch.manual_seed(seed)
    model = tiny_model(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, VOCAB, (4, BLOCK + 1), generator=g)
    idx, targets = data[:, :-1], data[:, 1:]
    records = []
    for step in range(STEPS):
        model.train()
        loss = model(idx, targets)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        records.append({"step": step, "kind": "train", "loss": loss.item(), "lr": 3e-2})
    model.eval()
    with torch.no_grad():
        records.append({"step": STEPS, "kind": "eval", "val_loss": model(idx, targets)[1].item()})
    model.measure_behaviour(idx)
    for layer, organism in enumerate(model.organisms):
        fitness = {s: float(layer + s + 1) for s in organism.live_slots()}
        for slot, value in fitness.items():
            organism.pods[str(slot)].fitness = value
        organism.archive_elites(fitness)
    pool = sum(len(o.live_slots()) for o in model.organisms)
    stats = [o.archive.stats for o in model.organisms]
    records.append(
        {
            "step": STEPS,
            "kind": "medium",
            "births": 0,
            "pool_size": pool,
            "archive_coverage": sum(s.coverage for s in stats) / len(stats),
            "archive_qd_score": sum(s.qd_score for s in stats),
        }
    )
    model.organisms[0].cull([0])
    model.organisms[1].spawn()
    model.measure_behaviour(idx)
    records.append({"step": STEPS + 1, "kind": "slow", "deaths": 1, "pool_size": pool - 1})
    stats = [o.archive.stats for o in model.organisms]
    records.append(
        {
            "step": STEPS + 2,
            "kind": "medium",
            "births": 1,
            "pool_size": pool,
            "archive_coverage": sum(s.coverage for s in stats) / len(stats),
            "archive_qd_score": sum(s.qd_score for s in stats),
        }
    )
    write_metrics(run_dir, records)
    model.save_pretrained(run_dir / "model")
    return model, records


@pytest.fixture(scope="session")
def slime_run(tmp_path_factory) -> tuple[Path, SlimeModel, list[dict]]:
    """``(run_dir, the live model as saved, its metrics records)``. Read-only for tests."""
    run_dir = tmp_path_factory.mktemp("slime-run")
    model, records = train_run(run_dir)
    return run_dir, model, records


@pytest.fixture(scope="session")
def baseline_run(tmp_path_factory) -> Path:
    """A baseline run: loss curves only, no model/ folder."""
    run_dir = tmp_path_factory.mktemp("baseline-run")
    records = [{"step": s, "kind": "train", "loss": 2.5 - 0.1 * s} for s in range(STEPS)]
    records.append({"step": STEPS, "kind": "eval", "val_loss": 2.0})
    write_metrics(run_dir, records)
    return run_dir


def _colour_pixels(path: Path) -> int:
    image = imread(path)[..., :3]
    return int((image.max(axis=-1) - image.min(axis=-1) > 0.1).sum())


def _png_size(path: Path) -> tuple[int, int]:
    height, width = imread(path).shape[:2]
    return width, height


@pytest.fixture
def colour_pixels():
    """``colour_pixels(png) -> int``: saturated pixels. Axes, ticks and text are black or grey,
    so a figure with no data drawn has none; every plotted series, marker or heatmap cell adds
    some."""
    return _colour_pixels


@pytest.fixture
def png_size():
    """``png_size(png) -> (width, height)`` in pixels."""
    return _png_size


@pytest.fixture
def make_model():
    """``make_model(seed=0, **config overrides) -> SlimeModel`` (tiny, torch kernel)."""
    return tiny_model


@pytest.fixture
def metrics_writer():
    """``metrics_writer(run_dir, records)`` writes metrics.jsonl as slime.train does."""
    return write_metrics
