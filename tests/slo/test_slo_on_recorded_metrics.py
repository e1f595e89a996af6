"""The SLO machinery (error budgets, violation reports) on metrics recorded by real training runs.

Speed is measured by benchmarks, never asserted here: thresholds are either derived from the
recorded values themselves or set far beyond anything a CPU can reach, so every assertion is about
the budget arithmetic and the reporting path, not about how fast this machine is.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from slime.core import SLO, SLOSet
from slime.proto import ConfigError
from slime.train.build import build_dataset
from slime.train.config import RunConfig, SLOConfig
from slime.train.loader import load_config
from slime.train.rundir import RunDir
from slime.train.slo import slo_reports
from slime.train.trainer import Trainer

pytest.importorskip("hypothesis")  # the GPU machine may lack it; these are CPU tests
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

TARGETS = (0.5, 0.8, 0.95, 0.99)


def _config(slo: SLOConfig) -> RunConfig:
    """The shipped ``tiny`` preset (12 steps, every timescale a few steps long) with ``slo``."""
    tiny = load_config("tiny").replace(train={"checkpoint_interval": 1000})
    return dataclasses.replace(tiny, slo=slo)


def _train(slo: SLOConfig, run_dir: Path | None = None) -> Trainer:
    cfg = _config(slo)
    trainer = Trainer(
        cfg, build_dataset(cfg.data, 16), run_dir=RunDir(run_dir) if run_dir else None
    )
    trainer.fit()
    return trainer


@pytest.fixture(scope="module")
def recorded() -> dict[str, list[float]]:
    """Per-event observations recorded by the model's MetricsCollector during a 12-step run."""
    trainer = _train(SLOConfig())
    trainer.metrics.flush()  # records the peak-memory observation
    return trainer.metrics.observations()


def test_every_forward_of_the_run_is_recorded(recorded) -> None:
    assert len(recorded["latency_ms"]) == len(recorded["tokens_per_s"]) >= 12
    assert all(v > 0 and math.isfinite(v) for v in recorded["latency_ms"])
    assert len(recorded["peak_memory_bytes"]) == 1


def test_budget_burn_on_recorded_latencies_is_bad_fraction_over_the_error_budget(recorded) -> None:
    latencies = np.asarray(recorded["latency_ms"])
    threshold = float(np.median(latencies))
    (report,) = SLOSet([SLO("p80", "latency_ms", threshold, "max", 0.8)]).evaluate(recorded)
    bad = int((latencies > threshold).sum())
    assert (report.total, report.bad) == (len(latencies), bad)
    assert report.error_budget == pytest.approx(0.2)
    assert report.budget_burned == pytest.approx(bad / len(latencies) / 0.2)
    assert report.met == (report.budget_burned <= 1.0)


def _order_statistic_threshold(values: list[float], target: float) -> tuple[float, int]:
    """The smallest recorded value that at least ``target`` of the values do not exceed."""
    ordered = sorted(values)
    k = math.ceil(target * len(ordered) - 1e-9)
    return ordered[max(k, 1) - 1], k


@pytest.mark.parametrize("target", TARGETS)
def test_threshold_at_the_recorded_quantile_meets_the_target(recorded, target: float) -> None:
    threshold, _ = _order_statistic_threshold(recorded["latency_ms"], target)
    (report,) = SLOSet([SLO("q", "latency_ms", threshold, "max", target)]).evaluate(recorded)
    assert report.met, report


@pytest.mark.parametrize("target", TARGETS)
def test_threshold_below_the_recorded_quantile_violates_the_target(recorded, target: float) -> None:
    values = recorded["latency_ms"]
    threshold, k = _order_statistic_threshold(values, target)
    below = max(v for v in values if v < threshold) if any(v < threshold for v in values) else 0.0
    (report,) = SLOSet([SLO("q", "latency_ms", below, "max", target)]).evaluate(recorded)
    assert report.bad >= len(values) - k + 1
    assert not report.met and report.budget_burned > 1.0


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(0.01, 1e4, allow_nan=False), min_size=1, max_size=200),
    st.sampled_from(TARGETS),
    st.sampled_from(["max", "min"]),
)
def test_reports_agree_with_a_numpy_count_for_any_recording(values, target, direction) -> None:
    threshold = float(np.median(values))
    (report,) = SLOSet([SLO("s", "latency_ms", threshold, direction, target)]).evaluate(
        {"latency_ms": values}
    )
    array = np.asarray(values)
    bad = int((array > threshold).sum() if direction == "max" else (array < threshold).sum())
    assert report.bad == bad and report.total == len(values)
    assert report.budget_burned == pytest.approx(bad / len(values) / (1 - target))


def test_a_budget_spent_exactly_is_met() -> None:
    (report,) = SLOSet([SLO("s", "latency_ms", 1.0, "max", 0.9)]).evaluate(
        {"latency_ms": [0.5] * 90 + [2.0] * 10}
    )
    assert report.met


def test_trainer_reports_every_configured_slo_violated_when_thresholds_are_unreachable() -> None:
    slo = SLOConfig(
        max_forward_ms=1e-9, min_forward_tokens_per_s=1e15, max_peak_memory_mb=1e-6, target=0.9
    )
    reports = {r.name: r for r in slo_reports(slo, _train(slo).metrics)}
    assert set(reports) == {"forward_latency", "forward_throughput", "peak_memory"}
    for report in reports.values():
        assert report.bad == report.total > 0 and not report.met
        assert report.budget_burned == pytest.approx(1 / (1 - 0.9))


def test_trainer_reports_every_configured_slo_met_when_thresholds_are_generous() -> None:
    slo = SLOConfig(max_forward_ms=1e9, min_forward_tokens_per_s=1e-9, max_peak_memory_mb=1e12)
    reports = slo_reports(slo, _train(slo).metrics)
    assert len(reports) == 3
    assert all(r.met and r.bad == 0 and r.budget_burned == 0.0 for r in reports)


def test_trainer_without_slos_reports_nothing() -> None:
    assert slo_reports(SLOConfig(), _train(SLOConfig()).metrics) == []


def test_run_summary_carries_the_slo_reports(tmp_path: Path) -> None:
    _train(SLOConfig(max_forward_ms=1e-9, target=0.5), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    (report,) = summary["slo"]
    assert report["name"] == "forward_latency" and report["met"] is False
    assert report["budget_burned"] == pytest.approx(2.0)


def test_slos_loaded_from_yaml_evaluate_recorded_metrics(recorded) -> None:
    spec = yaml.safe_load(
        """
        latency: {metric: latency_ms, max: 1000000000.0, target: 0.99}
        memory: {metric: peak_memory_bytes, max: 1.0, target: 0.5}
        """
    )
    reports = {r.name: r for r in SLOSet.from_mapping(spec).evaluate(recorded)}
    assert reports["latency"].met and reports["latency"].total == len(recorded["latency_ms"])
    assert not reports["memory"].met and reports["memory"].bad == 1


@pytest.mark.parametrize(
    "section, path",
    [({"target": 1.0}, "slo.target"), ({"max_forward_ms": 0.0}, "slo.max_forward_ms")],
)
def test_invalid_run_slo_config_names_the_key(section: dict, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        SLOConfig(**section)
    assert info.value.path == path
