"""Organism: a pool of pseudopods kept as one slot table, attending as one multi-head layer.

The organism owns ``P = pod_capacity`` slots of width ``d``. Every pod's projections live stacked
in a few parameters whose storage never changes (``qkv_weight (3, P, d, D)``, ``o_weight (D, P, d)``),
and everything else known about a slot lives in device buffers beside them (``alive``, ``fitness``,
``descriptors``, ``born_step``, the tube ring). That table is the only record of who is alive.

The forward is two linears over views of those parameters and one pool-attention call with the
``alive`` mask: no Python loop over pods and nothing that changes with the pool, so
``torch.compile(fullgraph=True)`` takes it whole and a birth or death never recompiles. Dead slots
hold zeros: they contribute nothing and their gradients are exactly zero.

Births and deaths run eagerly between steps, under ``no_grad``, writing slots in place. Slot
listeners hear which slots changed, so an optimizer can reset those slots' moments without ever
changing its parameter groups. A pod is still a first-class thing: ``organism.pod(slot)`` is a
:class:`~slime.core.pod_view.PodView` over its slice of the table.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from slime.core.chemotaxis import Chemotaxis
from slime.core.observability import MetricsCollector, span
from slime.core.placement import placement
from slime.core.pod_view import PodView
from slime.core.pseudopod import DESCRIPTOR_NAMES, hoyer_sparsity
from slime.kernels import feed_tubes, tube_workspace
from slime.memory import MAX_POOL_SIZE, AddResult, GridArchive
from slime.proto import ConfigError, Kernel, KernelError, PoolError, shown
from torch import Tensor, nn

__all__ = [
    "FOUNDER",
    "Organism",
    "SlotListener",
    "live_slots_by_layer",
    "measure_organisms",
    "read_device",
]

SlotListener = Callable[["Organism", list[int]], None]
FOUNDER = -1
"""``born_step`` of a pod present since construction (always mature)."""


INITS = ("normal", "torch")


def _normal(
    shape: tuple[int, ...], std: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    where = generator.device if generator is not None else device
    return (torch.randn(shape, generator=generator, device=where) * std).to(device)


def _uniform(
    shape: tuple[int, ...], bound: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    where = generator.device if generator is not None else device
    draw = torch.empty(shape, device=where).uniform_(-bound, bound, generator=generator)
    return draw.to(device)


def read_device(device: Any, path: str = "device") -> torch.device:
    """``device`` (None: the CPU) as a ``torch.device`` holding data, or ConfigError naming it, as
    slime.memory reads its device arguments: a string torch cannot parse (``"gpu"``), something
    that is no device (``3.5``), or the meta device, which holds no data where an organism reads
    its slot table on the host."""
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, torch.device):
        if not isinstance(device, str) and (
            isinstance(device, bool) or not isinstance(device, int)
        ):
            raise ConfigError(
                f"device must be a torch.device or a string such as 'cpu' or 'cuda:0', got "
                f"{shown(device)}",
                path,
            )
        try:
            device = torch.device(device)  # an int is a CUDA index, as torch reads it
        except (RuntimeError, ValueError) as e:
            raise ConfigError(f"device {shown(device)} is not a torch device: {e}", path) from e
    if device.type == "meta":
        raise ConfigError(
            "device 'meta' holds no data, and an organism reads its slot table on the host "
            "(births, deaths, measurements); build it on a real device",
            path,
        )
    return device


def _autocast_eligible(dtype: torch.dtype) -> bool:
    """Whether autocast casts tensors of ``dtype`` to its own: floating ones but float64."""
    return dtype.is_floating_point and dtype != torch.float64


class Organism(nn.Module):
    """A living multi-head attention layer over a slot table. Implements slime.proto.Organism.

    Args:
        n_embd: model width ``D``.
        pod_capacity: slots (padded head count), at most ``MAX_POOL_SIZE``.
        n_pods: pods alive at construction (slots ``0 .. n_pods - 1``).
        head_dim: each pod's width ``d``.
        kernel: compute backend shared by every pod.
        bias: biases on q/k/v and the output projection (as nanoGPT's ``bias``).
        dropout: dropout on the attention output.
        attn_dropout: dropout on the attention probabilities while training (as
            ``nn.MultiheadAttention``'s ``dropout``); above 0 it moves training forwards off the fused
            kernel onto the masked path (see :meth:`forward`).
        init: ``"normal"``: q/k/v drawn from N(0, ``init_std``), the output projection from
            N(0, ``out_std``). ``"torch"``: as ``nn.MultiheadAttention`` of ``n_pods`` heads draws
            them: the founders' output projection as ``nn.Linear``'s default and their q/k/v as one
            xavier-uniform ``(3 * n_pods * d, D)`` matrix, in torch's order (so a seeded program
            gets torch's numbers), biases zero; newborns draw uniform within the same bounds.
        init_std, out_std: normal init std of q/k/v and of the output projection (``"normal"``).
        archive: descriptor archive; default a GridArchive of 8x8 cells over the first two
            descriptors, ranges [0, 1].
        chemotaxis: default one over ``archive``.
        tube_capacity, tube_decay: the tube ring, a decayed memory of each slot's activation
            sparsity over the last ``tube_capacity`` training forwards that fed it (0: no tubes;
            see :attr:`feeding_tubes`).
        memory_budget_bytes: cap on the pods' parameter bytes, enforced by :meth:`enforce_budget`.
        quiet_birth: newborn pods get a zero output projection, so a birth does not change the
            organism's function (continual-backprop style).
        metabolic_rate: how far in descriptor space a birth may range from the current behaviour.
        descriptor_momentum: EMA momentum of descriptor measurements, in [0, 1).
        name: label for metrics and spans.
    """

    def __init__(
        self,
        n_embd: int,
        *,
        pod_capacity: int,
        n_pods: int,
        head_dim: int,
        kernel: Kernel,
        bias: bool = False,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        init: str = "normal",
        init_std: float = 0.02,
        out_std: float | None = None,
        metrics: MetricsCollector | None = None,
        tracer: Any | None = None,
        archive: Any | None = None,
        chemotaxis: Chemotaxis | None = None,
        tube_capacity: int = 16,
        tube_decay: float = 0.95,
        memory_budget_bytes: int | None = None,
        quiet_birth: bool = True,
        metabolic_rate: float = 0.25,
        descriptor_momentum: float = 0.9,
        name: str = "organism",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        for field, value in (("pod_capacity", pod_capacity), ("n_pods", n_pods)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"must be an int, got {shown(value)}", field)
        numbers = {
            "dropout": dropout,
            "attn_dropout": attn_dropout,
            "init_std": init_std,
            "out_std": 0.0 if out_std is None else out_std,
            "tube_decay": tube_decay,
            "metabolic_rate": metabolic_rate,
            "descriptor_momentum": descriptor_momentum,
        }
        for field, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"must be a number, got {shown(value)}", field)
        if not 1 <= pod_capacity <= MAX_POOL_SIZE:
            raise ConfigError(
                f"must lie in [1, {MAX_POOL_SIZE}], got {pod_capacity}", "pod_capacity"
            )
        if not 0 <= n_pods <= pod_capacity:
            raise ConfigError(
                f"must lie in [0, pod_capacity={pod_capacity}], got {n_pods}", "n_pods"
            )
        if init not in INITS:
            raise ConfigError(f"expected one of {INITS}, got {init!r}", "init")
        if not 0.0 <= attn_dropout < 1.0:
            raise ConfigError(f"must lie in [0, 1), got {attn_dropout!r}", "attn_dropout")
        if not 0 < metabolic_rate < math.inf:
            raise ConfigError(
                f"must be a finite number > 0, got {metabolic_rate}", "metabolic_rate"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"must lie in [0, 1), got {dropout!r}", "dropout")
        for field, value in (("init_std", init_std), ("out_std", out_std)):
            if value is not None and not 0.0 <= value < math.inf:
                raise ConfigError(f"must be a finite number >= 0, got {value!r}", field)
        if memory_budget_bytes is not None and (
            isinstance(memory_budget_bytes, bool)
            or not isinstance(memory_budget_bytes, int)
            or memory_budget_bytes < 1
        ):
            raise ConfigError(
                f"must be an int >= 1 or None, got {shown(memory_budget_bytes)}",
                "memory_budget_bytes",
            )
        for field, value in (("n_embd", n_embd), ("head_dim", head_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ConfigError(f"must be an int >= 2, got {value!r}", field)
        if (
            isinstance(tube_capacity, bool)
            or not isinstance(tube_capacity, int)
            or tube_capacity < 0
        ):
            raise ConfigError(f"must be an int >= 0, got {tube_capacity!r}", "tube_capacity")
        if not 0.0 < tube_decay <= 1.0:
            raise ConfigError(f"must lie in (0, 1], got {tube_decay!r}", "tube_decay")
        if not 0.0 <= descriptor_momentum < 1.0:
            raise ConfigError(
                f"must lie in [0, 1), got {descriptor_momentum!r}", "descriptor_momentum"
            )
        self.n_embd, self.head_dim, self.pod_capacity = n_embd, head_dim, pod_capacity
        self.kernel, self.metrics, self.tracer = kernel, metrics, tracer
        self.bias, self.init, self.init_std = bias, init, init_std
        self.attn_dropout = float(attn_dropout)
        self.out_std = init_std if out_std is None else out_std
        self.quiet_birth, self.metabolic_rate, self.name = quiet_birth, metabolic_rate, name
        self.descriptor_momentum = descriptor_momentum
        self.memory_budget_bytes = memory_budget_bytes
        self.tube_decay = float(tube_decay)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ConfigError(
                f"expected a torch.Generator or None, got {shown(generator)}", "generator"
            )
        self.generator = generator
        device = read_device(device)
        cap, d, width = pod_capacity, head_dim, n_embd

        self.qkv_weight = nn.Parameter(torch.zeros(3, cap, d, width, device=device))
        self.qkv_bias = nn.Parameter(torch.zeros(3, cap, d, device=device)) if bias else None
        self.o_weight = nn.Parameter(torch.zeros(width, cap, d, device=device))
        self.out_bias = nn.Parameter(torch.zeros(width, device=device)) if bias else None
        self.dropout = nn.Dropout(dropout)

        def buffer(name: str, value: Tensor, persistent: bool = True) -> None:
            self.register_buffer(name, value.to(device), persistent=persistent)

        buffer("alive", torch.zeros(cap, dtype=torch.bool))
        buffer("fitness", torch.zeros(cap))
        buffer("descriptors", torch.zeros(cap, len(DESCRIPTOR_NAMES)))
        buffer("n_measurements", torch.zeros(cap, dtype=torch.long))
        buffer("correlation", torch.eye(d).expand(cap, d, d).clone())
        buffer("born_step", torch.full((cap,), FOUNDER, dtype=torch.long))
        # Per training forward, each slot's mean l1/l2 ratio of its head outputs; NaN where a
        # slot had no output (dead, masked) or was born after the entry was written.
        buffer("tube_trace", torch.full((tube_capacity, cap), math.nan))
        buffer("tube_pos", torch.zeros((), dtype=torch.long))
        # Scratch of the one-launch tube write on CUDA (zero between forwards; see feed_tubes).
        buffer("tube_work", tube_workspace(cap), persistent=False)
        # What attention reads: alive and not ablated. Written in place, so compiled graphs and
        # CUDA graphs keep reading the same storage.
        buffer("attending", torch.zeros(cap, dtype=torch.bool), persistent=False)
        # 1 for queries and keys, ``attending`` for values, broadcast over the projection: a slot
        # that does not attend projects values of exactly 0, so its attention output is 0 and the
        # gradients reaching its weights through attention are 0, whatever kernel computes it.
        # Masking the (3, P, d, D) weights costs less than masking the (B, P, T, d) outputs.
        buffer("value_gate", torch.ones(3, cap, 1, 1), persistent=False)
        # Whether training forwards feed the tube ring. A plain attribute: a compiled model keeps
        # one graph for each value, so a trainer can feed only the steps before a measurement.
        self.feeding_tubes = True

        if archive is None:
            archive = GridArchive((8, 8), [(0.0, 1.0)] * 2, device=device)
        if not 1 <= archive.descriptor_dim <= len(DESCRIPTOR_NAMES):
            raise ConfigError(
                f"archive has {archive.descriptor_dim} descriptor dims; pods measure "
                f"{len(DESCRIPTOR_NAMES)} ({', '.join(DESCRIPTOR_NAMES)})",
                "archive",
            )
        self.archive = archive
        self.chemotaxis = (
            chemotaxis if chemotaxis is not None else Chemotaxis(archive, generator=generator)
        )
        self._listeners: list[SlotListener] = []
        self._ablated: frozenset[int] = frozenset()
        self._every_slot = False  # see every_slot()
        self.births = 0
        self.deaths = 0
        # nn.MultiheadAttention's bounds for the whole founding layer; newborns reuse them.
        width_heads = max(n_pods, 1) * head_dim
        self._uniform_bounds = (math.sqrt(6 / (width + 3 * width_heads)), width_heads**-0.5)
        with torch.no_grad():
            if init == "torch":
                self._write_torch_founders(n_pods)
            for slot in range(n_pods):
                if init == "normal":
                    self._write_fresh(slot, self.out_std)
                self.alive[slot] = True
        self._refresh_attending()

    # -- the table --------------------------------------------------------------------------------

    @property
    def descriptor_dims(self) -> int:
        """How many descriptors the archive indexes (the first ``k`` of DESCRIPTOR_NAMES)."""
        return self.archive.descriptor_dim

    @property
    def _device(self) -> torch.device:
        return self.alive.device  # follows .to(device)

    def live_slots(self) -> list[int]:
        """Live slots in ascending order (reads ``alive`` on the host: slow timescale)."""
        return torch.nonzero(self.alive).flatten().tolist()

    def _slot_numbers(self, slots: Any, action: str) -> list[int]:
        """``slots`` as a list of ints (a bool or a float is no slot: ``True`` would index every
        slot at once); PoolError naming them otherwise."""
        try:
            items = list(slots)
            if not any(isinstance(s, bool) for s in items):
                return [operator.index(s) for s in items]
        except TypeError:
            pass
        raise PoolError(f"cannot {action} {shown(slots)} in {self.name}: expected int slots")

    def pod(self, slot: int) -> PodView:
        """A view of the live pod in ``slot``. Raises PoolError for an empty slot."""
        live = self.live_slots()
        if slot not in live:
            raise PoolError(f"slot {slot} of {self.name} holds no pod; live are {live}")
        return PodView(self, slot)

    def slot_parameters(self) -> list[tuple[nn.Parameter, int]]:
        """Every slot-stacked parameter with the dimension that indexes slots."""
        params = [(self.qkv_weight, 1), (self.o_weight, 1)]
        if self.qkv_bias is not None:
            params.insert(1, (self.qkv_bias, 1))
        return params

    def pod_bytes(self) -> int:
        """Parameter bytes one pod owns (its slice of every slot-stacked parameter)."""
        return sum(
            p.numel() // self.pod_capacity * p.element_size() for p, _ in self.slot_parameters()
        )

    def replace_archive(self, archive: Any) -> None:
        """Swap in another archive (e.g. one loaded from disk); chemotaxis follows it."""
        if archive.descriptor_dim != self.archive.descriptor_dim:
            raise ConfigError(
                f"archive has {archive.descriptor_dim} descriptor dims, expected "
                f"{self.archive.descriptor_dim}",
                "archive",
            )
        self.archive = archive
        self.chemotaxis.archive = archive

    def placements(self, num_devices: int) -> dict[int, int]:
        """``{slot: device index}``: a pure function of each pod's archive cell (slow timescale).

        The cell comes from the pod's smoothed descriptors, so placement only changes when a
        measurement moves a pod into another cell.
        """
        live = self.live_slots()
        if not live:
            return {}
        cells = self.archive.cell_index(self.live_descriptors()).tolist()
        return {slot: placement((cell,), num_devices) for slot, cell in zip(live, cells)}

    def add_slot_listener(self, listener: SlotListener) -> None:
        """Call ``listener(organism, slots)`` after every birth and death with the changed slots."""
        self._listeners.append(listener)

    def _notify(self, slots: list[int]) -> None:
        for listener in self._listeners:
            listener(self, slots)

    # -- births and deaths (slow timescale: eager, no_grad, in place) -----------------------------

    def spawn(
        self, genome: dict[str, Any] | None = None, *, slot: int | None = None, step: int = FOUNDER
    ) -> int:
        """Grow a pod in the lowest free slot (or ``slot``); returns its slot.

        Without a genome the newborn bootstraps from the archive at the location chemotaxis picks
        (:meth:`birth_location`, interpolating nearby elites), or is freshly initialised when the
        archive is empty. A newborn's fitness, descriptors and tube memory start from zero;
        ``step`` is recorded as its birth step.

        Raises:
            PoolError: the pool is full or ``slot`` is taken or out of range.
            ConfigError: the genome does not fit this organism.
        """
        if isinstance(step, bool) or not isinstance(step, int):
            raise ConfigError(f"expected an int, got {shown(step)}", "step")
        live = set(self.live_slots())
        free = [s for s in range(self.pod_capacity) if s not in live]
        if not free:
            raise PoolError(
                f"{self.name} is full: {self.pod_capacity} of {self.pod_capacity} slots live"
            )
        if slot is None:
            slot = free[0]
        else:
            (slot,) = self._slot_numbers([slot], "spawn into")
        if slot not in free:
            raise PoolError(f"slot {slot} is not a free slot of {self.name}; free: {free}")
        with span(self.tracer, "organism.spawn", organism=self.name, slot=slot):
            if genome is None:
                location = self.birth_location()
                if location is not None:
                    genome = self.archive.interpolate(location, k_neighbors=2)
            with torch.no_grad():
                if genome is None:
                    self._write_fresh(slot, 0.0 if self.quiet_birth else self.out_std)
                else:
                    self.write_slot(slot, genome, keep_state=False)
                    if self.quiet_birth:
                        self.o_weight[:, slot] = 0.0
                self.born_step[slot] = step
                self.alive[slot] = True
            self._refresh_attending()
        self.births += 1
        if self.metrics is not None:
            self.metrics.increment(f"{self.name}/births")
        self._notify([slot])
        return slot

    def _write_fresh(self, slot: int, out_std: float) -> None:
        """Initialise ``slot`` with new random weights and empty state (``out_std`` 0: a zero
        output projection, whatever the init)."""
        d, width = self.head_dim, self.n_embd
        gen, device = self.generator, self._device
        if self.init == "torch":
            qkv_bound, out_bound = self._uniform_bounds
            self.qkv_weight[:, slot] = _uniform((3, d, width), qkv_bound, gen, device)
            out = _uniform((width, d), out_bound, gen, device) if out_std else 0.0
            self.o_weight[:, slot] = out
        else:
            self.qkv_weight[:, slot] = _normal((3, d, width), self.init_std, gen, device)
            self.o_weight[:, slot] = _normal((width, d), out_std, gen, device)
        if self.qkv_bias is not None:
            self.qkv_bias[:, slot] = 0.0
        self._reset_state(slot)

    def _write_torch_founders(self, n: int) -> None:
        """Draw slots ``0 .. n - 1`` as ``nn.MultiheadAttention(D, n)`` draws its projections:
        ``out_proj`` first (weight, then a bias it later zeroes), then ``in_proj_weight``."""
        d, width = self.head_dim, self.n_embd
        where = self.generator.device if self.generator is not None else self._device
        out = torch.empty(width, n * d, device=where)
        nn.init.kaiming_uniform_(out, a=math.sqrt(5), generator=self.generator)
        if self.bias:
            bound = (n * d) ** -0.5
            torch.empty(width, device=where).uniform_(-bound, bound, generator=self.generator)
        qkv = torch.empty(3 * n * d, width, device=where)
        nn.init.xavier_uniform_(qkv, generator=self.generator)
        self.qkv_weight[:, :n] = qkv.view(3, n, d, width).to(self._device)
        self.o_weight[:, :n] = out.view(width, n, d).to(self._device)
        if self.qkv_bias is not None:
            self.qkv_bias.zero_()
            self.out_bias.zero_()
        for slot in range(n):
            self._reset_state(slot)

    def _reset_state(self, slot: int) -> None:
        self.fitness[slot] = 0.0
        self.descriptors[slot] = 0.0
        self.n_measurements[slot] = 0
        self.correlation[slot] = torch.eye(self.head_dim, device=self._device)
        self.tube_trace[:, slot] = math.nan

    @torch.no_grad()
    def write_slot(self, slot: int, genome: dict[str, Any], *, keep_state: bool) -> None:
        """Copy a genome's weights into ``slot`` (a :meth:`PodView.to_dict` genome or an archive
        column row). ``keep_state`` also takes its fitness and descriptors; otherwise
        they start from zero. The genome is checked whole before anything is written.

        Raises:
            PoolError: ``slot`` is not a slot of this organism.
            ConfigError: the genome does not fit this organism (sizes, dtypes, NaN or Inf
                weights, malformed state).
        """
        (slot,) = self._slot_numbers([slot], "write")
        if not 0 <= slot < self.pod_capacity:
            raise PoolError(f"slot {slot} is outside {self.name}'s {self.pod_capacity} slots")
        qkv, qkv_bias, out = self._genome_tensors(genome)
        state = self._genome_state(genome) if keep_state else None
        self.qkv_weight[:, slot] = qkv
        self.o_weight[:, slot] = out
        if self.qkv_bias is not None:
            self.qkv_bias[:, slot] = 0.0 if qkv_bias is None else qkv_bias
        self._reset_state(slot)
        if state is not None:
            fitness, descriptors, n_measurements, correlation = state
            self.fitness[slot] = fitness
            if descriptors is not None:
                self.descriptors[slot] = descriptors.to(self._device)
            self.n_measurements[slot] = n_measurements
            if correlation is not None:
                self.correlation[slot] = correlation.to(self._device)

    def _genome_state(
        self, genome: dict[str, Any]
    ) -> tuple[float, Tensor | None, int, Tensor | None]:
        """A genome's ``(fitness, descriptors, n_measurements, correlation)``, checked."""
        try:
            fitness = float(genome.get("fitness", 0.0))
            n_measurements = int(genome.get("n_measurements", 0))
            state = {
                key: torch.as_tensor(genome[key], dtype=torch.float32)
                for key in ("descriptors", "correlation")
                if key in genome
            }
        except (TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"malformed genome state: {e}", "genome") from None
        shapes = {
            "descriptors": self.descriptors.shape[1:],
            "correlation": self.correlation.shape[1:],
        }
        for key, value in state.items():
            if value.shape != shapes[key]:
                raise ConfigError(
                    f"shape {tuple(value.shape)} != expected {tuple(shapes[key])}", f"genome.{key}"
                )
        return fitness, state.get("descriptors"), n_measurements, state.get("correlation")

    def _genome_tensors(self, genome: dict[str, Any]) -> tuple[Tensor, Tensor | None, Tensor]:
        """``(qkv (3, d, D), qkv_bias (3, d) or None, o (D, d))`` from either genome form, each
        a finite floating tensor of its shape."""
        d, width = self.head_dim, self.n_embd

        def checked(name: str, value: Any, shape: tuple[int, ...]) -> Tensor:
            if not isinstance(value, Tensor):
                raise ConfigError(f"expected a tensor, got {shown(value)}", f"genome.{name}")
            if tuple(value.shape) != shape:
                raise ConfigError(
                    f"shape {tuple(value.shape)} != expected {shape}", f"genome.{name}"
                )
            if not value.is_floating_point():
                raise ConfigError(f"expected a floating dtype, got {value.dtype}", f"genome.{name}")
            if not bool(torch.isfinite(value).all()):
                raise ConfigError("holds NaN or Inf", f"genome.{name}")
            return value

        if not isinstance(genome, dict):
            raise ConfigError(f"a genome is a dict, got {type(genome).__name__}", "genome")
        if "params" in genome:  # a PodView.to_dict() genome
            expected = {"n_embd": width, "head_dim": d, "bias": self.bias}
            for key, value in expected.items():
                if genome.get(key) != value:
                    raise ConfigError(
                        f"genome has {key}={genome.get(key)!r}, {self.name} needs {value!r}",
                        f"genome.{key}",
                    )
            params = genome["params"]
            if not isinstance(params, dict):
                raise ConfigError(f"expected a dict, got {shown(params)}", "genome.params")
            wanted = [f"{p}_weight" for p in "qkv"] + ["o_weight"]
            wanted += [f"{p}_bias" for p in "qkv"] if self.bias else []
            missing = sorted(set(wanted) - set(params))
            if missing:
                raise ConfigError(f"genome params lack {missing}", "genome.params")
            shapes = {"o_weight": (width, d)}
            for name in wanted:
                shape = shapes.get(name, (d, width) if name.endswith("weight") else (d,))
                checked(f"params.{name}", params[name], shape)
            qkv = torch.stack([params[f"{p}_weight"] for p in "qkv"])
            bias = torch.stack([params[f"{p}_bias"] for p in "qkv"]) if self.bias else None
            return qkv, bias, params["o_weight"]
        # an archive column row
        missing = sorted({"qkv_weight", "o_weight"} - set(genome))
        if missing:
            raise ConfigError(f"genome lacks {missing} (and has no 'params')", "genome")
        qkv = checked("qkv_weight", genome["qkv_weight"], (3, d, width))
        out = checked("o_weight", genome["o_weight"], (width, d))
        bias = genome.get("qkv_bias")
        if self.bias and bias is not None:
            bias = checked("qkv_bias", bias, (3, d))
        return qkv, bias, out

    def cull(self, slots: Iterable[int]) -> list[dict[str, Any]]:
        """Remove the pods in ``slots``; returns their genomes (``to_dict``), in the given order.

        Raises:
            PoolError: a slot is not live or repeats.
        """
        slots = self._slot_numbers(slots, "cull")
        live = self.live_slots()
        unknown = [s for s in slots if s not in live]
        if unknown or len(set(slots)) != len(slots):
            raise PoolError(f"cannot cull {slots} from {self.name}: live slots are {live}")
        if not slots:
            return []
        genomes = [PodView(self, s).to_dict() for s in slots]
        self._remove(slots)
        return genomes

    def _remove(self, slots: list[int]) -> None:
        """Empty ``slots`` (live, distinct, not empty): :meth:`cull` without the genomes."""
        with span(self.tracer, "organism.cull", organism=self.name, n=len(slots)):
            index = torch.tensor(slots, device=self._device)
            with torch.no_grad():
                for param, dim in self.slot_parameters():
                    param.index_fill_(dim, index, 0.0)
                for slot in slots:
                    self._reset_state(slot)
                self.alive.index_fill_(0, index, False)
                self.born_step.index_fill_(0, index, FOUNDER)
            self._ablated = self._ablated - set(slots)
            self._refresh_attending()
        self.deaths += len(slots)
        if self.metrics is not None:
            self.metrics.increment(f"{self.name}/deaths", len(slots))
        self._notify(slots)

    def cull_least_fit(self, n: int, *, eligible: Iterable[int] | None = None) -> list[int]:
        """The one cull rule: offer the ``n`` least fit live pods (among ``eligible``; ties go to the
        lower slot) to the archive, so an elite survives as a genome, then cull them.

        Returns:
            The culled slots, least fit first.
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise PoolError(f"cannot cull {shown(n)} pods from {self.name}: expected an int")
        live = self.live_slots()
        candidates = live if eligible is None else [s for s in live if s in set(eligible)]
        n = min(n, len(candidates))
        if n <= 0:
            return []
        fitness = self.fitness.tolist()
        dying = sorted(candidates, key=lambda s: (fitness[s], s))[:n]
        self.archive_elites(dying)
        self._remove(dying)  # the archive took what it keeps: no genome copies to return
        return dying

    def enforce_budget(self) -> list[int]:
        """Over the memory budget, cull the least fit pods until the pods' parameter bytes fit
        (slow timescale). Returns the culled slots (empty within budget or without one)."""
        if self.memory_budget_bytes is None:
            return []
        live = len(self.live_slots())
        return self.cull_least_fit(live - self.memory_budget_bytes // self.pod_bytes())

    @contextmanager
    def ablate(self, slots: Iterable[int]) -> Iterator[None]:
        """Mask ``slots`` out of the attention inside the block (their pods stay alive)."""
        slots = set(self._slot_numbers(slots, "ablate"))
        unknown = sorted(slots - set(self.live_slots()))
        if unknown:
            raise PoolError(
                f"cannot ablate slots {unknown} of {self.name}: live are {self.live_slots()}"
            )
        previous = self._ablated
        self._ablated = previous | slots
        self._refresh_attending()
        try:
            yield
        finally:
            self._ablated = previous
            self._refresh_attending()

    @contextmanager
    def every_slot(self) -> Iterator[None]:
        """Inside, an eager forward computes every slot, as a compiled one does, instead of only
        the attending ones (dead and ablated slots still output 0 through their value gate).

        Each new number of attending slots is a new attention shape, and an eager attention
        backend pays for its first call at a shape (cuDNN builds a plan per shape: ~65 ms per
        layer on an H200). A caller whose batch also changes from call to call, such as the
        medium event's masked probe (its batch grows layer by layer), would meet new shapes at
        every birth or death; at full width its shapes depend on the capacity alone.
        Re-entrant."""
        previous = self._every_slot
        self._every_slot = True
        try:
            yield
        finally:
            self._every_slot = previous

    def _refresh_attending(self) -> None:
        """Derive ``attending``, the value gate and ``_all_attend`` from ``alive`` and the
        ablated slots; every write of membership ends here (one device read)."""
        with torch.no_grad():
            self.attending.copy_(self.alive)
            if self._ablated:
                index = torch.tensor(sorted(self._ablated), device=self._device)
                self.attending.index_fill_(0, index, False)
            self.value_gate[2].copy_(self.attending.view(-1, 1, 1))
            # Host copies of which slots attend: an eager forward skips multiplying by an
            # all-ones gate, and computes only the attending slots when some do not; compiled
            # forwards never read them (they keep one graph whatever the pool).
            self._attending_slots = torch.nonzero(self.attending).flatten().tolist()
            self._all_attend = len(self._attending_slots) == self.pod_capacity
            self._attending_index: Tensor | None = None  # made on the device at first use

    # -- the fast path ----------------------------------------------------------------------------

    def forward(
        self,
        stimulus: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        head_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend over ``stimulus`` ``(B, T, D)`` with every live pod at once.

        Causal masking and key padding run in the kernel. Eagerly, with some slots not attending
        (dead or ablated), only the attending ones are projected and attended
        (:meth:`_forward_attending`). An ``attn_mask``, or attention dropout in a training
        forward, takes the masked path instead: torch's scaled dot-product attention
        over all ``P`` slots with the same masks and dropout on the probabilities, dead and
        ablated slots set to 0 (as the kernel leaves them).

        A query that sees no key (an ``attn_mask`` row all ``-inf`` or all False, every key
        padded) outputs 0 from each slot, with zero gradients: what torch's scaled dot-product
        attention gives it, and so ``nn.MultiheadAttention(need_weights=False)`` and
        ``nn.TransformerEncoderLayer``, and what the pool kernels give. An empty batch or sequence
        gives an empty output, as torch's attention does (and feeds no tube).

        The stimulus must be of the parameters' dtype: no cast happens here, as
        ``nn.MultiheadAttention`` casts nothing. Under ``torch.autocast`` for the stimulus's
        device, any floating dtype autocast casts (all but float64) may meet parameters of such a
        dtype, since autocast computes both in its own dtype (a float32 stimulus with bf16
        compute is the usual case).

        Args:
            causal: query ``t`` sees keys ``<= t`` only.
            key_padding_mask: ``(B, T)`` bool, True where a key may be attended.
            head_mask: ``(B, P)`` bool, False where a slot's output is dropped for that sample
                (one batch can then hold a differently ablated organism per sample).
            attn_mask: bool (True = may attend) or float added to the logits (``-inf`` forbids),
                broadcastable to ``(B, P, T, T)``; a float mask in float32 or the dtype attention
                computes in (the stimulus's, or autocast's), as torch's attention takes it. NaN
                and ``+inf`` (which make the softmax NaN) are refused where the mask is on the CPU;
                on an accelerator no check runs (it would wait for the device).

        Returns:
            ``(B, T, D)`` attention output (before the residual).

        Raises:
            KernelError: a stimulus, mask or head mask of the wrong type, shape, dtype or device
                (named with what was expected), or a float ``attn_mask`` on the CPU holding NaN or
                ``+inf``.
        """
        self._check_stimulus(stimulus)
        batch, seq, width = stimulus.shape
        cap, d = self.pod_capacity, self.head_dim
        if head_mask is not None and (
            not isinstance(head_mask, Tensor)
            or head_mask.shape != (batch, cap)
            or head_mask.dtype != torch.bool
        ):
            got = (
                f"{tuple(head_mask.shape)} {head_mask.dtype}"
                if isinstance(head_mask, Tensor)
                else shown(head_mask)
            )
            raise KernelError(f"head_mask must be a ({batch}, {cap}) bool tensor, got {got}")
        if attn_mask is not None:
            self._check_attn_mask(attn_mask, (batch, cap, seq, seq))
        feeding = self.feeding_tubes and self.training and torch.is_grad_enabled() and batch * seq
        # The pool kernels compute in fp32 and narrower; float64 (autocast leaves it as it is)
        # takes torch's attention, as nn.MultiheadAttention does.
        pooled = stimulus.dtype is not torch.float64
        if pooled and self._attends_in_part(attn_mask) and batch * seq:
            return self._forward_attending(stimulus, causal, key_padding_mask, head_mask, feeding)
        q, k, v = self.project(stimulus)
        if batch == 0 or seq == 0:  # nothing to attend: torch's attention returns empty too
            heads = torch.zeros_like(q)
        elif pooled and attn_mask is None and not (self.training and self.attn_dropout > 0):
            # Gated values already zero what does not attend. A kernel that attends with every
            # slot anyway (torch's SDPA) then needs no mask pass over its output; the pool
            # kernels still take ``alive``, which lets them skip dead slots' work.
            sdpa = key_padding_mask is None and getattr(self.kernel, "name", None) == "sdpa"
            heads = self.kernel.attention(
                q,
                k,
                v,
                causal=causal,
                key_padding_mask=key_padding_mask,
                alive=None if sdpa else self.attending,
            )  # (B, P, T, d)
        else:
            heads = self._masked_attention(q, k, v, causal, key_padding_mask, attn_mask)
        if head_mask is not None:
            heads = torch.where(head_mask[:, :, None, None], heads, 0.0)
        merged = heads.transpose(1, 2).reshape(batch, seq, cap * d)
        out = nn.functional.linear(merged, self.o_weight.view(width, cap * d), self.out_bias)
        if feeding:
            self._feed_tubes(heads.detach())
        return self.dropout(out)

    def _attends_in_part(self, attn_mask: Tensor | None) -> bool:
        """Whether an eager forward computes only the attending slots: some slots do not
        attend (dead or ablated), at least one does, and the kernel's path applies (no
        ``attn_mask``, no attention dropout)."""
        return (
            not torch.compiler.is_compiling()  # first: a compiled graph guards on nothing below
            and not self._all_attend
            and not self._every_slot
            and bool(self._attending_slots)
            and attn_mask is None
            and not (self.training and self.attn_dropout > 0)
        )

    def _forward_attending(
        self,
        stimulus: Tensor,
        causal: bool,
        key_padding_mask: Tensor | None,
        head_mask: Tensor | None,
        feeding: bool,
    ) -> Tensor:
        """:meth:`forward` over the ``n`` attending slots only: their rows of the stacked
        weights gathered (``index_select``, whose backward writes zeros to the other slots'
        gradients, as the full forward's gate does), projections and attention ``n / P`` of the
        full ones. The other slots output exactly 0 there, so the output is the full forward's
        up to rounding; the tube ring gets the same ``(B, P, T, d)`` entry, zeros (NaN ratios)
        for the slots not computed."""
        index = self._attending_index
        if index is None or index.device != stimulus.device:
            # A normal tensor even under inference_mode: a later training forward saves it for
            # the backward of index_select, which an inference tensor cannot be.
            with torch.inference_mode(False):
                index = torch.tensor(self._attending_slots, device=stimulus.device)
            self._attending_index = index
        out, heads = self.attend_slots(
            stimulus, index, causal=causal, key_padding_mask=key_padding_mask,
            head_mask=head_mask, out_bias=self.out_bias,
        )  # fmt: skip
        if feeding:
            batch, _, seq, d = heads.shape
            full = heads.new_zeros(batch, self.pod_capacity, seq, d)
            self._feed_tubes(full.index_copy_(1, index, heads.detach()))
        return self.dropout(out)

    def attend_slots(
        self,
        stimulus: Tensor,
        index: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        head_mask: Tensor | None = None,
        alive: Tensor | None = None,
        out_bias: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The attention of the ``n`` slots in ``index`` ``(n,)`` only: their rows of the
        stacked weights gathered (``index_select``, whose backward writes zeros into the other
        slots' gradients), projected, attended (``alive`` ``(n,)``: which of them attend; None:
        all) and projected out with ``out_bias`` (None: no bias). ``head_mask`` is ``(B, P)``
        over every slot. Returns the output ``(B, T, D)`` before dropout and the heads
        ``(B, n, T, d)``. Eager forwards with slots that do not attend, and head-sharded
        training (each rank its own slots), compute this way; no checks run here."""
        batch, seq, width = stimulus.shape
        d, n = self.head_dim, index.numel()
        weight = self.qkv_weight.index_select(1, index).view(3 * n * d, width)
        bias = None
        if self.qkv_bias is not None:
            bias = self.qkv_bias.index_select(1, index).view(3 * n * d)
        qkv = nn.functional.linear(stimulus, weight, bias)
        q, k, v = (part.view(batch, seq, n, d).transpose(1, 2) for part in qkv.split(n * d, dim=-1))
        heads = self.kernel.attention(
            q, k, v, causal=causal, key_padding_mask=key_padding_mask, alive=alive
        )  # (B, n, T, d)
        if head_mask is not None:
            heads = torch.where(head_mask.index_select(1, index)[:, :, None, None], heads, 0.0)
        merged = heads.transpose(1, 2).reshape(batch, seq, n * d)
        o_weight = self.o_weight.index_select(1, index).view(width, n * d)
        return nn.functional.linear(merged, o_weight, out_bias), heads

    def _check_stimulus(self, stimulus: Any) -> None:
        """KernelError unless ``stimulus`` is a ``(B, T, D)`` tensor on the parameters' device, of
        their dtype or one autocast computes with them (see :meth:`forward`); the linears would
        fail naming neither. Reads shapes and dtypes only."""
        if not isinstance(stimulus, Tensor):
            raise KernelError(
                f"stimulus must be a (B, T, {self.n_embd}) tensor, got {shown(stimulus)}"
            )
        if stimulus.dim() != 3 or stimulus.shape[-1] != self.n_embd:
            raise KernelError(
                f"stimulus must be (B, T, {self.n_embd}), got shape {tuple(stimulus.shape)}"
            )
        weight = self.qkv_weight
        if stimulus.device != weight.device:
            raise KernelError(
                f"stimulus is on {stimulus.device}; {self.name}'s parameters are on {weight.device}"
            )
        if stimulus.dtype != weight.dtype and not (
            _autocast_eligible(stimulus.dtype)
            and _autocast_eligible(weight.dtype)
            and torch.is_autocast_enabled(stimulus.device.type)
        ):
            raise KernelError(
                f"stimulus has dtype {stimulus.dtype}; {self.name} computes in {weight.dtype} "
                f"(convert one of them, or run under torch.autocast with a floating stimulus "
                f"other than float64)"
            )

    @staticmethod
    def _check_attn_mask(mask: Any, full: tuple[int, int, int, int]) -> None:
        """KernelError unless ``mask`` is a bool or floating tensor broadcastable to ``full``
        ``(B, P, T, T)`` (torch's attention would fail deep inside, naming neither), and, on the
        CPU, a float mask free of NaN and ``+inf`` (each makes its rows' softmax NaN). Checked
        as token ids are: on the CPU only, where reading the result costs no wait."""
        if not isinstance(mask, Tensor) or not (
            mask.dtype == torch.bool or mask.is_floating_point()
        ):
            got = mask.dtype if isinstance(mask, Tensor) else shown(mask)
            raise KernelError(f"attn_mask must be a bool or floating tensor, got {got}")
        try:
            fits = torch.broadcast_shapes(mask.shape, full) == full
        except RuntimeError:
            fits = False
        if not fits:
            raise KernelError(
                f"attn_mask of shape {tuple(mask.shape)} does not broadcast to (B, P, T, T) = "
                f"{full}"
            )
        if not mask.is_floating_point() or mask.device.type != "cpu":
            return
        if torch.compiler.is_compiling():
            return
        try:
            torch._assert_async(~(mask.isnan() | mask.isposinf()).any(), "NaN or +inf in mask")
        except RuntimeError:
            where = torch.nonzero(mask.isnan() | mask.isposinf())[0].tolist()
            raise KernelError(
                f"attn_mask holds {mask[tuple(where)].item()} at {tuple(where)}: a float mask is "
                "added to the logits, where NaN and +inf make the softmax NaN (-inf forbids a key)"
            ) from None

    def _masked_attention(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        causal: bool,
        key_padding_mask: Tensor | None,
        attn_mask: Tensor | None,
    ) -> Tensor:
        """``(B, P, T, d)`` attention with an additive mask and probability dropout, by torch's
        scaled dot-product attention (the computation ``nn.MultiheadAttention`` does).

        Slots that do not attend output 0 and get zero gradients from their gated values (zero
        value rows: finite probabilities times 0); only a mask, whose fully masked rows would
        leave them NaN, needs a pass over the output that zeroes them."""
        if (
            attn_mask is not None
            and attn_mask.is_floating_point()
            and attn_mask.dtype not in (torch.float32, q.dtype)
        ):
            wanted = sorted({str(torch.float32), str(q.dtype)})
            raise KernelError(
                f"a float attn_mask must be {' or '.join(wanted)} (attention computes in "
                f"{q.dtype}), got {attn_mask.dtype}"
            )
        mask = attn_mask
        if key_padding_mask is not None:
            pad = torch.zeros(key_padding_mask.shape, dtype=q.dtype, device=q.device)
            pad = pad.masked_fill(~key_padding_mask, -math.inf)[:, None, None, :]
            mask = pad if mask is None else mask + pad
        if causal and mask is not None:
            seq = q.shape[2]
            future = torch.full((seq, seq), -math.inf, dtype=q.dtype, device=q.device).triu(1)
            mask = mask + future
            causal = False
        heads = nn.functional.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
            is_causal=causal,
        )
        if mask is None:  # causal or no mask: every query sees a key, no row is NaN
            return heads
        return torch.where(self.attending[:, None, None], heads, 0.0)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Every slot's queries, keys and values of ``x`` ``(B, T, D)``: one linear over a view of
        ``qkv_weight``, split into ``(B, P, T, d)`` views (last dim contiguous)."""
        batch, seq, width = x.shape
        cap, d = self.pod_capacity, self.head_dim
        if not torch.compiler.is_compiling() and self._all_attend:
            # Every slot attends, so the gate is all ones: an eager forward skips the multiply
            # (and its gradient), the same numbers for two launches less per layer and step.
            bias = None if self.qkv_bias is None else self.qkv_bias.view(3 * cap * d)
            weight = self.qkv_weight.view(3 * cap * d, width)
        else:
            gate = self.value_gate
            bias = None if self.qkv_bias is None else (self.qkv_bias * gate[..., 0]).view(-1)
            weight = (self.qkv_weight * gate).view(3 * cap * d, width)
        qkv = nn.functional.linear(x, weight, bias)
        # Split, then view each part: the same strides as a permute and unbind of one view, but
        # the backward concatenates the three gradients in place of a stack and a permuted copy
        # of it (two passes over the projection's gradient in an eager step).
        return tuple(
            part.view(batch, seq, cap, d).transpose(1, 2) for part in qkv.split(cap * d, dim=-1)
        )

    def _feed_tubes(self, heads: Tensor) -> None:
        """Write each slot's mean l1/l2 ratio of this forward's head outputs ``(B, P, T, d)`` at
        the ring position, and advance it, on the device (:func:`slime.kernels.feed_tubes`: one
        launch on an eager CUDA forward): the decay and the Hoyer normalisation wait for
        :meth:`tube_recall`."""
        feed_tubes(heads, self.tube_trace, self.tube_pos, self.tube_work)

    def tube_recall(self) -> tuple[Tensor, Tensor]:
        """Per slot, the decay-weighted mean Hoyer sparsity of what the tubes remember ``(P,)``
        (the newest entry has weight 1, each older one ``tube_decay`` times the next), and whether
        they remember anything of that slot ``(P,)`` bool."""
        recalled, remembered = _tube_recall(
            self.tube_trace[None], self.tube_pos[None], self.tube_decay, self.head_dim
        )
        return recalled[0], remembered[0]

    def reset_state(self) -> None:
        """Forget the tubes' temporal memory."""
        with torch.no_grad():
            self.tube_trace.fill_(math.nan)
            self.tube_pos.zero_()

    # -- the medium timescale ---------------------------------------------------------------------

    @torch.no_grad()
    def measure_behaviour(self, latent: Tensor, *, causal: bool = False) -> Tensor:
        """Update every live pod's smoothed descriptors from a probe batch ``(B, T, D)``.

        All slots are measured at once (:func:`measure_organisms`). Activation sparsity comes from
        the tubes' decayed memory of training forwards where they hold any, else from the probe.
        Returns the live pods' smoothed descriptors ``(n_live, 3)``.
        """
        with span(self.tracer, "organism.measure_behaviour", organism=self.name):
            measure_organisms([self], latent[None], causal=causal)
        return self.live_descriptors(full=True)

    def live_descriptors(self, *, full: bool = False) -> Tensor:
        """Smoothed descriptors of the live pods in slot order: ``(n_live, k)`` with ``k`` the
        archive's dimensions (``full``: all of DESCRIPTOR_NAMES)."""
        k = len(DESCRIPTOR_NAMES) if full else self.descriptor_dims
        return self.descriptors[self.alive, :k]

    def slot_gradient_stats(self) -> tuple[Tensor, Tensor]:
        """Per slot, the squared L2 norm of its gradients ``(P,)`` and the first-order (Taylor)
        estimate of the loss increase were it masked, ``-<W_o, dL/dW_o>`` ``(P,)``. Device
        tensors, zeros where no gradient exists; no host synchronisation."""
        norms, taylor = slot_gradient_stats([self])
        return norms[0], taylor[0]

    def genome_columns(self, slots: list[int]) -> dict[str, Tensor]:
        """The archive's genome columns for ``slots``: ``qkv_weight (n, 3, d, D)``, ``o_weight
        (n, D, d)``, ``qkv_bias (n, 3, d)`` when biased, ``descriptors (n, 3)``."""
        index = torch.tensor(slots, dtype=torch.long, device=self._device)
        columns = {
            "qkv_weight": self.qkv_weight.detach().index_select(1, index).transpose(0, 1),
            "o_weight": self.o_weight.detach().index_select(1, index).transpose(0, 1),
            "descriptors": self.descriptors.index_select(0, index),
        }
        if self.qkv_bias is not None:
            columns["qkv_bias"] = self.qkv_bias.detach().index_select(1, index).transpose(0, 1)
        return {name: column.contiguous() for name, column in columns.items()}

    def archive_elites(self, slots: Iterable[int] | None = None) -> Any:
        """Offer the pods in ``slots`` (default: every live pod) to the archive, each with its
        ``fitness`` as the objective and its smoothed descriptors as the location.

        An archive in host memory is offered only the pods above their cell's threshold (see
        :func:`worth_offering`).

        Returns:
            The archive's AddResult (per-pod status and value).
        """
        live = self.live_slots()
        slots = live if slots is None else self._slot_numbers(slots, "archive")
        unknown = [s for s in slots if s not in live]
        if unknown:
            raise PoolError(f"slots {unknown} are not live in {self.name}: live are {live}")
        with span(self.tracer, "organism.archive_elites", organism=self.name, n=len(slots)):
            scores = (t.to(self.archive.device) for t in self.elite_scores(slots))
            objectives, descriptors = scores
            keep, threshold = worth_offering(self.archive, objectives, descriptors)
            offered = slots if keep is None else [s for s, k in zip(slots, keep.tolist()) if k]
            genomes = self.elite_genomes(offered) if offered else None
            return add_offered(self.archive, genomes, objectives, descriptors, keep, threshold)

    def elite_batch(self, slots: list[int]) -> tuple[Any, Tensor, Tensor]:
        """What :meth:`archive_elites` offers the archive for ``slots``: genomes (columns, or
        per-pod dicts for an archive that stores payloads), objectives ``(n,)`` (fitness) and
        descriptors ``(n, k)``, on this organism's device."""
        return (self.elite_genomes(slots), *self.elite_scores(slots))

    def elite_scores(self, slots: list[int]) -> tuple[Tensor, Tensor]:
        """Objectives ``(n,)`` (fitness) and descriptors ``(n, k)`` of ``slots``, as
        :meth:`elite_batch` offers them, on this organism's device."""
        index = torch.tensor(slots, dtype=torch.long, device=self._device)
        objectives = self.fitness.index_select(0, index)
        return objectives, self.descriptors.index_select(0, index)[:, : self.descriptor_dims]

    def elite_genomes(self, slots: list[int]) -> Any:
        """The genomes :meth:`elite_batch` offers for ``slots``: columns, or per-pod dicts for an
        archive that stores payloads."""
        if self.archive.genome_form == "payloads":
            return [PodView(self, s).to_dict() for s in slots]  # an archive from v1
        return self.genome_columns(slots)

    def birth_location(self) -> Tensor | None:
        """Where chemotaxis says the next pod should grow from: ``(k,)``, or None when the
        archive holds no elite. Hunger rises as the pool empties (1 - live / capacity)."""
        if self.chemotaxis.sense() == 0:
            return None
        descs = self.live_descriptors()
        ranges = torch.as_tensor(self.archive.ranges, dtype=torch.float32, device=self._device)
        behaviour = descs.mean(0) if len(descs) else ranges.mean(-1)
        hunger = 1.0 - len(descs) / self.pod_capacity
        return self.chemotaxis.sample(behaviour, self.metabolic_rate, hunger)

    def correlation_stats(self) -> tuple[Tensor, Tensor]:
        """Effective rank and coherence of each live pod's output correlation at its last
        measurement, ``(n_live,)`` each, in one kernel call apiece (identity, rank ``d``, before
        any measurement)."""
        correlation = self.correlation[self.alive].float()
        if correlation.shape[0] == 0:
            empty = correlation.new_zeros(0)
            return empty, empty.clone()
        return self.kernel.effective_rank(correlation), self.kernel.coherence(correlation)

    def stats(self) -> dict[str, Any]:
        """Plain-data summary (slow timescale: reads device values)."""
        live = self.live_slots()
        fitness = self.fitness.tolist()
        ranks, coherence = (t.tolist() for t in self.correlation_stats())
        return {
            "name": self.name,
            "live": len(live),
            "capacity": self.pod_capacity,
            "ablated": sorted(self._ablated),
            "births": self.births,
            "deaths": self.deaths,
            "pod_bytes": self.pod_bytes() * len(live),
            "fitness": {s: fitness[s] for s in live},
            # of each pod's outputs at its last measurement (identity, rank d, before any)
            "effective_rank": dict(zip(live, ranks)),
            "coherence": dict(zip(live, coherence)),
            "archive": dataclasses.asdict(self.archive.stats),
            "tube_memory": bool(self.tube_recall()[1].any()),
        }

    # -- checkpoints ------------------------------------------------------------------------------

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Organisms pickled whole (torch.save(model)) before attention dropout and the torch init
        # existed had neither: they attended without dropout and drew normal weights.
        super().__setstate__(state)
        if "attn_dropout" not in state:
            self.attn_dropout, self.init = 0.0, "normal"
        if "value_gate" not in self._buffers:  # pickled before the values were gated
            gate = torch.ones(3, self.pod_capacity, 1, 1, device=self.attending.device)
            self.register_buffer("value_gate", gate, persistent=False)
            self._refresh_attending()
        elif "_attending_slots" not in state:  # pickled before eager forwards read these
            self._refresh_attending()
        self.__dict__.setdefault("_every_slot", False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # State dicts written before the slot table name each pod ("pods.<slot>.<param>"):
        # gather them into the stacked layout, and take membership from the slots present.
        head = f"{prefix}pods."
        if any(key.startswith(head) for key in state_dict):
            _convert_per_pod_layout(self, state_dict, prefix)
        pos = state_dict.get(f"{prefix}tube_pos")
        if isinstance(pos, Tensor) and pos.numel() == 1 and not pos.is_meta:
            # Read on the host (loading is the slow timescale): a position outside the ring
            # would fail the first training forward that feeds the tubes, far from here.
            ring = self.tube_trace.shape[0]
            if not 0 <= pos.item() < max(ring, 1):
                raise PoolError(
                    f"{prefix}tube_pos {shown(pos.item())} is outside {self.name}'s tube ring of "
                    f"{ring} entries"
                )
        self._check_loaded_values(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ablated = frozenset()
        self._refresh_attending()

    def _check_loaded_values(self, state_dict: dict, prefix: str) -> None:
        """PoolError naming the tensor and slot where ``state_dict`` holds NaN or Inf weights,
        fitness or descriptors: no working organism holds them (a NaN or Inf weight makes the
        forward NaN, even in a dead slot, through its zero value gate; genomes are checked when
        written, dead slots are zeroed and get zero gradients, fitness is refused unless finite
        and measured descriptors are finite). Finite weights in a dead slot load: an optimizer
        that keeps the moments of a culled pod (torch's AdamW without a slot listener) moves
        them, and they are never read (spawning writes the whole slot). Tensors of another
        shape or missing are left to ``load_state_dict`` to name; read on the host, once per
        tensor (loading is the slow timescale)."""
        slotted = {"qkv_weight": 1, "qkv_bias": 1, "o_weight": 1, "out_bias": None}
        slotted.update(fitness=0, descriptors=0)
        for name, dim in slotted.items():
            value, own = state_dict.get(prefix + name), getattr(self, name, None)
            if (
                not isinstance(value, Tensor)
                or own is None
                or value.is_meta
                or not value.is_floating_point()
                or value.shape != own.shape
            ):
                continue
            bad = ~torch.isfinite(value)
            if dim is not None:
                bad = bad.movedim(dim, 0).reshape(self.pod_capacity, -1).any(1)
            if not bool(bad.any()):
                continue
            if dim is None:
                first = value[tuple(torch.nonzero(bad)[0].tolist())].item()
                raise PoolError(f"{prefix}{name} holds {first} in {self.name}")
            slots = torch.nonzero(bad).flatten().tolist()
            row = value.movedim(dim, 0)[slots[0]]
            first = row[~torch.isfinite(row)].flatten()[0].item()
            live = "live" if bool(self._loaded_alive(state_dict, prefix)[slots[0]]) else "dead"
            raise PoolError(
                f"{prefix}{name} holds {first} in slot {slots[0]} ({live}) of {self.name}; "
                f"slots with NaN or Inf: {shown(slots)}"
            )

    def _loaded_alive(self, state_dict: dict, prefix: str) -> Tensor:
        """The membership ``state_dict`` loads (this organism's own where it holds none usable)."""
        alive = state_dict.get(prefix + "alive")
        if isinstance(alive, Tensor) and alive.shape == self.alive.shape and not alive.is_meta:
            return alive.cpu()
        return self.alive.cpu()


# Bytes of attention probabilities one batched measurement may hold: layers are measured in groups
# under it (the probe's probabilities are (B, P, T, T) per layer, which grows fast with T).
PROBS_BUDGET = 1 << 28


@torch.no_grad()
def worth_offering(
    archive: Any, objectives: Tensor, descriptors: Tensor
) -> tuple[Tensor | None, Tensor | None]:
    """Which pods to offer ``archive``: for an archive in host memory that stores columns, the
    pods whose objective is above their cell's threshold ``(n,)`` bool, and the thresholds
    ``(n,)`` float64 (``objectives`` and ``descriptors`` on the archive's device). The others
    could not land (``Archive.thresholds``), so their genomes, most of a pod's bytes, need not
    be gathered and copied to the host. ``(None, None)`` offers every pod: an archive on an
    accelerator (no copy to save), payload genomes, a non-finite item (which ``add`` names),
    no item, or every item above."""
    if archive.device.type != "cpu" or archive.genome_form == "payloads" or not len(objectives):
        return None, None
    if not bool((torch.isfinite(objectives) & torch.isfinite(descriptors).all(1)).all()):
        return None, None
    threshold = archive.thresholds(descriptors)
    keep = objectives.double() > threshold
    return (None, None) if bool(keep.all()) else (keep, threshold)


def add_offered(
    archive: Any,
    genomes: Any,
    objectives: Tensor,
    descriptors: Tensor,
    keep: Tensor | None,
    threshold: Tensor | None,
) -> Any:
    """``archive.add`` of the pods :func:`worth_offering` kept (``genomes`` theirs, None for
    none), read back as the AddResult of every pod: the others as ``add`` gives them, status 0
    and value ``objective - threshold``."""
    if keep is None:
        return archive.add(genomes, objectives, descriptors)
    status = torch.zeros(len(objectives), dtype=torch.int32)
    value = objectives.double() - threshold
    if genomes is not None:
        landed = archive.add(genomes, objectives[keep], descriptors[keep])
        status[keep], value[keep] = landed.status, landed.value
    return AddResult(status=status, value=value)


def live_slots_by_layer(organisms: Iterable[Organism]) -> list[list[int]]:
    """Each organism's live slots in ascending order: one read of the device for all of them
    when their capacities agree (a model's layers), one read each otherwise."""
    organisms = list(organisms)
    if len({o.alive.shape for o in organisms}) != 1:  # none, or capacities that differ
        return [o.live_slots() for o in organisms]
    rows = torch.stack([o.alive for o in organisms]).tolist()
    return [[slot for slot, alive in enumerate(row) if alive] for row in rows]


def slot_gradient_stats(organisms: list[Organism]) -> tuple[Tensor, Tensor]:
    """:meth:`Organism.slot_gradient_stats` of organisms with one slot-table shape (a model's
    layers) at once, ``(n, P)`` each: every slot parameter's gradients stacked over the
    organisms and reduced over all but slots, a few kernels for all of them. A missing gradient
    counts as zeros."""
    first = organisms[0]
    squares, out_grads = [], None
    for column in zip(*(o.slot_parameters() for o in organisms)):
        param, dim = column[0]
        grads = torch.stack(
            [p.grad if p.grad is not None else torch.zeros_like(p) for p, _ in column]
        )
        others = [i for i in range(grads.dim()) if i not in (0, dim + 1)]
        wide = torch.promote_types(grads.dtype, torch.float32)
        squares.append(torch.linalg.vector_norm(grads, dim=others, dtype=wide).square())
        if param is first.o_weight:
            out_grads = grads  # (n, D, P, d)
    norms = torch.stack(squares).sum(0) if len(squares) > 1 else squares[0]
    weight = torch.stack([o.o_weight.detach() for o in organisms])
    taylor = -(weight * out_grads).sum(dim=(1, 3), dtype=norms.dtype)
    return norms, taylor


def measure_organisms(
    organisms: list[Organism],
    latents: Tensor,
    *,
    causal: bool = False,
    compiler: Callable[[Callable], Callable] | None = None,
) -> None:
    """Update the smoothed descriptors of every live pod of ``organisms`` from their probe inputs
    ``latents`` ``(L, B, T, D)`` (row ``i`` is organism ``i``'s attention input).

    The layers are measured together, a handful of kernel calls for all of them, in groups whose
    attention probabilities stay under :data:`PROBS_BUDGET` bytes. The organisms must agree on
    capacity, head width, model width, bias, momentum and tube capacity (a model's layers do).
    ``compiler`` (for example ``functools.partial(torch.compile, dynamic=False)``) compiles the
    measurement once per compiler object: its shapes follow the capacity, never the pool, so
    births and deaths reuse it; eagerly it is about two hundred small launches for a model.

    Raises:
        ConfigError: the organisms differ in one of those, or ``latents`` does not fit them.
    """
    first = organisms[0]
    shape = (first.pod_capacity, first.head_dim, first.n_embd, first.qkv_bias is not None)
    for o in organisms:
        if (o.pod_capacity, o.head_dim, o.n_embd, o.qkv_bias is not None) != shape or (
            o.descriptor_momentum,
            o.tube_trace.shape[0],
        ) != (first.descriptor_momentum, first.tube_trace.shape[0]):
            raise ConfigError(
                f"{o.name} differs from {first.name} in capacity, widths, bias, momentum or "
                "tube capacity; measure them apart",
                "organisms",
            )
    if not isinstance(latents, Tensor):
        raise ConfigError(
            f"latents must be a ({len(organisms)}, B, T, {shape[2]}) tensor, got {shown(latents)}",
            "latents",
        )
    if latents.dim() != 4 or latents.shape[0] != len(organisms) or latents.shape[3] != shape[2]:
        raise ConfigError(
            f"latents must be ({len(organisms)}, B, T, {shape[2]}), got {tuple(latents.shape)}",
            "latents",
        )
    _, batch, seq, _ = latents.shape
    per_layer = 4 * batch * first.pod_capacity * seq * seq
    group = max(1, PROBS_BUDGET // max(per_layer, 1))
    measure = _measure_group if compiler is None else _compiled_measure(compiler)
    for start in range(0, len(organisms), group):
        measure(organisms[start : start + group], latents[start : start + group], causal)


_COMPILED_MEASURE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_measure(compiler: Callable[[Callable], Callable]) -> Callable:
    """``compiler(_measure_group)``, made once per compiler object (the cache holds no organism)."""
    if compiler not in _COMPILED_MEASURE:
        _COMPILED_MEASURE[compiler] = compiler(_measure_group)
    return _COMPILED_MEASURE[compiler]


def _measure_group(organisms: list[Organism], latents: Tensor, causal: bool) -> None:
    first = organisms[0]
    n, batch, seq, width = latents.shape
    cap, d = first.pod_capacity, first.head_dim
    weight = torch.stack([o.qkv_weight.detach() for o in organisms]).float()  # (n, 3, P, d, D)
    qkv = torch.bmm(latents.float().reshape(n, batch * seq, width), weight.view(n, -1, width).mT)
    if first.qkv_bias is not None:
        qkv = qkv + torch.stack([o.qkv_bias.detach() for o in organisms]).float().view(n, 1, -1)
    q, k, v = qkv.view(n, batch, seq, 3, cap, d).permute(3, 0, 1, 4, 2, 5).unbind(0)
    # Attention probabilities are needed explicitly; fused kernels never expose them.
    logits = (q @ k.transpose(-1, -2)) * d**-0.5  # (n, B, P, T, T)
    pos = torch.arange(seq, device=latents.device)
    if causal:
        logits = logits.masked_fill(pos[None, :] > pos[:, None], -math.inf)
    probs = logits.softmax(-1)
    out = probs @ v  # (n, B, P, T, d)
    gap = (pos[:, None] - pos[None, :]).abs().float()
    distance = (probs * gap).sum(-1).mean(dim=(1, 3)) / max(seq - 1, 1)  # (n, P)
    recalled, remembered = _tube_recall(
        torch.stack([o.tube_trace for o in organisms]),
        torch.stack([o.tube_pos for o in organisms]),
        torch.tensor([o.tube_decay for o in organisms], device=latents.device),
        d,
    )
    sparsity = torch.where(remembered, recalled, hoyer_sparsity(out).mean(dim=(1, 3)))
    params = [
        (torch.stack([param.detach() for param in group]), dim)
        for group, dim in zip(
            zip(*([p for p, _ in o.slot_parameters()] for o in organisms)),
            [dim for _, dim in first.slot_parameters()],
        )
    ]
    raw = torch.stack([distance, sparsity, _weight_spread(params, cap)], dim=-1)  # (n, P, 3)
    correlation = first.kernel.correlation(out.transpose(1, 2).reshape(n * cap, batch * seq, d))
    correlation = correlation.view(n, cap, d, d)
    m = first.descriptor_momentum
    # Every layer's update at once, then one multi-tensor copy per buffer kind.
    alive = torch.stack([o.alive for o in organisms])  # (n, P)
    descriptors = torch.stack([o.descriptors for o in organisms])
    counts = torch.stack([o.n_measurements for o in organisms])
    smoothed = torch.where((counts > 0)[..., None], m * descriptors + (1 - m) * raw, raw)
    descriptors = torch.where(alive[..., None], smoothed, descriptors)
    previous = torch.stack([o.correlation for o in organisms])
    correlation = torch.where(alive[..., None, None], correlation, previous)
    counts = counts + alive.long()
    for buffers, values in (
        ([o.descriptors for o in organisms], descriptors),
        ([o.correlation for o in organisms], correlation),
        ([o.n_measurements for o in organisms], counts),
    ):
        torch._foreach_copy_(buffers, list(values.unbind(0)))


def _tube_recall(
    trace: Tensor, pos: Tensor, decay: float | Tensor, head_dim: int
) -> tuple[Tensor, Tensor]:
    """Decay-weighted mean Hoyer sparsity remembered by tube rings ``trace`` ``(n, C, P)`` at
    positions ``pos`` ``(n,)`` (the newest entry weighs 1, each older one ``decay`` times the
    next), and whether each ring remembers anything of each slot: ``(n, P)`` each."""
    capacity = trace.shape[1]
    age = (pos[:, None] - 1 - torch.arange(capacity, device=trace.device)) % max(capacity, 1)
    decay = torch.as_tensor(decay, dtype=torch.float32, device=trace.device).reshape(-1, 1)
    weight = (decay ** age.float())[:, :, None] * ~trace.isnan()  # (n, C, P)
    total = (weight * trace.nan_to_num()).sum(1)
    norm = weight.sum(1)
    ratio = total / norm.clamp_min(torch.finfo(norm.dtype).tiny)
    root = math.sqrt(head_dim)
    return ((root - ratio) / (root - 1)).clamp(0.0, 1.0), norm > 0


def _weight_spread(params: list[tuple[Tensor, int]], capacity: int) -> Tensor:
    """``(n, P)``: ``1 - mean|w|^2 / mean(w^2)`` over each slot's weights, in [0, 1], from slot
    parameters stacked over ``n`` layers (``dim`` indexes slots within one layer's tensor)."""
    abs_sum = sq_sum = 0.0
    count = 0
    for stacked, dim in params:
        w = stacked.float().movedim(dim + 1, 1).reshape(stacked.shape[0], capacity, -1)
        abs_sum = abs_sum + w.abs().sum(-1)
        sq_sum = sq_sum + w.square().sum(-1)
        count += w.shape[-1]
    mean_sq = sq_sum / count
    spread = 1.0 - (abs_sum / count).square() / mean_sq.clamp_min(torch.finfo(torch.float32).tiny)
    return torch.where(mean_sq > 0, spread, 0.0)


def _convert_per_pod_layout(organism: Organism, state_dict: dict, prefix: str) -> None:
    """Rewrite ``state_dict``'s per-pod keys under ``prefix`` into the slot-table keys in place."""
    head = f"{prefix}pods."
    per_pod: dict[int, dict[str, Tensor]] = {}
    for key in [k for k in state_dict if k.startswith(head)]:
        slot, name = key[len(head) :].split(".", 1)
        per_pod.setdefault(int(slot), {})[name] = state_dict.pop(key)
    outside = sorted(s for s in per_pod if not 0 <= s < organism.pod_capacity)
    if outside:
        raise PoolError(
            f"state_dict has pods in slots {outside}, capacity is {organism.pod_capacity}"
        )
    cap, d, width = organism.pod_capacity, organism.head_dim, organism.n_embd
    like = next(iter(per_pod.values()))["q_weight"]
    qkv = like.new_zeros(3, cap, d, width)
    out = like.new_zeros(width, cap, d)
    bias = like.new_zeros(3, cap, d) if organism.bias else None
    alive = torch.zeros(cap, dtype=torch.bool)
    descriptors = torch.zeros(cap, len(DESCRIPTOR_NAMES))
    n_measurements = torch.zeros(cap, dtype=torch.long)
    correlation = torch.eye(d).expand(cap, d, d).clone()
    try:
        for slot, pod in per_pod.items():
            alive[slot] = True
            for i, p in enumerate("qkv"):
                qkv[i, slot] = pod[f"{p}_weight"]
                if bias is not None:
                    bias[i, slot] = pod[f"{p}_bias"]
            out[:, slot] = pod["o_weight"]
            descriptors[slot] = pod["descriptors"]
            n_measurements[slot] = pod["n_measurements"]
            correlation[slot] = pod["_correlation"]
    except (KeyError, RuntimeError) as e:
        raise PoolError(f"per-pod state_dict under {prefix!r} is malformed: {e}") from e
    state_dict[f"{prefix}qkv_weight"] = qkv
    state_dict[f"{prefix}o_weight"] = out
    if bias is not None:
        state_dict[f"{prefix}qkv_bias"] = bias
    state_dict[f"{prefix}alive"] = alive
    state_dict[f"{prefix}descriptors"] = descriptors
    state_dict[f"{prefix}n_measurements"] = n_measurements
    state_dict[f"{prefix}correlation"] = correlation
    # Written before these existed: fitness is restored by the caller from its own record.
    state_dict.setdefault(f"{prefix}fitness", organism.fitness.new_zeros(cap))
    state_dict.setdefault(f"{prefix}born_step", torch.full((cap,), FOUNDER, dtype=torch.long))
    state_dict.setdefault(f"{prefix}tube_trace", torch.full_like(organism.tube_trace, math.nan))
    state_dict.setdefault(f"{prefix}tube_pos", torch.zeros_like(organism.tube_pos))
