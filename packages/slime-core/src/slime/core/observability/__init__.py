"""Observability of slime.core: metrics, SLOs with error budgets, tracing. Passive and injected."""

from slime.core.observability.metrics import MetricsCollector as MetricsCollector
from slime.core.observability.slo import SLO as SLO
from slime.core.observability.slo import SLOReport as SLOReport
from slime.core.observability.slo import SLOSet as SLOSet
from slime.core.observability.tracing import make_tracer as make_tracer
from slime.core.observability.tracing import span as span

__all__ = ["SLO", "MetricsCollector", "SLOReport", "SLOSet", "make_tracer", "span"]
