"""The SLO section maps onto slime.core SLOs and is evaluated over recorded forwards."""

from __future__ import annotations

from slime.core import MetricsCollector
from slime.train.config import SLOConfig
from slime.train.slo import slo_reports, slo_set


def test_only_objectives_that_are_set_become_slos() -> None:
    assert slo_set(SLOConfig()).slos == ()
    slos = slo_set(SLOConfig(max_forward_ms=5.0, max_peak_memory_mb=2.0, target=0.9)).slos
    assert [(s.name, s.metric, s.direction) for s in slos] == [
        ("forward_latency", "latency_ms", "max"),
        ("peak_memory", "peak_memory_bytes", "max"),
    ]
    assert slos[1].threshold == 2.0 * 2**20 and slos[0].target == 0.9


def test_reports_burn_the_error_budget_of_slow_forwards() -> None:
    metrics = MetricsCollector()
    for _ in range(4):
        with metrics.time_forward(10):
            pass
    (report,) = slo_reports(SLOConfig(max_forward_ms=1e-9), metrics)
    assert report.total == 4 and report.bad == 4 and not report.met
