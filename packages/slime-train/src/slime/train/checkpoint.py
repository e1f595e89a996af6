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

A data-parallel run (more than one process) writes the same folder in a second format,
``slime-checkpoint-dcp/1`` (:func:`save_sharded_checkpoint`): its tensors through
``torch.distributed.checkpoint`` in ``dcp/``, each replicated tensor written once with the ranks
sharing the writing, and each rank's own RNG states kept apart. :func:`load_checkpoint` reads both
formats, in one process or in each of any number of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
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
    "commit_folder",
    "latest_checkpoint",
    "load_checkpoint",
    "remove_debris",
    "restore_rng",
    "save_checkpoint",
    "save_sharded_checkpoint",
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
            return {
                "__dict__": [
                    [k, _flatten(v, f"{path}.{k}", tensors, copy=copy)] for k, v in node.items()
                ]
            }
        if all(isinstance(k, int) and not isinstance(k, bool) for k in node):
            return {
                "__intdict__": [
                    [k, _flatten(v, f"{path}.{k}", tensors, copy=copy)] for k, v in node.items()
                ]
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
    commit_folder(tmp, final)
    return final


def commit_folder(tmp: Path, final: Path) -> None:
    """Rename the complete folder ``tmp`` to ``final``; an existing ``final`` (re-reached after a
    resume, or a run's ``best/`` replaced) is retired to ``.NAME.old`` first and removed after the
    swap. A crash between the two renames is finished by :func:`remove_debris`."""
    if final.exists():
        retired = final.with_name(f".{final.name}.old")
        if retired.exists():
            shutil.rmtree(retired)
        os.replace(final, retired)
        os.replace(tmp, final)
        shutil.rmtree(retired)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)


