"""User-facing API: the native causal LM and the nn.TransformerEncoder drop-in."""

from slime.core.api.config import SlimeConfig as SlimeConfig
from slime.core.api.native import SlimeModel as SlimeModel
from slime.core.api.sampling import generate_tokens as generate_tokens
from slime.core.api.torch_compat import SlimeMoldEncoder as SlimeMoldEncoder
from slime.core.api.torch_compat import SlimeMoldEncoderLayer as SlimeMoldEncoderLayer

__all__ = [
    "SlimeConfig",
    "SlimeModel",
    "SlimeMoldEncoder",
    "SlimeMoldEncoderLayer",
    "generate_tokens",
]
