"""Run configuration: nested dataclasses with all validation in one place.

A :class:`RunConfig` holds one section per concern (``model``, ``train``, ``lifecycle``, ``fitness``,
``data``, ``slo``). Each section validates itself on construction from the ``metadata`` of its
fields (range, choices), so a config built in Python and one loaded from YAML obey the same rules.
Every failure is a :class:`~slime.proto.ConfigError` whose ``path`` is the dotted key
(``"model.n_layer"``). YAML loading lives in :mod:`slime.train.loader`; it only maps onto these types.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from slime.core import SlimeConfig
from slime.core.api.config import bounds, check_range
from slime.proto import ConfigError, shown
from slime.train.tokenizer import parse_tokenizer_spec

__all__ = [
    "DataConfig",
    "FitnessConfig",
    "LifecycleConfig",
    "ModelConfig",
    "RunConfig",
    "SLOConfig",
    "TrainConfig",
    "check_value",
]

MAX_POOL_SIZE = 64
MAX_ARCHIVE_SIZE = 1000
MAX_LOSS_RATIO = 10.0
# The most training steps any count of steps (a run's length, an interval, a warmup) may take: a
# billion steps is days even at a millisecond a step, and far from the int64 counters' limit.
MAX_STEPS = 10**9
# The most steps between two log lines: the trainer keeps that many steps' losses on the device.
MAX_LOG_INTERVAL = 1 << 20
MAX_BATCH_SIZE = 1 << 24
# The most cells of one layer's archive grid (the product of model.archive_dims): the archive
# keeps a row of state per cell, allocated in full, in every layer.
MAX_ARCHIVE_CELLS = 1 << 20
# The highest CUDA device index: torch keeps it in 8 bits, so cuda:256 would silently be cuda:0.
MAX_CUDA_INDEX = 127

_DEVICE = re.compile(r"^(auto|cpu|cuda(:(0|[1-9][0-9]{0,2}))?|mps)$")


def _describe(tp: Any) -> str:
    """Human name of an annotation for error messages (``int``, ``'skip' | 'stop'``, ...)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_describe(args[0])}"
        return f"list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def check_value(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against annotation ``tp``; returns it in canonical form (lists -> tuples).

    Accepted widenings: an ``int`` where a ``float`` is expected (``lr: 1``). ``bool`` is never an int.

    Raises:
        ConfigError: the value does not have type ``tp``; names ``path`` and the expected type.
    """
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, str | int | float | bool) and any(
            type(value) is type(c) and value == c for c in choices
        ):
            return value
        raise ConfigError(f"expected one of {_describe(tp)}, got {shown(value)}", path=path)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"expected {_describe(tp)}, got null", path=path)
        (inner,) = (a for a in args if a is not type(None))  # only ``X | None`` unions are used
        return check_value(value, inner, path)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"expected {_describe(tp)}, got {shown(value)}", path=path)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(check_value(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(
                f"expected {_describe(tp)}, got {len(value)} items: {shown(value)}", path=path
            )
        return tuple(check_value(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"expected bool, got {shown(value)}", path=path)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"expected int, got {shown(value)}", path=path)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, int) and abs(value) > 2**1023:
                raise ConfigError(
                    f"expected a float, got an int too large: {shown(value)}", path=path
                )
            if not math.isfinite(value):
                raise ConfigError(f"expected a finite float, got {shown(value)}", path=path)
            return float(value)
        raise ConfigError(f"expected float, got {shown(value)}", path=path)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"expected str, got {shown(value)}", path=path)
    raise TypeError(f"config annotation {tp!r} at {path} is not supported")  # a bug in this module


class _Section:
    """Mixin: validate every field of a dataclass section from its annotation and metadata."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            path = f"{self.SECTION}.{f.name}"
            value = check_value(getattr(self, f.name), hints[f.name], path)
            object.__setattr__(self, f.name, value)
            check_range(value, f.metadata, path)
        self._check_relations()

    def _check_relations(self) -> None:
        """Cross-field rules; sections override."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples as lists), the inverse of constructing from YAML."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }


class _ModelSection(_Section):
    """The ``model`` section: ``kind`` plus :class:`~slime.core.SlimeConfig`'s fields (see
    :data:`ModelConfig`), validated by building that SlimeConfig, so both read one definition."""

    SECTION: ClassVar[str] = "model"

    def _check_relations(self) -> None:
        try:
            resolved = self.slime_config(1)  # any valid vocabulary size checks the rest
        except ConfigError as e:
            message = str(e).removeprefix(f"{e.path}: ")
            raise ConfigError(message, f"model.{e.path}") from None
        object.__setattr__(self, "head_dim", resolved.head_dim)  # None -> n_embd // n_pods
        cells = math.prod(resolved.archive_dims)
        if cells > MAX_ARCHIVE_CELLS:
            raise ConfigError(
                f"expected at most {MAX_ARCHIVE_CELLS} cells in all (the product of the dims), "
                f"got {shown(list(resolved.archive_dims))}: {cells} cells",
                "model.archive_dims",
            )

    def slime_config(self, vocab_size: int) -> SlimeConfig:
        """The core architecture (``vocab_size`` from the dataset when this section has none)."""
        fields = {name: getattr(self, name) for name in _ARCHITECTURE}
        if fields["vocab_size"] is None:
            fields["vocab_size"] = vocab_size
        return SlimeConfig(**fields)


def _architecture_fields() -> list[tuple[str, Any, Any]]:
    """SlimeConfig's fields as section fields: same names, types, defaults and bounds, except
    that ``vocab_size`` may be null (from the dataset)."""
    hints = typing.get_type_hints(SlimeConfig)
    out = []
    for f in dataclasses.fields(SlimeConfig):
        if f.name not in _ARCHITECTURE:
            continue
        if f.name == "vocab_size":
            out.append((f.name, int | None, field(default=None, metadata=f.metadata)))
        else:
            out.append((f.name, hints[f.name], field(default=f.default, metadata=f.metadata)))
    return out


# Every SlimeConfig field but the archive's size, which lifecycle.max_archive_size sets.
_ARCHITECTURE = tuple(
    f.name for f in dataclasses.fields(SlimeConfig) if f.name != "archive_max_size"
)

ModelConfig = dataclasses.make_dataclass(
    "ModelConfig",
    [("kind", Literal["slime", "baseline"], field(default="slime")), *_architecture_fields()],
    bases=(_ModelSection,),
    namespace={
        "__module__": __name__,
        "__doc__": """Architecture: ``kind`` (slime or the baseline GPT) and the fields of
    ``slime.core.SlimeConfig`` with its defaults and bounds (one definition, derived here), except
    ``archive_max_size`` (``lifecycle.max_archive_size`` sets it). ``vocab_size: null`` means
    "take it from the dataset"; ``head_dim: null`` means ``n_embd // n_pods``.""",
    },
)


