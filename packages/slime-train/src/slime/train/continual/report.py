"""REPORT.md and PNG plots from ``results.json``: setup, the decision rules (fixed in
:mod:`slime.train.continual.analysis` before the runs), per-stream tables, verdicts and curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from slime.train.ablations.plots import _band
from slime.train.ablations.report import _cell, _table
from slime.train.continual.analysis import COMPARATORS, METRICS, PAIRED_RULE
from slime.train.continual.arms import ARMS

__all__ = ["render_report", "write_plots"]

SMOKE_NOTE = (
    "> **This is a `cpu-small` smoke run**: a tiny model, 6 tasks of 40 steps and 2 seeds on a "
    "shared CPU. It shows that the benchmark runs end to end and reports honestly; its numbers say "
    "nothing about plasticity. The `gpu-full` profile's report is the one to read."
)


def _series(results: dict[str, Any], analysis: dict[str, Any], stream: str, arm: str, key: str):
    """Pseudo-runs for :func:`slime.train.ablations.plots._band`: per seed, points ``{step: task,
    value}`` of the per-task ``key`` (``end_loss`` from the runs, ``ratio`` from the analysis)."""
    out = []
    for run in results["runs"]:
        if run["stream"] != stream or run["arm"] != arm:
            continue
        if key == "ratio":
            values = analysis[stream]["per_seed"][arm][str(run["seed"])]["ratios"] or []
        else:
            values = run[key]
        out.append({"points": [{"step": t, key: v} for t, v in enumerate(values)]})
    return out


def write_plots(results: dict[str, Any], analysis: dict[str, Any], out: Path) -> list[Path]:
    """Per stream: held-out loss at the end of each task, the plasticity ratio and the dormant
    fraction over tasks, one line (mean over seeds, 95% band) per arm."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stream in results["streams"]:
        arms = [
            a
            for a in results["arms"]
            if any(r["stream"] == stream and r["arm"] == a for r in results["runs"])
        ]
        fig = Figure(figsize=(15, 3.8))
        panels = (
            ("end_loss", "held-out loss after N steps"),
            ("ratio", "plasticity (loss / fresh model's)"),
            ("dormant", "dormant head fraction"),
        )
        for i, (key, label) in enumerate(panels):
            ax = fig.add_subplot(1, 3, i + 1)
            for arm in arms:
                _band(ax, _series(results, analysis, stream, arm, key), "points", key, arm)
            if key == "end_loss":
                fresh = [
                    {"points": [{"step": r["task"], "loss": r["loss"]}]}
                    for r in results["references"]
                    if r["stream"] == stream
                ]
                _band(ax, _merge_points(fresh), "points", "loss", "fresh model")
            if key == "ratio":
                ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            ax.set(title=f"{stream}: {label}", xlabel="task", ylabel=label)
            ax.legend(fontsize=6)
        FigureCanvasAgg(fig)
        fig.tight_layout()
        path = out / f"tasks_{stream}.png"
        fig.savefig(path, dpi=100)
        written.append(path)
    return written


def _merge_points(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"points": [p for r in runs for p in r["points"]]}]


