"""MetricsCollector: a passive, injected recorder of forward latency, throughput, memory and counters.

Timing never synchronises the host with the device on the fast timescale. On CUDA each timed region
records a pair of CUDA events and keeps them pending; :meth:`MetricsCollector.flush` (slow timescale)
waits for the last event and reads every elapsed time at once. On CPU the region is timed with
``time.perf_counter``.
"""

from __future__ import annotations

import math
import resource
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from slime.proto import ConfigError, shown

__all__ = ["MetricsCollector"]


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 100] of a non-empty list."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _check_count(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"expected an int >= 0, got {shown(value)}", name)


class MetricsCollector:
    """Records what forward passes cost. Pass one to a model; read it with :meth:`flush`.

    Args:
        device: where the timed work runs; CUDA devices are timed with events, others on the host.
        max_pending: most CUDA event pairs kept before a flush is forced (bounds host memory).
    """

    def __init__(self, *, device: torch.device | str | None = None, max_pending: int = 4096):
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigError(
                f"max_pending must be an int >= 1, got {shown(max_pending)}", "max_pending"
            )
        try:
            self.device = torch.device(device) if device is not None else torch.device("cpu")
        except (RuntimeError, TypeError, ValueError) as e:  # as slime.memory reads devices
            raise ConfigError(f"device {shown(device)} is not a torch device: {e}", "device") from e
        self.max_pending = max_pending
        self._pending: list[tuple[Any, Any, int]] = []
        self._latencies_ms: list[float] = []
        self._tokens: list[int] = []
        self._peak_memory: list[int] = []
        self._counters: defaultdict[str, int] = defaultdict(int)

    @property
    def uses_cuda_events(self) -> bool:
        return self.device.type == "cuda"

    @contextmanager
    def time_forward(self, tokens: int) -> Iterator[None]:
        """Time the enclosed forward pass, which processes ``tokens`` tokens.

        Raises:
            ConfigError: ``tokens`` is no int >= 0 (checked before anything is recorded, so a
                bad count never reaches the summaries).
        """
        _check_count(tokens, "tokens")
        if self.uses_cuda_events:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._pending.append((start, end, tokens))
            if len(self._pending) >= self.max_pending:
                self._resolve_pending()
        else:
            began = time.perf_counter()
            yield
            self._latencies_ms.append((time.perf_counter() - began) * 1e3)
            self._tokens.append(tokens)

    def increment(self, counter: str, amount: int = 1) -> None:
        """Add ``amount`` to a named counter (e.g. ``"pod/0.3/forwards"``).

        Raises:
            ConfigError: ``counter`` is no string or ``amount`` no int.
        """
        if not isinstance(counter, str):
            raise ConfigError(f"a counter is named by a string, got {shown(counter)}", "counter")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ConfigError(f"expected an int, got {shown(amount)}", "amount")
        self._counters[counter] += amount

    def counter(self, name: str) -> int:
        return self._counters.get(name, 0)

    def _resolve_pending(self) -> None:
        # Slow timescale: the only host synchronisation of this class.
        if not self._pending:
            return
        self._pending[-1][1].synchronize()
        for start, end, tokens in self._pending:
            self._latencies_ms.append(float(start.elapsed_time(end)))
            self._tokens.append(tokens)
        self._pending.clear()

    def _read_peak_memory(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        # Host: the process's peak resident set (Linux reports KiB).
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024

    def observations(self) -> dict[str, list[float]]:
        """Per-event observations for SLOs: ``latency_ms`` and ``tokens_per_s`` per forward,
        ``peak_memory_bytes`` per flush. Resolves pending events (host sync)."""
        self._resolve_pending()
        throughput = [
            tokens / (ms / 1e3) if ms > 0 else math.inf
            for tokens, ms in zip(self._tokens, self._latencies_ms)
        ]
        return {
            "latency_ms": list(self._latencies_ms),
            "tokens_per_s": throughput,
            "peak_memory_bytes": [float(m) for m in self._peak_memory],
        }

    def flush(self) -> dict[str, Any]:
        """Resolve pending timings (slow timescale) and return a plain-data summary.

        Returns:
            ``forwards``, ``tokens``, ``latency_ms_mean``, ``latency_ms_p50``, ``latency_ms_p95``
            (None before any forward), ``tokens_per_s`` over all timed forwards,
            ``peak_memory_bytes`` and a copy of the counters.
        """
        self._resolve_pending()
        self._peak_memory.append(self._read_peak_memory())
        lat = self._latencies_ms
        total_s = sum(lat) / 1e3
        return {
            "forwards": len(lat),
            "tokens": sum(self._tokens),
            "latency_ms_mean": sum(lat) / len(lat) if lat else None,
            "latency_ms_p50": _percentile(lat, 50) if lat else None,
            "latency_ms_p95": _percentile(lat, 95) if lat else None,
            "tokens_per_s": sum(self._tokens) / total_s if total_s > 0 else None,
            "peak_memory_bytes": self._peak_memory[-1],
            "counters": dict(self._counters),
        }

    def reset(self) -> None:
        """Forget every recorded event and counter (pending CUDA events are dropped)."""
        self._pending.clear()
        self._latencies_ms.clear()
        self._tokens.clear()
        self._peak_memory.clear()
        self._counters.clear()
