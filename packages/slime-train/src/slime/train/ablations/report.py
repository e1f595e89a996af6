"""REPORT.md from ``results.json``: setup, the decision rules, tables, verdicts and QD diagnostics."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from slime.train.ablations.analysis import arm_table
from slime.train.ablations.groups import METRICS, PAIR_RULE, groups
from slime.train.ablations.variants import ARMS

__all__ = ["render_report"]

MAIN_METRICS = (
    "best_val_loss",
    "best_val_loss_time",
    "target_time_s",
    "val_loss",
    "val_acc",
    "tokens_per_s",
    "peak_memory_mb",
    "wall_s",
)
QD_METRICS = (
    "descriptor_variance",
    "coverage",
    "qd_score",
    "newborn_survival",
    "bootstrapped_survival",
    "spearman_fitness",
    "head_similarity",
    "live_pods",
)
SMOKE_NOTE = (
    "> **This is a `cpu-small` smoke run** on a shared CPU: tiny models and very few steps. It "
    "shows that the suite runs end to end and reports honestly; its numbers say nothing about "
    "the architecture at scale. The `gpu-full` profile's report replaces this file."
)


def _cell(ci: dict[str, Any] | None) -> str:
    if ci is None:
        return "n/a"
    mean = ci["mean"]
    large = abs(mean) >= 1000
    text = f"{mean:,.0f}" if large else f"{mean:#.4g}"
    if ci["low"] is None:
        return f"{text} (n={ci['n']})"
    half = (ci["high"] - ci["low"]) / 2
    if half <= 1e-12 * max(abs(mean), 1.0):
        return f"{text} ± 0"
    return f"{text} ± {half:,.0f}" if large else f"{text} ± {half:.2g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _task_scopes(results: dict[str, Any]) -> str:
    """Which tasks the groups that ran used, e.g. "group 1 on a, b; groups 2, 5 on a"."""
    ran = groups(results["groups"])
    scopes = []
    for scope in ("baseline", "ablation"):
        numbers = [str(g.number) for g in ran if g.scope == scope]
        if numbers:
            label = "group" if len(numbers) == 1 else "groups"
            tasks = ", ".join(results["tasks"][scope])
            scopes.append(f"{label} {', '.join(numbers)} on {tasks}")
    return "; ".join(scopes)


def _setup(results: dict[str, Any]) -> list[str]:
    p = results["profile"]
    m = p["model"]
    lc = p["lifecycle"]
    lines = [
        "## Setup",
        "",
        f"- Profile `{p['name']}` on {results['device']}, torch {results['torch']}, created "
        f"{results['created']}; whole suite {results['suite_wall_s']:.0f} s.",
        f"- Every arm, two budgets: **equal steps** ({_steps_budget(results)}) and **equal "
        f"time** ({_equal_time(p)} of training per run); batch {p['batch_size']}, context "
        f"{m['block_size']}, AdamW with warmup and cosine decay to {p['min_lr'] / p['lr']:.2g} of "
        f"the peak LR, {_peak_lr(results)}; seeds {results['seeds']}.",
        f"- Model: {m['n_layer']} layers, width {m['n_embd']}, {m['n_pods']} pods (heads) of "
        f"{m['head_dim']}, pod capacity {m['pod_capacity']}.",
        f"- Lifecycle as fractions of the run: warmup {lc['warmup']:.0%}, gentle until "
        f"{lc['gentle']:.0%}, medium every {lc['medium']:.1%}, slow every {lc['slow']:.0%}.",
        f"- Tasks: {_task_scopes(results)}. WikiText-2 (character level): the offline "
        "copy has no train split, so **valid.txt is trained on and test.txt is the held-out set**. "
        "Tiny-shakespeare: first 90% train, last 10% held out. Copy / recall: fresh random "
        "sequences.",
        f"- Held-out numbers come from {p['heldout_batches']} fixed validation batches per task, "
        "the same for every arm and seed. Throughput and wall time leave out evaluation and the "
        "diagnostics; they include the lifecycle's own work.",
    ]
    for task, reason in results.get("tasks_left_out", {}).items():
        lines.append(f"- **{task} left out** (no offline copy where the suite looked): {reason}")
    for task, counts in results["params"].items():
        final = [
            r["params_final"] for r in results["runs"] if r["task"] == task and r["arm"] == "slime"
        ]
        grown = (
            f"; slime's pool then grew to {sum(final) / len(final):,.0f} on average"
            if final
            else ""
        )
        hyper = (
            f"; hypernetwork arm {counts['hypernet']:,} ({counts['hypernet_shortfall']} fewer "
            "than the baseline: the stated shortfall, asserted)"
            if "hypernet" in counts
            else ""
        )
        lines.append(
            f"- Parameters at initialisation on {task}: slime {counts['slime']:,}, baseline "
            f"{counts['baseline']:,} (asserted equal){hyper}{grown}."
        )
    if results.get("calibration"):
        c = results["calibration"]
        per = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in c["seconds_per_step"].items())
        lines.append(
            f"- Steps calibrated to a {c['budget_s']:.0f} s budget: measured {per} per bare "
            f"training step; {c['steps']} steps per run (planned {c['planned_s']:.0f} s)."
        )
    return lines + [""]


def _steps_budget(results: dict[str, Any]) -> str:
    """The equal-steps budget: fixed steps, or a limit with a patience and how many runs
    stopped at their plateau before it."""
    patience = results["profile"].get("patience")
    if patience is None:
        return f"{results['steps']} steps"
    runs = results["runs"]
    stopped = sum(r.get("status") == "early_stopped" for r in runs)
    return (
        f"to convergence: at most {results['steps']} steps, a run stops after {patience} "
        f"evaluations in a row without a new best; {stopped} of {len(runs)} runs stopped at "
        "their plateau before the limit"
    )


def _equal_time(profile: dict[str, Any]) -> str:
    value = profile.get("equal_time_s")
    return "not run" if value is None else f"{value:g} s"


def _peak_lr(results: dict[str, Any]) -> str:
    if results.get("sweep"):
        return "peak LR per arm from the sweep below"
    return f"peak LR {results['profile']['lr']} for every arm (no sweep recorded)"


def _protocol(results: dict[str, Any]) -> list[str]:
    """The LR sweep's scores and picks, the targets and how they were fixed."""
    sweep = results.get("sweep")
    if not sweep:
        return []
    p = results["profile"]
    lrs = [float(v) for v in p.get("lr_sweep") or []]
    reused = (
        " (reused from an earlier suite's results: --sweep-from)" if sweep.get("reused") else ""
    )
    lines = [
        "## Protocol: LR sweep, targets, budgets",
        "",
        f"Before the main runs every arm trained once per peak LR of {lrs} "
        f"({sweep.get('steps')} steps, {sweep.get('seeds')} seed(s), the main runs' schedule "
        "shape), scored by its best loss on selection batches (validation data, not the final "
        f"held-out batches); its runs use the LR with the lowest score{reused}. The sweep took "
        f"{sweep.get('seconds') or 0.0:.0f} s. Each main run is scored by its best held-out "
        "evaluation (the best checkpoint) and paired with an equal-time run of "
        f"{_equal_time(p)} whose cosine decay follows the clock.",
        "",
    ]
    rows = []
    for task, arms in sweep["lrs"].items():
        for name, lr in arms.items():
            scores = sweep.get("scores", {}).get(task, {}).get(name, [])
            cells = {float(sc["lr"]): sc["loss"] for sc in scores}
            rows.append([task, name] + [_num(cells.get(v)) for v in lrs] + [f"**{lr:g}**"])
    lines += _table(["task", "arm", *(f"lr {v:g}" for v in lrs), "picked"], rows) + [""]
    rows = [
        [task, f"{target:.4f}", str(sweep.get("target_source", {}).get(task))]
        for task, target in sweep["targets"].items()
    ]
    lines += ["Target held-out loss per task (fixed before the main runs):", ""]
    lines += _table(["task", "target", "how chosen"], rows) + [""]
    return lines


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _rules(results: dict[str, Any]) -> list[str]:
    lines = ["## Decision rules (fixed in code before the runs)", "", f"- Pair rule: {PAIR_RULE}"]
    for g in groups(results["groups"]):
        lines.append(f"- Group {g.number} ({g.key}): {g.rule}")
    lines += ["", "Metrics:", ""]
    lines += [f"- `{k}` ({better} is better): {text}" for k, (better, text) in METRICS.items()]
    return lines + [""]


