"""AdamW kept in step with a living pool, and the learning-rate schedule.

Groups: non-pod weights (2-D and up) decay, non-pod vectors (norms, biases) do not; each pod born
later gets its own group(s) with fresh state. A dying pod's parameters leave their group and their
state is dropped; emptied groups are removed. ``SlimeModel.add_pool_listener`` drives both.

Because groups change over a run, a checkpoint stores each group's parameter *names*; loading builds
the same groups again by name before ``load_state_dict``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from slime.proto import CheckpointError
from slime.train.config import TrainConfig
from torch import nn

__all__ = ["PoolOptimizer", "learning_rate"]


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


def _split(params: list[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in params if p.dim() >= 2]
    flat = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": flat, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


class PoolOptimizer:
    """AdamW over ``model``'s parameters that follows births and deaths of a SlimeModel's pods."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, *, fused: bool | None = None) -> None:
        self.model, self.cfg = model, cfg
        self.fused = fused
        self.optimizer = torch.optim.AdamW(
            _split(list(model.parameters()), cfg.weight_decay),
            lr=cfg.lr,
            betas=cfg.betas,
            fused=fused,
        )
        self.layout_version = 0  # bumped on every pool change; callers cache per-version layouts
        if hasattr(model, "add_pool_listener"):
            model.add_pool_listener(self.on_pool_change)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def on_pool_change(self, added: list[nn.Parameter], removed: list[nn.Parameter]) -> None:
        """Pool listener: add newborn parameters with fresh state, drop the dead ones' state."""
        if removed:
            gone = {id(p) for p in removed}
            for group in self.optimizer.param_groups:
                group["params"] = [p for p in group["params"] if id(p) not in gone]
            self.optimizer.param_groups[:] = [g for g in self.optimizer.param_groups if g["params"]]
            for p in removed:
                self.optimizer.state.pop(p, None)
        lr = self.optimizer.param_groups[0]["lr"] if self.optimizer.param_groups else self.cfg.lr
        for group in _split(added, self.cfg.weight_decay):
            self.optimizer.add_param_group({**group, "lr": lr})
        self.layout_version += 1

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def params(self) -> list[nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def step(self) -> None:
        self.optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        """The AdamW state plus each group's parameter names (to rebuild the groups on load)."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return {
            "groups": [[names[id(p)] for p in g["params"]] for g in self.optimizer.param_groups],
            "adamw": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the groups by name (the model's pools must already match), then load AdamW.

        Raises:
            CheckpointError: a named parameter does not exist in the model.
        """
        params = dict(self.model.named_parameters())
        missing = [n for names in state["groups"] for n in names if n not in params]
        if missing:
            raise CheckpointError(f"optimizer names parameters the model lacks: {missing[:5]}")
        self.optimizer = torch.optim.AdamW(
            [{"params": [params[n] for n in names]} for names in state["groups"]],
            lr=self.cfg.lr,
            betas=self.cfg.betas,
            fused=self.fused,
        )
        self.optimizer.load_state_dict(state["adamw"])
        self.layout_version += 1
