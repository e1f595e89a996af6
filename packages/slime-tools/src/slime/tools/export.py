"""Exporting a frozen SlimeModel: ONNX (checked in onnxruntime), torch.export (.pt2), TorchScript.

Every format exports :class:`~slime.tools.frozen.FrozenSlimeLM`, the live pool captured at one
moment, so an exported model has no lifecycle. Batch and sequence length stay dynamic (sequence
length up to ``block_size``) in ONNX and .pt2; a TorchScript trace records shape arithmetic, so it
runs at other shapes too. Each export is checked against the frozen model in PyTorch on two
different ``(batch, seq)`` shapes before it is reported done.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from slime.core import SlimeModel
from slime.proto import CheckpointError, ConfigError, SlimeError
from slime.tools._errors import require
from slime.tools.frozen import FrozenSlimeLM, freeze
from slime.tools.run import load_run_model
from torch import Tensor

__all__ = [
    "FORMATS",
    "check_shapes",
    "ONNX_ATOL",
    "ONNX_RTOL",
    "ExportCheck",
    "ExportMismatchError",
    "export_onnx",
    "export_run",
    "export_torch",
    "export_torchscript",
    "verify_onnx",
    "verify_torch",
    "verify_torchscript",
]

FORMATS = ("onnx", "torch-export", "torchscript")
SUFFIX = {"onnx": ".onnx", "torch-export": ".pt2", "torchscript": ".ts"}
# onnxruntime vs PyTorch logits, float32 on CPU: |ort - torch| <= ONNX_ATOL + ONNX_RTOL * |torch|.
ONNX_ATOL = 1e-4
ONNX_RTOL = 1e-4
MAX_BATCH = 4096


class ExportMismatchError(SlimeError):
    """An exported model's outputs differ from the frozen model's beyond the stated tolerance."""


@dataclass(frozen=True)
class ExportCheck:
    """What an export was checked against: each ``(batch, seq)`` shape and the largest absolute
    logit difference from the frozen PyTorch model over all of them."""

    path: Path
    format: str
    shapes: tuple[tuple[int, int], ...]
    max_abs_diff: float


def _check_frozen(model: object, what: str) -> FrozenSlimeLM:
    if isinstance(model, SlimeModel):
        raise ConfigError(
            f"{what} cannot capture a living pool (births, deaths, archives); "
            "export slime.tools.freeze(model) instead",
            "model",
        )
    if not isinstance(model, FrozenSlimeLM):
        raise ConfigError(f"expected a FrozenSlimeLM, got {type(model).__name__}", "model")
    return model


def _example(frozen: FrozenSlimeLM, batch: int, seq: int, seed: int) -> Tensor:
    vocab = frozen.config["vocab_size"]
    device = frozen.wte.weight.device
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq), generator=g).to(device)


def check_shapes(frozen: FrozenSlimeLM) -> tuple[tuple[int, int], ...]:
    """Two ``(batch, seq)`` shapes that differ in both dims, within ``block_size``."""
    block = frozen.block_size
    return ((1, max(1, block // 2)), (3, block))


def _dynamic_shapes(frozen: FrozenSlimeLM) -> tuple[dict[int, object], ...]:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    if frozen.block_size == 1:
        return ({0: batch},)
    return ({0: batch, 1: torch.export.Dim("seq", min=1, max=frozen.block_size)},)


def _example_input(frozen: FrozenSlimeLM) -> Tensor:
    # Neither dim is 1 where avoidable: torch.export specialises example sizes of 0 and 1.
    return _example(frozen, 2, min(2, frozen.block_size), seed=0)


def _max_diff(a: Tensor, b: Tensor) -> float:
    return float((a.detach().double().cpu() - b.detach().double().cpu()).abs().max())


# -- ONNX ------------------------------------------------------------------------------------------


def export_onnx(frozen: FrozenSlimeLM, path: str | os.PathLike[str]) -> Path:
    """Write ``frozen`` as ONNX (dynamo exporter, opset 18) with dynamic batch and sequence.

    The ``slime::pool_attention`` op becomes standard ONNX operators through a custom translation
    table (see slime.tools._onnx_attention). Input ``idx`` ``(batch, seq)`` int64, output
    ``logits`` ``(batch, seq, vocab)`` float32.

    Raises:
        ConfigError: ``frozen`` is a live SlimeModel or not a FrozenSlimeLM.
        MissingExtraError: onnx or onnxscript is not installed (extra ``onnx``).
    """
    frozen = _check_frozen(frozen, "ONNX export")
    for module in ("onnx", "onnxscript"):
        require(module, "onnx", "ONNX export")
    from slime.tools._onnx_attention import translation_table

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        frozen,
        (_example_input(frozen),),
        dynamo=True,
        input_names=["idx"],
        output_names=["logits"],
        dynamic_shapes=_dynamic_shapes(frozen),
        custom_translation_table=translation_table(),
        opset_version=18,
        verbose=False,
    )
    program.save(str(path))
    return path


def verify_onnx(frozen: FrozenSlimeLM, path: str | os.PathLike[str]) -> ExportCheck:
    """Run the ONNX file in onnxruntime (CPU) on :func:`check_shapes` and compare with PyTorch.

    Raises:
        MissingExtraError: onnxruntime is not installed (extra ``onnx``).
        ExportMismatchError: logits differ beyond ``ONNX_ATOL + ONNX_RTOL * |torch|``.
    """
    require("onnxruntime", "onnx", "checking an ONNX export")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    shapes = check_shapes(frozen)
    for seed, (batch, seq) in enumerate(shapes, start=1):
        idx = _example(frozen, batch, seq, seed)
        with torch.no_grad():
            expected = frozen(idx).float().cpu()
        got = torch.from_numpy(session.run(["logits"], {"idx": idx.cpu().numpy()})[0])
        if got.shape != expected.shape:
            raise ExportMismatchError(
                f"{path}: logits shape {tuple(got.shape)} != PyTorch's {tuple(expected.shape)}"
            )
        excess = (got - expected).abs() - (ONNX_ATOL + ONNX_RTOL * expected.abs())
        worst = max(worst, _max_diff(got, expected))
        if bool((excess > 0).any()):
            raise ExportMismatchError(
                f"{path}: onnxruntime logits at shape {(batch, seq)} differ from PyTorch by up to "
                f"{_max_diff(got, expected):.3g}, over atol {ONNX_ATOL} + rtol {ONNX_RTOL}"
            )
    return ExportCheck(Path(path), "onnx", shapes, worst)


# -- torch.export ----------------------------------------------------------------------------------


def export_torch(frozen: FrozenSlimeLM, path: str | os.PathLike[str]) -> Path:
    """Write ``frozen`` as a torch.export ``.pt2`` with dynamic batch and sequence.

    The program calls the ``slime::pool_attention`` op: import slime.kernels before
    ``torch.export.load`` so the op is registered (Triton on CUDA, torch elsewhere).
    """
    frozen = _check_frozen(frozen, "torch.export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.export.export(
        frozen, (_example_input(frozen),), dynamic_shapes=_dynamic_shapes(frozen)
    )
    torch.export.save(program, str(path))
    return path


def _compare(frozen: FrozenSlimeLM, run, path: Path, fmt: str) -> ExportCheck:
    """Compare ``run(idx)`` with ``frozen(idx)`` on :func:`check_shapes`; exact up to ``ONNX_ATOL``
    (same ops in the same order, so in practice 0)."""
    worst = 0.0
    shapes = check_shapes(frozen)
    for seed, (batch, seq) in enumerate(shapes, start=1):
        idx = _example(frozen, batch, seq, seed)
        with torch.no_grad():
            diff = _max_diff(run(idx), frozen(idx))
        if not diff <= ONNX_ATOL:
            raise ExportMismatchError(
                f"{path}: {fmt} logits at shape {(batch, seq)} differ from the frozen model by "
                f"{diff:.3g} (> {ONNX_ATOL})"
            )
        worst = max(worst, diff)
    return ExportCheck(path, fmt, shapes, worst)


def verify_torch(frozen: FrozenSlimeLM, path: str | os.PathLike[str]) -> ExportCheck:
    """Load the .pt2 back and compare it with ``frozen`` (raises ExportMismatchError)."""
    import slime.kernels  # noqa: F401  (the program calls slime::pool_attention)

    module = torch.export.load(str(path)).module()
    return _compare(frozen, module, Path(path), "torch-export")


# -- TorchScript -----------------------------------------------------------------------------------


def export_torchscript(frozen: FrozenSlimeLM, path: str | os.PathLike[str]) -> Path:
    """Write ``torch.jit.trace(frozen)`` (TorchScript is deprecated upstream; see the README).

    Only tracing of the frozen model is supported: scripting fails on it, and a living pool can
    never be captured. The trace skips FrozenSlimeLM's input checks, so a sequence longer than
    ``block_size`` fails inside the position embedding instead of with a ConfigError.

    Raises:
        ConfigError: ``frozen`` is a live SlimeModel or not a FrozenSlimeLM.
    """
    import warnings

    frozen = _check_frozen(frozen, "TorchScript")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The deprecation notice is the README's first sentence on TorchScript; not repeated here.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=Warning)
        traced = torch.jit.trace(frozen, (_example_input(frozen),))
        traced.save(str(path))
    return path


def verify_torchscript(frozen: FrozenSlimeLM, path: str | os.PathLike[str]) -> ExportCheck:
    """Load the TorchScript file back and compare it with ``frozen`` (raises ExportMismatchError)."""
    import warnings

    import slime.kernels  # noqa: F401  (the trace calls slime::pool_attention)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=Warning)
        module = torch.jit.load(str(path))
    return _compare(frozen, module, Path(path), "torchscript")


# -- a run directory -------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _remove_stale_partials(path: Path) -> None:
    """Delete the partial files an export to ``path`` killed midway left beside it (SIGKILL, a
    power cut: its ``finally`` never ran): ``.<stem>.<pid>.partial<suffix>`` (and ONNX external
    data after it) of a process that no longer runs. An export still running keeps its own."""
    if not path.parent.is_dir():
        return
    pattern = re.compile(
        rf"^\.{re.escape(path.stem)}\.(\d+)\.partial{re.escape(path.suffix)}(?:\..*)?$"
    )
    for entry in path.parent.iterdir():
        found = pattern.match(entry.name)
        if found and not _alive(int(found.group(1))) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)


def export_run(
    run_dir: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str] | None = None
) -> ExportCheck:
    """Freeze the model of ``RUN_DIR/model``, export it as ``fmt`` and check the export.

    Args:
        fmt: one of :data:`FORMATS`.
        out: the file to write; default ``RUN_DIR/export/model.<onnx|pt2|ts>``.

    Raises:
        ConfigError: unknown ``fmt``; an ``out`` that exists (never replaced).
        CheckpointError: the run has no saved model (e.g. a baseline run).
        MissingExtraError: ONNX without the ``onnx`` extra.
        ExportMismatchError: the export's outputs differ from the frozen model's.
        CheckpointError: the export could not be written (a full disk, no permission); a file
            already at the path is left as it was.

    The partial files of an earlier export to the same path that was killed midway (its
    process gone) are deleted first; nothing else beside ``out`` is touched.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"expected one of {FORMATS}, got {fmt!r}", "format")
    if out is not None and (Path(out).exists() or Path(out).is_symlink()):
        # A path the caller named may be anything (the run's config.yaml, a checkpoint): it is
        # never replaced. The default path under RUN_DIR/export/ is the export's own.
        raise ConfigError(
            f"{str(out)!r} exists; an export never replaces a file (remove it or name another)",
            "--out",
        )
    frozen = freeze(load_run_model(run_dir))
    path = Path(out) if out is not None else Path(run_dir) / "export" / f"model{SUFFIX[fmt]}"
    # Written and checked under a temporary name, then renamed over ``path``: a failed or refused
    # write (a full disk) leaves an earlier export at ``path`` whole.
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    _remove_stale_partials(path)
    try:
        if fmt == "onnx":
            check = verify_onnx(frozen, export_onnx(frozen, partial))
        elif fmt == "torch-export":
            check = verify_torch(frozen, export_torch(frozen, partial))
        else:
            check = verify_torchscript(frozen, export_torchscript(frozen, partial))
        os.replace(partial, path)
    except OSError as exc:
        raise CheckpointError(
            f"cannot write the export {str(path)!r}: {exc.strerror or exc}; anything already "
            "there is unchanged"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
        for extra in partial.parent.glob(f"{partial.name}*"):  # ONNX external data, if any
            extra.unlink(missing_ok=True)
    return dataclasses.replace(check, path=path)