def _group(results: dict[str, Any], analysis: dict[str, Any], group, plots: set[str]) -> list[str]:
    runs = results["runs"]
    tasks = results["tasks"][group.scope]
    extra = tuple(dict.fromkeys(c.metric for c in group.checks if c.metric not in MAIN_METRICS))
    metrics = MAIN_METRICS + extra
    lines = [f"## {group.number}. {group.title}", "", f"Hypothesis: {group.hypothesis}", ""]
    lines += ["Arms: " + "; ".join(f"`{a}` = {ARMS[a].label}" for a in group.arms) + ".", ""]
    rows = []
    for task in tasks:
        for arm in group.arms:
            table = arm_table(runs, task, arm, metrics)
            rows.append([task, arm] + [_cell(table[m]) for m in metrics])
    lines += _table(["task", "arm", *metrics], rows) + [""]
    checks = []
    for row in analysis[group.key]["checks"]:
        comp = row["comparison"]
        p = "n/a" if comp is None or comp["p_value"] is None else f"{comp['p_value']:.3g}"
        metric = row["metric"]
        if reached := row.get("reached"):
            metric += f" (reached {reached['a']} vs {reached['b']})"
        checks.append([row["task"], f"{row['a']} vs {row['b']}", metric, row["outcome"], p])
    lines += _table(["task", "check", "metric", "outcome", "Welch p"], checks) + [""]
    pooled = analysis[group.key].get("pooled_spearman")
    if pooled:
        rows = [[k, _cell(v)] for k, v in pooled.items()]
        lines += [
            "Spearman with the held-out masked-loss contribution, all runs of this group:",
            "",
        ]
        lines += _table(["metric", "rho (mean ± 95% CI)"], rows) + [""]
    spent = sum(r.get("run_s", 0.0) for r in runs if r["task"] in tasks and r["arm"] in group.arms)
    lines += [f"Its runs took {spent:.0f} s in all (arms shared with other groups included).", ""]
    if group.key == "blueprint":
        lines += _blueprint(results, analysis[group.key], plots)
    lines += [f"**Verdict:** {analysis[group.key]['verdict']}", ""]
    if (bars := f"bars_{group.number}_{group.key}.png") in plots:
        lines += [f"![bars]({bars})", ""]
    return lines


