"""One results dict from several suite runs ("parts"), e.g. groups run in separate device commands.

Parts must share what makes their runs comparable: profile (apart from the task lists and the
scheduling fields, time budget and deadline, which each part records), steps per run and
model sizes (a model counted in several parts must have the same count in each; a part that ran the
hypernetwork arm adds its count) and, among the parts that record them, the protocol's fields
and the learning rates and targets their sweeps picked (later parts should reuse the first part's
sweep: ``--sweep-from``). Each run keeps the index of its part. A (task, arm, seed) that more than
one part ran is kept from the first part listed and the others are recorded under
``duplicates`` (with both losses), never silently merged into an interval with more seeds.
Parts may hold different seeds (``--seed-indices``: long runs split over several commands); the
merged suite holds their union.
"""

from __future__ import annotations

from typing import Any

from slime.proto import ConfigError
from slime.train.ablations.groups import GROUPS

__all__ = ["merge_results"]

_TASK_FIELDS = ("baseline_tasks", "ablation_tasks")
_PER_PART = (*_TASK_FIELDS, "time_budget_s", "deadline_s")
# Only group 7 (blueprint) reads these: parts that did not run it (including parts written before
# the fields existed) are merged whatever they hold.
_NAS_FIELDS = ("nas_candidates", "nas_steps", "nas_tolerance")
# The comparison protocol (LR sweep, targets, equal time): compared among the parts that have them;
# parts written before they existed merge as they are (their runs lack the new metrics, which the
# analysis then takes from the other parts' runs only).
_PROTOCOL_FIELDS = (
    "lr_sweep", "sweep_steps", "sweep_seeds", "targets", "target_margin", "equal_time_s",
    "patience",
)  # fmt: skip


def _shared_profile(results: dict[str, Any]) -> dict[str, Any]:
    skip = {*_PER_PART, *_NAS_FIELDS, *_PROTOCOL_FIELDS}
    return {k: v for k, v in results["profile"].items() if k not in skip}


