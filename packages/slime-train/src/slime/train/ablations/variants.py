"""The arms of the ablations: one RunConfig change or one injected part per arm.

Switches the config already has are used as they are (``model.kind``, fitness weights,
``lifecycle.births_per_event`` / ``cull_fraction``). The others are injected into a built model by
composition, through the organism's public attributes, never by editing slime.core:

- births without the archive: :class:`Starved` chemotaxis senses no elite, so ``Organism.spawn``
  falls back to a fresh (quiet) initialisation;
- uniform elite sampling: :class:`UniformElites` picks an elite uniformly at random (no
  concentration, no distance), and the newborn copies it;
- tubes off: :func:`tubes_off` gives the organism a tube ring of capacity 0 (activation sparsity
  then comes from the probe alone);
- an efficiency term that can differ between pods: :func:`pod_latency_costs`, the measured time of
  each pod's own forward, replaces the shipped cost (parameter bytes, equal for equal-width pods).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from slime.proto import ConfigError
from slime.train.config import RunConfig
from torch import Tensor

__all__ = ["ARMS", "Arm", "Starved", "UniformElites", "pod_latency_costs", "tubes_off"]

Births = Literal["chemotaxis", "uniform", "fresh"]
Cost = Literal["params", "latency"]


class UniformElites:
    """Chemotaxis that ignores concentration and distance: every elite is equally likely.

    Implements ``slime.proto.Chemotaxis`` plus the ``sense``/``archive`` members an organism uses.
    A sampled location is the chosen elite's own descriptor, so the newborn is a copy of it.
    """

    def __init__(self, archive: Any, *, generator: torch.Generator | None = None) -> None:
        self.archive, self.generator = archive, generator
        self._locations: list[Tensor] = []

    def __len__(self) -> int:
        return len(self._locations)

    def add_source(self, location: Tensor, concentration: float | Tensor) -> None:
        self._locations.append(torch.as_tensor(location, dtype=torch.float32))

    def sense(self) -> int:
        """Replace the sources with the archive's elites; returns how many there are."""
        self.clear()
        for elite in self.archive:
            self.add_source(elite.descriptor, elite.objective)
        return len(self)

    def sample(self, behavior: Tensor, metabolic_rate: float, hunger: float) -> Tensor | None:
        if not self._locations:
            return None
        gen = self.generator
        pick = torch.randint(
            len(self._locations), (1,), generator=gen, device=gen.device if gen else None
        )
        return self._locations[int(pick)].clone()

    def clear(self) -> None:
        self._locations.clear()


class Starved:
    """Chemotaxis that never finds food: births ignore the archive and start fresh."""

    def __init__(self, archive: Any) -> None:
        self.archive = archive

    def add_source(self, location: Tensor, concentration: float | Tensor) -> None:
        """Sources are ignored: this arm is the archive-free control."""

    def sense(self) -> int:
        return 0

    def sample(self, behavior: Tensor, metabolic_rate: float, hunger: float) -> Tensor | None:
        return None

    def clear(self) -> None:
        """Nothing is held."""


def tubes_off(organism) -> None:
    """Give ``organism`` a tube ring of capacity 0: training forwards leave no trace, and activation
    sparsity is measured from the probe alone (what ``tube_capacity=0`` builds)."""
    organism.tube_trace = organism.tube_trace.new_zeros(0, organism.pod_capacity)
    organism.tube_pos.zero_()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def pod_latency_costs(model, probe_idx: Tensor, repeats: int = 3) -> dict[tuple[int, int], float]:
    """Median wall seconds of each live pod's own forward (its head alone, then its columns of
    the output projection) on a probe-shaped input (host sync).

    The pod's cost does not depend on the input's values (dense compute), so a fixed random latent
    ``(B, T, D)`` stands in for the layer's real input.
    """
    device = probe_idx.device
    gen = torch.Generator(device=device).manual_seed(0)
    batch, seq = probe_idx.shape
    latent = torch.randn(batch, seq, model.config.n_embd, generator=gen, device=device)
    costs = {}
    for layer, organism in enumerate(model.organisms):
        for slot in organism.live_slots():
            pod = organism.pod(slot)
            times = []
            for _ in range(repeats):
                _sync(device)
                t0 = time.perf_counter()
                F.linear(pod(latent, causal=True), pod.o_weight)
                _sync(device)
                times.append(time.perf_counter() - t0)
            costs[(layer, slot)] = statistics.median(times)
    return costs