def _setup(results: dict[str, Any]) -> list[str]:
    p, m = results["profile"], results["profile"]["model"]
    lines = [
        "## Setup",
        "",
        f"- Profile `{p['name']}` on {results['device']}, torch {results['torch']}, created "
        f"{results['created']}; {results['suite_wall_s']:.0f} s in all.",
        f"- One model per arm trained through each stream: {p['n_tasks']} tasks of "
        f"{p['steps_per_task']} steps, abrupt switches, no task id; batch {p['batch_size']}, "
        f"context {m['block_size']}; AdamW at a constant lr {p['lr']} after a {p['warmup_iters']}-"
        f"step warmup at the start of the stream; weight decay {p['weight_decay']} "
        f"(`gpt`: {p['static_weight_decay']}).",
        f"- Model: {m['n_layer']} layers, width {m['n_embd']}, {m['n_pods']} heads of "
        f"{m['head_dim']}; slime's pod capacity equals its head count, so its pool turns over but "
        "never grows.",
        f"- Events every {p['event_interval']} steps (slime's medium timescale; CBP, ReDo and random "
        f"resets act at the same cadence); slime culls {p['cull_fraction']:.0%} of each layer's "
        f"pods every {p['slow_tasks']} task(s), maturity {p['maturity_steps']} steps. CBP: "
        f"{p['cbp_heads_per_task']} head per layer per task when all are mature, maturity "
        f"{p['cbp_maturity']}; ReDo tau {p['redo_tau']}; shrink-and-perturb "
        f"{p['snp_shrink']} * w + {p['snp_noise']} * fresh init at every switch.",
        "- Slime's culls and the GPT arms' resets fall on event steps, and a task's last step is "
        "one: the end-of-task evaluation sees them (the same for every arm).",
        f"- Seeds {results['seeds']}. Each task is evaluated on {p['eval_batches']} fixed held-out "
        "batches (the same for every arm of a seed) before its first step and after its last. The "
        "fresh reference is `gpt_nowd`'s recipe trained from scratch for the same steps on that "
        "task alone, from the same seed.",
    ]
    for stream, counts in results["params"].items():
        n = sorted(set(counts.values()))
        lines.append(f"- Parameters at initialisation on {stream}: {', '.join(f'{c:,}' for c in n)} "
                     f"for every arm (asserted equal); vocabulary {results['vocab'].get(stream)}.")  # fmt: skip
    for stream, reason in results.get("skipped_streams", {}).items():
        lines.append(f"- **Stream `{stream}` skipped:** {reason}")
    if results.get("not_started"):
        lines.append(f"- **Not started (deadline):** {', '.join(results['not_started'])}.")
    return lines + [""]


def _rules() -> list[str]:
    lines = [
        "## Decision rules (fixed in code before the runs)",
        "",
        f"- Paired rule: {PAIRED_RULE}",
    ]
    lines += [
        "- Main question, per stream: slime keeps plasticity better than arm X when the paired "
        "rule says `better` on `plasticity` (mean ratio over the last tasks; lower is better).",
        "- Regime check, per stream: the static GPT without weight decay (`gpt_nowd`) loses "
        "plasticity when the 95% interval of its plasticity trend lies above 0, or that of its mean "
        "plasticity above 1. If not, comparisons of plasticity preservation are moot there.",
        "- What each comparison isolates: "
        + "; ".join(f"slime vs `{a}`: {what}" for a, what in COMPARATORS.items())
        + ".",
        "",
        "Metrics:",
        "",
    ]
    lines += [f"- `{k}` ({b} is better): {text}" for k, (b, text) in METRICS.items()]
    return lines + [""]


def _stream(
    results: dict[str, Any], analysis: dict[str, Any], stream: str, plots: set[str]
) -> list[str]:
    entry = analysis[stream]
    lines = [f"## Stream `{stream}`", ""]
    keys = next((r["keys"] for r in results["runs"] if r["stream"] == stream), [])
    lines += [f"Tasks: {' -> '.join(keys)}.", ""]
    rows = [[a, *(_cell(entry["table"][a][m]) for m in METRICS)] for a in entry["table"]]
    lines += _table(["arm", *METRICS], rows) + [""]
    rows = []
    for c in entry["comparisons"]:
        d = c["diff"]
        rows.append(
            [f"slime vs {c['b']}", c["metric"], c["outcome"], _cell(d) if d else "n/a", str(c["n"])]
        )
    if rows:
        lines += ["Paired differences (slime - other, mean ± 95% half-width over seeds):", ""]
        lines += _table(["comparison", "metric", "outcome", "difference", "seeds"], rows) + [""]
    resets = {}
    for r in results["runs"]:
        if r["stream"] == stream:
            resets.setdefault(r["arm"], []).append(r.get("deaths", r["resets"]))
    lines += ["Heads reset or culled per run (all layers): " + ", ".join(
        f"`{a}` {sum(v) / len(v):.1f}" for a, v in resets.items()) + ".", ""]  # fmt: skip
    sources = {r.get("schedule_source") for r in results["runs"] if r["stream"] == stream and r["arm"] == "random_reset"}  # fmt: skip
    if sources - {None}:
        lines += [f"`random_reset`'s schedule: {', '.join(sorted(sources - {None}))}.", ""]
    lines += [
        f"**Regime:** {entry['regime']['verdict']}.",
        "",
        f"**Verdict:** {entry['verdict']}",
        "",
    ]
    if f"tasks_{stream}.png" in plots:
        lines += [f"![tasks_{stream}](tasks_{stream}.png)", ""]
    return lines


