"""The run's SLO section as ``slime.core`` SLOs, evaluated over a MetricsCollector's forwards."""

from __future__ import annotations

from slime.core import SLO, MetricsCollector, SLOReport, SLOSet
from slime.train.config import SLOConfig

__all__ = ["slo_reports", "slo_set"]


def slo_set(cfg: SLOConfig) -> SLOSet:
    """One SLO per objective set in ``cfg`` (those left ``null`` are not checked)."""
    slos = []
    if cfg.max_forward_ms is not None:
        slos.append(SLO("forward_latency", "latency_ms", cfg.max_forward_ms, "max", cfg.target))
    if cfg.min_forward_tokens_per_s is not None:
        threshold = cfg.min_forward_tokens_per_s
        slos.append(SLO("forward_throughput", "tokens_per_s", threshold, "min", cfg.target))
    if cfg.max_peak_memory_mb is not None:
        threshold = cfg.max_peak_memory_mb * 2**20
        slos.append(SLO("peak_memory", "peak_memory_bytes", threshold, "max", cfg.target))
    return SLOSet(slos)


def slo_reports(cfg: SLOConfig, metrics: MetricsCollector) -> list[SLOReport]:
    """Budget burn of each objective over the forwards ``metrics`` recorded (host sync)."""
    slos = slo_set(cfg)
    if not slos.slos:
        return []
    metrics.flush()  # resolves pending timings and records the peak-memory observation
    return slos.evaluate(metrics.observations())
