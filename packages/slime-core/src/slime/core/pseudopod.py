"""Pseudopod: one attention head of the living pool, an nn.Module that owns its projections.

A pod owns ``q, k, v`` projections ``(d, D)`` (and biases ``(d,)`` when ``bias``) and an output
projection ``(D, d)``. Inside an organism the pods' weights are stacked and computed in one kernel
call; :meth:`Pseudopod.forward` runs the same head alone (probe measurement, standalone use).

Behavioural descriptors (blueprint decision 9: they follow compute structure), each in [0, 1]:

0. ``attention_distance``: mean ``|t - s|`` under the head's attention, divided by ``T - 1``.
   Short-range heads touch nearby keys (cache-friendly, window-able); long-range heads do not.
1. ``activation_sparsity``: Hoyer sparsity of the head's outputs, ``(sqrt(d) - |x|_1/|x|_2) /
   (sqrt(d) - 1)`` per token, averaged. Sparse outputs compress and prune well.
2. ``weight_spread``: ``1 - mean(|w|)^2 / mean(w^2)`` over the pod's weights; 0 for constant
   magnitudes, larger for heavy tails (which need more precision to quantise).

Archives use the first ``k`` of these (``k`` = number of archive dimensions). Measurements happen on
a probe batch (medium timescale) and are smoothed by an exponential moving average, so one noisy
minibatch cannot move a pod across the archive.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from slime.proto import ConfigError, Kernel, KernelError
from torch import Tensor, nn

__all__ = ["DESCRIPTOR_NAMES", "Pseudopod"]

DESCRIPTOR_NAMES = ("attention_distance", "activation_sparsity", "weight_spread")
_PROJECTIONS = ("q", "k", "v")


def _normal(
    shape: tuple[int, ...],
    std: float,
    generator: torch.Generator | None,
    device: torch.device | None,
    dtype: torch.dtype | None,
) -> Tensor:
    where = generator.device if generator is not None else device
    w = torch.randn(shape, generator=generator, device=where, dtype=torch.float32) * std
    return w.to(device=device, dtype=dtype or torch.float32)


def hoyer_sparsity(x: Tensor) -> Tensor:
    """Hoyer sparsity of each row of ``(..., d)`` in [0, 1]; all-zero rows count as fully sparse."""
    d = x.shape[-1]
    if d < 2:
        raise KernelError(f"Hoyer sparsity needs at least 2 features, got {d}")
    x = x.float()
    l1 = x.abs().sum(-1)
    l2 = torch.linalg.vector_norm(x, dim=-1)
    ratio = torch.where(l2 > 0, l1 / l2.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    return ((math.sqrt(d) - ratio) / (math.sqrt(d) - 1)).clamp(0.0, 1.0)


class Pseudopod(nn.Module):
    """One attention head. Implements slime.proto.Component and slime.proto.Pseudopod.

    Args:
        n_embd: model width ``D``.
        head_dim: head width ``d``.
        kernel: the compute backend (slime.proto.Kernel).
        bias: whether q/k/v projections carry biases.
        init_std: std of the normal initialisation of q/k/v.
        out_std: std of the output projection's initialisation (default ``init_std``); 0 gives a
            "quiet" pod whose birth does not change the organism's function.
        descriptor_momentum: EMA momentum of descriptor measurements, in [0, 1).
    """

    def __init__(
        self,
        n_embd: int,
        head_dim: int,
        *,
        kernel: Kernel,
        bias: bool = False,
        init_std: float = 0.02,
        out_std: float | None = None,
        descriptor_momentum: float = 0.9,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        for name, value in (("n_embd", n_embd), ("head_dim", head_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ConfigError(f"must be an int >= 2, got {value!r}", name)
        if not 0.0 <= descriptor_momentum < 1.0:
            raise ConfigError(
                f"must lie in [0, 1), got {descriptor_momentum!r}", "descriptor_momentum"
            )
        self.n_embd, self.head_dim, self.bias = n_embd, head_dim, bias
        self.kernel = kernel
        self.descriptor_momentum = descriptor_momentum
        device = torch.device(device) if device is not None else None
        out_std = init_std if out_std is None else out_std
        for p in _PROJECTIONS:
            w = _normal((head_dim, n_embd), init_std, generator, device, dtype)
            self.register_parameter(f"{p}_weight", nn.Parameter(w))
            if bias:
                b = torch.zeros(head_dim, device=device, dtype=dtype or torch.float32)
                self.register_parameter(f"{p}_bias", nn.Parameter(b))
        o = _normal((n_embd, head_dim), out_std, generator, device, dtype)
        self.o_weight = nn.Parameter(o)
        self.register_buffer("descriptors", torch.zeros(len(DESCRIPTOR_NAMES), device=device))
        self.register_buffer("n_measurements", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("_correlation", torch.eye(head_dim, device=device))
        self._fitness = 0.0

    # -- Component -------------------------------------------------------------------------------

    @property
    def fitness(self) -> float:
        """Task fitness set by the trainer (``pod.fitness = value``); higher is better."""
        return self._fitness

    @fitness.setter
    def fitness(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"fitness must be finite, got {value!r}", "fitness")
        self._fitness = value

    def reset(self) -> None:
        """Forget fitness, smoothed descriptors and the observed correlation (weights are kept)."""
        self._fitness = 0.0
        with torch.no_grad():
            self.descriptors.zero_()
            self.n_measurements.zero_()
            self._correlation.copy_(torch.eye(self.head_dim, device=self._correlation.device))

    def projection_names(self) -> list[str]:
        names = [f"{p}_weight" for p in _PROJECTIONS]
        if self.bias:
            names += [f"{p}_bias" for p in _PROJECTIONS]
        return names + ["o_weight"]

    def to_dict(self) -> dict[str, Any]:
        """Genome: plain data and detached tensor copies (no reference to this module)."""
        return {
            "n_embd": self.n_embd,
            "head_dim": self.head_dim,
            "bias": self.bias,
            "descriptor_momentum": self.descriptor_momentum,
            "fitness": self._fitness,
            "params": {n: getattr(self, n).detach().clone() for n in self.projection_names()},
            "descriptors": self.descriptors.detach().clone(),
            "n_measurements": int(self.n_measurements),
            "correlation": self._correlation.detach().clone(),
        }

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        *,
        kernel: Kernel | None = None,
        device: torch.device | str | None = None,
    ) -> Pseudopod:
        """Rebuild a pod from :meth:`to_dict` output; ``kernel=None`` selects the default backend
        for ``device`` (``device=None`` keeps the genome's tensors where they are)."""
        missing = sorted({"n_embd", "head_dim", "bias", "params"} - set(data))
        if missing:
            raise ConfigError(f"pseudopod genome lacks keys {missing}", "genome")
        params = data["params"]
        first = params["q_weight"]
        device = torch.device(device) if device is not None else first.device
        if kernel is None:
            from slime.kernels import select_kernel

            kernel = select_kernel(device, head_dim=data["head_dim"])
        pod = cls(
            data["n_embd"],
            data["head_dim"],
            kernel=kernel,
            bias=data["bias"],
            descriptor_momentum=data.get("descriptor_momentum", 0.9),
            device=device,
            dtype=first.dtype,
        )
        expected = set(pod.projection_names())
        if set(params) != expected:
            raise ConfigError(
                f"genome params {sorted(params)} do not match {sorted(expected)}", "genome.params"
            )
        with torch.no_grad():
            for name, value in params.items():
                target = getattr(pod, name)
                if tuple(value.shape) != tuple(target.shape):
                    raise ConfigError(
                        f"shape {tuple(value.shape)} != expected {tuple(target.shape)}",
                        f"genome.params.{name}",
                    )
                target.copy_(value)
            if "descriptors" in data:
                pod.descriptors.copy_(data["descriptors"])
            pod.n_measurements.fill_(int(data.get("n_measurements", 0)))
            if "correlation" in data:
                pod._correlation.copy_(data["correlation"])
        pod.fitness = data.get("fitness", 0.0)
        return pod

    # -- Pseudopod ------------------------------------------------------------------------------

    def project(self, latent: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, T, D)`` -> q, k, v each ``(B, 1, T, d)``."""
        outs = []
        for p in _PROJECTIONS:
            bias = getattr(self, f"{p}_bias") if self.bias else None
            outs.append(nn.functional.linear(latent, getattr(self, f"{p}_weight"), bias))
        return tuple(x.unsqueeze(1) for x in outs)

    def forward(
        self, latent: Tensor, stimulus: Tensor | None = None, *, causal: bool = False
    ) -> Tensor:
        """Attend over ``latent`` ``(B, T, D)``; returns the head output ``(B, T, d)``.

        Args:
            stimulus: optional ``(B, T)`` bool key padding mask, True where a key may be attended.
            causal: query ``t`` sees keys ``<= t`` only.
        """
        q, k, v = self.project(latent)
        out = self.kernel.attention(q, k, v, causal=causal, key_padding_mask=stimulus)
        return out.squeeze(1)

    def contribution(self, head_out: Tensor) -> Tensor:
        """Map a head output ``(B, T, d)`` into model space ``(B, T, D)``."""
        return nn.functional.linear(head_out, self.o_weight)

    @property
    def correlation(self) -> Tensor:
        """``(d, d)`` correlation of the outputs seen at the last measurement (identity before)."""
        return self._correlation

    def effective_rank(self) -> Tensor:
        return self.kernel.effective_rank(self._correlation.unsqueeze(0).float()).squeeze(0)

    def coherence(self) -> Tensor:
        return self.kernel.coherence(self._correlation.unsqueeze(0).float()).squeeze(0)

    # -- behaviour (medium timescale) -----------------------------------------------------------

    def weight_spread(self) -> Tensor:
        """0-d: ``1 - mean|w|^2 / mean(w^2)`` over every weight of the pod, in [0, 1]."""
        w = torch.cat(
            [getattr(self, n).detach().float().flatten() for n in self.projection_names()]
        )
        mean_sq = w.square().mean()
        return torch.where(mean_sq > 0, 1.0 - w.abs().mean().square() / mean_sq, 0.0)

    @torch.no_grad()
    def measure(
        self,
        latent: Tensor,
        *,
        causal: bool = False,
        activation_sparsity: Tensor | None = None,
    ) -> Tensor:
        """Measure descriptors on a probe batch ``(B, T, D)`` and fold them into the EMA.

        Args:
            activation_sparsity: a 0-d value to use instead of the probe's (the organism passes
                the decayed average its tubes kept over training forwards).

        Returns:
            The raw measurement ``(3,)`` (the smoothed one is :attr:`descriptors`).
        """
        q, k, v = self.project(latent)
        out = self.kernel.attention(q, k, v, causal=causal).squeeze(1)  # (B, T, d)
        seq = latent.shape[1]
        # Attention probabilities are needed explicitly here; fused kernels never expose them.
        logits = (q.float() @ k.float().transpose(-1, -2)).squeeze(1) * self.head_dim**-0.5
        pos = torch.arange(seq, device=latent.device)
        gap = (pos[:, None] - pos[None, :]).abs().float()
        if causal:
            logits = logits.masked_fill(pos[None, :] > pos[:, None], -math.inf)
        probs = logits.softmax(-1)
        distance = (probs * gap).sum(-1).mean() / max(seq - 1, 1)
        sparsity = (
            hoyer_sparsity(out).mean() if activation_sparsity is None else activation_sparsity
        )
        raw = torch.stack([distance, sparsity.to(distance), self.weight_spread()])
        flat = out.reshape(1, -1, self.head_dim).float()
        self._correlation.copy_(self.kernel.correlation(flat).squeeze(0))
        m = self.descriptor_momentum
        smoothed = torch.where(self.n_measurements > 0, m * self.descriptors + (1 - m) * raw, raw)
        self.descriptors.copy_(smoothed)
        self.n_measurements.add_(1)
        return raw

    def parameter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())
