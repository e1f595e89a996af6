"""Built-in tasks that need no download.

Toy validation tasks (blueprint: y = sin(x), XOR, parity) return plain ``(inputs, outputs)`` tensors.
The sequence tasks :class:`CopyTask` and :class:`RecallTask` need attention to be solved and follow
the :class:`~slime.train.datasets.Dataset` protocol: ``batch`` returns ``(idx, targets)``, ``(B, T)``
int64, with ``-1`` at positions that are not scored. Every generator takes a seeded
``torch.Generator``, so a batch is a pure function of the generator's state.
"""

from __future__ import annotations

import math

import torch
from slime.proto import DataError
from torch import Tensor

__all__ = [
    "CopyTask",
    "RecallTask",
    "parity_classification",
    "sine_regression",
    "xor_classification",
]


def sine_regression(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``x`` uniform in ``[-pi, pi]`` ``(n, 1)`` and ``y = sin(x)`` ``(n, 1)``, float32."""
    x = (torch.rand(n, 1, generator=generator) * 2 - 1) * math.pi
    return x, torch.sin(x)


def xor_classification(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two random bits ``(n, 2)`` float32 and their XOR ``(n,)`` int64."""
    return parity_classification(n, 2, generator)


def parity_classification(n: int, n_bits: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random bit strings ``(n, n_bits)`` float32 and their parity ``(n,)`` int64."""
    if n_bits < 1:
        raise DataError(f"n_bits must be >= 1, got {n_bits}")
    bits = torch.randint(0, 2, (n, n_bits), generator=generator)
    return bits.float(), bits.sum(dim=1).remainder(2)


class CopyTask:
    """Copy a random string after a separator: ``a_1 .. a_L SEP a_1 .. a_L``.

    Tokens ``0 .. vocab_size-2`` are symbols, ``vocab_size-1`` is the separator. Only the copied half is
    scored, so the task is unsolvable without attending ``L + 1`` positions back.
    """

    def __init__(self, vocab_size: int, block_size: int) -> None:
        if vocab_size < 3:
            raise DataError(f"copy task needs vocab_size >= 3, got {vocab_size}")
        if block_size < 3:
            raise DataError(f"copy task needs block_size >= 3, got {block_size}")
        self.vocab_size = vocab_size
        self.length = block_size // 2  # sequence 2L + 1 tokens, inputs 2L
        self.block_size = 2 * self.length

    def batch(
        self, split: str, batch_size: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """``idx``, ``targets``: ``(B, 2L)``; targets are -1 before the separator."""
        L = self.length
        symbols = torch.randint(0, self.vocab_size - 1, (batch_size, L), generator=generator)
        sep = torch.full((batch_size, 1), self.vocab_size - 1, dtype=torch.long)
        seq = torch.cat([symbols, sep, symbols], dim=1)  # (B, 2L + 1)
        idx, targets = seq[:, :-1].clone(), seq[:, 1:].clone()
        targets[:, :L] = -1
        return idx, targets


class RecallTask:
    """Multi-query associative recall: key-value pairs, then keys again whose values must be recalled.

    Each sequence draws a fresh random map from ``K`` keys (tokens ``0 .. K-1``) to values (tokens
    ``K .. vocab_size-1``). The first ``K`` pairs present every key once, in random order; the
    remaining pairs repeat random keys, and the value after a repeated key is the only scored target.
    """

    def __init__(self, vocab_size: int, block_size: int) -> None:
        if vocab_size < 4:
            raise DataError(f"recall task needs vocab_size >= 4, got {vocab_size}")
        self.vocab_size = vocab_size
        self.n_keys = vocab_size // 2
        self.n_pairs = (block_size + 1) // 2
        if self.n_pairs <= self.n_keys:
            raise DataError(
                f"recall task with {self.n_keys} keys needs block_size >= {2 * self.n_keys + 1}, "
                f"got {block_size}"
            )
        self.block_size = 2 * self.n_pairs - 1

    def batch(
        self, split: str, batch_size: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """``idx``, ``targets``: ``(B, 2P - 1)`` for ``P`` pairs; targets set on repeated keys' values."""
        B, K, P = batch_size, self.n_keys, self.n_pairs
        n_values = self.vocab_size - K
        mapping = K + torch.randint(0, n_values, (B, K), generator=generator)  # key -> value token
        first = torch.argsort(torch.rand(B, K, generator=generator), dim=1)  # every key once
        rest = torch.randint(0, K, (B, P - K), generator=generator)
        keys = torch.cat([first, rest], dim=1)  # (B, P)
        values = torch.gather(mapping, 1, keys)
        seq = torch.stack([keys, values], dim=2).reshape(B, 2 * P)  # k v k v ...
        idx, targets = seq[:, :-1].clone(), seq[:, 1:].clone()
        scored = torch.zeros(B, 2 * P - 1, dtype=torch.bool)
        scored[:, 2 * K :: 2] = (
            True  # position 2i (key i) predicts value i, for repeated keys i >= K
        )
        targets[~scored] = -1
        return idx, targets