def _blueprint(results: dict[str, Any], entry: dict[str, Any], plots: set[str]) -> list[str]:
    """Group 7's extras: how the hypernetwork is sized, what the NAS arm searched and spent, and
    the degradation curves."""
    p = results["profile"]
    lines = [
        "The hypernetwork arm generates every head's q/k/v rows and output columns from a learned "
        "per-head embedding through one generator shared by all layers (embedding -> tanh hidden "
        "-> weights); its hidden width is L*H - 2 and the embedding width takes the remaining "
        "parameters, so it holds the baseline's count less a shortfall under one embedding "
        "column (the Setup lists it). The NAS arm draws "
        f"{p.get('nas_candidates')} architectures (heads per layer 1..pod_capacity, head width "
        f"half/same/twice head_dim, parameters within {p.get('nas_tolerance', 0):.0%} of the "
        f"baseline), trains each {p.get('nas_steps')} steps, keeps the lowest loss on selection "
        "batches (validation data, not the held-out batches) and retrains it for the run's steps.",
        "",
    ]
    nas = [(task, row) for task, rows in entry.get("nas", {}).items() for row in rows]
    if nas:
        rows = [
            [
                task, str(r["seed"]),
                " / ".join(f"{h}x{w}" for h, w in zip(r["architecture"]["heads"],
                                                    r["architecture"]["widths"])),
                f"{r['params']:,} ({r['params'] / r['baseline_params'] - 1:+.1%})",
                f"{r['best_selection_loss']:.4f}", f"{r['val_loss']:.4f}",
                f"{r['search_s']:.1f}", f"{r['retrain_s']:.1f}", f"{r['total_s']:.1f}",
            ]
            for task, r in nas
        ]  # fmt: skip
        lines += ["NAS arm, per seed (architecture: heads x width per layer):", ""]
        lines += _table(
            ["task", "seed", "architecture", "params (vs baseline)", "selection loss",
             "val loss", "search s", "retrain s", "total s"],
            rows,
        )  # fmt: skip
        lines += [""]
    curves = entry.get("degradation", {})
    if curves:
        lines += [
            "Graceful degradation: mean held-out loss over seeds with k heads removed from every "
            "layer at test time (a layer with fewer heads loses all of them), most important "
            "first / least important first. Importance: each head's single-ablation loss increase "
            "on the probe batch; slime's pods by their fitness.",
            "",
        ]
        rows = []
        for task, arms in curves.items():
            for arm, c in arms.items():
                pairs = [
                    f"{m['mean']:.3f} / {lo['mean']:.3f}"
                    for m, lo in zip(c["most_first"], c["least_first"])
                ]
                rows.append([task, arm, "; ".join(f"k={k}: {v}" for k, v in enumerate(pairs))])
        lines += _table(["task", "arm", "loss, most / least important first"], rows) + [""]
    if "degradation.png" in plots:
        lines += ["![degradation](degradation.png)", ""]
    for task in curves:
        ci = arm_table(results["runs"], task, "slime", ("descriptor_variance",))
        lines += [
            f"Head diversity on {task}: head_similarity (table above) for every arm; descriptors "
            "exist only for slime's pods, whose variance across live pods at the end is "
            f"{_cell(ci['descriptor_variance'])}.",
            "",
        ]
    return lines