def _parts(results: dict[str, Any]) -> list[str]:
    if not results.get("parts"):
        return []
    lines = ["## Parts", "", "Run as separate commands and merged with `--merge`; the profile of "
             "every part is checked equal.", ""]  # fmt: skip
    rows = [[str(i), p["created"], p["device"], ", ".join(p["streams"]), ", ".join(map(str, p["seeds"])),
             str(p["runs"]), f"{p['suite_wall_s']:.0f}"] for i, p in enumerate(results["parts"])]  # fmt: skip
    lines += _table(["part", "created", "device", "streams", "seeds", "runs", "wall s"], rows)
    if results.get("duplicates"):
        lines += ["", f"{len(results['duplicates'])} runs or references made by more than one part "
                  "were kept from the first part (see results.json)."]  # fmt: skip
    return lines + [""]


def render_report(results: dict[str, Any], analysis: dict[str, Any], path: Path, plots) -> Path:
    """Write REPORT.md for ``results`` and their ``analysis``, showing ``plots`` (the files
    :func:`write_plots` wrote)."""
    shown = {Path(p).name for p in plots}
    lines = ["# Continual language modelling: does head turnover keep a transformer plastic?", ""]
    if results["profile"]["name"] == "cpu-small":
        lines += [SMOKE_NOTE, ""]
    lines += ["## Verdicts", ""]
    lines += [f"- **{s}:** {analysis[s]['verdict']}" for s in results["streams"]]
    if not results["streams"]:
        lines += ["- No stream ran."]
    lines += [
        "",
        f"Reproduce: `python -m slime.train.continual --profile {results['profile']['name']} "
        "--out DIR` (add `--data-dir` for the corpora); per-seed numbers are in results.json.",
        "",
        "Arms: "
        + "; ".join(f"`{a}` = {ARMS[a].label}" for a in results["arms"] if a in ARMS)
        + ".",
        "",
    ]
    lines += _setup(results) + _parts(results) + _rules()
    for stream in results["streams"]:
        lines += _stream(results, analysis, stream, shown)
    bad = [r for r in results["runs"] if r["status"] != "completed" or r["nonfinite_steps"]]
    lines += ["## Run health", ""]
    lines += [f"- {r['stream']} {r['arm']} seed {r['seed']}: {r['status']}, {r['nonfinite_steps']} "
              "non-finite steps" for r in bad] or ["Every run completed with finite losses."]  # fmt: skip
    lines += [
        "",
        "## Caveats",
        "",
        "- Plasticity is relative to a fresh GPT of the same size trained on the task alone for the "
        "same steps: below 1 means the stream helped (transfer), above 1 that it hurt.",
        "- Forgetting is only defined on streams that revisit tasks (circuit, corpus); the permuted "
        "stream draws a new permutation for every task.",
        "- Dormant heads include a slime slot left empty by a cull until its rebirth, and a GPT head "
        "just reset (its output projection starts at zero): both contribute nothing at that moment.",
        "- With few seeds an interval is wide: 'no clear difference' means not detected, not equal.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
