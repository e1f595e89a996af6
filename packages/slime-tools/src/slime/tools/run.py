"""Reading a run directory written by ``slime train``, without importing slime.train.

The contract: ``RUN_DIR/metrics.jsonl`` holds one JSON object a line, each with ``step`` and
``kind`` (``"train"``, ``"eval"``, lifecycle events, ...); ``RUN_DIR/model/`` holds the final
``SlimeModel.save_pretrained`` output (``config.json``, ``model.safetensors``, ``archive_<i>/``).
Baseline runs have no ``model/``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from slime.core import DESCRIPTOR_NAMES, SlimeModel
from slime.kernels import TorchKernel
from slime.memory import Archive
from slime.proto import CheckpointError, ConfigError

__all__ = [
    "CHECKPOINTS_DIR",
    "METRICS_FILE",
    "MODEL_DIR",
    "archive_history",
    "load_archives",
    "load_run_model",
    "metric_series",
    "model_dir",
    "read_metrics",
    "run_path",
]

METRICS_FILE = "metrics.jsonl"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
_CHECKPOINT = re.compile(r"^step_(\d+)$")


def run_path(run_dir: str | os.PathLike[str]) -> Path:
    """``run_dir`` as a Path; raises CheckpointError when it is not a directory."""
    path = Path(run_dir)
    if not path.is_dir():
        raise CheckpointError(f"run directory {str(path)!r} does not exist or is not a directory")
    return path


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of ``RUN_DIR/metrics.jsonl`` in order; ``[]`` when the file is absent.

    A torn last line (the trainer died mid-append) is dropped, as slime.train does.

    Raises:
        CheckpointError: ``metrics.jsonl`` exists but is not a regular file (a folder, a FIFO), a
            line before the last is not UTF-8 JSON (an integer of more than 4300 digits and
            nesting deeper than Python's recursion limit count as not JSON), or a record is not an
            object with ``step`` and ``kind`` (naming the line).
    """
    path = run_path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    if not path.is_file():
        raise CheckpointError(f"{path} is not a regular file")
    lines = path.read_bytes().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        # ValueError: an integer too long to convert; RecursionError: nesting too deep.
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            if number == len(lines):
                break
            raise CheckpointError(f"{path}:{number} is not JSON: {exc}") from exc
        if not isinstance(record, dict) or "step" not in record or "kind" not in record:
            raise CheckpointError(f"{path}:{number} is not a record with 'step' and 'kind'")
        records.append(record)
    return records


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def metric_series(
    records: list[dict[str, Any]], key: str, *, kind: str | None = None
) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of every record (of ``kind``, if given) whose ``key`` is a number.

    Records without the key, or with a non-numeric value, are left out; NaN and inf stay (a
    plot shows them as gaps, which is what happened).
    """
    steps, values = [], []
    for record in records:
        if kind is not None and record.get("kind") != kind:
            continue
        value, step = _number(record.get(key)), _number(record.get("step"))
        if value is not None and step is not None and math.isfinite(step):
            steps.append(step)
            values.append(value)
    return steps, values


def model_dir(run_dir: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/model``; raises CheckpointError (saying why it may be absent) when missing.
    Something other than a regular file in the place of its ``config.json`` (a folder, a device,
    a dangling link) is left for the loader to name, not taken for "no model"."""
    path = run_path(run_dir) / MODEL_DIR
    if not os.path.lexists(path / "config.json"):
        raise CheckpointError(
            f"{path} holds no saved SlimeModel (no config.json): the trainer writes it at the "
            "end of a slime run and with each checkpoint; baseline runs and runs stopped before "
            "their first checkpoint have none"
        )
    return path