def _diagnostics(results: dict[str, Any]) -> list[str]:
    runs = results["runs"]
    rows = []
    for task in dict.fromkeys(r["task"] for r in runs):
        arms = list(dict.fromkeys(r["arm"] for r in runs if r["task"] == task))
        for arm in arms:
            if arm not in ARMS or ARMS[arm].kind != "slime":
                continue
            table = arm_table(runs, task, arm, QD_METRICS)
            births = [r.get("births", 0) for r in runs if r["task"] == task and r["arm"] == arm]
            rows.append([task, arm, *(_cell(table[m]) for m in QD_METRICS), str(sum(births))])
    lines = [
        "## Quality-diversity diagnostics (every slime run)",
        "",
        "Descriptor variance across live pods, archive coverage and QD score at the end (their "
        "course is in pool_size.png, coverage.png, qd_score.png), survival of newborn pods that "
        "faced a cull, mean Spearman(fitness, held-out masked-loss contribution) over the medium "
        "events, and head similarity (mean pairwise |cosine| of head contributions; the "
        "baseline's is in group 1).",
        "",
    ]
    return lines + _table(["task", "arm", *QD_METRICS, "births (all seeds)"], rows) + [""]


def _parts(results: dict[str, Any]) -> list[str]:
    """Where each part of a merged suite ran (empty for a suite run in one command)."""
    if not results.get("parts"):
        return []
    lines = [
        "## Parts",
        "",
        "The suite ran as separate commands (one per row), merged with `--merge`; the steps, seeds, "
        "profile and model sizes of every part are checked equal.",
        "",
    ]
    rows = [
        [
            str(i), p["created"], p["device"], ", ".join(p["groups"]),
            ", ".join(_union_tasks(p["tasks"])), str(p["runs"]), f"{p['suite_wall_s']:.0f}",
        ]
        for i, p in enumerate(results["parts"])
    ]  # fmt: skip
    lines += _table(["part", "created", "device", "groups", "tasks", "runs", "wall s"], rows)
    dups = results.get("duplicates") or []
    if dups:
        lines += [
            "",
            "Runs that more than one part made are kept from the first part; the others, with "
            "both held-out losses (same seed, separate process):",
            "",
        ]
        lines += _table(
            ["task", "arm", "seed", "kept part", "kept val loss", "part", "val loss"],
            [
                [d["task"], d["arm"], str(d["seed"]), str(d["kept_part"]),
                 f"{d['kept_val_loss']:.4f}", str(d["part"]), f"{d['val_loss']:.4f}"]
                for d in dups
            ],
        )  # fmt: skip
    return lines + [""]


