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


def _pool_size(model: SlimeModel) -> int:
    return sum(len(o.live_slots()) for o in model.organisms)


def _checkpoint_archives(model: SlimeModel, run_dir: Path, step: int) -> None:
    """What slime.train's checkpoints hold for tools: ``step_<n>/archive_<i>/`` per layer."""
    for i, organism in enumerate(model.organisms):
        organism.archive.save(run_dir / "checkpoints" / f"step_{step:08d}" / f"archive_{i}")


def train_run(run_dir: Path, seed: int = 0) -> tuple[SlimeModel, list[dict]]:
    """Train, evolve and save a tiny model into ``run_dir``; returns it and its records."""
    torch.manual_seed(seed)
    model = tiny_model(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, VOCAB, (4, BLOCK + 1), generator=g)
    idx, targets = data[:, :-1], data[:, 1:]
    records = []

    def train_steps(first: int, last: int) -> None:
        for step in range(first, last):
            model.train()
            loss = model(idx, targets)[1]
            opt.zero_grad()
            loss.backward()
            opt.step()
            record = {"step": step, "kind": "train", "loss": loss.item(), "lr": 3e-2}
            records.append({**record, "pool_size": _pool_size(model)})

    train_steps(1, STEPS)
    model.eval()
    with torch.no_grad():
        loss = model(idx, targets)[1].item()
    records.append({"step": STEPS, "kind": "eval", "train_loss": loss, "val_loss": loss + 0.1})
    _checkpoint_archives(model, run_dir, STEPS)  # before any elite: empty archives
    model.measure_behaviour(idx)
    for layer, organism in enumerate(model.organisms):
        fitness = {s: float(layer + s + 1) for s in organism.live_slots()}
        for slot, value in fitness.items():
            organism.pods[str(slot)].fitness = value
        organism.archive_elites(fitness)
    records.append(
        {"step": STEPS, "kind": "medium", "births": 0, "archive_added": 5, "pool_size": 6}
    )
    model.organisms[0].cull([0])
    records.append({"step": STEPS + 1, "kind": "slow", "deaths": 1, "pool_size": 5})
    model.organisms[1].spawn()
    model.measure_behaviour(idx)
    records.append({"step": STEPS + 2, "kind": "medium", "births": 1, "pool_size": 6})
    train_steps(STEPS + 2, STEPS + 4)
    _checkpoint_archives(model, run_dir, STEPS + 3)
    records.append({"step": STEPS + 3, "kind": "summary", "births": 1, "deaths": 1, "pool_size": 6})
    write_metrics(run_dir, records)
    model.save_pretrained(run_dir / "model")
    return model.eval(), records


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