def remove_debris(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete what a crash mid-write leaves in ``run_dir/checkpoints`` (``.step_*.tmp`` and
    ``.step_*.old`` folders; never a committed checkpoint), and finish an interrupted swap of a
    run's ``best/`` or ``model/``: a crash between retiring the old folder and renaming the new
    one into place leaves both complete, and the new one is put in place. Returns the removed
    folders."""
    root = Path(run_dir)
    removed = []
    for name in ("best", "model"):
        final, retired = root / name, root / f".{name}.old"
        staged = [root / f".{name}.tmp", root / f"{name}.partial"]
        if retired.is_dir():
            if not final.exists():  # the swap stopped between its two renames
                ready = next((s for s in staged if _complete(s)), None)
                os.replace(ready or retired, final)
            if retired.exists():
                shutil.rmtree(retired)
                removed.append(retired)
    folder = root / "checkpoints"
    if not folder.is_dir():
        return removed
    debris = sorted(p for p in folder.iterdir() if _DEBRIS.match(p.name) and p.is_dir())
    for path in debris:
        shutil.rmtree(path)
    return removed + debris


def _complete(folder: Path) -> bool:
    """Whether a staged run folder was fully written (its last file exists): a checkpoint folder's
    ``state.json`` or a model directory's ``config.json`` (written after the weights)."""
    return (folder / "state.json").is_file() or (folder / "config.json").is_file()


def load_checkpoint(path: str | os.PathLike[str], *, rank: int = 0) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` or :func:`save_sharded_checkpoint`;
    tensors come back on the CPU.

    Args:
        path: a checkpoint folder (``step_*``, or any folder holding a ``state.json``, such as a
            copy kept as a run's ``best/``), or a run directory (its latest checkpoint).
        rank: whose per-rank parts of a sharded checkpoint to return (rank 0's when the run that
            wrote it had fewer ranks); ignored by the one-process format.

    Returns:
        The state tree, plus ``"step"`` and ``"folder"`` (the checkpoint folder, a Path, where the
        writers' sub-folders are); a sharded checkpoint adds ``"world_size"``, its run's ranks.

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
    manifest = _read_manifest(manifest_path) if manifest_path.is_file() else None
    if isinstance(manifest, dict) and manifest.get("format") == SHARDED_FORMAT:
        return _load_sharded(path, manifest, rank)
    for file in (manifest_path, blob_path):
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {str(file)!r} is missing")
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
    state["step"] = _manifest_step(manifest, path)
    state["folder"] = path
    return state


def _manifest_step(manifest: dict[str, Any], path: Path) -> int:
    """The step a checkpoint's ``state.json`` records: an int >= 0, and the folder's own for a
    ``step_NNNNNNNN`` folder (neither checksum covers it)."""
    step = manifest.get("step")
    named = _NAME.match(path.name)
    if (
        not isinstance(step, int)
        or isinstance(step, bool)
        or step < 0
        or (named is not None and int(named.group(1)) != step)
    ):
        raise CheckpointError(
            f"{str(path / 'state.json')!r} records step {step!r}, expected "
            + (f"{int(named.group(1))} (the folder's)" if named else "an integer >= 0")
        )
    return step


def _read_manifest(manifest_path: Path) -> Any:
    try:
        return json.loads(manifest_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{str(manifest_path)!r} is not valid JSON (truncated?): {exc}"
        ) from exc


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


# -- the sharded format (data-parallel runs) -------------------------------------------------------

SHARDED_FORMAT = "slime-checkpoint-dcp/1"
_DCP = "dcp"


def _rank_world(group: Any) -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def _file_digests(folder: Path, under: str) -> dict[str, str]:
    return {
        f"{under}/{file.relative_to(folder / under).as_posix()}": hashlib.sha256(
            file.read_bytes()
        ).hexdigest()
        for file in sorted((folder / under).rglob("*"))
        if file.is_file()
    }


def save_sharded_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    state: dict[str, Any],
    *,
    per_rank: tuple[str, ...] = (),
    writers: dict[str, Callable[[Path], None]] | None = None,
    keep: int = 3,
    group: Any = None,
) -> Path:
    """Write ``state`` as the checkpoint of ``step`` with ``torch.distributed.checkpoint`` (DCP).

    A collective: every rank of ``group`` (default: the default process group, or this process
    alone when none is initialised) calls it with the same step and a state of the same layout.
    The checkpoint folder is the one :func:`save_checkpoint` would write, holding

    - ``dcp/``: DCP's ``.metadata`` and one ``__RANK_N.distcp`` file per rank. A tensor every rank
      holds under the same key (data parallelism replicates the model, optimizer and lifecycle
      state) is written once, by one rank, the ranks sharing the writing between them;
    - ``state.json`` (format ``slime-checkpoint-dcp/1``): the tree with tensors replaced by
      references, each rank's tree of the keys in ``per_rank`` (its own RNG states), the world
      size, and the sha256 of every file under ``dcp/`` and of the trees;
    - the ``writers``' sub-folders, written by rank 0 (every rank holds the same archives).

    Rank 0 commits the folder as :func:`save_checkpoint` does (built as ``.step_*.tmp``, renamed into
    place, older checkpoints beyond ``keep`` removed) before any rank returns. The run directory
    must be one folder that every rank sees (a shared filesystem across machines).
    :func:`load_checkpoint` reads it in any number of processes.
    """
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter

    rank, world = _rank_world(group)
    folder = Path(run_dir) / "checkpoints"
    final = folder / f"step_{step:08d}"
    tmp = folder / f".step_{step:08d}.tmp"
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # debris of a crash during an earlier attempt
            shutil.rmtree(tmp)
        tmp.mkdir()
    if world > 1:
        dist.barrier(group)
    tensors: dict[str, Tensor] = {}
    tree = _flatten(
        {k: v for k, v in state.items() if k not in per_rank}, "state", tensors, copy=False
    )
    own = _flatten(
        {k: state[k] for k in per_rank if k in state}, f"rank{rank}", tensors, copy=False
    )
    trees: list[Any] = [own]
    if world > 1:
        trees = [None] * world if rank == 0 else []
        dist.gather_object(own, trees if rank == 0 else None, dst=0, group=group)
    with warnings.catch_warnings():  # one process: "assuming the intent is to save in a single..."
        if world == 1:
            warnings.simplefilter("ignore")
        dcp.save(
            tensors,
            storage_writer=FileSystemWriter(tmp / _DCP),
            process_group=group,
            no_dist=world == 1,
        )
    if world > 1:
        dist.barrier(group)  # every rank's files are complete before rank 0 hashes them
    if rank == 0:
        for name, write in (writers or {}).items():
            write(tmp / name)
            for file in sorted((tmp / name).rglob("*")):
                if file.is_file():
                    _fsync_file(file)
        trees_doc = {"state": tree, "ranks": trees}
        manifest = {
            "format": SHARDED_FORMAT,
            "step": step,
            "world_size": world,
            "files": _file_digests(tmp, _DCP),
            "state_sha256": _tree_digest(trees_doc),
            "folders": sorted(writers or {}),
            **trees_doc,
        }
        _write_synced(tmp / "state.json", json.dumps(manifest).encode("utf-8"))
        _fsync_dir(tmp / _DCP)
        _fsync_dir(tmp)
        commit_folder(tmp, final)
        for old in checkpoint_steps(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(folder / f"step_{old:08d}")
    if world > 1:
        dist.barrier(group)  # committed before any rank goes on (or reads it back)
    return final


def _tensor_refs(node: Any, out: list[str]) -> list[str]:
    if isinstance(node, list):
        for v in node:
            _tensor_refs(v, out)
    elif isinstance(node, dict):
        if "__tensor__" in node:
            out.append(node["__tensor__"])
        for v in node.values():
            _tensor_refs(v, out)
    return out


def _load_sharded(path: Path, manifest: dict[str, Any], rank: int) -> dict[str, Any]:
    """The state of a :func:`save_sharded_checkpoint` folder (checksums verified), with the
    per-rank parts of ``rank`` (of rank 0 when the writing run had no such rank)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{str(path / 'state.json')!r} lists no checkpoint files")
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {str(file)!r} is missing")
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        if digest != expected:
            raise CheckpointError(
                f"{str(file)!r} has sha256 {digest}, expected {expected}: the file is truncated "
                "or was modified"
            )
    trees = {"state": manifest.get("state"), "ranks": manifest.get("ranks")}
    world = manifest.get("world_size")
    if _tree_digest(trees) != manifest.get("state_sha256"):
        raise CheckpointError(
            f"the state in {str(path / 'state.json')!r} does not match its checksum"
        )
    if (
        not isinstance(world, int)
        or not isinstance(trees["ranks"], list)
        or len(trees["ranks"]) != world
    ):
        raise CheckpointError(
            f"{str(path / 'state.json')!r} lists per-rank states unlike its world size"
        )
    for name in manifest.get("folders", []):
        if not (path / name).is_dir():
            raise CheckpointError(f"folder {str(path / name)!r} of the checkpoint is missing")
    own = trees["ranks"][rank if 0 <= rank < world else 0]
    reader = FileSystemReader(path / _DCP)
    try:
        stored = reader.read_metadata().state_dict_metadata
    except Exception as exc:  # DCP raises its own and OS errors; re-typed, not hidden
        raise CheckpointError(
            f"cannot read the DCP metadata in {str(path / _DCP)!r}: {exc}"
        ) from exc
    tensors: dict[str, Tensor] = {}
    for key in _tensor_refs([trees["state"], own], []):
        meta = stored.get(key)
        if not isinstance(meta, TensorStorageMetadata):
            raise CheckpointError(f"tensor {key!r} is missing from the checkpoint {str(path)!r}")
        tensors[key] = torch.empty(meta.size, dtype=meta.properties.dtype)
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
            warnings.simplefilter("ignore")
            dcp.load(tensors, storage_reader=FileSystemReader(path / _DCP), no_dist=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read the tensors of {str(path)!r}: {exc}") from exc
    state = _unflatten(trees["state"], tensors)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} state is not a mapping")
    state.update(_unflatten(own, tensors))
    state["step"] = _manifest_step(manifest, path)
    state["folder"] = path
    state["world_size"] = world
    return state
