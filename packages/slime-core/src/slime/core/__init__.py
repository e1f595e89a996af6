"""slime.core: The Slime Mold Transformer: pseudopods, chemotaxis, the organism, observability and the user-facing API."""

from slime.core.api import SlimeConfig as SlimeConfig
from slime.core.api import SlimeModel as SlimeModel
from slime.core.api import SlimeMoldEncoder as SlimeMoldEncoder
from slime.core.api import SlimeMoldEncoderLayer as SlimeMoldEncoderLayer
from slime.core.api import generate_tokens as generate_tokens
from slime.core.blocks import MLP as MLP
from slime.core.blocks import Block as Block
from slime.core.chemotaxis import Chemotaxis as Chemotaxis
from slime.core.observability import SLO as SLO
from slime.core.observability import MetricsCollector as MetricsCollector
from slime.core.observability import SLOReport as SLOReport
from slime.core.observability import SLOSet as SLOSet
from slime.core.observability import make_tracer as make_tracer
from slime.core.organism import FOUNDER as FOUNDER
from slime.core.organism import Organism as Organism
from slime.core.organism import SlotListener as SlotListener
from slime.core.placement import placement as placement
from slime.core.pod_view import PodView as PodView
from slime.core.pseudopod import DESCRIPTOR_NAMES as DESCRIPTOR_NAMES

__all__ = [
    "DESCRIPTOR_NAMES",
    "FOUNDER",
    "MLP",
    "SLO",
    "Block",
    "Chemotaxis",
    "MetricsCollector",
    "Organism",
    "PodView",
    "SLOReport",
    "SLOSet",
    "SlimeConfig",
    "SlimeModel",
    "SlimeMoldEncoder",
    "SlimeMoldEncoderLayer",
    "SlotListener",
    "generate_tokens",
    "make_tracer",
    "placement",
]