def _union_tasks(tasks: dict[str, list[str]]) -> list[str]:
    return list(dict.fromkeys(tasks["baseline"] + tasks["ablation"]))


def _failures(results: dict[str, Any]) -> list[str]:
    bad = [r for r in results["runs"] if r["status"] != "completed" or r["nonfinite_steps"]]
    if not bad:
        return ["Every run completed with finite losses.", ""]
    return [
        f"- {r['task']} {r['arm']} seed {r['seed']}: {r['status']}, "
        f"{r['nonfinite_steps']} non-finite steps"
        for r in bad
    ] + [""]


def render_report(
    results: dict[str, Any], analysis: dict[str, Any], path: Path, plots: Collection[Path]
) -> Path:
    """Write REPORT.md for ``results`` and their ``analysis`` (see :func:`analyse`), showing the
    ``plots`` written beside it (see :func:`write_plots`) and no others."""
    shown = {Path(p).name for p in plots}
    selected = groups(results["groups"])
    lines = ["# Ablations: does slime beat a plain transformer?", ""]
    if results["profile"]["name"] == "cpu-small":
        lines += [SMOKE_NOTE, ""]
    if results.get("runs_not_started"):
        lines += [
            f"> **Incomplete:** the suite hit its deadline; {results['runs_not_started']} runs "
            "were not started, so some intervals hold fewer seeds (see `n` in results.json).",
            "",
        ]
    lines += ["## Verdicts", ""]
    lines += [f"{g.number}. **{g.title}.** {analysis[g.key]['verdict']}" for g in selected]
    lines += [
        "",
        f"Reproduce: `python -m slime.train.ablations --profile {results['profile']['name']} "
        "--out DIR` (add `--data-dir` for the corpora), or `nox -s ablations` with "
        "`SLIME_ABLATION_PROFILE` set; raw per-seed numbers are in results.json.",
        "",
    ]
    lines += _setup(results) + _protocol(results) + _parts(results) + _rules(results)
    for group in selected:
        lines += _group(results, analysis, group, shown)
    lines += _diagnostics(results)
    lines += ["## Plots", ""]
    names = ("loss_baseline", "loss_ablations", "pool_size", "coverage", "qd_score")
    lines += [f"![{n}]({n}.png)" for n in (*names, "descriptor_variance") if f"{n}.png" in shown]
    lines += ["", "## Run health", ""] + _failures(results)
    lines += [
        "## Caveats",
        "",
        "- Slime's attention runs over all `pod_capacity` slots with an alive mask (static shapes,"
        " no recompiles), so its attention cost follows the capacity, not the live pods.",
        "- Peak memory is the CUDA allocator's peak; on the CPU it is not measured (n/a).",
        "- §12.4 (behavioural vs random device placement) needs several GPUs and is not part of"
        " this suite.",
        f"- With {len(results['seeds'])} seed(s) an interval is wide: 'no clear difference' means"
        " not detected, not equal.",
        "- Births refill free slots at every medium event of the gentle and full phases, so the"
        " pool spends most of a run at capacity; `live_pods` at the end mostly reflects the last"
        " cull.",
        "- `acc_only` and `slime` are the same recipe in effect while every pod costs the same"
        " (parameter bytes): their numbers are expected to coincide.",
        "- Group 7: the NAS arm's throughput and wall time are its retraining's; the search is"
        " extra compute (its seconds are in group 7's NAS table). Slime's degradation order comes"
        " from its fitness, the other arms' from a measured single-ablation loss on the probe"
        " batch.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
