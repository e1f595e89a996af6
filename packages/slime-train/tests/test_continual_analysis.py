"""Decision rules, metrics and merging of the continual benchmark, on synthetic numbers."""

from __future__ import annotations

import math

import pytest
import torch
from slime.proto import ConfigError
from slime.train.continual.analysis import analyse, paired, regime_check
from slime.train.continual.merge import merge_results
from slime.train.continual.metrics import (
    duplicate_fraction,
    effective_rank,
    forgetting,
    plasticity,
    slope,
)
from slime.train.continual.profiles import profile
from slime.train.continual.resets import HeadStats


def test_paired_rule_verdicts() -> None:
    a = {1: 0.90, 2: 0.92, 3: 0.91, 4: 0.93, 5: 0.90}
    b = {1: 1.10, 2: 1.12, 3: 1.09, 4: 1.15, 5: 1.11}
    assert paired(a, b, "lower")["outcome"] == "better"
    assert paired(b, a, "lower")["outcome"] == "worse"
    assert paired(a, b, "higher")["outcome"] == "worse"
    noisy = {1: 0.7, 2: 1.3, 3: 0.8, 4: 1.2, 5: 1.0}
    assert paired(noisy, {s: 1.0 for s in noisy}, "lower")["outcome"] == "no clear difference"
    # paired, not pooled: a constant small offset under large between-seed spread is detected
    base = {1: 0.5, 2: 1.5, 3: 1.0, 4: 2.0, 5: 0.8}
    assert paired({s: v - 0.01 for s, v in base.items()}, base, "lower")["outcome"] == "better"
    assert paired({1: 0.5}, {1: 1.0}, "lower")["outcome"] == "undefined"
    assert paired({1: 0.5, 2: 0.4}, {3: 1.0, 4: 1.0}, "lower")["n"] == 0  # no common seed


def test_regime_check() -> None:
    assert regime_check([0.02, 0.03, 0.025], [1.0, 1.02, 0.99])["shown"]
    assert regime_check([0.0, 0.001, -0.001], [1.2, 1.25, 1.22])["shown"]
    flat = regime_check([0.01, -0.01, 0.0], [1.0, 0.98, 1.01])
    assert not flat["shown"] and flat["verdict"].startswith("NOT SHOWN")
    assert regime_check([0.1], [2.0])["verdict"].startswith("UNDEFINED")


def test_plasticity_forgetting_and_slope() -> None:
    p = plasticity([2.0, 3.0, 4.0, 6.0], [2.0, 2.0, 2.0, 2.0], last_k=2)
    assert p["ratios"] == [1.0, 1.5, 2.0, 3.0] and p["plasticity"] == 2.5
    assert math.isclose(p["plasticity_trend"], slope([1.0, 1.5, 2.0, 3.0]))
    assert math.isclose(slope([0.0, 1.0, 2.0]), 1.0) and slope([1.0]) is None
    f = forgetting(["a", "b", "a", "b", "c"], [3, 3, 2.5, 2.0, 3], [1.0, 1.5, 1.2, 1.4, 2])
    assert f["forgetting_per_revisit"] == [1.5, 0.5] and f["forgetting"] == 1.0
    assert forgetting(["a", "b"], [1, 1], [1, 1])["forgetting"] is None


def test_head_diagnostics() -> None:
    assert math.isclose(effective_rank(torch.eye(8)), 1.0, rel_tol=1e-6)
    rank_one = torch.randn(50, 1) @ torch.randn(1, 8)
    assert effective_rank(rank_one) < 0.2
    v = torch.randn(3, 100)
    stats = HeadStats(vectors=[torch.stack([v[0], -2 * v[0], v[1], torch.zeros(100)])])
    assert duplicate_fraction(stats) == 0.5  # heads 0 and 1 (|cos| = 1); silent head 3 is not


def _run(stream, arm, seed, ends, starts=None, keys=None, **extra):
    n = len(ends)
    return {
        "stream": stream, "arm": arm, "seed": seed, "status": "completed", "nonfinite_steps": 0,
        "keys": keys or [f"t{i}" for i in range(n)], "end_loss": ends,
        "start_loss": starts or [e + 1 for e in ends], "dormant": [0.0] * n,
        "duplicate": [0.0] * n, "erank": [0.5] * n, "tokens_per_s": 1000.0, "resets": 0,
        "run_s": 1.0, **extra,
    }  # fmt: skip


def _results(seeds=(1337, 1338, 1339), streams=("circuit",)):
    prof = profile("cpu-small").to_dict()
    prof["last_k"] = 2
    runs, refs = [], []
    for i, seed in enumerate(seeds):
        for stream in streams:
            refs += [
                {"stream": stream, "seed": seed, "key": f"t{t}", "task": t, "loss": 2.0}
                for t in range(4)
            ]
            drift = 0.01 * i
            runs.append(_run(stream, "gpt_nowd", seed, [2.0, 2.4 + drift, 2.8, 3.2 + drift]))
            runs.append(_run(stream, "slime", seed, [2.0, 2.0 + drift, 2.0, 2.0 + drift]))
            runs.append(_run(stream, "cbp", seed, [2.0, 2.0 + drift, 2.0 - drift, 2.0 + drift]))
    return {
        "created": "2026-01-01T00:00:00+00:00", "profile": prof, "streams": list(streams),
        "arms": ["slime", "gpt_nowd", "cbp"], "seeds": list(seeds), "device": "cpu", "torch": "x",
        "params": {s: {"slime": 10, "gpt_nowd": 10, "cbp": 10} for s in streams},
        "vocab": {s: 16 for s in streams}, "runs": runs, "references": refs,
        "skipped_streams": {}, "not_started": [], "suite_wall_s": 1.0,
    }  # fmt: skip


def test_analyse_gives_the_verdict_the_numbers_imply() -> None:
    out = analyse(_results())["circuit"]
    assert out["regime"]["shown"]  # gpt_nowd's ratio rises from 1 to 1.6
    outcomes = {(c["b"], c["metric"]): c["outcome"] for c in out["comparisons"]}
    assert outcomes[("gpt_nowd", "plasticity")] == "better"
    assert outcomes[("cbp", "plasticity")] == "no clear difference"
    assert (
        "BETTER than gpt_nowd" in out["verdict"]
        and "no clear difference from cbp" in out["verdict"]
    )
    # last 2 ratios per seed: 1 and 1 + 0.005 i, so the mean over seeds i = 0, 1, 2 is 1.0025
    assert math.isclose(out["table"]["slime"]["plasticity"]["mean"], 1.0025, rel_tol=1e-9)


def test_merge_keeps_the_first_of_duplicates_and_refuses_other_setups() -> None:
    a = _results(seeds=(1337, 1338))
    b = _results(seeds=(1338, 1339))
    merged = merge_results([a, b])
    assert merged["seeds"] == [1337, 1338, 1339]
    assert (
        len(merged["runs"]) == 9
        and len([d for d in merged["duplicates"] if d["kind"] == "run"]) == 3
    )
    assert analyse(merged)["circuit"]["comparisons"][0]["n"] == 3
    other = _results()
    other["profile"] = {**other["profile"], "lr": 1.0}
    with pytest.raises(ConfigError, match="lr"):
        merge_results([a, other])
    with pytest.raises(ConfigError):
        merge_results([a])
