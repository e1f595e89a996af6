"""Archive files: ``tensors.safetensors`` plus ``archive.json`` (no pickle), checked by sha256.

A save writes both files to temporary names in the folder and renames them into place, under an
exclusive lock of the folder (a load holds a shared one): a save that fails leaves the previous
files whole (a file being replaced is moved aside first, and put back if a later rename fails;
an OSError becomes an ArchiveError naming the folder and the OS's reason), and concurrent saves
to one folder land one after the other, never interleaved.

Genomes are stored as tagged JSON trees whose tensor leaves point into the safetensors file, so
tuples stay tuples, bools stay bools and floats (NaN included) come back exactly.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as dump_tensors
from slime.memory._stores import ColumnStore, GenomeStore, PayloadStore
from slime.proto import ArchiveError

__all__ = ["SavedArchive", "load_archive", "save_archive"]

FORMAT = "slime.memory.archive/1"
TENSORS = "tensors.safetensors"
META = "archive.json"


@dataclass(frozen=True)
class SavedArchive:
    """What :func:`load_archive` read, checked against the archive it is loaded into."""

    path: Path
    kind: str
    config: dict[str, Any]
    config_tensors: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]
    store_kind: str | None  # "payloads", "columns" or None (never filled)
    genomes: dict[int, dict[str, Any]]
    columns: dict[str, torch.Tensor]

    def state_matrix(self, cells: int, k: int) -> torch.Tensor:
        """The archive's ``(cells, 3 + k)`` state: objective, threshold, occupied, descriptor."""
        expected = {
            "objective": (cells,),
            "threshold": (cells,),
            "occupied": (cells,),
            "descriptors": (cells, k),
        }
        for name, shape in expected.items():
            tensor = self.state.get(name)
            if tensor is None or tuple(tensor.shape) != shape:
                got = None if tensor is None else tuple(tensor.shape)
                raise ArchiveError(f"{self.path}: {name!r} has shape {got}, expected {shape}")
        s = self.state
        for name in expected:
            if not s[name].is_floating_point() and s[name].dtype != torch.bool:
                raise ArchiveError(f"{self.path}: {name!r} has dtype {s[name].dtype}")
        occupied = s["occupied"].to(torch.float64)
        if not bool(((occupied == 0) | (occupied == 1)).all()):
            raise ArchiveError(f"{self.path}: 'occupied' holds values other than 0 and 1")
        live = occupied > 0
        if not bool(torch.isfinite(s["objective"][live]).all()):
            raise ArchiveError(f"{self.path}: an elite's objective is NaN or infinite")
        # A threshold is finite, or -inf in an empty cell of a plain archive: +inf or NaN
        # would keep its cell shut for ever.
        bad = torch.nonzero(s["threshold"].isnan() | (s["threshold"] == torch.inf)).squeeze(1)
        if bad.numel():
            cell = int(bad[0])
            raise ArchiveError(
                f"{self.path}: cell {cell} has threshold {float(s['threshold'][cell])!r} "
                "(must be finite, or -inf)"
            )
        if not bool(torch.isfinite(s["descriptors"][live]).all()):
            raise ArchiveError(f"{self.path}: an elite's descriptor is NaN or infinite")
        numbers = [s["objective"], s["threshold"], occupied]
        return torch.cat([torch.stack(numbers, dim=1), s["descriptors"]], dim=1)

    def genome_store(
        self, occupied: list[int], cells: int, device: torch.device
    ) -> GenomeStore | None:
        """The genome store, checked to hold a genome for every ``occupied`` cell."""
        if self.store_kind is None:
            if occupied:
                raise ArchiveError(f"{self.path}: occupied cells but no stored genomes")
            return None
        if self.store_kind == PayloadStore.kind:
            if set(occupied) != set(self.genomes):
                raise ArchiveError(f"{self.path}: occupied cells and stored genomes disagree")
            return PayloadStore.from_payloads(cells, self.genomes)
        for name, column in self.columns.items():
            if column.shape[:1] != (cells,):
                shape = tuple(column.shape)
                raise ArchiveError(f"{self.path}: genome column {name!r} has shape {shape}")
        return ColumnStore.from_columns(cells, device, self.columns)


