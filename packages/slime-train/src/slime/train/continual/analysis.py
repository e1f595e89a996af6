"""From raw runs to per-arm numbers, paired comparisons and verdicts, with the rules fixed here
before any run (pure functions of ``results.json``).

**Paired rule.** For two arms run on the same stream with the same seeds, take per seed the
difference ``a - b`` of a metric; ``a`` is better than ``b`` when the 95% Student-t interval of the
mean difference (:func:`slime.train.ablations.stats.mean_ci`) lies entirely on the better side of 0,
worse when entirely on the other side, and otherwise there is no clear difference. With fewer than
two paired seeds the outcome is undefined.

**Main question** (per stream): slime keeps plasticity better than arm X when the paired rule says
``better`` for the mean plasticity ratio over the last ``last_k`` tasks (lower is better).

**Regime check** (per stream): the static GPT without weight decay (``gpt_nowd``) loses plasticity
when the interval of its plasticity trend (slope of the ratio over tasks) lies above 0, or the
interval of its mean plasticity over the last tasks lies above 1.
"""

from __future__ import annotations

from typing import Any, Literal

from slime.train.ablations.stats import mean_ci
from slime.train.continual.metrics import forgetting, plasticity

__all__ = [
    "COMPARATORS",
    "METRICS",
    "PAIRED_RULE",
    "analyse",
    "paired",
    "per_run_metrics",
    "regime_check",
]

Better = Literal["lower", "higher"]

PAIRED_RULE = (
    "Per seed, the difference a - b on the same stream and seed; a is better than b when the 95% "
    "Student-t interval of the mean difference lies entirely on the better side of 0, worse when "
    "entirely on the other side, otherwise no clear difference (undefined with < 2 paired seeds)."
)

# metric -> (better, description)
METRICS: dict[str, tuple[Better, str]] = {
    "plasticity": (
        "lower",
        "mean over the last tasks of loss after N steps / a fresh model's loss after N steps",
    ),
    "plasticity_trend": ("lower", "slope of that ratio over the task index (per task)"),
    "forgetting": (
        "lower",
        "loss at the start of a revisit minus loss at the end of the previous visit (nats)",
    ),
    "final_loss": ("lower", "mean held-out loss at the end of the last tasks (nats)"),
    "dormant": ("lower", "fraction of heads with near-zero contribution, mean over the last tasks"),
    "duplicate": ("lower", "fraction of heads with a |cos| > 0.9 twin, mean over the last tasks"),
    "erank": ("higher", "effective rank / width of head outputs, mean over the last tasks"),
    "tokens_per_s": ("higher", "training tokens per second (resets included, evaluation not)"),
}

# the arms slime is compared with, and what each comparison isolates
COMPARATORS: dict[str, str] = {
    "gpt": "the standard static recipe (LayerNorm + weight decay)",
    "gpt_nowd": "no intervention at all",
    "snp": "shrink-and-perturb",
    "cbp": "continual backprop on heads",
    "redo": "ReDo dormant-head resets",
    "random_reset": "turnover at slime's rate without fitness or archive",
    "slime_no_archive": "the archive (births from elites)",
}


def _mean(values: list[float]) -> float | None:
    kept = [v for v in values if v is not None and v == v]
    return sum(kept) / len(kept) if kept else None


def per_run_metrics(
    run: dict[str, Any], references: dict[str, float], last_k: int
) -> dict[str, Any]:
    """One run's scalar metrics; ``references`` maps task key to the fresh model's loss (same
    stream and seed). Plasticity is None when a task lacks its reference or the run stopped early."""
    out: dict[str, Any] = {"tokens_per_s": run.get("tokens_per_s")}
    ends = run["end_loss"]
    keys = run["keys"][: len(ends)]
    complete = len(ends) == len(run["keys"])
    tail = slice(-last_k, None)
    if complete and all(k in references for k in keys):
        p = plasticity(ends, [references[k] for k in keys], last_k)
        out.update(p)
    else:
        out.update(ratios=None, plasticity=None, plasticity_trend=None)
    f = forgetting(keys, run["start_loss"][: len(ends)], ends)
    out["forgetting"] = f["forgetting"]
    out["final_loss"] = _mean(ends[tail]) if complete else None
    for key in ("dormant", "duplicate", "erank"):
        out[key] = _mean(run[key][tail]) if complete else None
    return out