@dataclass
class TrainConfig(_Section):
    """Optimisation and run length. Learning rate: linear warmup, then cosine decay to ``min_lr``.

    ``nonfinite``: what a step with a non-finite loss or gradient does. The step itself never
    changes the weights (decided on the device); the policy applies at the next host read (every
    ``log_interval`` steps, and at lifecycle events, evaluations and checkpoints): ``skip`` carries on
    until more than ``max_nonfinite`` such steps, ``stop`` ends the run.
    ``compile``: run the training forward through ``torch.compile``. ``cuda_graphs`` (needs
    ``compile``): compile with ``mode="reduce-overhead"``, so on CUDA the forward and backward
    replay as CUDA graphs (no per-kernel host cost; on other devices the trainer compiles
    without graphs, and ``slime train`` refuses the request).
    ``parallel`` (under a launcher, more than one process): ``data`` replicates the model and splits
    the batch over the ranks; ``heads`` gives every rank the whole batch and computes each pod on
    the one rank ``placement`` assigns it (:mod:`slime.train.heads`): ``behaviour`` hashes the
    pod's archive cell, ``random`` hashes the seed and the pod's identity (layer, slot, birth step).
    ``patience``: stop (status ``early_stopped``) after this many evaluations in a row without a new
    best held-out loss (None: never). ``target_loss``: record the step and run time at which the
    held-out loss first reaches it (the summary says when it never did).
    """

    SECTION: ClassVar[str] = "train"

    steps: int = field(default=200, metadata=bounds(1, MAX_STEPS))
    batch_size: int = field(default=16, metadata=bounds(1, MAX_BATCH_SIZE))
    lr: float = field(default=1e-3, metadata=bounds(0.0, 10.0, lo_open=True))
    min_lr: float = field(default=1e-4, metadata=bounds(0.0, 10.0))
    warmup_iters: int = field(default=20, metadata=bounds(0, MAX_STEPS))
    cosine: bool = True
    weight_decay: float = field(default=0.1, metadata=bounds(0.0, 10.0))
    betas: tuple[float, float] = field(default=(0.9, 0.99), metadata=bounds(0.0, 0.999999))
    grad_clip: float = field(default=1.0, metadata=bounds(0.0))
    eval_interval: int = field(default=50, metadata=bounds(1, MAX_STEPS))
    eval_iters: int = field(default=4, metadata=bounds(1, 1 << 24))
    log_interval: int = field(default=10, metadata=bounds(1, MAX_LOG_INTERVAL))
    checkpoint_interval: int = field(default=100, metadata=bounds(1, MAX_STEPS))
    seed: int = field(default=1337, metadata=bounds(0, 2**63 - 1))
    device: str = "auto"
    amp: bool = True
    cpu_threads: int | None = field(default=None, metadata=bounds(1, 1024))
    nonfinite: Literal["skip", "stop"] = "skip"
    max_nonfinite: int = field(default=20, metadata=bounds(1, MAX_STEPS))
    compile: bool = False
    cuda_graphs: bool = False
    parallel: Literal["data", "heads"] = "data"
    placement: Literal["behaviour", "random"] = "behaviour"
    patience: int | None = field(default=None, metadata=bounds(1, MAX_STEPS))
    target_loss: float | None = field(default=None, metadata=bounds(0.0, lo_open=True))

    def _check_relations(self) -> None:
        if self.parallel == "heads" and self.compile:
            raise ConfigError(
                "expected train.compile: false with parallel: heads (the sharded forward runs "
                "collectives eagerly)",
                path="train.parallel",
            )
        if self.cuda_graphs and not self.compile:
            raise ConfigError(
                "expected train.compile: true with cuda_graphs (graphs come from torch.compile)",
                path="train.cuda_graphs",
            )
        index = self.device.partition(":")[2]
        if not _DEVICE.match(self.device) or int(index or 0) > MAX_CUDA_INDEX:
            raise ConfigError(
                f"expected 'auto', 'cpu', 'cuda', 'cuda:N' (N from 0 to {MAX_CUDA_INDEX}) or "
                f"'mps', got {shown(self.device)}",
                path="train.device",
            )
        if self.min_lr > self.lr:
            raise ConfigError(
                f"expected min_lr <= lr ({self.lr}), got {self.min_lr}", "train.min_lr"
            )


