"""Head-level plasticity interventions on the baseline GPT, as small functions over weight slices.

The baseline (:class:`slime.train.baseline.GPT`) keeps a layer's heads in two matrices:
``attn.c_attn.weight`` ``(3 H d, D)`` holds the query rows of every head, then the key rows, then
the value rows, head ``h`` owning rows ``h d .. (h + 1) d`` of each third; ``attn.c_proj.weight``
``(D, H d)`` maps the concatenated head outputs back, head ``h`` owning columns ``h d .. (h + 1) d``.
(Biases, with ``bias: true``, follow the same rows; the output bias is shared and left alone.)

Resetting a head (:func:`reset_heads`) re-initialises its query, key and value rows from
``N(0, init_std)`` (the GPT's own initialisation), zeroes its output-projection columns, so the
reset leaves the network's function unchanged at that moment (as continual backprop and slime's
quiet births do), and zeroes the AdamW moments of exactly those slices. Every other entry of every
tensor is untouched.

The rules that choose heads:

- :class:`ContinualBackprop` (Dohare et al. 2024, at the granularity of heads): a running utility
  per head, the mean norm of its contribution to the residual stream; heads older than
  ``maturity`` steps are eligible, and a ``replacement_rate`` fraction of the eligible heads per
  step (accumulated, so it may be less than one head per event) is reset, lowest utility first.
- :func:`redo_dormant` (Sokar et al. 2023): a head whose output activity, normalised by the mean of
  its layer's heads, is at most ``tau`` is dormant and is reset.
- :func:`random_heads`: ``n`` heads of a layer chosen uniformly (slime's turnover without fitness or
  archive).
- :func:`shrink_perturb` (Ash & Adams 2020): every weight matrix becomes ``shrink * w + noise * w0``
  with ``w0`` a fresh draw of the model's initialisation (LayerNorm gains and biases untouched).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from slime.proto import ConfigError
from torch import Tensor, nn

__all__ = [
    "ContinualBackprop",
    "HeadStats",
    "head_outputs",
    "head_stats",
    "head_rows",
    "random_heads",
    "redo_dormant",
    "reset_heads",
    "shrink_perturb",
]

MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def head_rows(n_head: int, head_dim: int, head: int) -> Tensor:
    """Rows of ``c_attn.weight`` that belong to ``head``: its query, key and value rows."""
    if not 0 <= head < n_head:
        raise ConfigError(f"expected a head in [0, {n_head}), got {head}", "head")
    inner = n_head * head_dim
    base = torch.arange(head * head_dim, (head + 1) * head_dim)
    return torch.cat([base, base + inner, base + 2 * inner])


def _zero_moments(
    optimizer: torch.optim.Optimizer | None, param: Tensor, dim: int, index: Tensor
) -> None:
    if optimizer is None:
        return
    state = optimizer.state.get(param)
    if not state:
        return
    for key in MOMENTS:
        if key in state:
            state[key].index_fill_(dim, index.to(state[key].device), 0.0)


@torch.no_grad()
def reset_heads(
    model: nn.Module,
    layer: int,
    heads: Sequence[int],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    init_std: float = 0.02,
) -> list[int]:
    """Re-initialise ``heads`` of ``layer`` in the baseline GPT ``model`` (see the module docstring).

    ``optimizer`` is the torch optimizer whose AdamW moments of those slices are zeroed (its
    ``step`` counts, shared by the whole tensor, stay). Returns the heads reset, sorted.
    """
    heads = sorted(set(int(h) for h in heads))
    if not heads:
        return []
    attn = model.blocks[layer].attn
    n_head, d = attn.n_head, attn.head_dim
    rows = torch.cat([head_rows(n_head, d, h) for h in heads]).to(attn.c_attn.weight.device)
    cols = torch.cat([torch.arange(h * d, (h + 1) * d) for h in heads]).to(rows.device)
    w = attn.c_attn.weight
    where = generator.device if generator is not None else w.device
    fresh = torch.randn((len(rows), w.shape[1]), generator=generator, device=where) * init_std
    w.index_copy_(0, rows, fresh.to(w.device, w.dtype))
    _zero_moments(optimizer, w, 0, rows)
    if attn.c_attn.bias is not None:
        attn.c_attn.bias.index_fill_(0, rows, 0.0)
        _zero_moments(optimizer, attn.c_attn.bias, 0, rows)
    attn.c_proj.weight.index_fill_(1, cols, 0.0)
    _zero_moments(optimizer, attn.c_proj.weight, 1, cols)
    return heads


# -- per-head measurements -------------------------------------------------------------------------


@torch.no_grad()
def head_outputs(model: nn.Module, idx: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Per layer ``(y, w)``: each live head's attention output ``y`` ``(n, N, d)`` over the
    ``N = B T`` positions of ``idx`` and its output-projection slice ``w`` ``(n, D, d)``, in eval
    mode. Works for the baseline GPT (all heads) and a SlimeModel (every slot, dead ones as zeros:
    with ``pod_capacity == n_pods`` a slot is a head, and an empty one contributes nothing)."""
    was_training = model.training
    model.eval()
    try:
        B, T = idx.shape
        x = model.drop(model.wte(idx) + model.wpe(torch.arange(T, device=idx.device)))
        out = []
        for block in model.blocks:
            attn = block.attn
            if hasattr(attn, "pod_capacity"):  # a slime Organism (slot table)
                latent = block.attention_input(x)
                q, k, v = attn.project(latent)  # (B, P, T, d)
                y = attn.kernel.attention(q, k, v, causal=True, alive=attn.alive)
                # every slot: a dead slot is a head with no output (dormant), as a reset GPT head
                # with a zero output projection is
                n = attn.pod_capacity
                y = torch.where(attn.alive[None, :, None, None], y, 0.0)
                y = y.permute(1, 0, 2, 3).reshape(n, B * T, -1)
                w = attn.o_weight.permute(1, 0, 2)  # (P, D, d)
            else:
                h, d = attn.n_head, attn.head_dim
                q, k, v = attn.c_attn(block.ln_1(x)).split(h * d, dim=2)
                q, k, v = (t.view(B, T, h, d).transpose(1, 2) for t in (q, k, v))
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, d)
                y = y.permute(1, 0, 2, 3).reshape(h, B * T, d)
                w = attn.c_proj.weight.view(-1, h, d).permute(1, 0, 2)  # (H, D, d)
            out.append((y.float(), w.float()))
            x = block(x)
    finally:
        model.train(was_training)
    return out


