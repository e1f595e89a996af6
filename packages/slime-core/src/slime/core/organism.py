"""Organism: a pool of pseudopods that attends as one multi-head attention layer.

The organism owns its pods (registered submodules in ``pods``, keyed by slot), its archive, its
chemotaxis and its tubes; pods never reference the organism. Attention runs as one kernel call over
all ``pod_capacity`` slots with an ``alive`` mask, so shapes never change when pods are born or
die (no recompiles): the live pods' weights are scattered into zero-padded stacks each forward,
which is differentiable, so every live pod's parameters get gradients.

Births and deaths happen on the slow timescale, never inside a forward; each one calls the
registered pool listeners with the parameters added and removed, so a trainer can keep its
optimizer in step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from slime.core.chemotaxis import Chemotaxis
from slime.core.observability import MetricsCollector, span
from slime.core.placement import placement
from slime.core.pseudopod import DESCRIPTOR_NAMES, Pseudopod, hoyer_sparsity
from slime.core.state import FlowState
from slime.memory import MAX_POOL_SIZE, GridArchive, Pool
from slime.proto import ConfigError, Kernel, KernelError, Memory, PoolError
from torch import Tensor, nn

__all__ = ["Organism", "PoolListener"]

PoolListener = Callable[[list[nn.Parameter], list[nn.Parameter]], None]


class Organism(nn.Module):
    """A living multi-head attention layer. Implements slime.proto.Organism.

    Args:
        n_embd: model width ``D``.
        pod_capacity: slots (padded head count), at most ``MAX_POOL_SIZE``.
        n_pods: pods alive at construction (slots ``0 .. n_pods - 1``).
        head_dim: each pod's width ``d``.
        kernel: compute backend shared by every pod.
        bias: biases on q/k/v and the output projection (as nanoGPT's ``bias``).
        dropout: dropout on the attention output.
        init_std, out_std: normal init std of q/k/v and of the output projection.
        archive: descriptor archive; default a GridArchive of 8x8 cells over the first two
            descriptors, ranges [0, 1].
        chemotaxis: default one over ``archive``.
        tubes: temporal memory (slime.proto.Memory) that every training forward feeds the per-slot
            activation sparsity of ``(pod_capacity,)``; None disables it.
        memory_budget_bytes: cap on the pods' parameter bytes, enforced by :meth:`enforce_budget`.
        quiet_birth: newborn pods get a zero output projection, so a birth does not change the
            organism's function (continual-backprop style); their q/k/v start learning once the
            output projection has moved off zero.
        metabolic_rate: how far in descriptor space a birth may range from the current behaviour.
        name: label for metrics counters and spans.
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
        init_std: float = 0.02,
        out_std: float | None = None,
        metrics: MetricsCollector | None = None,
        tracer: Any | None = None,
        archive: Any | None = None,
        chemotaxis: Chemotaxis | None = None,
        tubes: Memory | None = None,
        memory_budget_bytes: int | None = None,
        quiet_birth: bool = True,
        metabolic_rate: float = 0.25,
        name: str = "organism",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if not 1 <= pod_capacity <= MAX_POOL_SIZE:
            raise ConfigError(
                f"must lie in [1, {MAX_POOL_SIZE}], got {pod_capacity}", "pod_capacity"
            )
        if not 0 <= n_pods <= pod_capacity:
            raise ConfigError(
                f"must lie in [0, pod_capacity={pod_capacity}], got {n_pods}", "n_pods"
            )
        if not metabolic_rate > 0:
            raise ConfigError(f"must be > 0, got {metabolic_rate}", "metabolic_rate")
        for field, value in (("n_embd", n_embd), ("head_dim", head_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ConfigError(f"must be an int >= 2, got {value!r}", field)
        self.n_embd, self.head_dim, self.pod_capacity = n_embd, head_dim, pod_capacity
        self.kernel, self.metrics, self.tracer = kernel, metrics, tracer
        self.bias, self.init_std = bias, init_std
        self.out_std = init_std if out_std is None else out_std
        self.quiet_birth, self.metabolic_rate, self.name = quiet_birth, metabolic_rate, name
        self.generator = generator
        device = torch.device(device) if device is not None else torch.device("cpu")
        self.pods = nn.ModuleDict()
        self.out_bias = nn.Parameter(torch.zeros(n_embd, device=device)) if bias else None
        self.dropout = nn.Dropout(dropout)
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
        self.tubes = tubes
        self.pool = Pool(
            capacity=pod_capacity,
            memory_budget_bytes=memory_budget_bytes,
            size_of=lambda pod: pod.parameter_bytes(),
        )
        self._pool_ids: dict[int, Any] = {}
        self._listeners: list[PoolListener] = []
        self._ablated: frozenset[int] = frozenset()
        self.register_buffer(
            "_alive", torch.zeros(pod_capacity, dtype=torch.bool, device=device), persistent=False
        )
        self.register_buffer(
            "_slot_index", torch.zeros(0, dtype=torch.long, device=device), persistent=False
        )
        self._live: list[int] = []
        for slot in range(n_pods):
            self._insert(slot, self._new_pod(self.out_std))
        self._refresh_layout()

    # -- composition ----------------------------------------------------------------------------

    @property
    def descriptor_dims(self) -> int:
        """How many descriptors the archive indexes (the first ``k`` of DESCRIPTOR_NAMES)."""
        return self.archive.descriptor_dim

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

    def live_slots(self) -> list[int]:
        return list(self._live)

    def pod(self, slot: int) -> Pseudopod:
        """The live pod in ``slot``. Raises PoolError for an empty slot."""
        if slot not in self._live:
            raise PoolError(f"slot {slot} of {self.name} holds no pod; live are {self._live}")
        return self.pods[str(slot)]

    def tick(self, steps: int = 1) -> None:
        """Advance the pool's clock (ages every pod)."""
        self.pool.tick(steps)

    def ages(self) -> dict[int, int]:
        """``{slot: steps since birth}`` on the pool's clock (see :meth:`tick`)."""
        return {slot: self.pool.age(self._pool_ids[slot]) for slot in self._live}

    def placements(self, num_devices: int) -> dict[int, int]:
        """``{slot: device index}``: a pure function of each pod's archive cell (slow timescale).

        The cell comes from the pod's smoothed descriptors, so placement only changes when a
        measurement moves a pod into another cell.
        """
        if not self._live:
            return {}
        cells = self.archive.cell_index(self.descriptors()).tolist()
        return {slot: placement((cell,), num_devices) for slot, cell in zip(self._live, cells)}

    def _new_pod(self, out_std: float) -> Pseudopod:
        return Pseudopod(
            self.n_embd,
            self.head_dim,
            kernel=self.kernel,
            bias=self.bias,
            init_std=self.init_std,
            out_std=out_std,
            generator=self.generator,
            device=self._device,
        )

    def _insert(self, slot: int, pod: Pseudopod) -> None:
        self._pool_ids[slot] = self.pool.spawn(pod)
        self.pods[str(slot)] = pod

    @property
    def _device(self) -> torch.device:
        return self._alive.device  # follows .to(device)

    def _refresh_layout(self) -> None:
        # Slow timescale: rebuild the device-side slot index and alive mask once per change.
        self._live = sorted(int(s) for s in self.pods.keys())
        self._slot_index = torch.tensor(self._live, dtype=torch.long, device=self._device)
        self._refresh_alive()
        if self.tubes is not None:
            self.tubes.clear()  # per-slot history would otherwise follow a slot to its next pod

    def add_pool_listener(self, listener: PoolListener) -> None:
        """Call ``listener(added_params, removed_params)`` after every birth and death."""
        self._listeners.append(listener)

    def _notify(self, added: list[nn.Parameter], removed: list[nn.Parameter]) -> None:
        for listener in self._listeners:
            listener(added, removed)

    def spawn(self, genome: dict[str, Any] | None = None, *, slot: int | None = None) -> int:
        """Grow a pod in the lowest free slot (or ``slot``); returns its slot.

        Without a genome the newborn bootstraps from the archive at the location chemotaxis picks
        (:meth:`birth_location`, interpolating nearby elites), or is freshly initialised when the
        archive is empty. A newborn's fitness and descriptors start from zero.

        Raises:
            PoolError: the pool is full or ``slot`` is taken or out of range.
        """
        free = [s for s in range(self.pod_capacity) if str(s) not in self.pods]
        if not free:
            raise PoolError(
                f"{self.name} is full: {self.pod_capacity} of {self.pod_capacity} slots live"
            )
        if slot is None:
            slot = free[0]
        elif slot not in free:
            raise PoolError(f"slot {slot} is not a free slot of {self.name}; free: {free}")
        with span(self.tracer, "organism.spawn", organism=self.name, slot=slot):
            if genome is None:
                location = self.birth_location()
                if location is not None:
                    genome = self.archive.interpolate(location, k_neighbors=2)
            if genome is None:
                pod = self._new_pod(0.0 if self.quiet_birth else self.out_std)
            else:
                self._check_genome(genome)
                pod = Pseudopod.from_dict(genome, kernel=self.kernel, device=self._device)
                pod.reset()
                if self.quiet_birth:
                    with torch.no_grad():
                        pod.o_weight.zero_()
            self._grow(slot, pod)
        return slot

    def _check_genome(self, genome: dict[str, Any]) -> None:
        expected = {"n_embd": self.n_embd, "head_dim": self.head_dim, "bias": self.bias}
        for key, value in expected.items():
            if genome.get(key) != value:
                raise ConfigError(
                    f"genome has {key}={genome.get(key)!r}, {self.name} needs {value!r}",
                    f"genome.{key}",
                )

    def _grow(self, slot: int, pod: Pseudopod) -> None:
        self._insert(slot, pod)
        self._refresh_layout()
        if self.metrics is not None:
            self.metrics.increment(f"{self.name}/births")
        self._notify(list(pod.parameters()), [])

    def cull(self, slots: Iterable[int]) -> list[dict[str, Any]]:
        """Remove the pods in ``slots``; returns their genomes (``to_dict``), in the given order.

        Raises:
            PoolError: a slot is not live or repeats.
        """
        slots = list(slots)
        unknown = [s for s in slots if s not in self._live]
        if unknown or len(set(slots)) != len(slots):
            raise PoolError(f"cannot cull {slots} from {self.name}: live slots are {self._live}")
        for slot in slots:
            self.pool.remove(self._pool_ids[slot])
        return self._bury(slots)

    def _bury(self, slots: list[int]) -> list[dict[str, Any]]:
        """Drop pods the pool no longer holds from the module tree; notify listeners."""
        if not slots:
            return []
        with span(self.tracer, "organism.cull", organism=self.name, n=len(slots)):
            genomes, removed = [], []
            for slot in slots:
                del self._pool_ids[slot]
                pod = self.pods[str(slot)]
                del self.pods[str(slot)]
                genomes.append(pod.to_dict())
                removed.extend(pod.parameters())
            self._ablated = self._ablated - set(slots)
            self._refresh_layout()
        if self.metrics is not None:
            self.metrics.increment(f"{self.name}/deaths", len(slots))
        self._notify([], removed)
        return genomes

    def _total_pod_bytes(self) -> int:
        return sum(pod.parameter_bytes() for pod in self.pods.values())

    def enforce_budget(self) -> list[dict[str, Any]]:
        """Over the memory budget, cull the least fit 20% of pods (the pool's soft limit) until
        the pods' parameter bytes fit (slow timescale).

        Returns:
            Genomes of the culled pods, least fit first (empty within budget or without one).
        """
        genomes: list[dict[str, Any]] = []
        while True:
            culled = self.pool.enforce_budget(self._total_pod_bytes())  # worst first
            if not culled:
                return genomes
            slot_of = {id(self.pods[str(s)]): s for s in self._live}
            genomes += self._bury([slot_of[id(pod)] for pod in culled])

    @contextmanager
    def ablate(self, slots: Iterable[int]) -> Iterator[None]:
        """Mask ``slots`` out of the attention inside the block (their pods stay alive)."""
        slots = set(slots)
        unknown = sorted(slots - set(self._live))
        if unknown:
            raise PoolError(f"cannot ablate slots {unknown} of {self.name}: live are {self._live}")
        previous = self._ablated
        self._ablated = previous | slots
        self._refresh_alive()
        try:
            yield
        finally:
            self._ablated = previous
            self._refresh_alive()

    def _refresh_alive(self) -> None:
        alive = torch.zeros(self.pod_capacity, dtype=torch.bool)
        alive[self._live] = True
        alive[list(self._ablated)] = False
        self._alive.copy_(alive)  # in place: compiled graphs keep reading the same buffer

    # -- the fast path --------------------------------------------------------------------------

    @torch.compiler.disable
    def _stacked_weights(self, dtype: torch.dtype) -> tuple[Tensor, Tensor | None, Tensor]:
        """Padded projections of every slot: ``w_in`` ``(3 P d, D)`` (q, k, v blocks), ``b_in``
        ``(3 P d,)`` or None, ``w_out`` ``(D, P d)``. Run eagerly under torch.compile: which
        pods are alive is Python state, and keeping it out of the graph means a birth or death
        never recompiles the attention (its inputs keep their padded shapes)."""
        cap, d, width = self.pod_capacity, self.head_dim, self.n_embd
        w_in = torch.stack([self._padded(f"{p}_weight", dtype) for p in "qkv"]).reshape(
            3 * cap * d, width
        )
        b_in = None
        if self.bias:
            b_in = torch.stack([self._padded(f"{p}_bias", dtype) for p in "qkv"]).flatten()
        w_out = self._padded("o_weight", dtype).permute(1, 0, 2).reshape(width, cap * d)
        return w_in, b_in, w_out

    def _padded(self, name: str, dtype: torch.dtype) -> Tensor:
        """Stack the live pods' parameter ``name`` into a zero-padded ``(pod_capacity, ...)``
        (``dtype`` only matters for an empty pool; live pods keep their parameters' dtype)."""
        pods = [self.pods[str(s)] for s in self._live]
        if not pods:
            d, width = self.head_dim, self.n_embd
            shape = {"o_weight": (width, d)}.get(
                name, (d,) if name.endswith("bias") else (d, width)
            )
            return torch.zeros((self.pod_capacity, *shape), device=self._device, dtype=dtype)
        values = torch.stack([getattr(pod, name) for pod in pods])
        if len(pods) == self.pod_capacity:
            return values  # a full pool: slots 0..P-1 in order, nothing to scatter
        padded = values.new_zeros((self.pod_capacity, *values.shape[1:]))
        return padded.index_put((self._slot_index,), values)

    def forward(
        self,
        stimulus: Tensor,
        state: FlowState | None = None,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, FlowState]:
        """Attend over ``stimulus`` ``(B, T, D)`` with every live pod at once.

        Args:
            state: the previous FlowState; attention is stateless within a sequence, so it is only
                replaced (accepted for the Organism protocol).
            causal: query ``t`` sees keys ``<= t`` only.
            key_padding_mask: ``(B, T)`` bool, True where a key may be attended.

        Returns:
            ``(B, T, D)`` attention output (before the residual) and the new FlowState.
        """
        if stimulus.dim() != 3 or stimulus.shape[-1] != self.n_embd:
            raise KernelError(
                f"stimulus must be (B, T, {self.n_embd}), got shape {tuple(stimulus.shape)}"
            )
        batch, seq, width = stimulus.shape
        with span(self.tracer, "organism.forward", organism=self.name, batch=batch, seq=seq):
            cap, d = self.pod_capacity, self.head_dim
            w_in, b_in, w_out = self._stacked_weights(stimulus.dtype)
            qkv = nn.functional.linear(stimulus, w_in, b_in)
            q, k, v = qkv.view(batch, seq, 3, cap, d).permute(2, 0, 3, 1, 4).unbind(0)
            heads = self.kernel.attention(
                q, k, v, causal=causal, key_padding_mask=key_padding_mask, alive=self._alive
            )  # (B, P, T, d)
            merged = heads.permute(0, 2, 1, 3).reshape(batch, seq, cap * d)
            out = self.dropout(nn.functional.linear(merged, w_out, self.out_bias))
            memory = self._record(heads)
        return out, FlowState(input=stimulus, hidden=heads, residual=stimulus + out, memory=memory)

    @torch.compiler.disable
    def _record(self, heads: Tensor) -> Tensor | None:
        """Side channels of a forward: per-pod counters, and the tubes fed each training forward's
        per-slot activation sparsity, returning their decayed recall. Device-side only (no host
        sync); kept out of torch.compile graphs because the tubes' ring position and the
        counters are Python state that would otherwise force a recompile every step."""
        if self.metrics is not None:
            for slot in self._live:
                self.metrics.increment(f"{self.name}/pod{slot}/forwards")
        if self.tubes is None:
            return None
        if self.training and torch.is_grad_enabled():
            sparsity = hoyer_sparsity(heads.detach()).mean(dim=(0, 2))  # (P,)
            self.tubes.store(sparsity, 1.0)
        return self.tubes.recall()

    def reset_state(self) -> None:
        """Forget the tubes' temporal memory."""
        if self.tubes is not None:
            self.tubes.clear()

    # -- the medium timescale -------------------------------------------------------------------

    @torch.no_grad()
    def measure_behaviour(self, latent: Tensor, *, causal: bool = False) -> Tensor:
        """Update every live pod's smoothed descriptors from a probe batch ``(B, T, D)``.

        Activation sparsity comes from the tubes' decayed memory of training forwards when it
        holds any, else from the probe. Returns the smoothed descriptors ``(n_live, 3)``.
        """
        recalled = self.tubes.recall() if self.tubes is not None else None
        with span(self.tracer, "organism.measure_behaviour", organism=self.name):
            for slot in self._live:
                sparsity = None if recalled is None else recalled[slot]
                self.pods[str(slot)].measure(latent, causal=causal, activation_sparsity=sparsity)
        return self.descriptors(full=True)

    def descriptors(self, *, full: bool = False) -> Tensor:
        """Smoothed descriptors of the live pods in slot order: ``(n_live, k)`` with ``k`` the
        archive's dimensions (``full``: all of DESCRIPTOR_NAMES)."""
        k = len(DESCRIPTOR_NAMES) if full else self.descriptor_dims
        if not self._live:
            return torch.zeros(0, k, device=self._device)
        return torch.stack([self.pods[str(s)].descriptors[:k] for s in self._live])

    def archive_elites(self, fitness: dict[int, float]) -> Any:
        """Offer the pods in ``fitness`` (slot -> objective) to the archive as elites.

        Returns:
            The archive's AddResult (per-pod status and value).
        """
        slots = list(fitness)
        unknown = [s for s in slots if s not in self._live]
        if unknown:
            raise PoolError(f"slots {unknown} are not live in {self.name}: live are {self._live}")
        k = self.descriptor_dims
        genomes = [self.pods[str(s)].to_dict() for s in slots]
        objectives = torch.tensor([float(fitness[s]) for s in slots], device=self._device)
        descs = torch.stack([self.pods[str(s)].descriptors[:k] for s in slots])
        with span(self.tracer, "organism.archive_elites", organism=self.name, n=len(slots)):
            return self.archive.add(genomes, objectives, descs)

    def birth_location(self) -> Tensor | None:
        """Where chemotaxis says the next pod should grow from: ``(k,)``, or None when the
        archive holds no elite. Hunger rises as the pool empties (1 - live / capacity)."""
        if self.chemotaxis.sense() == 0:
            return None
        descs = self.descriptors()
        ranges = torch.as_tensor(self.archive.ranges, dtype=torch.float32, device=self._device)
        behaviour = descs.mean(0) if len(descs) else ranges.mean(-1)
        hunger = 1.0 - len(self._live) / self.pod_capacity
        return self.chemotaxis.sample(behaviour, self.metabolic_rate, hunger)

    def stats(self) -> dict[str, Any]:
        """Plain-data summary (slow timescale: reads device values)."""
        return {
            "name": self.name,
            "live": len(self._live),
            "capacity": self.pod_capacity,
            "ablated": sorted(self._ablated),
            "births": self.pool.births,
            "deaths": self.pool.deaths,
            "pod_bytes": self._total_pod_bytes(),
            "fitness": {s: self.pods[str(s)].fitness for s in self._live},
            "archive": dataclasses.asdict(self.archive.stats),
            "tube_memory": self.tubes is not None and self.tubes.recall() is not None,
        }

    # -- checkpoints ----------------------------------------------------------------------------

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A state_dict names its pool composition through its keys ("pods.<slot>.<param>");
        # rebuild the pool to match before the pods' own tensors load.
        head = f"{prefix}pods."
        wanted = {int(k[len(head) :].split(".", 1)[0]) for k in state_dict if k.startswith(head)}
        outside = sorted(s for s in wanted if not 0 <= s < self.pod_capacity)
        if outside:
            raise PoolError(
                f"state_dict has pods in slots {outside}, capacity is {self.pod_capacity}"
            )
        surplus = [s for s in self._live if s not in wanted]
        if surplus:
            self.cull(surplus)
        for slot in sorted(wanted - set(self._live)):
            self._grow(slot, self._new_pod(self.out_std))  # its tensors load just below
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
