"""AdamW over a slot-table model, and the learning-rate schedule.

A SlimeModel's pods live in slot-stacked parameters whose storage never changes, so the parameter
groups are fixed for the model's life: weights (2-D and up) decay, vectors (norms, biases) do not.
A birth or death only changes some slots' contents; the slot listener zeroes those slots' AdamW
moments (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) along each parameter's slot dimension, on
the device, and leaves every other slot's moments untouched.

The per-parameter ``step`` is shared by all slots of a parameter and is not reset. With Adam's bias
correction a reset slot's first update is then ``lr * (1 - b1) * g / sqrt((1 - b2) * g^2)``, i.e. of
magnitude ``~ lr * (1 - b1) / sqrt(1 - b2)`` per coordinate (``lr`` for the default betas (0.9, 0.99)),
where a fresh Adam would take ``lr``: the usual magnitude, not a blow-up or a stall.

The skip of a non-finite step is decided on the device: :meth:`PoolOptimizer.step` takes a 0-d bool
``skip`` and passes it to the fused AdamW kernel as ``found_inf`` (what ``GradScaler`` uses), which
then changes neither parameters, moments nor step counts, with no host synchronisation.

Checkpoints store each group's parameter *names*. An optimizer state written with the per-pod layout
of earlier versions (``blocks.0.attn.pods.3.q_weight``) is converted on load: each pod's moments are
gathered into its slot of the stacked tensors, and a stacked parameter's step is the largest of its
pods'.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from slime.proto import CheckpointError, ConfigError
from slime.train.config import TrainConfig
from torch import Tensor, nn

__all__ = ["PoolOptimizer", "learning_rate", "pick_lr"]

MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
_PER_POD = re.compile(r"^(?P<organism>.+)\.pods\.(?P<slot>\d+)\.(?P<name>[qkvo]_(?:weight|bias))$")


def learning_rate(step: int, cfg: TrainConfig, progress: float | None = None) -> float:
    """Linear warmup over ``warmup_iters``, then cosine decay to ``min_lr`` (nanoGPT).

    ``step`` counts from 1. The decay runs over the steps after warmup up to ``steps``, or, when
    ``progress`` in [0, 1] is given, follows it instead (e.g. the elapsed fraction of a time
    budget). Without ``cosine``, the rate stays at ``lr`` after warmup.
    """
    if step <= cfg.warmup_iters:
        return cfg.lr * step / (cfg.warmup_iters + 1)
    if not cfg.cosine:
        return cfg.lr
    if progress is None:
        if cfg.steps <= cfg.warmup_iters:
            return cfg.lr
        progress = (step - cfg.warmup_iters) / (cfg.steps - cfg.warmup_iters)
    ratio = min(1.0, max(0.0, progress))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


def pick_lr(lrs: Sequence[float], score: Callable[[float], float]) -> dict[str, Any]:
    """Score every learning rate of ``lrs`` once; returns the lowest finite score's ``lr`` (the
    first listed on ties) with every ``scores`` entry ``{"lr", "loss"}``.

    Raises:
        ConfigError: ``lrs`` is empty or holds a non-positive value, or no score is finite.
    """
    if not lrs:
        raise ConfigError("expected at least one learning rate to sweep, got none", "lr_sweep")
    bad = [lr for lr in lrs if not (isinstance(lr, int | float) and lr > 0)]
    if bad:
        raise ConfigError(f"expected positive learning rates, got {bad}", "lr_sweep")
    scores = [{"lr": float(lr), "loss": float(score(lr))} for lr in lrs]
    finite = [s for s in scores if math.isfinite(s["loss"])]
    if not finite:
        raise ConfigError(f"every learning rate of the sweep diverged: {scores}", "lr_sweep")
    return {"lr": min(finite, key=lambda s: s["loss"])["lr"], "scores": scores}


def _split(params: list[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in params if p.dim() >= 2]
    flat = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": flat, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


class PoolOptimizer:
    """AdamW over ``model``'s parameters; resets the moments of slots that are born or die.

    Args:
        fused: use the fused AdamW kernel (default; CPU and CUDA). Only the fused kernel skips a
            non-finite step on the device; without it :meth:`step` reads ``skip`` on the host.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, *, fused: bool = True) -> None:
        self.model, self.cfg = model, cfg
        self.fused = fused
        self.optimizer = torch.optim.AdamW(
            _split(list(model.parameters()), cfg.weight_decay),
            lr=cfg.lr,
            betas=cfg.betas,
            fused=fused or None,
        )
        if hasattr(model, "add_slot_listener"):
            model.add_slot_listener(self.on_slots_changed)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @torch.no_grad()
    def on_slots_changed(self, organism: Any, slots: list[int]) -> None:
        """Slot listener: zero the AdamW moments of ``slots`` in each of ``organism``'s slot-stacked
        parameters (slow timescale; ``step`` stays, see the module docstring)."""
        if not slots:
            return
        for param, dim in organism.slot_parameters():
            state = self.optimizer.state.get(param)
            if not state:
                continue  # no step taken yet: the moments start at zero anyway
            moments = [state[key] for key in MOMENTS if key in state]
            if len(slots) == 1:  # a birth or a death: a fill of a view, no index to copy over
                for moment in moments:
                    moment.select(dim, slots[0]).zero_()
                continue
            index = torch.tensor(slots, dtype=torch.long, device=param.device)
            for moment in moments:
                moment.index_fill_(dim, index, 0.0)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def params(self) -> list[nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def step(self, skip: Tensor | None = None) -> None:
        """One AdamW step; where the 0-d bool ``skip`` is True on the device, nothing changes."""
        if skip is None:
            self.optimizer.step()
            return
        if not self.fused:  # the unfused kernels take no found_inf: decide on the host
            if not bool(skip):
                self.optimizer.step()
            return
        self.optimizer.found_inf = skip.to(torch.float32)  # read by the fused kernel
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        """The AdamW state plus each group's parameter names."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return {
            "groups": [[names[id(p)] for p in g["params"]] for g in self.optimizer.param_groups],
            "adamw": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` (or convert one of the per-pod layout) into this optimizer.

        Raises:
            CheckpointError: the state names parameters this model lacks or groups them
                differently, or a per-pod state does not fit the model.
        """
        groups, adamw = state["groups"], state["adamw"]
        if any(_PER_POD.match(n) for names in groups for n in names):
            groups, adamw = self._convert_per_pod(groups, adamw)
        mine = self.state_dict()["groups"]
        if groups != mine:
            params = dict(self.model.named_parameters())
            missing = [n for names in groups for n in names if n not in params]
            if missing:
                raise CheckpointError(f"optimizer names parameters the model lacks: {missing[:5]}")
            raise CheckpointError(
                f"optimizer groups {[len(g) for g in groups]} do not match this model's "
                f"{[len(g) for g in mine]} (same parameters, grouped differently)"
            )
        try:
            self.optimizer.load_state_dict(adamw)
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"optimizer state does not fit the model: {e}") from e
        for group in self.optimizer.param_groups:  # written by an unfused run: keep ours
            group["fused"] = self.fused or None
            group["foreach"] = None

    def _convert_per_pod(
        self, groups: list[list[str]], adamw: dict[str, Any]
    ) -> tuple[list[list[str]], dict[str, Any]]:
        """A per-pod optimizer state (one tensor per pod and projection, pods born later in
        groups of their own) as the stacked layout of this model's fixed groups."""
        params = dict(self.model.named_parameters())
        slot_dims = {
            id(p): dim
            for o in getattr(self.model, "organisms", [])
            for p, dim in o.slot_parameters()
        }
        old_state = adamw["state"]
        by_name: dict[str, dict[str, Any]] = {}
        index = 0
        for names in groups:
            for name in names:
                if index in old_state:
                    by_name[name] = old_state[index]
                index += 1
        converted: dict[str, dict[str, Any]] = {}
        per_slot: dict[str, list[tuple[tuple[int, ...], dict[str, Any]]]] = {}
        for name, entry in by_name.items():
            match = _PER_POD.match(name)
            if match is None:
                if name not in params:
                    raise CheckpointError(f"optimizer names a parameter the model lacks: {name!r}")
                converted[name] = entry
                continue
            prefix, slot, pname = match["organism"], int(match["slot"]), match["name"]
            projection, kind = pname.split("_")
            stacked = f"{prefix}.qkv_{kind}" if projection in "qkv" else f"{prefix}.o_weight"
            if stacked not in params or id(params[stacked]) not in slot_dims:
                raise CheckpointError(
                    f"optimizer state for {name!r} has no stacked parameter {stacked!r} here"
                )
            if slot >= params[stacked].shape[slot_dims[id(params[stacked])]]:
                raise CheckpointError(
                    f"optimizer state for {name!r}: slot {slot} is beyond this model's capacity"
                )
            # where this pod's tensor sits in the stacked one: (projection, slot) or (:, slot)
            at = ("qkv".index(projection), slot) if projection in "qkv" else (slot,)
            per_slot.setdefault(stacked, []).append((at, entry))
        for stacked, entries in per_slot.items():
            param = params[stacked]
            entry: dict[str, Any] = {
                "step": max(torch.as_tensor(e["step"]).float() for _, e in entries).clone()
            }
            for key in MOMENTS:
                if not all(key in e for _, e in entries):
                    continue
                full = torch.zeros(param.shape, dtype=torch.float32)
                for at, e in entries:
                    value = torch.as_tensor(e[key]).to("cpu", torch.float32)
                    target = full[:, at[0]] if len(at) == 1 else full[at[0], at[1]]
                    if target.shape != value.shape:
                        raise CheckpointError(
                            f"optimizer state of a pod of {stacked!r} has shape "
                            f"{tuple(value.shape)}, expected {tuple(target.shape)}"
                        )
                    target.copy_(value)
                entry[key] = full
            converted[stacked] = entry
        mine = self.state_dict()
        flat = [n for names in mine["groups"] for n in names]
        saved_groups = adamw["param_groups"]
        hyper = {k: v for k, v in saved_groups[0].items() if k != "params"} if saved_groups else {}
        param_groups = []
        for group, names in zip(mine["adamw"]["param_groups"], mine["groups"]):
            ids = [flat.index(n) for n in names]
            param_groups.append({**group, "lr": hyper.get("lr", group["lr"]), "params": ids})
        state = {flat.index(n): entry for n, entry in converted.items()}
        return mine["groups"], {"state": state, "param_groups": param_groups}
