"""SlimeConfig: the native model's architecture, validated in one place."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from slime.core.pseudopod import DESCRIPTOR_NAMES
from slime.memory import MAX_ARCHIVE_SIZE, MAX_POOL_SIZE
from slime.proto import ConfigError, shown

__all__ = ["SlimeConfig", "bounds", "check_range"]

BACKENDS = ("auto", "torch", "triton")
ARCHIVE_DEVICES = ("cpu", "model")


def bounds(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict:
    """Field metadata: the closed (or, with ``lo_open``, left-open) interval a value must lie in.

    Config layers above (``slime.train``'s YAML sections) read the same metadata, so the bounds
    are written once, here."""
    return {"range": (lo, hi, lo_open)}


def check_range(value: Any, metadata: Any, path: str) -> None:
    """Raise ConfigError when ``value`` (or an item of a tuple value) lies outside the field's
    ``range`` metadata; non-numbers and None are left to the type checks."""
    lo, hi, lo_open = metadata.get("range", (None, None, False))
    for item in value if isinstance(value, tuple) else (value,):
        if isinstance(item, bool) or not isinstance(item, int | float):
            continue
        if lo is not None and (item <= lo if lo_open else item < lo):
            bound = f"> {lo}" if lo_open else f">= {lo}"
            raise ConfigError(f"expected a value {bound}, got {shown(value)}", path)
        if hi is not None and item > hi:
            raise ConfigError(f"expected a value <= {hi}, got {shown(value)}", path)


def _int_at_least(value: Any, low: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"expected an int >= {low}, got {shown(value)}", name)


@dataclass
class SlimeConfig:
    """Architecture of a :class:`SlimeModel`.

    With ``n_pods * head_dim == n_embd`` the model holds exactly the parameters of a nanoGPT with
    ``n_head = n_pods`` (pods own the q/k/v/output slices of that GPT's attention).

    Args:
        vocab_size, block_size, n_layer, n_embd: as nanoGPT.
        n_pods: live pods per layer at construction.
        pod_capacity: slots per layer (the padded head count), ``n_pods <= pod_capacity <= 64``.
        head_dim: pod width; None means ``n_embd // n_pods`` (which must then divide exactly).
        mlp_ratio: MLP hidden width over ``n_embd``.
        dropout: on embeddings, attention output and MLP (there is no dropout on attention
            probabilities: the fused kernel computes none).
        bias: biases in linear layers and LayerNorms.
        archive_dims: cells per descriptor of each layer's grid archive; the descriptors are the
            first ``len(archive_dims)`` of ``attention_distance, activation_sparsity,
            weight_spread`` (see slime.core.pseudopod), each over [0, 1].
        archive_max_size: most elites each layer's archive keeps (its hard limit).
        archive_device: where the archives live: ``"cpu"`` (host memory, the default: elite
            genomes cost no accelerator memory, and the archive is touched only between steps)
            or ``"model"`` (the model's device).
        tube_capacity, tube_decay: each organism's tube ring (0: no tubes).
        kernel_backend: ``"auto"``, ``"torch"`` or ``"triton"``.
        memory_budget_bytes: per-layer budget on pod parameter bytes (None: none).
        quiet_birth: newborn pods start with a zero output projection.
        metabolic_rate: how far in descriptor space a birth ranges from current behaviour.
    """

    vocab_size: int = field(metadata=bounds(1, 1 << 24))
    block_size: int = field(default=64, metadata=bounds(1, 65536))
    n_layer: int = field(default=2, metadata=bounds(1, 256))
    n_embd: int = field(default=64, metadata=bounds(1, 65536))
    n_pods: int = field(default=4, metadata=bounds(1, MAX_POOL_SIZE))
    pod_capacity: int = field(default=8, metadata=bounds(1, MAX_POOL_SIZE))
    head_dim: int | None = field(default=None, metadata=bounds(2, 4096))
    mlp_ratio: float = field(default=4.0, metadata=bounds(0.0, 64.0, lo_open=True))
    dropout: float = field(default=0.0, metadata=bounds(0.0, 0.99))
    bias: bool = False
    archive_dims: tuple[int, ...] = field(default=(8, 8), metadata=bounds(1, 1024))
    archive_max_size: int = field(default=MAX_ARCHIVE_SIZE, metadata=bounds(1, MAX_ARCHIVE_SIZE))
    archive_device: Literal["cpu", "model"] = "cpu"
    tube_capacity: int = field(default=16, metadata=bounds(0, 1 << 20))
    tube_decay: float = field(default=0.95, metadata=bounds(0.0, 1.0, lo_open=True))
    kernel_backend: Literal["auto", "torch", "triton"] = "auto"
    memory_budget_bytes: int | None = field(default=None, metadata=bounds(1))
    quiet_birth: bool = True
    metabolic_rate: float = field(default=0.25, metadata=bounds(0.0, 1e6, lo_open=True))

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_embd", "n_pods", "pod_capacity"):
            _int_at_least(getattr(self, name), 1, name)
        _int_at_least(self.tube_capacity, 0, "tube_capacity")
        _int_at_least(self.archive_max_size, 1, "archive_max_size")
        if self.n_pods > self.pod_capacity:
            raise ConfigError(
                f"expected n_pods <= pod_capacity ({self.pod_capacity}), got {self.n_pods}",
                "n_pods",
            )
        if self.head_dim is None:
            if self.n_embd % self.n_pods:
                raise ConfigError(
                    f"n_embd {self.n_embd} is not divisible by n_pods {self.n_pods}; give head_dim",
                    "head_dim",
                )
            self.head_dim = self.n_embd // self.n_pods
        _int_at_least(self.head_dim, 2, "head_dim")
        for name in ("mlp_ratio", "metabolic_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"expected a number > 0, got {shown(value)}", name)
            if not math.isfinite(value):
                raise ConfigError(f"expected a finite number, got {shown(value)}", name)
        number = int | float
        dropout, decay = self.dropout, self.tube_decay
        if isinstance(dropout, bool) or not isinstance(dropout, number) or not 0 <= dropout < 1:
            raise ConfigError(f"expected a number in [0, 1), got {dropout!r}", "dropout")
        if isinstance(decay, bool) or not isinstance(decay, number) or not 0 < decay <= 1:
            raise ConfigError(f"expected a number in (0, 1], got {decay!r}", "tube_decay")
        for name in ("bias", "quiet_birth"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"expected a bool, got {getattr(self, name)!r}", name)
        dims = tuple(self.archive_dims) if isinstance(self.archive_dims, list | tuple) else None
        if not dims or len(dims) > len(DESCRIPTOR_NAMES):
            raise ConfigError(
                f"expected 1 to {len(DESCRIPTOR_NAMES)} dims, got {self.archive_dims!r}",
                "archive_dims",
            )
        for d in dims:
            _int_at_least(d, 1, "archive_dims")
        self.archive_dims = dims
        if self.archive_device not in ARCHIVE_DEVICES:
            raise ConfigError(
                f"expected one of {ARCHIVE_DEVICES}, got {shown(self.archive_device)}",
                "archive_device",
            )
        if self.kernel_backend not in BACKENDS:
            raise ConfigError(
                f"expected one of {BACKENDS}, got {self.kernel_backend!r}", "kernel_backend"
            )
        if self.memory_budget_bytes is not None:
            _int_at_least(self.memory_budget_bytes, 1, "memory_budget_bytes")
        for f in dataclasses.fields(self):
            check_range(getattr(self, f.name), f.metadata, f.name)

    @property
    def descriptor_names(self) -> tuple[str, ...]:
        return DESCRIPTOR_NAMES[: len(self.archive_dims)]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        data = dataclasses.asdict(self)
        data["archive_dims"] = list(self.archive_dims)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlimeConfig:
        """Inverse of :meth:`to_dict`; unknown and missing keys raise ConfigError naming them."""
        if not isinstance(data, dict):
            raise ConfigError(f"expected a dict of fields, got {shown(data)}", "config")
        fields = dataclasses.fields(cls)
        known = {f.name for f in fields}
        unknown = sorted(set(data) - known, key=str)
        if unknown:
            raise ConfigError(
                f"unknown keys {shown(unknown)}; known: {sorted(known)}", str(unknown[0])
            )
        missing = [
            f.name
            for f in fields
            if f.name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(f"missing keys {missing}", missing[0])
        data = dict(data)
        if "archive_dims" in data and isinstance(data["archive_dims"], list):
            data["archive_dims"] = tuple(data["archive_dims"])
        return cls(**data)
