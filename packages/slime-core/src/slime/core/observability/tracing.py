"""Tracing through OpenTelemetry spans, injected as a tracer object.

Models take ``tracer=None`` (no spans at all) or any OpenTelemetry ``Tracer``; :func:`make_tracer`
builds one from a provider. opentelemetry is imported only inside :func:`make_tracer`, so slime.core
imports on machines without opentelemetry-api installed; spans are then simply not requested.
Without an SDK configured, OpenTelemetry's API returns no-op spans.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

__all__ = ["make_tracer", "span"]

INSTRUMENTATION_NAME = "slime.core"


def make_tracer(tracer_provider: Any | None = None) -> Any:
    """An OpenTelemetry tracer named ``slime.core`` from ``tracer_provider`` (None: the API's
    configured provider, a no-op one unless an SDK was installed and set)."""
    from opentelemetry import trace

    return trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)


def span(tracer: Any | None, name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A context manager opening span ``name`` with plain ``attributes`` on ``tracer``; a
    ``nullcontext`` when tracer is None (which torch.compile traces through without a break)."""
    if tracer is None:
        return nullcontext()
    return tracer.start_as_current_span(name, attributes=attributes)
