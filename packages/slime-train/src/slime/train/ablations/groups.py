"""The comparisons of blueprint §12 and issues 7 and 16, with their decision rules fixed before any
run.

Every arm runs at its own peak LR, picked by the sweep of :mod:`slime.train.ablations.protocol`
before the runs, and is judged by its best held-out loss (the best checkpoint) at equal steps and
at equal training time, and by its time to a target loss fixed before the runs.

One rule decides every pairwise check: **arm A is better than arm B on a metric when A's 95%
Student-t confidence interval over seeds lies entirely on the better side of B's; worse when it lies
entirely on the worse side; otherwise there is no clear difference.** Welch's p-value is reported
beside it but does not decide. Each group turns its checks into a verdict with the rule stated in
:attr:`Group.rule`; the report prints these rules before the results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from slime.proto import ConfigError
from slime.train.ablations.stats import Better

__all__ = ["GROUPS", "METRICS", "PAIR_RULE", "Check", "Group", "groups"]

PAIR_RULE = (
    "A is better than B on a metric when A's 95% Student-t confidence interval over seeds lies "
    "entirely on the better side of B's, worse when entirely on the worse side, and otherwise there "
    "is no clear difference. Welch's t-test p-value is shown but does not decide."
)

# metric -> (better direction, plain description)
METRICS: dict[str, tuple[Better, str]] = {
    "best_val_loss": (
        "lower",
        "best held-out loss (nats/token) on the fixed held-out batches over the run's evaluations "
        "(the best checkpoint, not the final step); equal steps, each arm at its swept LR",
    ),
    "best_val_loss_time": (
        "lower",
        "the same for the equal-time run: each arm trains the profile's equal_time_s seconds "
        "(evaluation and diagnostics not counted), its cosine decay following the clock",
    ),
    "target_time_s": (
        "lower",
        "training seconds until the held-out loss first reached the task's target (equal-steps "
        "run); runs that never reached it are left out and counted beside the interval",
    ),
    "best_time_s": (
        "lower",
        "training seconds to the best held-out evaluation of the equal-steps run; with a "
        "patience (runs stop at their plateau), the time to converge on one card",
    ),
    "val_loss": ("lower", "final-step held-out loss (secondary: the decisions use the best)"),
    "val_acc": ("higher", "final held-out next-token accuracy on scored targets"),
    "val_loss_auc": (
        "lower",
        "mean validation loss over the run's evaluation points (speed of convergence)",
    ),
    "tokens_per_s": ("higher", "training tokens per second (evaluation and diagnostics excluded)"),
    "peak_memory_mb": (
        "lower",
        "CUDA allocator peak (MiB) of training, evaluation and the lifecycle (the suite's "
        "diagnostics left out); not measured on the CPU",
    ),
    "wall_s": ("lower", "training wall time (s), evaluation and diagnostics excluded"),
    "head_similarity": ("lower", "mean pairwise |cosine| of head contributions (1 = collapsed)"),
    "live_pods": ("lower", "live pods at the end (all layers)"),
    "newborn_survival": (
        "higher",
        "fraction of newborn pods that faced a cull and are alive at the end",
    ),
    "bootstrapped_survival": (
        "higher",
        "the same, counting only newborns bootstrapped from the archive",
    ),
    "descriptor_variance": ("higher", "mean per-descriptor variance across live pods at the end"),
    "coverage": ("higher", "archive coverage at the end (mean over layers)"),
    "qd_score": ("higher", "archive QD score at the end (sum over layers)"),
    "spearman_fitness": ("higher", "Spearman(own fitness, held-out masked-loss contribution)"),
    "degradation_auc_most": (
        "lower",
        "area under the held-out loss rise as k = 1..P heads per layer are removed at test time, "
        "most important first, over the fraction k/P removed (0 = no loss)",
    ),
    "degradation_auc_least": (
        "lower",
        "the same, least important first (graceful degradation: losing unimportant heads is free)",
    ),
}

BLUEPRINT_OTHERS = ("baseline", "hypernet", "nas")


@dataclass(frozen=True)
class Check:
    """Arm ``a`` against arm ``b`` on ``metric`` (direction from :data:`METRICS`)."""

    a: str
    b: str
    metric: str

    @property
    def better(self) -> Better:
        return METRICS[self.metric][0]


Outcome = Callable[[str, Check], str]  # (task, check) -> "better" | "worse" | ...


@dataclass(frozen=True)
class Group:
    """One comparison of the suite: its arms, its checks and how they become a verdict."""

    key: str
    number: int
    title: str
    hypothesis: str
    arms: tuple[str, ...]
    scope: Literal["baseline", "ablation"]
    checks: tuple[Check, ...]
    rule: str
    decide: Callable[[Outcome, tuple[str, ...]], str]


def _tasks_where(outcome: Outcome, tasks: tuple[str, ...], check: Check, result: str) -> list[str]:
    return [t for t in tasks if outcome(t, check) == result]


ACCURACY = ("best_val_loss", "best_val_loss_time")  # equal steps, equal time
SPEED = ("tokens_per_s", "target_time_s")


def _decide_baseline(outcome: Outcome, tasks: tuple[str, ...]) -> str:
    sim = Check("slime", "baseline", "head_similarity")
    dims = {"accuracy": ACCURACY, "speed": SPEED}

    def found(dim: str, result: str) -> list[str]:
        return [
            t for t in tasks if any(outcome(t, Check("slime", "baseline", m)) == result
                                    for m in dims[dim])
        ]  # fmt: skip

    won = {dim: found(dim, "better") for dim in dims}
    lost = {dim: found(dim, "worse") for dim in dims}

    def where(found: list[str]) -> str:
        return ", ".join(found) if found else "none"

    parts = [
        f"{dim} ({' or '.join(dims[dim])}) better in {where(won[dim])}, worse in {where(lost[dim])}"
        for dim in dims
    ]
    if won["accuracy"] or won["speed"]:
        verdict = "PASSES §12's bar (better on at least one of speed or accuracy somewhere)"
    elif all(t in lost["accuracy"] and t in lost["speed"] for t in tasks):
        verdict = "FAILS §12's bar: worse on both speed and accuracy in every task; simplify"
    else:
        verdict = "NOT SHOWN: slime is better on neither speed nor accuracy in any task"
    less = _tasks_where(outcome, tasks, sim, "better")
    more = _tasks_where(outcome, tasks, sim, "worse")
    diversity = (
        f"Heads less similar than the baseline's (decision 11) in {where(less)}; more similar "
        f"in {where(more)}."
    )
    return f"Over {len(tasks)} tasks, slime's {parts[0]}; {parts[1]}. {verdict}. {diversity}"


def _decide_benefit(
    a: str, b: str, what: str, metrics: tuple[str, ...]
) -> Callable[[Outcome, tuple[str, ...]], str]:
    """A verdict: ``a`` (with ``what``) helps, hurts, trades off or shows no clear benefit."""

    def decide(outcome: Outcome, tasks: tuple[str, ...]) -> str:
        lines = []
        for task in tasks:
            results = {m: outcome(task, Check(a, b, m)) for m in metrics}
            if all(r == "not measured" for r in results.values()):
                lines.append(f"{task}: {what} NOT MEASURED (no runs of both arms)")
                continue
            good = [m for m, r in results.items() if r == "better"]
            bad = [m for m, r in results.items() if r == "worse"]
            if good and not bad:
                lines.append(f"{task}: {what} HELPS ({', '.join(good)} better)")
            elif bad and not good:
                lines.append(f"{task}: {what} HURTS ({', '.join(bad)} worse)")
            elif good and bad:
                lines.append(f"{task}: {what} is a TRADE-OFF (better {good}, worse {bad})")
            else:
                lines.append(
                    f"{task}: {what} shows NO CLEAR BENEFIT ({', '.join(metrics)} overlap)"
                )
        return "; ".join(lines) + "."

    return decide


BENEFIT = (*ACCURACY, "val_loss_auc")


def _decide_births(outcome: Outcome, tasks: tuple[str, ...]) -> str:
    chemotaxis = _decide_benefit("slime", "uniform", "chemotaxis", BENEFIT)
    tubes = _decide_benefit("slime", "no_tubes", "tubes", BENEFIT)
    return f"{chemotaxis(outcome, tasks)} {tubes(outcome, tasks)}"


def _decide_efficiency(outcome: Outcome, tasks: tuple[str, ...]) -> str:
    check = Check("eff_latency", "acc_only", "tokens_per_s")
    faster = _tasks_where(outcome, tasks, check, "better")
    if faster:
        return f"The efficiency term FINDS FASTER configurations in {', '.join(faster)}."
    return (
        "The efficiency term does NOT find faster configurations (tokens/s intervals overlap or "
        "are worse in every task)."
    )


def _decide_fitness(outcome: Outcome, tasks: tuple[str, ...]) -> str:
    # The pooled Spearman verdict needs every run's correlations; the report adds it.
    parts = []
    for task in tasks:
        for other in ("task_only", "grad_only", "taylor_only"):
            r = [outcome(task, Check(other, "slime", m)) for m in ACCURACY]
            parts.append(
                f"{task}: training with {other} vs the blend: best held-out loss {r[0]} at equal "
                f"steps, {r[1]} at equal time"
            )
    return "; ".join(parts) + "."


def _decide_blueprint(outcome: Outcome, tasks: tuple[str, ...]) -> str:
    parts = []
    for task in tasks:
        for other in BLUEPRINT_OTHERS:
            loss, at_time = (outcome(task, Check("slime", other, m)) for m in ACCURACY)
            if loss == "not measured":
                parts.append(f"{task}: slime vs {other} NOT MEASURED")
                continue
            grace = {
                m: outcome(task, Check("slime", other, m))
                for m in ("degradation_auc_most", "degradation_auc_least")
            }
            good = [m for m, r in grace.items() if r == "better"]
            bad = [m for m, r in grace.items() if r == "worse"]
            if good and not bad:
                degrade = "degrades MORE gracefully"
            elif bad and not good:
                degrade = "degrades LESS gracefully"
            elif good and bad:
                degrade = "degrades more gracefully on one order, less on the other"
            else:
                degrade = "degrades with NO CLEAR DIFFERENCE"
            word, word_t = (
                {"better": "BETTER", "worse": "WORSE"}.get(r, "NO CLEAR DIFFERENCE")
                for r in (loss, at_time)
            )
            parts.append(
                f"{task}: slime vs {other}: best held-out loss {word} at equal steps, {word_t} at "
                f"equal time; slime {degrade}"
            )
    return "; ".join(parts) + "."


GROUPS: tuple[Group, ...] = (
    Group(
        "baseline",
        1,
        "Slime vs the baseline transformer (equal parameters at initialisation, equal compute)",
        "§12.1: slime must beat a plain transformer of the same size on speed or accuracy; "
        "decision 11: heads stay behaviourally distinct (no mode collapse).",
        ("slime", "baseline"),
        "baseline",
        tuple(
            Check("slime", "baseline", m)
            for m in (
                *ACCURACY,
                "target_time_s",
                "best_time_s",
                "val_acc",
                "tokens_per_s",
                "peak_memory_mb",
                "wall_s",
                "head_similarity",
            )
        ),
        "Accuracy = best held-out loss at equal steps or at equal time (best_val_loss, "
        "best_val_loss_time); speed = tokens_per_s or time to the target loss (target_time_s). "
        "Slime passes if it is better on accuracy or speed in at least one task; it fails if it "
        "is worse on both in every task; otherwise not shown.",
        _decide_baseline,
    ),
    Group(
        "archive",
        2,
        "With archive vs without (births re-initialise randomly)",
        "§12.2: archive-guided bootstrapping improves convergence (or is overhead with no benefit).",
        ("slime", "no_archive"),
        "ablation",
        tuple(Check("slime", "no_archive", m) for m in (*BENEFIT, "newborn_survival")),
        "The archive helps if slime is better than no_archive on best_val_loss, "
        "best_val_loss_time or val_loss_auc and worse on none; it hurts if worse on one and "
        "better on none; else no clear benefit.",
        _decide_benefit("slime", "no_archive", "the archive", BENEFIT),
    ),
    Group(
        "lifecycle",
        3,
        "Lifecycle (birth/death) vs a static pool of the same initial size",
        "§12.3: birth and death improve over a fixed architecture (or instability hurts more).",
        ("slime", "static"),
        "ablation",
        tuple(
            Check("slime", "static", m) for m in (*BENEFIT, "tokens_per_s", "descriptor_variance")
        ),
        "The lifecycle helps if slime is better than static on best_val_loss, best_val_loss_time "
        "or val_loss_auc and worse on none; it hurts if worse on one and better on none; else no "
        "clear benefit.",
        _decide_benefit("slime", "static", "the lifecycle", BENEFIT),
    ),
    Group(
        "efficiency",
        4,
        "Efficiency term in fitness vs accuracy-only fitness",
        "§12.5 / decision 10: an efficiency term in fitness discovers faster configurations.",
        ("eff_latency", "acc_only"),
        "ablation",
        tuple(
            Check("eff_latency", "acc_only", m)
            for m in ("tokens_per_s", "live_pods", *ACCURACY, "peak_memory_mb")
        ),
        "The efficiency term finds faster configurations if eff_latency is better than acc_only "
        "on tokens_per_s in at least one task.",
        _decide_efficiency,
    ),
    Group(
        "fitness",
        5,
        "Fitness metrics: gradient magnitude vs masked-loss contribution vs the 0.7/0.2/0.1 blend "
        "(and the first-order Taylor estimate)",
        "Decisions 6 and 8: fitness must correlate with the task (held-out masked-loss "
        "contribution); the blueprint picks gradient magnitude.",
        ("slime", "task_only", "grad_only", "taylor_only"),
        "ablation",
        tuple(
            Check(a, "slime", m)
            for a in ("task_only", "grad_only", "taylor_only")
            for m in (*ACCURACY, "spearman_fitness")
        ),
        "A metric tracks the task if the 95% interval of its Spearman correlation with the held-out "
        "masked-loss contribution (one value per run, all runs of this group) lies entirely above "
        "0 (against the task if it lies entirely below 0). The best held-out loss (equal steps and "
        "equal time) of each single-metric fitness is compared with the blend by the pair rule.",
        _decide_fitness,
    ),
    Group(
        "births",
        6,
        "Chemotaxis-guided births vs uniform elite sampling; tubes on vs off",
        "Chemotaxis picks better birth locations than uniform sampling of elites; the tubes' "
        "temporal memory helps.",
        ("slime", "uniform", "no_tubes"),
        "ablation",
        tuple(Check("slime", "uniform", m) for m in (*BENEFIT, "newborn_survival", "coverage"))
        + tuple(Check("slime", "no_tubes", m) for m in BENEFIT),
        "Chemotaxis (tubes) earns its place if slime is better than uniform (no_tubes) on "
        "best_val_loss, best_val_loss_time or val_loss_auc and worse on none.",
        _decide_births,
    ),
    Group(
        "blueprint",
        7,
        "The blueprint's other architectures: slime vs the baseline, a hypernetwork-generated GPT "
        "and a NAS-searched GPT, with head diversity and graceful degradation",
        "Issue 16 item 4: slime's dynamic heads should beat a hypernetwork that generates head "
        "weights and an architecture search over heads and widths at a similar budget, and keep "
        "distinct heads whose removal costs little (graceful degradation).",
        ("slime", "baseline", "hypernet", "nas"),
        "ablation",
        tuple(
            Check("slime", other, m)
            for other in BLUEPRINT_OTHERS
            for m in (
                *ACCURACY,
                "head_similarity",
                "degradation_auc_most",
                "degradation_auc_least",
            )
        ),
        "For each other arm (baseline, hypernet, nas): slime's best held-out loss at equal steps "
        "and at equal time is better, worse or not clearly different by the pair rule; slime degrades more gracefully if it is better on "
        "degradation_auc_most or degradation_auc_least and worse on neither, less gracefully if "
        "worse on one and better on neither, otherwise no clear difference. The NAS arm's wall "
        "time counts the retraining only; its search seconds are reported beside it.",
        _decide_blueprint,
    ),
)


def groups(keys: list[str] | None = None) -> tuple[Group, ...]:
    """The groups named by ``keys`` (all when None), in suite order. Raises ConfigError."""
    known = {g.key: g for g in GROUPS}
    if keys is None:
        return GROUPS
    bad = [k for k in keys if k not in known]
    if bad:
        raise ConfigError(f"unknown groups {bad}; expected some of {list(known)}", "--groups")
    return tuple(g for g in GROUPS if g.key in keys)