def paired(a: dict[int, float], b: dict[int, float], better: Better) -> dict[str, Any]:
    """The paired rule on per-seed values ``{seed: value}`` of two arms (see the module docstring)."""
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    diffs = [a[s] - b[s] for s in seeds]
    if len(diffs) < 2:
        return {"outcome": "undefined", "n": len(diffs), "diff": None}
    ci = mean_ci(diffs)
    if ci.high is not None and ci.high < 0:
        outcome = "better" if better == "lower" else "worse"
    elif ci.low is not None and ci.low > 0:
        outcome = "worse" if better == "lower" else "better"
    else:
        outcome = "no clear difference"
    return {"outcome": outcome, "n": len(diffs), "diff": ci.to_dict()}


def _interval(values: list[float]) -> dict[str, Any] | None:
    values = [v for v in values if v is not None]
    return mean_ci(values).to_dict() if values else None


def regime_check(trend: list[float], level: list[float]) -> dict[str, Any]:
    """Whether the static GPT (``gpt_nowd``) lost plasticity: its per-seed plasticity ``trend``
    interval above 0, or its mean ``level`` interval above 1."""
    t, m = _interval(trend), _interval(level)
    rising = t is not None and t["low"] is not None and t["low"] > 0
    above = m is not None and m["low"] is not None and m["low"] > 1
    if t is None or t["low"] is None:
        verdict = "UNDEFINED (fewer than 2 seeds of gpt_nowd)"
    elif rising or above:
        why = [w for w, ok in (("its plasticity ratio rises over tasks", rising),
                               ("its ratio stays above 1 over the last tasks", above)) if ok]  # fmt: skip
        verdict = "SHOWN: the static GPT loses plasticity here (" + "; ".join(why) + ")"
    else:
        verdict = (
            "NOT SHOWN: the static GPT keeps its plasticity in this regime (trend and level "
            "intervals reach 0 and 1), so 'keeps plasticity better' comparisons are moot here"
        )
    return {"trend": t, "level": m, "shown": rising or above, "verdict": verdict}


def analyse(results: dict[str, Any]) -> dict[str, Any]:
    """Per stream: each arm's metrics over seeds, the regime check, slime's paired comparisons and
    the verdict."""
    last_k = results["profile"]["last_k"]
    refs: dict[tuple[str, int], dict[str, float]] = {}
    for r in results["references"]:
        refs.setdefault((r["stream"], r["seed"]), {})[r["key"]] = r["loss"]
    out: dict[str, Any] = {}
    for stream in results["streams"]:
        runs = [r for r in results["runs"] if r["stream"] == stream]
        per: dict[str, dict[int, dict[str, Any]]] = {}
        for run in runs:
            metrics = per_run_metrics(run, refs.get((stream, run["seed"]), {}), last_k)
            per.setdefault(run["arm"], {})[run["seed"]] = metrics
        table = {
            arm: {m: _interval([v[m] for v in seeds.values()]) for m in METRICS}
            for arm, seeds in per.items()
        }
        nowd = per.get("gpt_nowd", {})
        regime = regime_check(
            [v["plasticity_trend"] for v in nowd.values()], [v["plasticity"] for v in nowd.values()]
        )
        comparisons = []
        if "slime" in per:
            for other in COMPARATORS:
                if other not in per:
                    continue
                for metric, (better, _) in METRICS.items():
                    a = {s: v[metric] for s, v in per["slime"].items()}
                    b = {s: v[metric] for s, v in per[other].items()}
                    comparisons.append(
                        {"a": "slime", "b": other, "metric": metric, **paired(a, b, better)}
                    )
        out[stream] = {
            "table": table,
            "per_seed": {arm: {str(s): v for s, v in seeds.items()} for arm, seeds in per.items()},
            "regime": regime,
            "comparisons": comparisons,
            "verdict": _verdict(comparisons, regime),
        }
    return out


def _verdict(comparisons: list[dict[str, Any]], regime: dict[str, Any]) -> str:
    main = [c for c in comparisons if c["metric"] == "plasticity"]
    if not main:
        return f"NOT MEASURED (no slime run with a comparator). Regime: {regime['verdict']}."
    groups: dict[str, list[str]] = {}
    for c in main:
        groups.setdefault(c["outcome"], []).append(c["b"])
    parts = []
    for outcome, label in (
        ("better", "keeps plasticity BETTER than"),
        ("worse", "keeps plasticity WORSE than"),
        ("no clear difference", "shows no clear difference from"),
        ("undefined", "cannot be compared (too few seeds) with"),
    ):
        if groups.get(outcome):
            parts.append(f"slime {label} {', '.join(groups[outcome])}")
    return "; ".join(parts) + f". Regime: {regime['verdict']}."
