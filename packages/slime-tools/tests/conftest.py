"""Run directories built the way `slime train` leaves them, without importing slime.train.

A tiny SlimeModel trains for a few steps in a plain torch loop; its pods are measured, scored and
archived, one dies and one is born, and ``save_pretrained`` writes ``RUN_DIR/model``. The
metrics.jsonl lines follow slime.train's schema (``step``, ``kind``; ``loss`` on train records,
``val_loss`` on eval records, lifecycle events with ``births``, ``deaths``, ``pool_size`` and the
archive statistics).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from matplotlib.image import imread
from safetensors.torch import save_file
from slime.core import SlimeConfig, SlimeModel
from slime.kernels import TorchKernel
from slime.memory import GridArchive

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
        for slot in organism.live_slots():
            organism.pod(slot).fitness = float(layer + slot + 1)
        organism.archive_elites()  # every live pod, its fitness buffer as the objective
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


def write_v1_model_dir(model: SlimeModel, directory: Path) -> None:
    """Write ``model`` as ``save_pretrained`` did before the slot table (format v1), by hand.

    v1 kept each live pod's tensors under its own keys (``blocks.<i>.attn.pods.<slot>.q_weight``
    ``(d, D)`` ..., ``o_weight (D, d)``, ``descriptors (3,)``, ``n_measurements ()``,
    ``_correlation (d, d)``), had no per-slot buffers (alive, fitness, born_step, tubes), listed
    each layer's live slots and their fitness in config.json, and archived ``to_dict()`` payloads.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in model.state_dict().items():
        if key == "lm_head.weight" or (".attn." in key and not key.endswith("attn.out_bias")):
            continue  # tied head; the slot table and its buffers are written per pod below
        tensors[key] = value.detach().contiguous()
    layers = []
    for i, organism in enumerate(model.organisms):
        live = organism.live_slots()
        for slot in live:
            pod, prefix = organism.pod(slot), f"blocks.{i}.attn.pods.{slot}."
            names = pod.projection_names()
            for name in names:
                tensors[prefix + name] = getattr(pod, name).contiguous()
            tensors[prefix + "descriptors"] = pod.descriptors.contiguous()
            tensors[prefix + "n_measurements"] = pod.n_measurements.clone()
            tensors[prefix + "_correlation"] = pod.correlation.contiguous()
        layers.append({"live": live, "fitness": [organism.pod(s).fitness for s in live]})
        archive = GridArchive(model.config.archive_dims, [(0.0, 1.0)] * organism.descriptor_dims)
        if live:
            archive.add(
                [organism.pod(s).to_dict() for s in live],
                organism.fitness[organism.alive],
                organism.live_descriptors(),
            )
        archive.save(directory / f"archive_{i}")
    save_file(tensors, str(directory / "model.safetensors"))
    meta = {
        "format": "slime-model",
        "version": 1,
        "config": model.config.to_dict(),
        "layers": layers,
    }
    (directory / "config.json").write_text(json.dumps(meta, indent=2))


@pytest.fixture(scope="session")
def v1_run(slime_run, tmp_path_factory) -> Path:
    """``slime_run`` with its model written in format v1 (per-pod tensors; see
    :func:`write_v1_model_dir`). Read-only for tests."""
    run_dir, model, _ = slime_run
    v1_dir = tmp_path_factory.mktemp("slime-run-v1")
    shutil.copy(run_dir / "metrics.jsonl", v1_dir / "metrics.jsonl")
    shutil.copytree(run_dir / "checkpoints", v1_dir / "checkpoints")
    write_v1_model_dir(model, v1_dir / "model")
    return v1_dir


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


@pytest.fixture(name="write_v1_model_dir")
def write_v1_model_dir_fixture():
    """``write_v1_model_dir(model, directory)``: the model in the pre-slot-table layout (v1)."""
    return write_v1_model_dir
