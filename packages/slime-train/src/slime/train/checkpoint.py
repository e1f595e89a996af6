"""Checkpoints: tensors in safetensors, everything else in JSON, written so a crash cannot corrupt them.

A checkpoint at step ``s`` is two files in ``run_dir/checkpoints/``:

- ``step_{s:08d}.safetensors``: every tensor of the state (model, optimizer moments, archive,
  RNG states), keyed by its path in the state tree;
- ``step_{s:08d}.json``: the tree itself with tensors replaced by references, plus the sha256 of the
  safetensors file. It is written last and is the commit marker: a checkpoint exists once its JSON does.

Each file is written to a temporary name in the same folder, fsynced, then ``os.replace``d into place,
so a crash mid-write leaves the previous checkpoint intact. Loading verifies the checksum: a truncated or
tampered file raises :class:`~slime.proto.CheckpointError`.

The state is any tree of dicts (str or int keys), lists, tuples, tensors and JSON scalars.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
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
    "restore_rng",
    "save_checkpoint",
]

FORMAT = "slime-checkpoint/1"
_NAME = re.compile(r"^step_(\d{8})\.json$")


def _flatten(node: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    """Tree -> JSON tree; tensors move to ``tensors`` under their path and leave a reference."""
    if isinstance(node, Tensor):
        # Cloned on the host: safetensors refuses tensors that share storage (tied weights).
        tensors[path] = node.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": path}
    if isinstance(node, dict):
        if all(isinstance(k, str) for k in node):
            return {"__dict__": [[k, _flatten(v, f"{path}.{k}", tensors)] for k, v in node.items()]}
        if all(isinstance(k, int) and not isinstance(k, bool) for k in node):
            return {
                "__intdict__": [[k, _flatten(v, f"{path}.{k}", tensors)] for k, v in node.items()]
            }
        raise CheckpointError(f"state at {path!r} has keys of mixed or unsupported types")
    if isinstance(node, list | tuple):
        items = [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(node)]
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


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def checkpoint_steps(run_dir: str | os.PathLike[str]) -> list[int]:
    """Steps of the committed checkpoints (those whose JSON exists), ascending."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The JSON file of the newest committed checkpoint, or None when there is none."""
    steps = checkpoint_steps(run_dir)
    return Path(run_dir) / "checkpoints" / f"step_{steps[-1]:08d}.json" if steps else None


def save_checkpoint(
    run_dir: str | os.PathLike[str], step: int, state: dict[str, Any], *, keep: int = 3
) -> Path:
    """Write ``state`` as the checkpoint of ``step``; keep only the newest ``keep`` checkpoints.

    Returns:
        The path of the checkpoint's JSON file.
    """
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    tree = _flatten(state, "state", tensors)
    blob = save_tensors(tensors)
    stem = f"step_{step:08d}"
    manifest = {
        "format": FORMAT,
        "step": step,
        "tensors": f"{stem}.safetensors",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "state_sha256": _tree_digest(tree),
        "state": tree,
    }
    _write_atomic(folder / f"{stem}.safetensors", blob)
    _write_atomic(folder / f"{stem}.json", json.dumps(manifest).encode("utf-8"))
    for old in checkpoint_steps(run_dir)[:-keep] if keep > 0 else []:
        (folder / f"step_{old:08d}.json").unlink()  # uncommit first, then drop the tensors
        (folder / f"step_{old:08d}.safetensors").unlink(missing_ok=True)
    return folder / f"{stem}.json"


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; tensors come back on the CPU.

    Args:
        path: the checkpoint's JSON file, or a run directory (its latest checkpoint).

    Returns:
        The state tree, plus ``"step"``.

    Raises:
        CheckpointError: missing, truncated, tampered-with or foreign files.
    """
    path = Path(path)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"no checkpoint in {str(path / 'checkpoints')!r}")
        path = latest
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not valid JSON (truncated?): {exc}"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a {FORMAT} checkpoint")
    blob_path = path.with_name(str(manifest.get("tensors")))
    if not blob_path.is_file():
        raise CheckpointError(
            f"tensor file {str(blob_path)!r} of checkpoint {str(path)!r} is missing"
        )
    blob = blob_path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != manifest.get("sha256"):
        raise CheckpointError(
            f"{str(blob_path)!r} has sha256 {digest}, expected {manifest.get('sha256')}: "
            "the file is truncated or was modified"
        )
    if _tree_digest(manifest.get("state")) != manifest.get("state_sha256"):
        raise CheckpointError(f"the state in {str(path)!r} does not match its checksum (modified?)")
    state = _unflatten(manifest["state"], load_tensors(blob))
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} state is not a mapping")
    state["step"] = manifest["step"]
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
