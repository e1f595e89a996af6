"""One results dict from several parts of the benchmark (e.g. streams or seeds run as separate
device commands), with the ablation suite's rules: parts must share the profile (apart from its
scheduling field, the deadline); a (stream, arm, seed) run or a (stream, seed, task) reference that
more than one part made is kept from the first part listed and the others are listed under
``duplicates``, never pooled into an interval with more seeds."""

from __future__ import annotations

from typing import Any

from slime.proto import ConfigError

__all__ = ["RESULT_KEYS", "merge_results"]

RESULT_KEYS = ("profile", "streams", "arms", "seeds", "runs", "references", "params")
_PER_PART = ("deadline_s",)


def _union(lists) -> list:
    return list(dict.fromkeys(x for items in lists for x in items))


def merge_results(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The parts as one results dict. Raises ConfigError when they are not of one setup."""
    if len(parts) < 2:
        raise ConfigError(f"expected at least 2 results to merge, got {len(parts)}", "merge")
    for i, part in enumerate(parts):
        missing = [k for k in RESULT_KEYS if k not in part]
        if missing:
            raise ConfigError(f"part {i} is not a continual results file: no {missing}", "merge")

    def setup(p):
        return {k: v for k, v in p["profile"].items() if k not in _PER_PART}

    for i, part in enumerate(parts[1:], start=1):
        if setup(part) != setup(parts[0]):
            diff = sorted(k for k in setup(part) if setup(part)[k] != setup(parts[0]).get(k))
            raise ConfigError(
                f"part {i} has another profile than part 0 (differs in {diff})", "profile"
            )
    params: dict[str, Any] = {}
    for i, part in enumerate(parts):
        for stream, counts in part["params"].items():
            if params.setdefault(stream, counts) != counts:
                raise ConfigError(f"part {i} has parameters {counts} on {stream}, another part {params[stream]}", "params")  # fmt: skip
    runs, references, duplicates = [], [], []
    seen: dict[tuple, dict[str, Any]] = {}
    for i, part in enumerate(parts):
        for run in part["runs"]:
            key = ("run", run["stream"], run["arm"], run["seed"])
            if key in seen:
                duplicates.append({"kind": "run", "stream": run["stream"], "arm": run["arm"], "seed": run["seed"], "part": i, "kept_part": seen[key]["part"]})  # fmt: skip
                continue
            seen[key] = {**run, "part": i}
            runs.append(seen[key])
        for ref in part["references"]:
            key = ("ref", ref["stream"], ref["seed"], ref["key"])
            if key in seen:
                duplicates.append({"kind": "reference", "stream": ref["stream"], "arm": "fresh", "seed": ref["seed"], "part": i, "kept_part": seen[key]["part"]})  # fmt: skip
                continue
            seen[key] = {**ref, "part": i}
            references.append(seen[key])
    skipped: dict[str, str] = {}
    for part in parts:
        skipped.update(part.get("skipped_streams", {}))
    streams = _union(p["streams"] for p in parts)
    for stream in streams:
        skipped.pop(stream, None)  # ran in some part
    profile = dict(parts[0]["profile"])
    profile["deadline_s"] = None  # see each part
    return {
        "created": max(p["created"] for p in parts),
        "profile": profile,
        "streams": streams,
        "arms": _union(p["arms"] for p in parts),
        "seeds": sorted(_union(p["seeds"] for p in parts)),
        "device": " / ".join(_union([p["device"]] for p in parts)),
        "torch": " / ".join(_union([p["torch"]] for p in parts)),
        "params": params,
        "vocab": {s: v for p in parts for s, v in p.get("vocab", {}).items()},
        "runs": runs,
        "references": references,
        "skipped_streams": skipped,
        "not_started": _union(p.get("not_started", []) for p in parts),
        "suite_wall_s": sum(p["suite_wall_s"] for p in parts),
        "parts": [
            {
                "created": p["created"],
                "device": p["device"],
                "streams": p["streams"],
                "seeds": p["seeds"],
                "runs": len(p["runs"]),
                "not_started": p.get("not_started", []),
                "suite_wall_s": p["suite_wall_s"],
            }
            for p in parts
        ],
        "duplicates": duplicates,
    }
