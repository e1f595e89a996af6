"""Tracing: spans through an injected OpenTelemetry tracer; nothing without one."""

import pytest

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from slime.core.observability import make_tracer, span  # noqa: E402


def _tracer_and_exporter():
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return make_tracer(provider), exporter


def test_span_is_exported_with_its_attributes():
    tracer, exporter = _tracer_and_exporter()
    with span(tracer, "organism.forward", batch=2, seq=8):
        pass
    (finished,) = exporter.get_finished_spans()
    assert finished.name == "organism.forward"
    assert dict(finished.attributes) == {"batch": 2, "seq": 8}


def test_span_without_tracer_does_nothing():
    with span(None, "anything") as current:
        assert current is None


def test_make_tracer_without_sdk_provider_gives_non_recording_spans():
    from opentelemetry import trace

    tracer = make_tracer(trace.NoOpTracerProvider())
    with span(tracer, "x") as current:
        assert not current.is_recording()