@dataclass(frozen=True)
class HeadStats:
    """Per-layer lists: mean output norm ``activity`` (of ``y``) and mean contribution norm
    ``contribution`` (of ``w y``, what the head adds to the residual stream) per head, and the
    flattened contributions ``(n, N D)`` for similarity."""

    activity: list[Tensor] = field(default_factory=list)
    contribution: list[Tensor] = field(default_factory=list)
    vectors: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)  # (N, n d): concatenated head outputs


@torch.no_grad()
def head_stats(model: nn.Module, idx: Tensor) -> HeadStats:
    """Per-head activity and contribution of ``model`` on ``idx`` (see :class:`HeadStats`)."""
    stats = HeadStats()
    for y, w in head_outputs(model, idx):
        contrib = torch.einsum("nsd,ned->nse", y, w)  # (n, N, D)
        stats.activity.append(y.norm(dim=-1).mean(dim=1))
        stats.contribution.append(contrib.norm(dim=-1).mean(dim=1))
        stats.vectors.append(contrib.reshape(contrib.shape[0], -1))
        stats.outputs.append(y.permute(1, 0, 2).reshape(y.shape[1], -1))
    return stats


# -- the rules -------------------------------------------------------------------------------------


def redo_dormant(activity: Tensor, tau: float) -> list[int]:
    """Heads whose activity over the layer's mean activity is at most ``tau`` (ReDo's score).

    A layer whose heads are all silent (mean 0) has every head dormant.
    """
    if tau < 0:
        raise ConfigError(f"expected tau >= 0, got {tau}", "tau")
    mean = float(activity.mean())
    if mean <= 0.0:
        return list(range(len(activity)))
    score = activity / mean
    return [int(h) for h in torch.nonzero(score <= tau).flatten()]