def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        # A path is not unique on its own: {"a/b": x} and {"a": {"b": y}} both give "…/a/b".
        unique, n = key, len(tensors)
        while unique in tensors:
            unique, n = f"{key}#{n}", n + 1
        tensors[unique] = value.detach().cpu().contiguous()
        return {"tensor": unique}
    if isinstance(value, dict):
        return {"dict": {k: _encode(v, f"{key}/{k}", tensors) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        tag = "list" if isinstance(value, list) else "tuple"
        return {tag: [_encode(v, f"{key}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}  # "nan", "inf", "-inf": JSON has no literal for them
    return {"plain": value}


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    ((tag, body),) = node.items()
    if tag == "tensor":
        return tensors[body]
    if tag == "dict":
        return {k: _decode(v, tensors) for k, v in body.items()}
    if tag in ("list", "tuple"):
        items = [_decode(v, tensors) for v in body]
        return items if tag == "list" else tuple(items)
    if tag == "float":
        return float(body)
    if tag == "plain":
        return body
    raise ValueError(f"unknown node tag {tag!r}")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, allow_nan=False).encode()


def save_archive(
    path: Path,
    *,
    kind: str,
    config: dict[str, Any],
    config_tensors: dict[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    store: Any,
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in {**config_tensors, **state}.items():
        tensors[f"archive/{name}"] = tensor.detach().cpu().contiguous()
    genomes = store.payloads if store is not None and store.kind == "payloads" else {}
    columns = store.columns if store is not None and store.kind == "columns" else {}
    encoded = {str(cell): _encode(g, f"genome/{cell}", tensors) for cell, g in genomes.items()}
    for name, column in columns.items():
        tensors[f"column/{name}"] = column.detach().cpu().contiguous()
    config_json = {k: _encode(v, f"config/{k}", tensors) for k, v in config.items()}
    blob = dump_tensors(tensors)
    meta = {
        "format": FORMAT,
        "kind": kind,
        "config": config_json,
        "config_tensors": sorted(config_tensors),
        "store": None if store is None else store.kind,
        "genomes": encoded,
        "columns": sorted(columns),
        "tensors_sha256": _digest(blob),
    }
    document = {"meta": meta, "meta_sha256": _digest(_canonical(meta))}
    text = json.dumps(document, sort_keys=True, allow_nan=False, indent=1).encode()
    try:
        if path.exists() and not path.is_dir():
            raise ArchiveError(f"cannot save an archive to {path}: it is a file, not a folder")
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:  # a parent is a file
        raise ArchiveError(f"cannot save an archive to {path}: {e}") from e
    except OSError as e:  # no permission, a read-only file system, a full disk
        raise ArchiveError(f"cannot save an archive to {path}: {_reason(e)}") from e
    try:
        with _locked(path, exclusive=True):
            _check_replaceable(path)
            _replace_files(path, {TENSORS: blob, META: text})
    except OSError as e:
        notes = getattr(e, "__notes__", None)
        after = "; ".join(notes) if notes else "the files it held are unchanged"
        raise ArchiveError(f"cannot save an archive to {path}: {_reason(e)}; {after}") from e


def _check_replaceable(folder: Path) -> None:
    """Raise ArchiveError unless the files a save would replace in ``folder`` are an archive's:
    an ``archive.json`` of this format, or (without one) a ``tensors.safetensors`` whose header
    holds an archive's state. A folder of someone else's files named so keeps them."""
    meta, tensors = folder / META, folder / TENSORS
    if meta.exists():
        try:  # not read unless a regular file: a link to /dev/zero or a FIFO never ends
            document = json.loads(meta.read_bytes().decode("utf-8")) if meta.is_file() else None
            ours = document["meta"]["format"] == FORMAT
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            ours = False
        if not ours:
            raise ArchiveError(
                f"cannot save an archive to {folder}: its {META} is not a slime archive's "
                f"({FORMAT}); it is left as it was (save to another folder, or remove it)"
            )
    elif tensors.exists() and not _holds_archive_state(tensors):
        raise ArchiveError(
            f"cannot save an archive to {folder}: its {TENSORS} is not a slime archive's; "
            "it is left as it was (save to another folder, or remove it)"
        )


def _holds_archive_state(file: Path) -> bool:
    """Whether ``file``'s safetensors header names an archive's state tensor (a save that
    stopped between its two renames leaves such a file without its ``archive.json``). Only a
    regular file is opened (a FIFO would block the open)."""
    if not file.is_file():
        return False
    try:
        with file.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size <= 100_000_000:
                return False
            header = json.loads(handle.read(size).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(header, dict) and "archive/objective" in header


def _reason(error: OSError) -> str:
    """What went wrong, in the OS's words: ``No space left on device (ENOSPC)``."""
    if error.errno is None:
        return str(error) or type(error).__name__
    name = errno.errorcode.get(error.errno, f"errno {error.errno}")
    return f"{error.strerror or os.strerror(error.errno)} ({name})"


def _replace_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (name -> bytes) into ``folder``, replacing those there, or raise OSError
    and leave the folder's files as they were.

    Every file is written and flushed under a temporary name first, then renamed into place.
    A file it replaces is first moved aside (not overwritten), so a rename failing after the
    first (rare: the data is already on disk) can put back the files already replaced.
    """
    staged: dict[str, Path] = {}
    moved: list[list[Any]] = []  # [name, where its previous file waits or None, placed]
    try:
        for name, data in files.items():
            staged[name] = _write_temporary(folder, name, data)
        for name, temporary in staged.items():
            kept: Path | None = folder / f".{name}.{uuid.uuid4().hex}.old"
            try:
                os.replace(folder / name, kept)
            except FileNotFoundError:
                kept = None
            entry = [name, kept, False]
            moved.append(entry)
            os.replace(temporary, folder / name)
            entry[2] = True
    except BaseException as error:
        _put_back(folder, moved, error)
        raise
    finally:
        for temporary in staged.values():
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
    for _, kept, _ in moved:
        if kept is not None:
            with contextlib.suppress(OSError):
                kept.unlink()


def _put_back(folder: Path, moved: list[list[Any]], error: BaseException) -> None:
    """Undo :func:`_replace_files`' renames; a file that cannot be put back stays where it was
    moved, and ``error`` says where."""
    for name, kept, placed in reversed(moved):
        try:
            if kept is not None:
                os.replace(kept, folder / name)
            elif placed:  # there was no such file before
                (folder / name).unlink(missing_ok=True)
        except OSError as e:
            where = kept if kept is not None else folder / name
            error.add_note(f"could not restore {folder / name} ({_reason(e)}); see {where}")


def _write_temporary(folder: Path, name: str, data: bytes) -> Path:
    """``data`` written and flushed to disk in a new file of ``folder`` (removed if that fails),
    created as ``open`` would create it (mode 0o666 less the umask)."""
    temporary = folder / f".{name}.{uuid.uuid4().hex}.tmp"
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


@contextmanager
def _locked(folder: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold an advisory lock of ``folder`` (POSIX ``flock``; none where the platform has none
    or the folder cannot be opened for reading: the renames are still atomic, one by one)."""
    try:
        import fcntl

        handle = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        handle = None
    if handle is None:
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(handle)  # releases the lock


def load_archive(path: Path, *, device: torch.device | str | None) -> SavedArchive:
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise ArchiveError(f"archive folder {path} {what}")
    with _locked(path, exclusive=False):  # both files from one save
        # Checked under the lock: a save moves each file aside for a moment before the new
        # one takes its name, so outside it a concurrent save looks like a missing file.
        for name in (META, TENSORS):
            if not (path / name).is_file():  # not read otherwise: /dev/zero, a FIFO never end
                what = "is no regular file" if (path / name).exists() else "is missing"
                raise ArchiveError(f"archive file {path / name} {what}")
        try:
            text = (path / META).read_bytes()
            blob = (path / TENSORS).read_bytes()
        except OSError as e:
            raise ArchiveError(f"cannot read the archive files in {path}: {e}") from e
    try:
        document = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArchiveError(
            f"{path / META} is not readable JSON (damaged or truncated?): {e}"
        ) from e
    if not isinstance(document, dict) or set(document) != {"meta", "meta_sha256"}:
        raise ArchiveError(f"{path / META} is not a slime archive document")
    meta = document["meta"]
    if not isinstance(meta, dict) or _digest(_canonical(meta)) != document["meta_sha256"]:
        raise ArchiveError(f"{path / META} was modified after saving (metadata sha256 mismatch)")
    if meta.get("format") != FORMAT:
        raise ArchiveError(f"{path / META} has format {meta.get('format')!r}, expected {FORMAT!r}")
    if not isinstance(meta.get("kind"), str) or not isinstance(meta.get("config"), dict):
        raise ArchiveError(f"{path / META} is malformed: 'kind' or 'config' missing or mistyped")
    if _digest(blob) != meta.get("tensors_sha256"):
        raise ArchiveError(f"{path / TENSORS} is truncated or modified (sha256 mismatch)")
    try:
        tensors = load_tensors(blob)
    except SafetensorError as e:
        raise ArchiveError(f"{path / TENSORS} is not a valid safetensors file: {e}") from e
    target = torch.device(device) if device is not None else torch.device("cpu")
    tensors = {k: v.to(target, copy=True) for k, v in tensors.items()}  # own, writable memory
    try:
        config = {k: _decode(v, tensors) for k, v in meta["config"].items()}
        genomes = {int(c): _decode(g, tensors) for c, g in meta["genomes"].items()}
        config_tensors = {n: tensors[f"archive/{n}"] for n in meta["config_tensors"]}
        columns = {n: tensors[f"column/{n}"] for n in meta["columns"]}
        store_kind = meta["store"]
        if store_kind not in (None, "payloads", "columns"):
            raise ValueError(f"unknown genome store {store_kind!r}")
    except (KeyError, ValueError, AttributeError, TypeError) as e:
        raise ArchiveError(f"{path / META} is malformed: {e!r}") from e
    state = {
        k.removeprefix("archive/"): v
        for k, v in tensors.items()
        if k.startswith("archive/") and k.removeprefix("archive/") not in config_tensors
    }
    return SavedArchive(
        path, meta["kind"], config, config_tensors, state, store_kind, genomes, columns
    )