@dataclass(frozen=True)
class Arm:
    """One variant of the training recipe.

    Args:
        name: key in results and tables.
        label: plain words for the report.
        kind: ``slime`` or ``baseline``.
        births: where a newborn pod comes from.
        tubes: whether the organisms keep their temporal memory.
        cost: the efficiency term's cost per pod.
        weights: fitness ``(w_task, w_eff, w_grad)``.
        task: how the task term is measured (``fitness.task``).
        static: no births and no culls (the lifecycle still measures, scores and archives).
    """

    name: str
    label: str
    kind: Literal["slime", "baseline"] = "slime"
    births: Births = "chemotaxis"
    tubes: bool = True
    cost: Cost = "params"
    weights: tuple[float, float, float] = (0.7, 0.2, 0.1)
    task: Literal["masked", "taylor"] = "masked"
    static: bool = False

    def configure(self, cfg: RunConfig) -> RunConfig:
        """``cfg`` with this arm's config switches set."""
        w_task, w_eff, w_grad = self.weights
        changes: dict[str, dict[str, Any]] = {
            "model": {"kind": self.kind},
            "fitness": {"w_task": w_task, "w_eff": w_eff, "w_grad": w_grad, "task": self.task},
        }
        if self.static:
            changes["lifecycle"] = {"births_per_event": 0, "cull_fraction": 0.0}
        return cfg.replace(**changes)

    def inject(self, model) -> None:
        """Swap this arm's parts into a freshly built SlimeModel (no-op for the defaults)."""
        for organism in model.organisms:
            if self.births == "uniform":
                organism.chemotaxis = UniformElites(organism.archive, generator=organism.generator)
            elif self.births == "fresh":
                organism.chemotaxis = Starved(organism.archive)
            if not self.tubes:
                tubes_off(organism)


_ARMS = (
    Arm("slime", "slime (lifecycle, archive births by chemotaxis, tubes, 0.7/0.2/0.1 fitness)"),
    Arm("baseline", "baseline GPT, same config (n_pods heads of head_dim)", kind="baseline"),
    Arm("no_archive", "births start from a fresh random init (archive ignored)", births="fresh"),
    Arm("static", "static pool: no births, no culls (same initial size)", static=True),
    Arm("acc_only", "accuracy-only fitness (w_eff = 0)", weights=(0.7, 0.0, 0.1)),
    Arm("eff_latency", "efficiency term on measured pod latency (0.7/0.2/0.1)", cost="latency"),
    Arm("task_only", "fitness = masked-loss contribution only", weights=(1.0, 0.0, 0.0)),
    Arm("grad_only", "fitness = gradient magnitude only", weights=(0.0, 0.0, 1.0)),
    Arm(
        "taylor_only",
        "fitness = first-order (Taylor) estimate of the masked-loss contribution only",
        weights=(1.0, 0.0, 0.0),
        task="taylor",
    ),
    Arm("uniform", "births copy a uniformly sampled elite (no chemotaxis)", births="uniform"),
    Arm("no_tubes", "tubes off (no temporal memory of activation sparsity)", tubes=False),
)
ARMS: dict[str, Arm] = {arm.name: arm for arm in _ARMS}


def arm(name: str) -> Arm:
    """The arm called ``name``. Raises ConfigError for an unknown name."""
    if name not in ARMS:
        raise ConfigError(f"unknown arm {name!r}; expected one of {sorted(ARMS)}", "arm")
    return ARMS[name]