def random_heads(n_head: int, n: int, generator: torch.Generator) -> list[int]:
    """``n`` distinct heads of ``n_head``, uniformly at random."""
    if not 0 <= n <= n_head:
        raise ConfigError(f"expected 0 <= n <= {n_head}, got {n}", "n")
    return sorted(torch.randperm(n_head, generator=generator)[:n].tolist())


class ContinualBackprop:
    """Continual backprop's bookkeeping for heads: utility, age, and a fractional replacement count.

    Args:
        n_layer, n_head: the model's shape.
        replacement_rate: fraction of eligible heads replaced per training step (Dohare et al.
            use ``1e-4 .. 1e-3`` for units; heads are few, so the count accumulates across events).
        maturity: steps a head must have lived (since the start or its last reset) to be eligible.
        decay: the utility's running-average decay per measurement.
    """

    def __init__(
        self,
        n_layer: int,
        n_head: int,
        *,
        replacement_rate: float,
        maturity: int,
        decay: float = 0.9,
    ) -> None:
        if not 0.0 <= replacement_rate <= 1.0:
            raise ConfigError(
                f"expected a rate in [0, 1], got {replacement_rate}", "replacement_rate"
            )
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"expected decay in [0, 1), got {decay}", "decay")
        self.rate, self.maturity, self.decay = replacement_rate, maturity, decay
        self.utility = torch.zeros(n_layer, n_head)
        self.age = torch.zeros(n_layer, n_head, dtype=torch.long)
        self.owed = [0.0] * n_layer  # heads due for replacement but not yet replaced
        self.fresh = torch.ones(n_layer, n_head, dtype=torch.bool)

    def observe(self, contributions: Sequence[Tensor], steps: int) -> None:
        """Fold one measurement of each layer's per-head contribution norms in, after ``steps``
        training steps since the previous one (heads age by ``steps``)."""
        for layer, values in enumerate(contributions):
            values = values.detach().float().cpu()
            blended = self.decay * self.utility[layer] + (1 - self.decay) * values
            self.utility[layer] = torch.where(self.fresh[layer], values, blended)
        self.fresh.zero_()
        self.age += steps

    def select(self, steps: int) -> dict[int, list[int]]:
        """``{layer: heads}`` to replace now, after ``steps`` steps since the previous call:
        ``rate * eligible * steps`` more heads are owed per layer, and the whole number of them
        is taken from the mature heads of lowest utility."""
        out = {}
        for layer in range(self.utility.shape[0]):
            eligible = [
                h for h in range(self.utility.shape[1]) if self.age[layer, h] >= self.maturity
            ]
            self.owed[layer] += self.rate * len(eligible) * steps
            n = min(int(math.floor(self.owed[layer] + 1e-9)), len(eligible))
            if n <= 0:
                continue
            self.owed[layer] -= n
            ranked = sorted(eligible, key=lambda h: (float(self.utility[layer, h]), h))
            out[layer] = sorted(ranked[:n])
        return out

    def replaced(self, layer: int, heads: Sequence[int]) -> None:
        """Restart the age and utility of heads just reset."""
        for h in heads:
            self.age[layer, h] = 0
            self.utility[layer, h] = 0.0
            self.fresh[layer, h] = True


@torch.no_grad()
def shrink_perturb(model: nn.Module, fresh: nn.Module, *, shrink: float, noise: float) -> list[str]:
    """``w <- shrink * w + noise * w0`` for every weight matrix ``w`` of ``model`` (2-D and up),
    ``w0`` the same parameter of ``fresh`` (a newly initialised model of the same config).
    LayerNorm gains and biases are left alone. Returns the names of the parameters changed."""
    if not 0.0 <= shrink <= 1.0 or noise < 0.0:
        raise ConfigError(
            f"expected shrink in [0, 1] and noise >= 0, got {shrink}, {noise}", "shrink"
        )
    theirs = dict(fresh.named_parameters())
    changed = []
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        p.mul_(shrink).add_(theirs[name].to(p.device, p.dtype), alpha=noise)
        changed.append(name)
    return changed