def _merge_sweeps(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One sweep from the parts' sweeps: a (task, arm)'s learning rate and a task's target must
    be the same in every part that has them (a part reusing another's sweep always agrees).
    Raises ConfigError naming the first disagreement."""
    merged: dict[str, Any] | None = None
    for i, part in enumerate(parts):
        sweep = part.get("sweep")
        if not sweep:
            continue
        if merged is None:
            merged = {"lrs": {}, "scores": {}, "targets": {}, "target_source": {},
                      "steps": sweep.get("steps"), "seeds": sweep.get("seeds"), "seconds": 0.0}  # fmt: skip
        for task, arms in sweep["lrs"].items():
            known = merged["lrs"].setdefault(task, {})
            for name, lr in arms.items():
                if name in known and known[name] != lr:
                    raise ConfigError(
                        f"part {i} picked lr {lr} for {name} on {task}, an earlier part "
                        f"{known[name]}; run later parts with --sweep-from the first's results",
                        "sweep",
                    )
                known[name] = lr
                if name in sweep.get("scores", {}).get(task, {}):
                    merged["scores"].setdefault(task, {})[name] = sweep["scores"][task][name]
        for task, target in sweep["targets"].items():
            if task in merged["targets"] and merged["targets"][task] != target:
                raise ConfigError(
                    f"part {i} has target {target} on {task}, an earlier part "
                    f"{merged['targets'][task]}",
                    "sweep",
                )
            merged["targets"][task] = target
            merged["target_source"][task] = sweep.get("target_source", {}).get(task)
        merged["seconds"] += sweep.get("seconds", 0.0)
    return merged


def _same(parts: list[dict[str, Any]], key: str, value) -> None:
    first = value(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if value(part) != first:
            raise ConfigError(
                f"part {i} has {key} {value(part)!r}, part 0 has {first!r}; "
                "only runs of one setup can be merged",
                key,
            )


def _union(lists) -> list:
    return list(dict.fromkeys(x for items in lists for x in items))


def _scope_tasks(parts: list[dict[str, Any]], scope: str) -> list[str]:
    """Tasks of ``scope`` from the parts that ran a group of that scope (a part restricted to
    other tasks lists them under both scopes, whichever groups it ran)."""
    ran = {g.key for g in GROUPS if g.scope == scope}
    return _union(p["tasks"][scope] for p in parts if ran & set(p["groups"]))


def merge_results(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The parts' runs as one results dict (see the module docstring). Raises ConfigError."""
    if len(parts) < 2:
        raise ConfigError(f"expected at least 2 results to merge, got {len(parts)}", "merge")
    _same(parts, "profile", _shared_profile)
    searched = [p for p in parts if "blueprint" in p["groups"]]
    if len(searched) > 1:
        _same(searched, "profile", lambda r: {k: r["profile"].get(k) for k in _NAS_FIELDS})
    swept = [p for p in parts if "lr_sweep" in p["profile"]]
    if len(swept) > 1:
        _same(swept, "profile", lambda r: {k: r["profile"].get(k) for k in _PROTOCOL_FIELDS})
    sweep = _merge_sweeps(parts)
    _same(parts, "steps", lambda r: r["steps"])
    params: dict[str, dict[str, Any]] = {}
    for i, part in enumerate(parts):
        for task, counts in part["params"].items():
            known = params.setdefault(task, {})
            clash = {k: v for k, v in counts.items() if k in known and known[k] != v}
            if clash:  # a model counted by two parts (slime, baseline, hypernet) must agree
                raise ConfigError(
                    f"part {i} has parameters {counts} on {task}, an earlier part {known}",
                    "params",
                )
            known.update(counts)
    runs, seen, duplicates = [], {}, []
    for i, part in enumerate(parts):
        for run in part["runs"]:
            key = (run["task"], run["arm"], run["seed"])
            if key in seen:
                kept = seen[key]
                duplicates.append({
                    "task": run["task"], "arm": run["arm"], "seed": run["seed"], "part": i,
                    "val_loss": run["val_loss"], "kept_part": kept["part"],
                    "kept_val_loss": kept["val_loss"],
                })  # fmt: skip
                continue
            seen[key] = {**run, "part": i}
            runs.append(seen[key])
    present = set(_union(p["groups"] for p in parts))
    if unknown := present - {g.key for g in GROUPS}:
        raise ConfigError(f"unknown groups {sorted(unknown)} in the parts", "groups")
    profile = dict(parts[0]["profile"])
    if searched:
        profile.update({k: searched[0]["profile"].get(k) for k in _NAS_FIELDS})
    if swept:
        profile.update({k: swept[0]["profile"].get(k) for k in _PROTOCOL_FIELDS})
    for field in _TASK_FIELDS:
        profile[field] = _union(p["profile"][field] for p in parts)
    profile["time_budget_s"] = profile["deadline_s"] = None  # see each part
    devices = _union([p["device"]] for p in parts)
    torches = _union([p["torch"]] for p in parts)
    return {
        "created": max(p["created"] for p in parts),
        "profile": profile,
        "groups": [g.key for g in GROUPS if g.key in present],
        "steps": parts[0]["steps"],
        "seeds": sorted(_union(p["seeds"] for p in parts)),  # parts may split the seeds
        "device": " / ".join(devices),
        "torch": " / ".join(torches),
        "calibration": None,
        "sweep": sweep,
        "params": params,
        "tasks": {scope: _scope_tasks(parts, scope) for scope in ("baseline", "ablation")},
        "vocab": {t: v for p in parts for t, v in p["vocab"].items()},
        "runs": runs,
        "runs_not_started": sum(p["runs_not_started"] for p in parts),
        "tasks_left_out": {t: r for p in parts for t, r in p.get("tasks_left_out", {}).items()},
        "suite_wall_s": sum(p["suite_wall_s"] for p in parts),
        "parts": [
            {
                "created": p["created"],
                "device": p["device"],
                "groups": p["groups"],
                "tasks": p["tasks"],
                "runs": len(p["runs"]),
                "runs_not_started": p["runs_not_started"],
                "deadline_s": p["profile"].get("deadline_s"),
                "warmup_s": p.get("warmup_s"),
                "sweep_s": (p.get("sweep") or {}).get("seconds"),
                "suite_wall_s": p["suite_wall_s"],
            }
            for p in parts
        ],
        "duplicates": duplicates,
    }
