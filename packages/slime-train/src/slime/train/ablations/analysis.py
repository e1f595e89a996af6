"""From raw per-seed runs to comparisons and verdicts (pure functions of ``results.json``)."""

from __future__ import annotations

from typing import Any

from slime.train.ablations.groups import Check, Group, groups
from slime.train.ablations.stats import compare, mean_ci

__all__ = [
    "analyse",
    "arm_table",
    "degradation_summary",
    "metric_values",
    "nas_summary",
    "pooled_spearman",
]

SPEARMAN_METRICS = {
    "grad": "gradient magnitude",
    "task": "masked-loss contribution (probe batch)",
    "blend": "0.7/0.2/0.1 blend",
    "taylor": "first-order (Taylor) estimate",
}


def metric_values(runs: list[dict[str, Any]], task: str, arm: str, metric: str) -> list[float]:
    """Per-seed values of ``metric`` for ``arm`` on ``task`` (runs where it is undefined left out)."""
    return [
        r[metric]
        for r in runs
        if r["task"] == task and r["arm"] == arm and r.get(metric) is not None
    ]


def _tasks(results: dict[str, Any], group: Group) -> list[str]:
    return list(results["tasks"][group.scope])


def _check(runs, task: str, check: Check) -> dict[str, Any]:
    a = metric_values(runs, task, check.a, check.metric)
    b = metric_values(runs, task, check.b, check.metric)
    row: dict[str, Any] = {"task": task, "a": check.a, "b": check.b, "metric": check.metric}
    if check.metric.startswith("target_"):  # runs that never reached the target are left out
        row["reached"] = {side: _reached(runs, task, name) for side, name in (("a", check.a),
                                                                              ("b", check.b))}  # fmt: skip
    if not a or not b:
        return {**row, "outcome": "not measured", "comparison": None}
    result = compare(check.metric, a, b, check.better)
    return {**row, "outcome": result.outcome, "comparison": result.to_dict()}


def _reached(runs: list[dict[str, Any]], task: str, arm: str) -> str:
    """``"k/n"``: runs of ``arm`` on ``task`` that reached the target, of those that had one."""
    had = [
        r
        for r in runs
        if r["task"] == task and r["arm"] == arm and r.get("target_loss") is not None
    ]
    return f"{sum(r.get('target_time_s') is not None for r in had)}/{len(had)}"


def pooled_spearman(runs: list[dict[str, Any]], tasks: list[str], arms: tuple[str, ...]) -> dict:
    """Each candidate metric's Spearman with the held-out contribution: interval over all runs."""
    out = {}
    for key in SPEARMAN_METRICS:
        values = [
            r[f"spearman_{key}"]
            for r in runs
            if r["task"] in tasks and r["arm"] in arms and r.get(f"spearman_{key}") is not None
        ]
        out[key] = mean_ci(values).to_dict() if values else None
    return out


def _spearman_verdict(pooled: dict[str, Any]) -> str:
    parts = []
    for key, label in SPEARMAN_METRICS.items():
        ci = pooled[key]
        if ci is None or ci["low"] is None:
            parts.append(f"{label}: not enough runs")
        elif ci["low"] > 0:
            parts.append(f"{label} TRACKS the task (rho {ci['mean']:.2f}, CI above 0)")
        elif ci["high"] < 0:
            parts.append(f"{label} runs AGAINST the task (rho {ci['mean']:.2f}, CI below 0)")
        else:
            parts.append(
                f"{label} does NOT clearly track the task (rho {ci['mean']:.2f}, CI reaches 0)"
            )
    return "; ".join(parts) + "."


def _cost_note(runs: list[dict[str, Any]]) -> str | None:
    shipped = [r.get("distinct_costs") for r in runs if r["arm"] in ("slime", "acc_only")]
    shipped = [d for d in shipped if d is not None]
    if shipped and max(shipped) == 1:
        return (
            "With the shipped cost (parameter bytes) every pod costs the same, so the default "
            "efficiency term normalises to 0 and the 0.7/0.2/0.1 blend ranks pods exactly as "
            "accuracy-only fitness does."
        )
    return None


def degradation_summary(
    runs: list[dict[str, Any]], tasks: list[str], arms: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """``{task: {arm: curves}}``: per ``k`` heads removed per layer, the mean held-out loss over
    the seeds whose model had at least ``k`` heads in some layer (``n`` of them), most and least
    important first."""
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        for arm in arms:
            curves = [
                r["degradation"]
                for r in runs
                if r["task"] == task and r["arm"] == arm and r.get("degradation")
            ]
            if not curves:
                continue
            top = max(len(c["k"]) for c in curves)
            entry: dict[str, Any] = {"k": list(range(top))}
            for key in ("most_first", "least_first"):
                per_k = [[c[key][k] for c in curves if k < len(c[key])] for k in range(top)]
                entry[key] = [mean_ci(v).to_dict() for v in per_k]
            entry["n"] = [sum(k < len(c["k"]) for c in curves) for k in range(top)]
            entry["heads"] = [c["heads"] for c in curves]
            out.setdefault(task, {})[arm] = entry
    return out


def nas_summary(runs: list[dict[str, Any]], tasks: list[str]) -> dict[str, list[dict[str, Any]]]:
    """``{task: [per seed: chosen architecture, its parameters, search and retraining seconds]}``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        for r in runs:
            if r["task"] != task or r["arm"] != "nas" or "search" not in r:
                continue
            out.setdefault(task, []).append(
                {
                    "seed": r["seed"],
                    "architecture": r["architecture"],
                    "params": r["params_init"],
                    "baseline_params": r["baseline_params"],
                    "candidates": len(r["search"]["candidates"]),
                    "best_selection_loss": r["search"]["best_loss"],
                    "val_loss": r["val_loss"],
                    "search_s": r["search_s"],
                    "retrain_s": r["retrain_s"],
                    "total_s": r["nas_total_s"],
                }
            )
    return out


def analyse(results: dict[str, Any]) -> dict[str, Any]:
    """Comparisons and verdict of every group present in ``results``."""
    runs = results["runs"]
    out = {}
    for group in groups(results["groups"]):
        tasks = _tasks(results, group)
        rows = [_check(runs, t, c) for t in tasks for c in group.checks]
        lookup = {(r["task"], r["a"], r["b"], r["metric"]): r["outcome"] for r in rows}

        def outcome(task: str, check: Check, lookup=lookup) -> str:
            return lookup.get((task, check.a, check.b, check.metric), "not measured")

        verdict = group.decide(outcome, tuple(tasks))
        entry: dict[str, Any] = {"checks": rows, "verdict": verdict}
        if group.key == "fitness":
            entry["pooled_spearman"] = pooled_spearman(runs, tasks, group.arms)
            entry["verdict"] = f"{_spearman_verdict(entry['pooled_spearman'])} {verdict}"
        if group.key == "blueprint":
            entry["degradation"] = degradation_summary(runs, tasks, group.arms)
            entry["nas"] = nas_summary(runs, tasks)
        if group.key == "efficiency" and (note := _cost_note(runs)):
            entry["verdict"] = f"{verdict} {note}"
        out[group.key] = entry
    return out


def arm_table(
    runs: list[dict[str, Any]], task: str, arm: str, metrics: tuple[str, ...]
) -> dict[str, dict[str, Any] | None]:
    """``{metric: interval dict or None}`` for one arm on one task."""
    table = {}
    for metric in metrics:
        values = metric_values(runs, task, arm, metric)
        table[metric] = mean_ci(values).to_dict() if values else None
    return table
