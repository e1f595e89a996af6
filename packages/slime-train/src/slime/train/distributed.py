"""Data-parallel training on ``torch.distributed``: process group, ranks, and the lifecycle in lockstep.

Launch::

    torchrun --nproc-per-node N --no-python slime train --config tiny
    python -m torch.distributed.run --nproc-per-node N -m slime.train.cli train --config tiny

Each process (rank) holds the whole model, wrapped in ``DistributedDataParallel``: the backward
averages the gradients over the ranks, so clipping, the optimizer and the per-slot gradient
statistics of the fitness see the same averaged gradients everywhere. ``train.batch_size`` is the
*global* batch: each rank draws ``batch_size / world_size`` rows (it must divide) from its own data
stream (:func:`data_seed`; rank 0's is a one-process run's), and each step's loss is averaged over
the ranks, so a run of N processes follows a one-process run of the same global batch (the same
samples give the same steps up to floating-point reduction order; built-in datasets score the same
number of tokens per sample, so the mean of the ranks' means is the global mean).

The pool lives in fixed tensors (the slot table), so DDP's gradient buckets never change; births
and deaths write slots in place on every rank. Every rank runs the lifecycle itself, and it decides
alike everywhere because its inputs are the same:

- gradients (fitness's gradient and Taylor terms, the optimizer) and the loss (the loss gate) are
  averaged over the ranks;
- the probe batch, the model's generator (births, chemotaxis) and every global RNG are seeded the
  same on every rank;
- the one input a rank measures alone, the tube ring (activation sparsity of its own training
  forwards), is averaged over the ranks before behaviour is measured (:class:`Lockstep`);
- after fitness is scored, rank 0's fitness, descriptors and correlations are broadcast before the
  archive, births and culls act on them, so the archives stay bit-identical even where a device's
  kernels are not deterministic.

Rank 0 alone writes the run directory (config, metrics, plots, the exported model) and draws the
progress bar. Checkpoints are collective, with ``torch.distributed.checkpoint``
(:func:`slime.train.checkpoint.save_sharded_checkpoint`), and load onto any number of processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from slime.proto import ConfigError
from slime.train.build import resolve_device
from torch import Tensor, nn

__all__ = [
    "Distributed",
    "Lockstep",
    "data_parallel",
    "data_seed",
    "launch",
    "resumed_data_seed",
    "world_size_from_env",
]

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constants (golden ratio, splitmix64) spread rank seeds
_STEP_MIX = 0xBF58476D1CE4E5B9


def data_seed(seed: int, rank: int) -> int:
    """Seed of ``rank``'s training data stream: ``seed + 1`` on rank 0 (a one-process run's),
    a distinct stream on every other rank."""
    return (seed + 1 + rank * _MIX) % 2**64


def resumed_data_seed(seed: int, rank: int, step: int) -> int:
    """Seed of a data stream for ``rank`` resuming at ``step`` a checkpoint that holds none for it
    (written by a run with fewer ranks)."""
    return (data_seed(seed, rank) + (step + 1) * _STEP_MIX) % 2**64


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run: ``rank`` of ``world_size``.

    The default, one process, makes every method a no-op that costs nothing.
    :meth:`current` describes the initialised default process group.
    """

    rank: int = 0
    world_size: int = 1
    group: Any = None  # a ProcessGroup; None: the default one

    @classmethod
    def current(cls) -> Distributed:
        """The default process group when one is initialised, else one process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run directory."""
        return self.rank == 0

    def rank_batch(self, batch_size: int) -> int:
        """Each rank's share of the global ``batch_size``.

        Raises:
            ConfigError: ``batch_size`` is not a multiple of the world size.
        """
        return rank_batch(batch_size, self.world_size)

    def barrier(self) -> None:
        if self.active:
            dist.barrier(self.group)

    def average(self, value: Tensor) -> Tensor:
        """``value`` averaged over the ranks (a new tensor; ``value`` itself on one process)."""
        if not self.active:
            return value
        total = value.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.group)
        return total / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` holds on any rank (so every rank takes the same branch)."""
        if not self.active:
            return flag
        value = torch.tensor([int(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.group)
        return bool(value.item())

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def broadcast_(self, tensors: list[Tensor]) -> None:
        """Overwrite ``tensors`` with rank 0's, in place."""
        if self.active:
            for tensor in tensors:
                dist.broadcast(tensor, src=0, group=self.group)


def rank_batch(batch_size: int, world_size: int) -> int:
    """``batch_size / world_size``.

    Raises:
        ConfigError: it does not divide.
    """
    if batch_size % world_size:
        raise ConfigError(
            f"expected a multiple of the {world_size} processes (the global batch is split "
            f"evenly over them), got {batch_size}",
            "train.batch_size",
        )
    return batch_size // world_size


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when unset).

    Raises:
        ConfigError: it is not a positive whole number.
    """
    raw = os.environ.get("WORLD_SIZE", "1")
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ConfigError(f"expected a positive whole number, got {raw!r}", "WORLD_SIZE")
    return int(raw)


def elastic_restart() -> tuple[str, int] | None:
    """``(run id, restart count)`` when torchrun's elastic agent restarted this process's
    workers (``TORCHELASTIC_RESTART_COUNT`` >= 1: a worker failed or a node left or joined, and
    every worker of the job started again, maybe on fewer or more processes); None on a first
    attempt or without a launcher.

    Raises:
        ConfigError: a malformed ``TORCHELASTIC_RESTART_COUNT``.
    """
    if "TORCHELASTIC_RESTART_COUNT" not in os.environ:
        return None
    count = _env_int("TORCHELASTIC_RESTART_COUNT")
    if count == 0:
        return None
    return os.environ.get("TORCHELASTIC_RUN_ID", ""), count


def _env_int(name: str, default: str | None = None) -> int:
    raw = os.environ.get(name, default)
    if raw is None or not raw.strip().isdigit():
        raise ConfigError(
            f"expected a whole number set by the launcher (torchrun), got {raw!r}", name
        )
    return int(raw)


def launch(device: str) -> tuple[Distributed, torch.device]:
    """Join the process group a launcher (``torchrun``) describes in the environment, if any.

    Without ``WORLD_SIZE`` (or with 1) this is one process on ``resolve_device(device)`` and nothing
    is initialised. Otherwise each rank joins the default group: ``gloo`` on the CPU, ``nccl``
    with one CUDA device per rank (``cuda:LOCAL_RANK``).

    Raises:
        ConfigError: malformed launcher variables, a device that cannot be shared out this way
            (``mps``, a CUDA index given explicitly, fewer CUDA devices than local ranks), or a
            process group that cannot be joined.
    """
    world = world_size_from_env()
    resolved = resolve_device(device)
    if world == 1:
        return Distributed(), resolved
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK", "0")
    if resolved.type == "cuda":
        if ":" in device:
            raise ConfigError(
                f"expected cuda or auto in a run of {world} processes (rank r uses "
                f"cuda:LOCAL_RANK), got {device!r}",
                "train.device",
            )
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local} has no CUDA device of its own ({torch.cuda.device_count()} "
                "visible)",
                "LOCAL_RANK",
            )
        resolved = torch.device("cuda", local)
        torch.cuda.set_device(resolved)
        backend = "nccl"
    elif resolved.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(
            f"expected cpu or cuda in a run of {world} processes, got {device!r}", "train.device"
        )
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, rank=rank, world_size=world)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(
                f"cannot join the process group of {world} processes as rank {rank}: {exc}",
                "WORLD_SIZE",
            ) from None
    return Distributed(dist.get_rank(), dist.get_world_size()), resolved


def shutdown() -> None:
    """Leave the default process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def data_parallel(model: nn.Module, device: torch.device, ctx: Distributed) -> nn.Module:
    """``model`` under ``DistributedDataParallel``: its backward averages gradients over the ranks.

    Buffers are not broadcast at each forward: the lifecycle's buffers change only between steps,
    the same way on every rank, and the tube rings are shared by :class:`Lockstep`. Gradients are
    views into DDP's communication buckets (``gradient_as_bucket_view``): the backward does not
    copy every gradient into its bucket and back, one launch per parameter and a second copy of
    the gradients' memory.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # Renamed in newer torch (which syncs buffers once at construction either way).
    known = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers"
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        process_group=ctx.group,
        gradient_as_bucket_view=True,
        **{no_sync: False},
    )


class Lockstep:
    """Keeps a SlimeModel's lifecycle identical on every rank (see the module docstring).

    ``lockstep(stage)`` is the :class:`~slime.train.lifecycle.Lifecycle`'s ``agree`` hook:
    ``"measure"`` averages the tube rings over the ranks (each fed by that rank's own forwards);
    ``"decide"`` broadcasts rank 0's per-slot fitness, descriptors, measurement counts and
    correlations.
    """

    def __init__(self, model: Any, ctx: Distributed) -> None:
        self.model, self.ctx = model, ctx

    def __call__(self, stage: str) -> None:
        if stage == "measure":
            self.share_tubes()
        elif stage == "decide":
            self.share_scores()
        else:
            raise ValueError(f"unknown lifecycle stage {stage!r}")  # a bug in the caller

    @torch.no_grad()
    def share_tubes(self) -> None:
        """Average every organism's tube ring over the ranks (NaN, "no output", stays NaN: a
        slot's entries are NaN on every rank alike). Idempotent once the rings agree."""

        def average(flat: Tensor) -> Tensor:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.ctx.group)
            return flat / self.ctx.world_size

        self._merge_rings(average)

    def _merge_rings(self, merge: Callable[[Tensor], Tensor]) -> None:
        """Replace every organism's tube ring by ``merge`` of all rings flattened into one tensor
        (one collective for the whole model)."""
        if not self.ctx.active:
            return
        rings = [o.tube_trace for o in self.model.organisms if o.tube_trace.numel()]
        if not rings:
            return
        merged = merge(torch.cat([r.reshape(-1) for r in rings]))
        offset = 0
        for ring in rings:
            ring.copy_(merged[offset : offset + ring.numel()].view_as(ring))
            offset += ring.numel()

    @torch.no_grad()
    def share_scores(self) -> None:
        """Rank 0's fitness, descriptors, measurement counts and correlations on every rank."""
        tensors = []
        for organism in self.model.organisms:
            tensors += [
                organism.fitness,
                organism.descriptors,
                organism.n_measurements,
                organism.correlation,
            ]
        self.ctx.broadcast_(tensors)