def load_run_model(
    run_dir: str | os.PathLike[str], *, device: torch.device | str | None = None
) -> SlimeModel:
    """The SlimeModel saved in ``RUN_DIR/model``, in eval mode, with the torch kernel on CPU.

    Raises:
        CheckpointError: no model saved there, its files are unreadable, inconsistent or not
            regular files (a link to /dev/zero, a FIFO: refused before any read), or a live
            pod holds a descriptor outside [0, 1] (every descriptor slime measures lies there, so
            the file was forged; the error names the layer, slot, descriptor and value).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    kernel = TorchKernel() if device.type == "cpu" else None
    path = model_dir(run_dir)
    model = SlimeModel.from_pretrained(path, kernel=kernel, device=device)
    _check_descriptors(model, path)
    return model.eval()


def _check_descriptors(model: SlimeModel, path: Path) -> None:
    """CheckpointError naming the first live pod whose descriptor lies outside [0, 1]."""
    for layer, organism in enumerate(model.organisms):
        values = organism.live_descriptors(full=True).detach().double().cpu()
        bad = ~((values >= 0.0) & (values <= 1.0))  # NaN is bad too
        if bool(bad.any()):
            row, column = torch.nonzero(bad)[0].tolist()
            slot = organism.live_slots()[row]
            raise CheckpointError(
                f"{path}: live pod in slot {slot} of layer {layer} has "
                f"{DESCRIPTOR_NAMES[column]} = {values[row, column].item()!r}, outside [0, 1] "
                "(slime measures every descriptor in [0, 1]: the file was forged or damaged)"
            )


def load_archives(run_dir: str | os.PathLike[str]) -> list[Archive]:
    """Each layer's archive (``RUN_DIR/model/archive_<i>``, grid or CVT), bottom layer first.

    Raises:
        CheckpointError: no model saved there, or no ``archive_0``.
    """
    root = model_dir(run_dir)
    archives = []
    while (root / f"archive_{len(archives)}").is_dir():
        archives.append(Archive.load(root / f"archive_{len(archives)}"))
    if not archives:
        raise CheckpointError(f"{root} holds no archive_0 folder")
    return archives


def _checkpoint_archives(folder: Path) -> list[Path]:
    found = []
    while (folder / f"archive_{len(found)}").is_dir():
        found.append(folder / f"archive_{len(found)}")
    return found


def archive_history(
    run_dir: str | os.PathLike[str], *, max_points: int = 20
) -> list[dict[str, Any]]:
    """Archive statistics over training, from the archives saved with each checkpoint.

    slime.train writes each layer's archive into ``checkpoints/step_<n>/archive_<i>/``. Every
    archive is loaded whole (genomes included), so at most ``max_points`` checkpoints are read,
    evenly spread and always including the last.

    Returns:
        One record per checkpoint read, oldest first: ``{"step", "kind": "checkpoint",
        "archive_coverage"`` (mean over layers, 0-1), ``"archive_qd_score"`` (sum over layers)``}``;
        ``[]`` when no checkpoint holds an archive.

    Raises:
        ConfigError: ``max_points`` < 1.
        ArchiveError: a checkpoint's archive is truncated or tampered with.
    """
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
        raise ConfigError(f"expected an int >= 1, got {max_points!r}", "max_points")
    root = run_path(run_dir) / CHECKPOINTS_DIR
    folders = sorted(
        (int(m.group(1)), p)
        for p in (root.iterdir() if root.is_dir() else [])
        if (m := _CHECKPOINT.match(p.name)) and _checkpoint_archives(p)
    )
    if len(folders) > max_points:
        last = len(folders) - 1
        folders = [folders[round(i * last / (max_points - 1))] for i in range(max_points)]
        folders = list(dict.fromkeys(folders))
    history = []
    for step, folder in folders:
        stats = [Archive.load(path).stats for path in _checkpoint_archives(folder)]
        history.append(
            {
                "step": step,
                "kind": "checkpoint",
                "archive_coverage": sum(s.coverage for s in stats) / len(stats),
                "archive_qd_score": sum(s.qd_score for s in stats),
            }
        )
    return history
