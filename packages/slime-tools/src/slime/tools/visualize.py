"""``slime visualize``: every plot of a run directory, as PNG or SVG files.

From ``metrics.jsonl``: training curves (slime vs a baseline run when given), pool size with
cumulative births and deaths, archive coverage and QD score (from the archives saved with each
checkpoint when the metrics hold none). From ``model/``: one archive heatmap per layer and the
live pods' behaviour in kernel PCA. A plot whose data the run lacks is skipped
with a note saying what was missing; nothing else is skipped.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from slime.proto import CheckpointError, ConfigError, DataError
from slime.tools._archive_plots import (
    DESCRIPTOR_LABELS,
    OBJECTIVE_LABEL,
    archive_heatmap,
    behaviour_space,
)
from slime.tools._curve_plots import (
    COVERAGE_KEYS,
    QD_SCORE_KEYS,
    archive_progress,
    pool_over_time,
    training_curves,
)
from slime.tools._owned import check_ours
from slime.tools.run import (
    archive_history,
    load_archives,
    load_run_model,
    model_dir,
    read_metrics,
    run_path,
)

__all__ = [
    "COVERAGE_KEYS",
    "DESCRIPTOR_LABELS",
    "FORMATS",
    "OBJECTIVE_LABEL",
    "QD_SCORE_KEYS",
    "VisualizeReport",
    "archive_heatmap",
    "archive_progress",
    "behaviour_space",
    "pool_over_time",
    "save_figure",
    "training_curves",
    "visualize_run",
]

FORMATS = ("png", "svg")
# What every plot `slime visualize` writes says in its metadata (PNG tEXt / SVG dc:description,
# both within the first few hundred bytes); a file of a plot's name without it is the user's and
# is never replaced.
WRITTEN_BY = "written by `slime visualize`"


@dataclass
class VisualizeReport:
    """Files written, and one note per plot skipped (what was missing)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
    """Render ``fig`` headless (Agg) to ``path``; the suffix (.png or .svg) picks the format.

    SVG text stays text (``svg.fonttype = none``), so titles are searchable in the file. The file
    is rendered under a temporary name beside ``path`` and renamed over it when complete, so a
    failed or interrupted render (a full disk) leaves an earlier file at ``path`` whole.

    Raises:
        ConfigError: the suffix is not one of FORMATS.
    """
    return _render(fig, Path(path), dpi=dpi)


def _render(fig: Figure, path: Path, *, dpi: int = 100, description: str | None = None) -> Path:
    """:func:`save_figure`, with ``description`` (when given) in the file's metadata."""
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ConfigError(
            f"expected a file ending in one of {FORMATS}, got {str(path)!r}", "format"
        )
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream, matplotlib.rc_context({"svg.fonttype": "none"}):
            metadata = {"Description": description} if description is not None else None
            fig.savefig(stream, format=fmt, dpi=dpi, metadata=metadata)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it 0600; a plot is an ordinary file
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _attempt(report: VisualizeReport, name: str, make: Callable[[], Figure], path: Path) -> None:
    """Draw one plot into ``path``, or note in ``report`` why its data is missing."""
    try:
        fig = make()
    except DataError as exc:
        report.skipped.append(f"{name}: {exc}")
        return
    report.written.append(_render(fig, path, description=f"plot {WRITTEN_BY}"))


def visualize_run(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    fmt: str = "png",
    baseline: str | os.PathLike[str] | None = None,
) -> VisualizeReport:
    """Write every plot the run's data allows into ``out`` (default ``RUN_DIR/plots``).

    A plot replaces an earlier plot of its name that `slime visualize` wrote; any other file of
    that name is refused before a plot is written.

    Raises:
        ConfigError: ``fmt`` is not png or svg, or ``out`` holds a file of a plot's name that
            `slime visualize` did not write.
        CheckpointError: ``run_dir`` (or ``baseline``) is not a directory, or a file in it is
            corrupt (a missing ``model/`` only skips the plots that need it).
        ArchiveError: an archive saved in ``model/`` or a checkpoint is truncated or tampered.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"expected one of {FORMATS}, got {fmt!r}", "format")
    root = run_path(run_dir)
    out = Path(out) if out is not None else root / "plots"
    records = read_metrics(root)
    base_records = read_metrics(baseline) if baseline is not None else None
    report = VisualizeReport()
    plots: list[tuple[str, Callable[[], Figure], Path]] = []  # drawn once none is refused
    if not records:
        report.skipped.append(
            f"training curves and pool: {root / 'metrics.jsonl'} is absent or empty"
        )
    else:
        plots.append(
            (
                "training curves",
                lambda: training_curves(records, base_records),
                out / f"training_curves.{fmt}",
            )
        )
        plots.append(("pool", lambda: pool_over_time(records), out / f"pool.{fmt}"))
    logged = any(k in r for r in records for k in COVERAGE_KEYS + QD_SCORE_KEYS)
    progress = records if logged else archive_history(root)
    if progress:
        plots.append(
            (
                "archive progress",
                lambda: archive_progress(progress),
                out / f"archive_progress.{fmt}",
            )
        )
    else:
        report.skipped.append(
            f"archive progress: metrics.jsonl logs none of {list(COVERAGE_KEYS + QD_SCORE_KEYS)} "
            f"and no checkpoint under {root / 'checkpoints'} holds an archive"
        )
    try:
        model_dir(root)
    except CheckpointError as exc:  # a baseline run: no SlimeModel, so no pool to draw
        report.skipped.append(f"archive heatmaps and behaviour space: {exc}")
        return _draw(report, plots)
    model = load_run_model(root)
    names = model.config.descriptor_names
    for layer, archive in enumerate(load_archives(root)):
        plots.append(
            (
                f"archive of layer {layer}",
                lambda a=archive, i=layer: archive_heatmap(a, names, title=f"layer {i} archive"),
                out / f"archive_layer{layer}.{fmt}",
            )
        )
    # A pod never measured holds zeros in place of its behaviour: drawn, it would be a point at
    # the origin that no pod occupies. Only measured pods are placed; the note counts the others.
    measured = [(o.n_measurements[o.alive] > 0).cpu() for o in model.organisms]
    descriptors = [
        o.live_descriptors(full=True).cpu()[m] for o, m in zip(model.organisms, measured)
    ]
    fitness = [o.fitness[o.alive].cpu()[m].tolist() for o, m in zip(model.organisms, measured)]
    unmeasured = sum(int((~m).sum()) for m in measured)
    if unmeasured:
        live = sum(len(m) for m in measured)
        report.skipped.append(
            f"behaviour space: {unmeasured} of {live} live pods never measured (no descriptors "
            "yet), left out of it"
        )
    plots.append(
        (
            "behaviour space",
            lambda: behaviour_space(descriptors, fitness),
            out / f"behaviour_space.{fmt}",
        )
    )
    return _draw(report, plots)


def _draw(
    report: VisualizeReport, plots: list[tuple[str, Callable[[], Figure], Path]]
) -> VisualizeReport:
    for _, _, path in plots:  # refuse before anything is written
        check_ours(path, WRITTEN_BY)
    for name, make, path in plots:
        _attempt(report, name, make, path)
    return report
