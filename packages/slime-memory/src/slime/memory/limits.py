"""Hard limits that every layer above checks against."""

from __future__ import annotations

__all__ = ["MAX_POOL_SIZE"]

MAX_POOL_SIZE = 64
"""The blueprint's hard limit on live pods in one pool (an organism's slot capacity)."""