@dataclass
class LifecycleConfig(_Section):
    """Timescales, phases, loss gate and hard limits of the pseudopod lifecycle (invariants 6, 9).

    ``maturity_steps``: a pod born less than this many steps ago is not culled for low fitness
    (continual backprop's maturity threshold; a quiet newborn starts with no contribution). The
    memory budget and the hard limits still apply to it.

    ``observe_steps``: the training steps just before each medium event that feed the organisms'
    tubes and the per-slot gradient statistics (the fitness's gradient and Taylor terms); the other
    steps skip both, so they cost what a plain transformer step costs. At ``medium_interval`` or
    more, every step observes.

    ``refill_culled``: the slow event fills each slot it culls for low fitness at once, one birth
    per culled pod by the medium event's rule (chemotaxis from the archive), so the pool never
    spends a medium interval below its size. Off (the default), culled slots wait for the medium
    events' births (``births_per_event`` per layer each); at a step that holds both events the
    medium event runs first, so the wait is one whole medium interval. The continual benchmark
    turns it on: its reset baselines replace a unit at once, and short tasks left slime with a
    quarter to a half of its heads empty.
    """

    SECTION: ClassVar[str] = "lifecycle"

    enabled: bool = True
    medium_interval: int = field(default=100, metadata=bounds(1, MAX_STEPS))
    observe_steps: int = field(default=16, metadata=bounds(1, MAX_STEPS))
    slow_interval: int = field(default=1000, metadata=bounds(1, MAX_STEPS))
    warmup_steps: int = field(default=1000, metadata=bounds(0, MAX_STEPS))
    gentle_steps: int = field(default=5000, metadata=bounds(0, MAX_STEPS))
    loss_gate_ratio: float = field(default=MAX_LOSS_RATIO, metadata=bounds(1.0, lo_open=True))
    loss_ema_decay: float = field(default=0.99, metadata=bounds(0.0, 1.0, lo_open=True))
    max_pool_size: int = field(default=MAX_POOL_SIZE, metadata=bounds(1, MAX_POOL_SIZE))
    max_archive_size: int = field(default=MAX_ARCHIVE_SIZE, metadata=bounds(1, MAX_ARCHIVE_SIZE))
    births_per_event: int = field(default=1, metadata=bounds(0, MAX_POOL_SIZE))
    cull_fraction: float = field(default=0.25, metadata=bounds(0.0, 1.0))
    min_pods: int = field(default=1, metadata=bounds(1, MAX_POOL_SIZE))
    maturity_steps: int = field(default=0, metadata=bounds(0, MAX_STEPS))
    probe_batch_size: int = field(default=4, metadata=bounds(1, 1 << 20))
    refill_culled: bool = False

    def _check_relations(self) -> None:
        if self.gentle_steps < self.warmup_steps:
            raise ConfigError(
                f"expected gentle_steps >= warmup_steps ({self.warmup_steps}), "
                f"got {self.gentle_steps}",
                path="lifecycle.gentle_steps",
            )
        if self.slow_interval < self.medium_interval:
            raise ConfigError(
                f"expected slow_interval >= medium_interval ({self.medium_interval}), "
                f"got {self.slow_interval}",
                path="lifecycle.slow_interval",
            )
        if self.min_pods > self.max_pool_size:
            raise ConfigError(
                f"expected min_pods <= max_pool_size ({self.max_pool_size}), got {self.min_pods}",
                path="lifecycle.min_pods",
            )


