"""PNG plots of an ablation run: loss curves with CI bands, pool size, archive coverage, QD score,
per-group bars and the degradation curves (group 7). Pure functions of ``results.json``; each
returns the files it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from slime.train.ablations.analysis import arm_table, degradation_summary
from slime.train.ablations.groups import groups
from slime.train.ablations.stats import mean_ci

__all__ = ["write_plots"]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _band(ax, runs: list[dict[str, Any]], series: str, key: str, label: str) -> None:
    """Mean over seeds of ``run[series][i][key]`` against step, with its 95% interval as a band."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for point in run.get(series) or []:
            if point.get(key) is not None:
                by_step.setdefault(point["step"], []).append(point[key])
    if not by_step:
        return
    steps = sorted(by_step)
    cis = [mean_ci(by_step[s]) for s in steps]
    line = ax.plot(steps, [c.mean for c in cis], label=label)[0]
    if all(c.low is not None for c in cis):
        ax.fill_between(
            steps, [c.low for c in cis], [c.high for c in cis], alpha=0.2, color=line.get_color()
        )


def _runs(results, task: str, arm: str) -> list[dict[str, Any]]:
    return [r for r in results["runs"] if r["task"] == task and r["arm"] == arm]


def _arms_on(results, task: str) -> list[str]:
    seen: list[str] = []
    for r in results["runs"]:
        if r["task"] == task and r["arm"] not in seen:
            seen.append(r["arm"])
    return seen


def _curves(results, tasks: list[str], series: str, key: str, ylabel: str, path: Path) -> Path:
    fig = Figure(figsize=(5 * len(tasks), 3.6))
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), i + 1)
        for arm in _arms_on(results, task):
            _band(ax, _runs(results, task, arm), series, key, arm)
        ax.set(title=task, xlabel="step", ylabel=ylabel)
        ax.legend(fontsize=7)
    return _save(fig, path)


def _bars(results, group, path: Path) -> Path:
    tasks = results["tasks"][group.scope]
    metrics = list(dict.fromkeys(c.metric for c in group.checks))
    fig = Figure(figsize=(3.2 * len(metrics), 2.8 * len(tasks)))
    for row, task in enumerate(tasks):
        for col, metric in enumerate(metrics):
            ax = fig.add_subplot(len(tasks), len(metrics), row * len(metrics) + col + 1)
            names, means, errs = [], [], []
            for arm in group.arms:
                ci = arm_table(results["runs"], task, arm, (metric,))[metric]
                if ci is None:
                    continue
                names.append(arm)
                means.append(ci["mean"])
                errs.append(0.0 if ci["low"] is None else (ci["high"] - ci["low"]) / 2)
            if names:
                ax.bar(names, means, yerr=errs, capsize=4, color="tab:blue", alpha=0.7)
                low = min(m - e for m, e in zip(means, errs))
                high = max(m + e for m, e in zip(means, errs))
                if low > 0:  # zoom on the differences; the axis does not start at 0
                    ax.set_ylim(max(0.0, low - 0.1 * (high - low + 1e-12)), None)
            ax.set_title(f"{task}: {metric}", fontsize=8)
            ax.tick_params(labelsize=7)
    return _save(fig, path)


def write_plots(results: dict[str, Any], out: Path) -> list[Path]:
    """Write every plot into ``out``; returns the paths (names stable across runs)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    base_tasks = [t for t in results["tasks"]["baseline"] if "baseline" in _arms_on(results, t)]
    if base_tasks:
        written.append(
            _curves(results, base_tasks, "curve", "val_loss", "val loss", out / "loss_baseline.png")
        )
    ablation = [t for t in results["tasks"]["ablation"] if _arms_on(results, t)]
    if ablation:
        written.append(
            _curves(results, ablation, "curve", "val_loss", "val loss", out / "loss_ablations.png")
        )
        for key, label, name in (
            ("pool_size", "live pods (all layers)", "pool_size.png"),
            ("coverage", "archive coverage", "coverage.png"),
            ("qd_score", "QD score (sum over layers)", "qd_score.png"),
            ("descriptor_variance", "descriptor variance across pods", "descriptor_variance.png"),
        ):
            written.append(_curves(results, ablation, "timeline", key, label, out / name))
    for group in groups(results["groups"]):
        written.append(_bars(results, group, out / f"bars_{group.number}_{group.key}.png"))
        if group.key == "blueprint":
            tasks = [t for t in results["tasks"][group.scope] if _arms_on(results, t)]
            if tasks:
                written.append(_degradation(results, tasks, group.arms, out / "degradation.png"))
    return written


def _degradation(results, tasks: list[str], arms: tuple[str, ...], path: Path) -> Path:
    """Held-out loss against heads removed per layer: solid most important first, dashed least
    important first, mean over seeds with a 95% band."""
    summary = degradation_summary(results["runs"], tasks, arms)
    fig = Figure(figsize=(5 * len(tasks), 3.6))
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), i + 1)
        for arm, c in summary.get(task, {}).items():
            color = None
            for key, style in (("most_first", "-"), ("least_first", "--")):
                cis = c[key]
                label = f"{arm} ({'most' if key == 'most_first' else 'least'} first)"
                line = ax.plot(c["k"], [x["mean"] for x in cis], style, color=color, label=label)
                color = line[0].get_color()
                if all(x["low"] is not None for x in cis):
                    ax.fill_between(c["k"], [x["low"] for x in cis], [x["high"] for x in cis],
                                    alpha=0.15, color=color)  # fmt: skip
        ax.set(title=task, xlabel="heads removed per layer (k)", ylabel="held-out loss")
        ax.legend(fontsize=6)
    return _save(fig, path)
