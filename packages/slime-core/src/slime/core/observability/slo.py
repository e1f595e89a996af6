"""Service-level objectives with error budgets, loaded from plain mappings and validated.

An SLO says what fraction of events must be good: "95% of forwards take <= 40 ms" is a p95 latency
objective (``target=0.95``). The error budget is the allowed bad fraction ``1 - target``; the report
says how much of it the observed events burned (1.0 means the budget is exactly spent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from slime.proto import ConfigError

__all__ = ["SLO", "SLOReport", "SLOSet"]

METRICS = ("latency_ms", "tokens_per_s", "peak_memory_bytes")
_DIRECTIONS = ("max", "min")


@dataclass(frozen=True)
class SLO:
    """One objective.

    Args:
        name: a label for reports.
        metric: one of ``latency_ms``, ``tokens_per_s``, ``peak_memory_bytes``.
        threshold: the bound a good event respects.
        direction: ``"max"`` (good when value <= threshold) or ``"min"`` (good when >=).
        target: fraction of events that must be good, in (0, 1).
    """

    name: str
    metric: str
    threshold: float
    direction: str
    target: float

    def __post_init__(self) -> None:
        where = f"slo.{self.name}"
        if self.metric not in METRICS:
            raise ConfigError(f"metric {self.metric!r} is not one of {METRICS}", f"{where}.metric")
        if self.direction not in _DIRECTIONS:
            raise ConfigError(
                f"direction {self.direction!r} is not one of {_DIRECTIONS}", f"{where}.direction"
            )
        if not isinstance(self.threshold, int | float) or not math.isfinite(self.threshold):
            raise ConfigError(f"threshold must be a finite number, got {self.threshold!r}", where)
        if not isinstance(self.target, int | float) or not 0.0 < self.target < 1.0:
            raise ConfigError(f"target must lie in (0, 1), got {self.target!r}", f"{where}.target")

    @property
    def error_budget(self) -> float:
        """Allowed fraction of bad events."""
        return 1.0 - self.target

    def is_good(self, value: float) -> bool:
        return value <= self.threshold if self.direction == "max" else value >= self.threshold


@dataclass(frozen=True)
class SLOReport:
    """Outcome of one SLO over a set of observations."""

    name: str
    metric: str
    total: int
    bad: int
    error_budget: float
    budget_burned: float  # bad fraction / error budget; > 1 means the SLO is violated
    met: bool


class SLOSet:
    """A validated set of SLOs, built from data with :meth:`from_mapping`."""

    def __init__(self, slos: Sequence[SLO]):
        names = [s.name for s in slos]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"duplicate SLO names {duplicates}", "slo")
        self.slos = tuple(slos)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Mapping[str, Any]]) -> SLOSet:
        """Build from ``{name: {"metric": ..., "max"|"min": threshold, "target": ...}}``.

        Raises:
            ConfigError: naming the SLO and key that is unknown, missing or out of range.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a mapping of SLOs, got {type(data).__name__}", "slo")
        slos = []
        for name, spec in data.items():
            where = f"slo.{name}"
            if not isinstance(spec, Mapping):
                raise ConfigError(f"expected a mapping, got {type(spec).__name__}", where)
            unknown = sorted(set(spec) - {"metric", "max", "min", "target"})
            if unknown:
                raise ConfigError(f"unknown keys {unknown}", where)
            bounds = [d for d in _DIRECTIONS if d in spec]
            if len(bounds) != 1:
                raise ConfigError(f"give exactly one of 'max' or 'min', got {bounds}", where)
            for key in ("metric", "target"):
                if key not in spec:
                    raise ConfigError(f"missing key {key!r}", where)
            slos.append(
                SLO(
                    name=str(name),
                    metric=spec["metric"],
                    threshold=spec[bounds[0]],
                    direction=bounds[0],
                    target=spec["target"],
                )
            )
        return cls(slos)

    def evaluate(self, observations: Mapping[str, Sequence[float]]) -> list[SLOReport]:
        """Report budget burn of every SLO over per-event ``observations`` (metric -> values),
        e.g. :meth:`MetricsCollector.observations`. An SLO with no events burns nothing."""
        reports = []
        for slo in self.slos:
            values = observations.get(slo.metric, ())
            bad = sum(not slo.is_good(v) for v in values)
            total = len(values)
            # Exact rational arithmetic on the target as written (0.9, not 0.9000000000000000222):
            # a budget spent exactly burns 1.0 and is met, rather than 1.0000000000000002.
            budget = 1 - Fraction(repr(slo.target))
            burned = Fraction(bad, total) / budget if total else Fraction(0)
            reports.append(
                SLOReport(
                    slo.name, slo.metric, total, bad, slo.error_budget, float(burned), burned <= 1
                )
            )
        return reports