@dataclass
class FitnessConfig(_Section):
    """fitness = w_task * task + w_eff * efficiency + w_grad * gradient (blueprint decision 10).

    ``task``: ``masked`` measures each pod's masked-loss increase on the probe batch (1 + n_pods
    forwards per assessment); ``taylor`` uses the first-order estimate of it that every training
    step yields for free (``slime.train.stability``), averaged like the gradient term.
    """

    SECTION: ClassVar[str] = "fitness"

    task: Literal["masked", "taylor"] = "masked"
    w_task: float = field(default=0.7, metadata=bounds(0.0))
    w_eff: float = field(default=0.2, metadata=bounds(0.0))
    w_grad: float = field(default=0.1, metadata=bounds(0.0))
    grad_ema_decay: float = field(default=0.9, metadata=bounds(0.0, 1.0))

    def _check_relations(self) -> None:
        total = self.w_task + self.w_eff + self.w_grad
        if not math.isfinite(total):
            raise ConfigError(
                f"expected fitness weights with a finite sum, got "
                f"{(self.w_task, self.w_eff, self.w_grad)}",
                path="fitness.w_task",
            )
        if total <= 0.0:
            raise ConfigError(
                f"expected fitness weights with a positive sum, got "
                f"{(self.w_task, self.w_eff, self.w_grad)}",
                path="fitness.w_task",
            )


DATASETS = ("shakespeare", "wikitext2", "tinystories", "copy", "recall")


@dataclass
class DataConfig(_Section):
    """Which corpus or task. ``dir: null`` means ``$SLIME_DATA_DIR``.

    ``name: text`` trains on your own text: ``path`` (a .txt file or a folder of them), tokenized by
    ``tokenizer`` (``char``, ``bpe``, ``bpe:VOCAB`` or a tokenizer.json path), with the last
    ``val_fraction`` of its characters held out; tokens are cached in ``cache_dir`` (null:
    ``$SLIME_CACHE_DIR`` or ``~/.cache/slime/tokens``). See :mod:`slime.train.text`.
    """

    SECTION: ClassVar[str] = "data"

    name: Literal["shakespeare", "wikitext2", "tinystories", "copy", "recall", "text"] = "recall"
    dir: str | None = None
    task_vocab: int = field(default=16, metadata=bounds(4, 4096))
    path: str | None = None
    tokenizer: str = "char"
    val_fraction: float = field(default=0.1, metadata=bounds(0.0, 0.999, lo_open=True))
    cache_dir: str | None = None

    def _check_relations(self) -> None:
        if self.name == "text" and not self.path:
            raise ConfigError("expected a .txt file or folder with name: text", "data.path")
        if self.name != "text" and self.path is not None:
            raise ConfigError(
                f"expected null unless name is 'text' (name is {self.name!r})", "data.path"
            )
        parse_tokenizer_spec(self.tokenizer)
        if self.name != "text" and self.tokenizer != "char":
            raise ConfigError(
                f"expected 'char': the built-in {self.name!r} data has its own vocabulary "
                "(tokenizers apply to name: text)",
                "data.tokenizer",
            )


