"""Deterministic English-like text for the text-data tests (no corpus needed)."""

from __future__ import annotations

import random

WORDS = (
    "the quick brown fox jumps over a lazy dog while seven birds sing of morning light and "
    "rain falls softly on the old stone bridge"
).split()


def prose(chars: int, seed: int = 0) -> str:
    """Sentences of common words, about ``chars`` characters, ending in a newline."""
    rng = random.Random(seed)
    lines, n = [], 0
    while n < chars:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))).capitalize() + "."
        lines.append(line)
        n += len(line) + 1
    return "\n".join(lines) + "\n"
