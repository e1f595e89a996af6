"""Head-sharded training (``train.parallel: heads``): each pod computed on the rank it is placed on.

Launch::

    torchrun --nproc-per-node N --no-python slime train --config tiny train.parallel=heads

Every rank holds the whole model and reads the whole global batch (all ranks draw rank 0's data
stream). Each organism's slots are partitioned over the ranks by :func:`slot_ranks`:

- ``behaviour`` (default): a live pod goes to ``placement(cell, N)``, the blake2b hash of its
  archive cell (the quantised smoothed descriptors, :meth:`Organism.placements`), so the same
  behaviour always lands on the same rank, in every process and every run;
- ``random``: a seeded hash of the pod's identity ``(seed, layer, slot, birth step)``; a pod keeps
  its rank for its life, whatever it does.

Empty slots go to ``slot % N``; they attend to nothing and cost nothing but their place in the
table. Since every slot belongs to exactly one rank, the partition is always complete: a stale
placement (between a birth and the next re-placement) changes which rank computes a pod, never the
result. Placement is recomputed after every lifecycle event and after a checkpoint loads, from
tensors that are identical on every rank (the lockstep broadcasts rank 0's descriptors), so every
rank computes the same partition without exchanging it.

The forward of one organism on rank ``r`` (Megatron-style head parallelism, the design that keeps
the result equal to one process's):

1. ``x`` enters through an identity whose backward all-reduces the input gradient (each rank's
   slots contribute their part of ``dL/dx``);
2. rank ``r`` projects, attends and output-projects only its own slots (an ``index_select`` of the
   slot table: the work is proportional to the slots it owns);
3. the partial outputs ``(B, T, D)`` are summed over the ranks with one ``all_reduce`` (its
   backward is the identity: the gradient of the sum reaches every rank whole), and the output bias
   is added once.

After the backward, each slot parameter's gradient is nonzero only on the slot's owner; one
``all_reduce`` per parameter sums them, so clipping, the per-slot fitness statistics and the
optimizer see the full gradients on every rank, and every rank's replica stays identical (every
other parameter's gradient already is: it comes from the reduced activations). So the model the
ranks train is the one-process model up to the summation order of the slot partials (~1e-7
relative per step), and the lifecycle, checkpoints and resume work as in data parallel.

Bytes per step, ``L`` organisms: ``2 L B T D`` activation floats (forward sum, backward sum) plus
the slot parameters' gradients (``4 P d D`` floats per organism without biases). Both are the same
for any placement; what placement changes is the balance (the step waits for the rank with the
most live pods) and how often a pod changes rank (see ``slime.train.heads_bench``).

The tube ring is fed by the owner of each slot alone (the other ranks write NaN for it):
:class:`HeadLockstep` merges the rings by taking each entry from the rank that wrote it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.distributed as dist
from slime.core import placement
from slime.proto import ConfigError
from slime.train.distributed import Distributed, Lockstep
from torch import Tensor

__all__ = ["PLACEMENTS", "HeadLockstep", "HeadSharding", "slot_ranks"]

PLACEMENTS = ("behaviour", "random")


def slot_ranks(organism: Any, world_size: int, mode: str, *, seed: int, layer: int) -> list[int]:
    """The rank of every slot of ``organism`` (a list of ``pod_capacity`` ints), a pure function of
    its tensors: ``behaviour`` hashes each live pod's archive cell, ``random`` hashes
    ``(seed, layer, slot, birth step)``; empty slots go to ``slot % world_size``.

    Raises:
        ConfigError: an unknown ``mode`` or ``world_size < 1``.
    """
    if mode not in PLACEMENTS:
        raise ConfigError(f"expected one of {list(PLACEMENTS)}, got {mode!r}", "train.placement")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(f"expected an int >= 1, got {world_size!r}", "world_size")
    ranks = [slot % world_size for slot in range(organism.pod_capacity)]
    if mode == "behaviour":
        for slot, rank in organism.placements(world_size).items():
            ranks[slot] = rank
    else:
        born = organism.born_step.tolist()
        for slot in organism.live_slots():
            ranks[slot] = placement((seed, layer, slot, born[slot]), world_size)
    return ranks


class _SumOverRanks(torch.autograd.Function):
    """Forward: the sum of ``x`` over the ranks. Backward: the identity (every rank's downstream
    is the same, so each receives the whole gradient of the sum)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sharding: HeadSharding) -> Tensor:
        total = x.contiguous().clone()
        sharding.all_reduce(total, "activations")
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class _SumGradOverRanks(torch.autograd.Function):
    """Forward: the identity. Backward: the input gradient summed over the ranks (each rank's
    slots contribute their share of it)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sharding: HeadSharding) -> Tensor:
        ctx.sharding = sharding
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        total = grad.contiguous().clone()
        ctx.sharding.all_reduce(total, "activation_grads")
        return total, None


class _ShardedForward:
    """Replaces one organism's ``forward`` (an instance attribute, so the state dict and the class
    are untouched): attends with the slots this rank owns and sums the partials over the ranks."""

    def __init__(self, sharding: HeadSharding, organism: Any) -> None:
        self.sharding, self.organism = sharding, organism
        self.owned = torch.zeros(0, dtype=torch.long)

    def __call__(
        self,
        stimulus: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        head_mask: Tensor | None = None,
    ) -> Tensor:
        org = self.organism
        width = stimulus.shape[-1]
        if width != org.n_embd:
            raise ConfigError(
                f"expected (B, T, {org.n_embd}), got shape {tuple(stimulus.shape)}", "stimulus"
            )
        idx = self.owned
        x = _SumGradOverRanks.apply(stimulus, self.sharding)
        if idx.numel() == 0:  # still through x, so this rank joins the backward's collective
            partial = x * 0.0
        else:
            partial, heads = org.attend_slots(
                x,
                idx,
                causal=causal,
                key_padding_mask=key_padding_mask,
                head_mask=head_mask,
                alive=org.attending.index_select(0, idx),
            )
            if org.feeding_tubes and org.training and torch.is_grad_enabled():
                self._feed_tubes(heads.detach())
        out = _SumOverRanks.apply(partial, self.sharding)
        if org.out_bias is not None:
            out = out + org.out_bias
        return org.dropout(out)

    @torch.no_grad()
    def _feed_tubes(self, heads: Tensor) -> None:
        """As :meth:`Organism._feed_tubes`, for the owned slots; NaN for the others (merged over
        the ranks by :class:`HeadLockstep`)."""
        org = self.organism
        capacity = org.tube_trace.shape[0]
        if capacity == 0:
            return
        l1 = heads.abs().sum(-1, dtype=torch.float32)
        l2 = torch.linalg.vector_norm(heads, dim=-1, dtype=torch.float32)
        ratio = torch.full((org.pod_capacity,), float("nan"), device=heads.device)
        ratio.index_copy_(0, self.owned, torch.nanmean(l1 / l2, dim=(0, 2)))
        org.tube_trace.index_copy_(0, org.tube_pos.view(1), ratio.view(1, -1).to(org.tube_trace))
        org.tube_pos.add_(1).remainder_(capacity)


class HeadSharding:
    """Shards a SlimeModel's pods over the ranks of ``ctx`` (see the module docstring).

    Args:
        model: a SlimeModel (anything with ``organisms``); every rank holds an identical replica.
        ctx: this process's rank; one process is allowed (it owns every slot).
        mode: ``behaviour`` or ``random`` (:func:`slot_ranks`).
        seed: the seed of ``random`` placement.

    ``bytes`` counts the payload of every collective this class issues, by kind (``activations``,
    ``activation_grads``, ``gradients``, ``tubes``); ``moves`` counts live pods that changed rank
    at a re-placement (births and deaths are not moves).

    Raises:
        ConfigError: a model without organisms, or an unknown ``mode``.
    """

    def __init__(self, model: Any, ctx: Distributed, mode: str = "behaviour", seed: int = 0):
        if not getattr(model, "organisms", None):
            raise ConfigError(
                "expected a slime model (parallel: heads shards its pods), got one without pods",
                "train.parallel",
            )
        if mode not in PLACEMENTS:
            raise ConfigError(
                f"expected one of {list(PLACEMENTS)}, got {mode!r}", "train.placement"
            )
        self.model, self.ctx, self.mode, self.seed = model, ctx, mode, seed
        self.bytes: dict[str, int] = defaultdict(int)
        self.moves = 0
        self.ranks: list[list[int]] = []  # per organism, the rank of every slot
        self._live: list[set[int]] = []
        self._forwards = []
        for organism in model.organisms:
            forward = _ShardedForward(self, organism)
            organism.forward = forward  # an instance attribute: nn.Module.__call__ finds it first
            self._forwards.append(forward)
        self.place()

    def all_reduce(self, tensor: Tensor, kind: str, op: Any = dist.ReduceOp.SUM) -> None:
        """Reduce ``tensor`` over the ranks in place (a sum by default), counting its payload
        under ``kind``."""
        if self.ctx.active:
            dist.all_reduce(tensor, op=op, group=self.ctx.group)
            self.bytes[kind] += tensor.numel() * tensor.element_size()

    @torch.no_grad()
    def place(self) -> list[list[int]]:
        """Recompute every organism's partition (after births, deaths or measurements); returns
        the rank of every slot, per organism. Host reads: slow timescale."""
        world = self.ctx.world_size
        ranks = [
            slot_ranks(o, world, self.mode, seed=self.seed, layer=i)
            for i, o in enumerate(self.model.organisms)
        ]
        lives = [set(o.live_slots()) for o in self.model.organisms]
        for i, (now, live) in enumerate(zip(ranks, lives)):
            if i < len(self.ranks):
                stayed = live & self._live[i]
                self.moves += sum(now[s] != self.ranks[i][s] for s in stayed)
        for forward, now in zip(self._forwards, ranks):
            owned = [s for s, r in enumerate(now) if r == self.ctx.rank]
            device = forward.organism.alive.device
            forward.owned = torch.tensor(owned, dtype=torch.long, device=device)
        self.ranks, self._live = ranks, lives
        return ranks

    def owned(self) -> list[list[int]]:
        """The slots this rank computes, per organism."""
        return [f.owned.tolist() for f in self._forwards]

    def live_per_rank(self) -> list[list[int]]:
        """Per organism, how many live pods each rank computes (the load balance)."""
        world = self.ctx.world_size
        return [
            [sum(1 for s in live if ranks[s] == r) for r in range(world)]
            for ranks, live in zip(self.ranks, self._live)
        ]

    @torch.no_grad()
    def sync_gradients(self) -> None:
        """Sum each slot parameter's gradient over the ranks (each slot's is nonzero only on its
        owner), so every rank holds the one-process gradients. One flat all_reduce, the same size
        on every rank (a rank that computed no slot contributes zeros)."""
        if not self.ctx.active:
            return
        grads = []
        for organism in self.model.organisms:
            for param, _ in organism.slot_parameters():
                if param.grad is None:  # a rank that owns no slot: its share is zero
                    param.grad = torch.zeros_like(param)
                grads.append(param.grad)
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.all_reduce(flat, "gradients")
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def remove(self) -> None:
        """Give the organisms their own forward back."""
        for forward in self._forwards:
            vars(forward.organism).pop("forward", None)
        self._forwards = []


class HeadLockstep(Lockstep):
    """:class:`~slime.train.distributed.Lockstep` for head sharding: each tube entry is written by
    the slot's owner alone (NaN elsewhere), so the rings are merged entry by entry from the rank
    that wrote it, instead of averaged."""

    def __init__(self, model: Any, ctx: Distributed, sharding: HeadSharding) -> None:
        super().__init__(model, ctx)
        self.sharding = sharding

    @torch.no_grad()
    def share_tubes(self) -> None:
        def by_writer(flat: Tensor) -> Tensor:
            # an entry nobody wrote is -inf everywhere; a written one (a finite l1/l2 ratio) is
            # its writer's value, or the same value on every rank once merged: the max is it
            flat = flat.nan_to_num(nan=-torch.inf)
            self.sharding.all_reduce(flat, "tubes", op=dist.ReduceOp.MAX)
            return torch.where(flat.isneginf(), torch.nan, flat)

        self._merge_rings(by_writer)
