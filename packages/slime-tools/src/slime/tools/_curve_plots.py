"""Figures over training time from metrics.jsonl records: loss curves, pool, archive progress.

Each function builds and returns a matplotlib Figure (object API, no pyplot state) or raises
DataError naming the fields it looked for when the records hold none of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from slime.proto import DataError
from slime.tools.run import metric_series

__all__ = [
    "COVERAGE_KEYS",
    "QD_SCORE_KEYS",
    "archive_progress",
    "pool_over_time",
    "training_curves",
]

Records = Sequence[dict[str, Any]]
STEP_LABEL = "training step (optimizer updates)"
LOSS_LABEL = "cross-entropy loss (nats per token)"
# Names a trainer may log archive statistics under, most specific first.
COVERAGE_KEYS = ("archive_coverage", "coverage")
QD_SCORE_KEYS = ("archive_qd_score", "qd_score")
# Largest magnitude drawn: beyond it an axis's span (plus margins) can overflow to inf, and
# matplotlib's tick locator fails with a bare ValueError while the file is written.
LARGEST_DRAWN = 1e307


def _drawable(key: str, steps: Sequence[float], values: Sequence[float]) -> None:
    """DataError naming the first finite step or value of ``key`` too large to draw."""
    for what, numbers in (("step", steps), ("value", values)):
        for number in numbers:
            if math.isfinite(number) and abs(number) > LARGEST_DRAWN:
                raise DataError(
                    f"'{key}' has the {what} {number!r}, too large to draw (beyond "
                    f"±{LARGEST_DRAWN:g}); the metrics are damaged or the run diverged"
                )


def _first_series(records: Records, keys: Sequence[str]) -> tuple[str, list, list] | None:
    for key in keys:
        steps, values = metric_series(list(records), key)
        if steps:
            _drawable(key, steps, values)
            return key, steps, values
    return None


def training_curves(records: Records, baseline: Records | None = None) -> Figure:
    """Train loss (``kind == "train"``, ``loss``) and validation loss (``kind == "eval"``,
    ``val_loss``) against step; the baseline run's curves dashed beside them when given.

    Raises:
        DataError: neither run logged a loss, or a step or value (a cumulative count
            for births and deaths) is finite but beyond ±LARGEST_DRAWN (naming it).
    """
    runs = [("slime", records)] + ([("baseline", baseline)] if baseline is not None else [])
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    drawn = 0
    for name, run in runs:
        dashes = "--" if name == "baseline" else "-"
        train = metric_series(list(run), "loss", kind="train")
        val = metric_series(list(run), "val_loss", kind="eval")
        _drawable("loss", *train)
        _drawable("val_loss", *val)
        if train[0]:
            ax.plot(*train, linestyle=dashes, linewidth=1, label=f"{name} train")
            drawn += 1
        if val[0]:
            ax.plot(*val, linestyle=dashes, marker="o", markersize=3, label=f"{name} validation")
            drawn += 1
    if not drawn:
        raise DataError("no loss logged: looked for 'loss' (kind train) and 'val_loss' (kind eval)")
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel(LOSS_LABEL)
    vs = " vs baseline" if baseline is not None else ""
    ax.set_title(f"training curves: slime{vs}")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def pool_over_time(records: Records) -> Figure:
    """Live pods (``pool_size``, all layers) and cumulative births and deaths (per-event
    ``births`` / ``deaths`` counts) against step; a panel whose fields are absent says so.
    ``kind == "summary"`` records are left out: they hold the run's totals, not events.

    Raises:
        DataError: none of ``pool_size``, ``births``, ``deaths`` was logged, or a step or value (a cumulative count
            for births and deaths) is finite but beyond ±LARGEST_DRAWN (naming it).
    """
    records = [r for r in records if r.get("kind") != "summary"]
    pool = metric_series(list(records), "pool_size")
    births = metric_series(list(records), "births")
    deaths = metric_series(list(records), "deaths")
    for key, series in (("pool_size", pool), ("births", births), ("deaths", deaths)):
        _drawable(key, series[0], list(accumulate(series[1])) if key != "pool_size" else series[1])
    if not (pool[0] or births[0] or deaths[0]):
        raise DataError("no pool events logged: looked for 'pool_size', 'births', 'deaths'")
    fig = Figure(figsize=(6.4, 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    if pool[0]:
        top.step(*pool, where="post", color="tab:green", marker="o", markersize=3)
        top.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        top.text(0.5, 0.5, "pool_size was not logged", ha="center", transform=top.transAxes)
    top.set_ylabel("live pseudopods (all layers)")
    top.set_title("pool size and lifecycle")
    for (steps, counts), name, colour in ((births, "births", "tab:blue"), (deaths, "deaths", "k")):
        if steps:
            cumulative = list(accumulate(counts))
            bottom.step(
                steps, cumulative, where="post", color=colour, marker="o", markersize=3, label=name
            )
    if births[0] or deaths[0]:
        bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
        bottom.legend()
    else:
        bottom.text(
            0.5, 0.5, "births / deaths were not logged", ha="center", transform=bottom.transAxes
        )
    bottom.set_ylabel("pods (cumulative count)")
    bottom.set_xlabel(STEP_LABEL)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return fig


def archive_progress(records: Records) -> Figure:
    """Archive coverage (% of cells holding an elite, mean over layers) and QD score (sum of
    elite fitness over layers) against step, from the first of :data:`COVERAGE_KEYS` /
    :data:`QD_SCORE_KEYS` in the records (metrics.jsonl, or slime.tools.run.archive_history).

    Raises:
        DataError: neither statistic was logged, or a step or value (a cumulative count
            for births and deaths) is finite but beyond ±LARGEST_DRAWN (naming it).
    """
    coverage = _first_series(records, COVERAGE_KEYS)
    qd = _first_series(records, QD_SCORE_KEYS)
    if coverage is None and qd is None:
        raise DataError(
            f"no archive statistics logged: looked for {list(COVERAGE_KEYS + QD_SCORE_KEYS)}"
        )
    fig = Figure(figsize=(6.4, 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    if coverage is not None:
        _, steps, values = coverage
        top.plot(steps, [100 * v for v in values], marker="o", markersize=3)
    else:
        top.text(0.5, 0.5, "coverage was not logged", ha="center", transform=top.transAxes)
    top.set_ylabel("coverage (% of cells, mean of layers)")
    top.set_title("archive coverage and QD score")
    if qd is not None:
        _, steps, values = qd
        bottom.plot(steps, values, marker="o", markersize=3, color="tab:purple")
    else:
        bottom.text(0.5, 0.5, "QD score was not logged", ha="center", transform=bottom.transAxes)
    bottom.set_ylabel("QD score (sum of elite fitness, all layers)")
    bottom.set_xlabel(STEP_LABEL)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return fig
