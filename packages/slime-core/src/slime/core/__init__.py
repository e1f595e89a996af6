"""slime.core: The Slime Mold Transformer: pseudopods, chemotaxis, the organism, observability and the user-facing API."""

from slime.core.observability import SLO as SLO
from slime.core.observability import MetricsCollector as MetricsCollector
from slime.core.observability import SLOReport as SLOReport
from slime.core.observability import SLOSet as SLOSet
from slime.core.observability import make_tracer as make_tracer
from slime.core.placement import placement as placement
from slime.core.state import FlowState as FlowState

__all__ = [
    "SLO",
    "FlowState",
    "MetricsCollector",
    "SLOReport",
    "SLOSet",
    "make_tracer",
    "placement",
]