@dataclass
class SLOConfig(_Section):
    """Service-level objectives, evaluated with ``slime.core.SLOSet`` at the end of a run.

    The per-forward objectives (``null``: not checked) must hold for a ``target`` fraction of
    forwards. The overhead limits are the blueprint's claims, checked by ``slime.train.compare``.
    """

    SECTION: ClassVar[str] = "slo"

    max_forward_ms: float | None = field(default=None, metadata=bounds(0.0, lo_open=True))
    min_forward_tokens_per_s: float | None = field(default=None, metadata=bounds(0.0, lo_open=True))
    max_peak_memory_mb: float | None = field(default=None, metadata=bounds(0.0, lo_open=True))
    target: float = field(default=0.95, metadata=bounds(0.0, 0.999999, lo_open=True))
    max_lifecycle_overhead: float = field(default=0.02, metadata=bounds(0.0))
    max_memory_overhead: float = field(default=0.01, metadata=bounds(0.0))


SECTIONS: dict[str, type[_Section]] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "lifecycle": LifecycleConfig,
    "fitness": FitnessConfig,
    "data": DataConfig,
    "slo": SLOConfig,
}


@dataclass
class RunConfig:
    """Everything one run needs; the resolved form is written to ``run_dir/config.yaml``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    fitness: FitnessConfig = field(default_factory=FitnessConfig)
    data: DataConfig = field(default_factory=DataConfig)
    slo: SLOConfig = field(default_factory=SLOConfig)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(
                    f"expected a {cls.__name__}, got {type(getattr(self, name)).__name__}", name
                )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict, loadable again by :func:`slime.train.loader.config_from_dict`."""
        return {name: getattr(self, name).to_dict() for name in SECTIONS}

    def schedule_warnings(self, option: str | None = None) -> list[str]:
        """What in this run's schedules will not happen as their keys say (``slime train`` prints
        each as a warning and trains as configured; a short smoke run with a preset's warmups is
        a normal thing to ask for, so nothing is refused and nothing is changed):

        - ``train.warmup_iters`` above ``train.steps``: the learning rate is still rising when the
          run ends and never reaches ``train.lr``;
        - a slime run with the lifecycle on whose pool cannot change: no medium event (every
          ``lifecycle.medium_interval`` steps) from ``lifecycle.warmup_steps`` (the end of the
          static phase) on, nor slow event (every ``slow_interval``) from ``gentle_steps`` on, up
          to ``train.steps``, so no pod is born or culled.

        ``option``: the command-line option that set ``train.steps``, named in the messages.
        """
        train, lc = self.train, self.lifecycle
        steps = f"train.steps ({train.steps}{f', set by {option}' if option else ''})"
        out = []
        if train.warmup_iters > train.steps:
            out.append(
                f"train.warmup_iters ({train.warmup_iters}) is above {steps}: the learning rate "
                f"will still be warming up when the run ends and never reach train.lr "
                f"({train.lr:g}); lower train.warmup_iters or train longer to reach it"
            )
        if self.model.kind != "slime" or not lc.enabled:
            return out

        def first(start: int, every: int) -> int:  # the first multiple of every >= start (>= 1)
            return -(-max(start, 1) // every) * every

        birth = first(lc.warmup_steps, lc.medium_interval)
        if min(birth, first(lc.gentle_steps, lc.slow_interval)) <= train.steps:
            return out
        if lc.warmup_steps > train.steps:
            why = f"lifecycle.warmup_steps ({lc.warmup_steps}) is above {steps}"
        else:
            why = (
                f"the first medium event after lifecycle.warmup_steps ({lc.warmup_steps}) is step "
                f"{birth} (lifecycle.medium_interval {lc.medium_interval}), after {steps}"
            )
        out.append(
            f"{why}: the pool will stay as it started for the whole run (pods are born and "
            "culled only at lifecycle events after the static warmup phase); lower "
            "lifecycle.warmup_steps, train longer, or set lifecycle.enabled=false"
        )
        return out

    def replace(self, **sections: dict[str, Any]) -> RunConfig:
        """A copy with some fields of some sections changed: ``cfg.replace(train={"steps": 5})``."""
        for name, changes in sections.items():
            if name not in SECTIONS:
                raise ConfigError(f"unknown section; expected one of {sorted(SECTIONS)}", name)
            known = {f.name for f in dataclasses.fields(SECTIONS[name])}
            for key in changes:
                if key not in known:
                    raise ConfigError(
                        f"unknown key; expected one of {sorted(known)}", f"{name}.{key}"
                    )
        return RunConfig(
            **{
                name: dataclasses.replace(getattr(self, name), **sections.get(name, {}))
                for name in SECTIONS
            }
        )
