"""FlowState: what flowed through one organism in one forward pass."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["FlowState"]


@dataclass
class FlowState:
    """The state an organism returns next to its output.

    Attributes:
        input: ``(B, T, D)`` the stimulus the organism attended over.
        hidden: ``(B, P, T, d)`` every slot's head output (zeros for dead or masked slots).
        residual: ``(B, T, D)`` input plus the organism's output, the residual stream after it.
        memory: ``(P,)`` the organism's tube recall (decayed per-slot activation sparsity over
            earlier training forwards), or None while its tubes are empty or absent.
    """

    input: Tensor
    hidden: Tensor
    residual: Tensor
    memory: Tensor | None = None
