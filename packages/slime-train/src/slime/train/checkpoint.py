"""Checkpoints: tensors in safetensors, everything else in JSON, written so a crash cannot corrupt them.

The checkpoint of step ``s`` is the folder ``run_dir/checkpoints/step_{s:08d}/`` holding

- ``tensors.safetensors``: every tensor of the state (model, optimizer moments, RNG states), keyed by
  its path in the state tree;
- ``state.json``: the tree with tensors replaced by references, and the sha256 of both;
- optional sub-folders written by the caller (each layer's archive, via ``Archive.save``).

Everything is written into a temporary folder, each file fsynced, and the folder is then renamed into
place with ``os.replace``: a checkpoint exists completely or not at all, and a crash mid-write leaves
the previous checkpoint intact. Loading verifies the checksums: a truncated or tampered file raises
:class:`~slime.proto.CheckpointError`.

The state is any tree of dicts (str or int keys), lists, tuples, tensors and JSON scalars.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from slime.proto import CheckpointError
from torch import Tensor

__all__ = [
    "capture_rng",
    "checkpoint_steps",
    "latest_checkpoint",
    "load_checkpoint",
    "remove_debris",
    "restore_rng",
    "save_checkpoint",
    "save_state",
]

FORMAT = "slime-checkpoint/1"
_NAME = re.compile(r"^step_(\d{8})$")
_DEBRIS = re.compile(r"^\.step_\d{8}\.(?:tmp|old)$")


def _flatten(node: Any, path: str, tensors: dict[str, Tensor], *, copy: bool = True) -> Any:
    """Tree -> JSON tree; tensors move to ``tensors`` under their path and leave a reference.

    ``copy=False`` keeps the tensors where they are (DCP copies what it writes itself)."""
    if isinstance(node, Tensor):
        # Cloned on the host: safetensors refuses tensors that share storage (tied weights).
        tensors[path] = node.detach().to("cpu", copy=True).contiguous() if copy else node.detach()
        return {"__tensor__": path}
    if isinstance(node, dict):
        if all(isinstance(k, str) for k in node):
            return {"__dict__": [[k, _flatten(v, f"{path}.{k}", tensors, copy=copy)] for k, v in node.items()]}
        if all(isinstance(k, int) and not isinstance(k, bool) for k in node):
            return {
                "__intdict__": [[k, _flatten(v, f"{path}.{k}", tensors, copy=copy)] for k, v in node.items()]
            }
        raise CheckpointError(f"state at {path!r} has keys of mixed or unsupported types")
    if isinstance(node, list | tuple):
        items = [_flatten(v, f"{path}.{i}", tensors, copy=copy) for i, v in enumerate(node)]
        return {"__tuple__": items} if isinstance(node, tuple) else items
    if node is None or isinstance(node, bool | int | float | str):
        return node
    raise CheckpointError(
        f"state at {path!r} is a {type(node).__name__}; expected tensors and plain data"
    )


def _unflatten(node: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(node, list):
        return [_unflatten(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        if node["__tensor__"] not in tensors:
            raise CheckpointError(f"tensor {node['__tensor__']!r} is missing from the checkpoint")
        return tensors[node["__tensor__"]]
    if "__tuple__" in node:
        return tuple(_unflatten(v, tensors) for v in node["__tuple__"])
    if "__dict__" in node:
        return {k: _unflatten(v, tensors) for k, v in node["__dict__"]}
    if "__intdict__" in node:
        return {int(k): _unflatten(v, tensors) for k, v in node["__intdict__"]}
    raise CheckpointError(f"unrecognised node in checkpoint JSON: keys {sorted(node)}")


def _tree_digest(tree: Any) -> str:
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode("utf-8")).hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):  # makes a rename inside ``path`` durable
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def checkpoint_steps(run_dir: str | os.PathLike[str]) -> list[int]:
    """Steps of the committed checkpoints, ascending."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The folder of the newest committed checkpoint, or None when there is none."""
    steps = checkpoint_steps(run_dir)
    return Path(run_dir) / "checkpoints" / f"step_{steps[-1]:08d}" if steps else None


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    state: dict[str, Any],
    *,
    writers: dict[str, Callable[[Path], None]] | None = None,
    keep: int = 3,
) -> Path:
    """Write ``state`` as the checkpoint of ``step``; keep only the newest ``keep`` checkpoints.

    Args:
        writers: ``{name: fn}``; each ``fn(folder)`` writes the sub-folder ``name`` (its files are
            fsynced before the checkpoint is committed).

    Returns:
        The checkpoint's folder.
    """
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = save_state(folder / f"step_{step:08d}", step, state, writers=writers)
    for old in checkpoint_steps(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(folder / f"step_{old:08d}")
    return final


def save_state(
    final: str | os.PathLike[str],
    step: int,
    state: dict[str, Any],
    *,
    writers: dict[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Write ``state`` (of ``step``) as the checkpoint folder ``final``, replacing any folder
    there only once the new one is complete (a run's ``best/`` is written so too).

    The folder is built beside as ``.NAME.tmp`` and renamed into place; an existing ``final`` is
    first renamed to ``.NAME.old`` and removed after the swap.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():  # debris of a crash during an earlier attempt
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors: dict[str, Tensor] = {}
    tree = _flatten(state, "state", tensors)
    blob = save_tensors(tensors)
    for name, write in (writers or {}).items():
        write(tmp / name)
        for file in sorted((tmp / name).rglob("*")):
            if file.is_file():
                _fsync_file(file)
    manifest = {
        "format": FORMAT,
        "step": step,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "state_sha256": _tree_digest(tree),
        "folders": sorted(writers or {}),
        "state": tree,
    }
    _write_synced(tmp / "tensors.safetensors", blob)
    _write_synced(tmp / "state.json", json.dumps(manifest).encode("utf-8"))
    _fsync_dir(tmp)
    if final.exists():  # re-reached after a resume: retire the old copy, then swap in the new one
        retired = final.with_name(f".{final.name}.old")
        if retired.exists():
            shutil.rmtree(retired)
        os.replace(final, retired)
        os.replace(tmp, final)
        shutil.rmtree(retired)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)
    return final


def remove_debris(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete what a crash mid-write leaves in ``run_dir/checkpoints`` (``.step_*.tmp`` and
    ``.step_*.old`` folders; never a committed checkpoint). Returns the removed folders."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    debris = sorted(p for p in folder.iterdir() if _DEBRIS.match(p.name) and p.is_dir())
    for path in debris:
        shutil.rmtree(path)
    return debris


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; tensors come back on the CPU.

    Args:
        path: a checkpoint folder (``step_*``, or any folder holding a ``state.json``, such as a
            copy kept as a run's ``best/``), or a run directory (its latest checkpoint).

    Returns:
        The state tree, plus ``"step"`` and ``"folder"`` (the checkpoint folder, a Path, where the
        writers' sub-folders are).

    Raises:
        CheckpointError: missing, truncated, tampered-with or foreign files.
    """
    path = Path(path)
    if not _NAME.match(path.name) and not (path / "state.json").is_file():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"no checkpoint in {str(path / 'checkpoints')!r}")
        path = latest
    manifest_path, blob_path = path / "state.json", path / "tensors.safetensors"
    for file in (manifest_path, blob_path):
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {str(file)!r} is missing")
    try:
        manifest = json.loads(manifest_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{str(manifest_path)!r} is not valid JSON (truncated?): {exc}"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a {FORMAT} checkpoint")
    blob = blob_path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != manifest.get("sha256"):
        raise CheckpointError(
            f"{str(blob_path)!r} has sha256 {digest}, expected {manifest.get('sha256')}: "
            "the file is truncated or was modified"
        )
    if _tree_digest(manifest.get("state")) != manifest.get("state_sha256"):
        raise CheckpointError(f"the state in {str(manifest_path)!r} does not match its checksum")
    for name in manifest.get("folders", []):
        if not (path / name).is_dir():
            raise CheckpointError(f"folder {str(path / name)!r} of the checkpoint is missing")
    state = _unflatten(manifest["state"], load_tensors(blob))
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} state is not a mapping")
    state["step"] = manifest["step"]
    state["folder"] = path
    return state


def capture_rng() -> dict[str, Any]:
    """Every global RNG's state: torch (CPU and each CUDA device), Python ``random``, numpy."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng` captured (CUDA states only where devices exist)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
