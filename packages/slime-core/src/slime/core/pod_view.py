"""PodView: one slot of an organism's slot table seen as a pseudopod.

An organism stores its pods stacked (``qkv_weight (3, P, d, D)``, ``o_weight (D, P, d)`` and per-slot
buffers). A view reads and writes one slot of those tensors in place: its weights are detached views
that share storage with the organism's parameters, its fitness and descriptors are entries of the
organism's buffers. Nothing is copied, so a view never goes stale while its slot stays live, and it
is the way to look at, edit or export one pod (``to_dict`` gives its genome, ``from_dict`` writes
one back).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from slime.proto import ConfigError
from torch import Tensor, nn

__all__ = ["PodView"]

_PROJECTIONS = ("q", "k", "v")


class PodView:
    """Slot ``slot`` of ``organism``. Implements slime.proto.Pseudopod and Component.

    Views are cheap; get one with ``organism.pod(slot)``. Reading :attr:`fitness` synchronises
    with the device (slow timescale).
    """

    def __init__(self, organism: Any, slot: int) -> None:
        self._organism = organism
        self.slot = slot

    def __repr__(self) -> str:
        return f"PodView({self._organism.name}, slot={self.slot})"

    # -- weights (detached views sharing the organism's storage) --------------------------------

    @property
    def n_embd(self) -> int:
        return self._organism.n_embd

    @property
    def head_dim(self) -> int:
        return self._organism.head_dim

    @property
    def bias(self) -> bool:
        return self._organism.bias

    def _qkv(self, i: int) -> Tensor:
        return self._organism.qkv_weight.detach()[i, self.slot]

    @property
    def q_weight(self) -> Tensor:
        return self._qkv(0)

    @property
    def k_weight(self) -> Tensor:
        return self._qkv(1)

    @property
    def v_weight(self) -> Tensor:
        return self._qkv(2)

    @property
    def o_weight(self) -> Tensor:
        """``(D, d)``: this pod's columns of the output projection."""
        return self._organism.o_weight.detach()[:, self.slot]

    def _bias(self, i: int) -> Tensor:
        if self._organism.qkv_bias is None:
            raise AttributeError(f"{self._organism.name} has no biases (bias=False)")
        return self._organism.qkv_bias.detach()[i, self.slot]

    @property
    def q_bias(self) -> Tensor:
        return self._bias(0)

    @property
    def k_bias(self) -> Tensor:
        return self._bias(1)

    @property
    def v_bias(self) -> Tensor:
        return self._bias(2)

    def projection_names(self) -> list[str]:
        names = [f"{p}_weight" for p in _PROJECTIONS]
        if self.bias:
            names += [f"{p}_bias" for p in _PROJECTIONS]
        return names + ["o_weight"]

    def parameter_bytes(self) -> int:
        return self._organism.pod_bytes()

    # -- per-slot state ---------------------------------------------------------------------------

    @property
    def fitness(self) -> float:
        """Task fitness set by the trainer (``pod.fitness = value``); higher is better."""
        return float(self._organism.fitness[self.slot])

    @fitness.setter
    def fitness(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"fitness must be finite, got {value!r}", "fitness")
        self._organism.fitness[self.slot].fill_(value)

    @property
    def descriptors(self) -> Tensor:
        """``(3,)`` smoothed descriptors (a view of the organism's buffer)."""
        return self._organism.descriptors[self.slot]

    @property
    def n_measurements(self) -> Tensor:
        return self._organism.n_measurements[self.slot]

    @property
    def born_step(self) -> int:
        """The step this pod was born at; -1 for a pod present since construction."""
        return int(self._organism.born_step[self.slot])

    @property
    def correlation(self) -> Tensor:
        """``(d, d)`` correlation of the outputs seen at the last measurement (identity before)."""
        return self._organism.correlation[self.slot]

    def effective_rank(self) -> Tensor:
        return self._organism.kernel.effective_rank(self.correlation.unsqueeze(0).float())[0]

    def coherence(self) -> Tensor:
        return self._organism.kernel.coherence(self.correlation.unsqueeze(0).float())[0]

    # -- the head alone ---------------------------------------------------------------------------

    def forward(
        self, latent: Tensor, stimulus: Tensor | None = None, *, causal: bool = False
    ) -> Tensor:
        """This head alone over ``latent`` ``(B, T, D)``: ``(B, T, d)`` (``stimulus``: an optional
        ``(B, T)`` bool key padding mask, True where a key may be attended)."""
        heads = []
        for i, p in enumerate(_PROJECTIONS):
            bias = getattr(self, f"{p}_bias") if self.bias else None
            heads.append(nn.functional.linear(latent, self._qkv(i), bias).unsqueeze(1))
        q, k, v = heads
        out = self._organism.kernel.attention(q, k, v, causal=causal, key_padding_mask=stimulus)
        return out.squeeze(1)

    __call__ = forward

    def to_dict(self) -> dict[str, Any]:
        """Genome: plain data and detached copies (``params`` holds ``q_weight``, ``k_weight``,
        ``v_weight``, the biases when ``bias``, and ``o_weight``)."""
        organism = self._organism
        return {
            "n_embd": self.n_embd,
            "head_dim": self.head_dim,
            "bias": self.bias,
            "descriptor_momentum": organism.descriptor_momentum,
            "fitness": self.fitness,
            "params": {n: getattr(self, n).clone() for n in self.projection_names()},
            "descriptors": self.descriptors.detach().clone(),
            "n_measurements": int(self.n_measurements),
            "correlation": self.correlation.detach().clone(),
        }

    def from_dict(self, genome: dict[str, Any]) -> PodView:
        """Overwrite this slot's weights, fitness and descriptors from a genome (:meth:`to_dict`
        format, or an archive's column row); the slot stays live. Returns this view.

        Raises:
            ConfigError: the genome's keys or sizes do not fit the organism.
        """
        self._organism.write_slot(self.slot, genome, keep_state=True)
        return self

    def reset(self) -> None:
        """Forget fitness, smoothed descriptors, the observed correlation and the slot's tube
        memory (weights are kept)."""
        with torch.no_grad():
            self._organism._reset_state(self.slot)
