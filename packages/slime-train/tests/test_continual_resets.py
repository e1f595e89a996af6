"""The reset rules reset exactly what they claim, and every arm starts with the same parameters."""

from __future__ import annotations

import pytest
import torch
from slime.proto import ConfigError
from slime.train.baseline import GPT
from slime.train.config import ModelConfig
from slime.train.continual.arms import ARMS
from slime.train.continual.profiles import profile
from slime.train.continual.resets import (
    ContinualBackprop,
    head_outputs,
    head_rows,
    head_stats,
    random_heads,
    redo_dormant,
    reset_heads,
    shrink_perturb,
)
from slime.train.continual.runner import check_equal_params

H, D_HEAD = 4, 8


def _gpt(seed: int = 0, bias: bool = False) -> GPT:
    cfg = ModelConfig(
        kind="baseline", vocab_size=20, block_size=16, n_layer=2, n_embd=32,
        n_pods=H, pod_capacity=H, head_dim=D_HEAD, dropout=0.0, bias=bias,
    )  # fmt: skip
    return GPT(cfg, generator=torch.Generator().manual_seed(seed))


def _stepped(model: GPT) -> torch.optim.AdamW:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, 20, (4, 16), generator=torch.Generator().manual_seed(1))
    _, loss = model(idx, idx)
    loss.backward()
    opt.step()
    return opt


def test_head_rows_follow_the_baseline_layout() -> None:
    model = _gpt()
    idx = torch.randint(0, 20, (2, 16), generator=torch.Generator().manual_seed(2))
    before = head_outputs(model, idx)
    with torch.no_grad():  # change only head 2's value rows of layer 0
        rows = head_rows(H, D_HEAD, 2)[2 * D_HEAD :]
        model.blocks[0].attn.c_attn.weight[rows] += 1.0
    after = head_outputs(model, idx)
    changed = [not torch.allclose(a, b) for a, b in zip(before[0][0], after[0][0])]
    assert changed == [False, False, True, False]
    assert torch.equal(
        head_rows(H, D_HEAD, 1), torch.cat([torch.arange(8, 16) + H * D_HEAD * i for i in range(3)])
    )


@pytest.mark.parametrize("bias", [False, True])
def test_reset_heads_touches_exactly_the_heads_slices(bias: bool) -> None:
    model = _gpt(bias=bias)
    opt = _stepped(model)
    params = dict(model.named_parameters())
    old = {n: p.detach().clone() for n, p in params.items()}
    old_state = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in params.items()}
    gen = torch.Generator().manual_seed(9)
    assert reset_heads(model, 1, [3, 0], optimizer=opt, generator=gen) == [0, 3]
    rows = torch.cat([head_rows(H, D_HEAD, h) for h in (0, 3)])
    cols = torch.cat([torch.arange(0, 8), torch.arange(24, 32)])
    expected = torch.randn((len(rows), 32), generator=torch.Generator().manual_seed(9)) * 0.02
    w_attn, w_proj = "blocks.1.attn.c_attn.weight", "blocks.1.attn.c_proj.weight"
    assert torch.equal(params[w_attn][rows], expected)  # re-initialised from the generator
    assert (params[w_proj][:, cols] == 0).all()  # output projection zeroed
    keep_rows = torch.tensor([r for r in range(3 * H * D_HEAD) if r not in set(rows.tolist())])
    keep_cols = torch.tensor([c for c in range(H * D_HEAD) if c not in set(cols.tolist())])
    assert torch.equal(params[w_attn][keep_rows], old[w_attn][keep_rows])
    assert torch.equal(params[w_proj][:, keep_cols], old[w_proj][:, keep_cols])
    for key in ("exp_avg", "exp_avg_sq"):
        s_attn, s_proj = opt.state[params[w_attn]][key], opt.state[params[w_proj]][key]
        assert (s_attn[rows] == 0).all() and (s_proj[:, cols] == 0).all()
        assert torch.equal(s_attn[keep_rows], old_state[w_attn][key][keep_rows])
        assert torch.equal(s_proj[:, keep_cols], old_state[w_proj][key][:, keep_cols])
        assert (old_state[w_attn][key][rows] != 0).any()  # there was something to reset
    if bias:
        b = params["blocks.1.attn.c_attn.bias"]
        assert (b[rows] == 0).all() and (opt.state[b]["exp_avg"][rows] == 0).all()
    for name in params:  # everything else untouched, parameters and moments
        if name.startswith("blocks.1.attn.c_attn") or name == w_proj:
            continue
        assert torch.equal(params[name], old[name]), name
        for key, value in opt.state[params[name]].items():
            assert torch.equal(value, old_state[name][key]), (name, key)


def test_reset_head_is_silent_until_it_learns() -> None:
    model = _gpt()
    idx = torch.randint(0, 20, (2, 16), generator=torch.Generator().manual_seed(2))
    reset_heads(model, 0, [1], generator=torch.Generator().manual_seed(0))
    stats = head_stats(model, idx)
    assert stats.contribution[0][1] == 0 and (stats.contribution[0][[0, 2, 3]] > 0).all()
    assert stats.activity[0][1] > 0  # its attention output is not zero: ReDo would not re-reset it


def test_redo_picks_heads_at_or_below_tau_of_the_layer_mean() -> None:
    activity = torch.tensor([1.0, 0.05, 1.0, 1.95])  # mean 1.0
    assert redo_dormant(activity, 0.1) == [1]
    assert redo_dormant(activity, 0.0) == []
    assert redo_dormant(torch.zeros(3), 0.1) == [0, 1, 2]


def test_random_heads_are_distinct_and_counted() -> None:
    gen = torch.Generator().manual_seed(0)
    picks = [tuple(random_heads(4, 2, gen)) for _ in range(50)]
    assert all(len(set(p)) == 2 and all(0 <= h < 4 for h in p) for p in picks)
    assert len(set(picks)) > 3  # not always the same pair
    with pytest.raises(ConfigError):
        random_heads(4, 5, gen)


def test_continual_backprop_resets_low_utility_mature_heads_at_its_rate() -> None:
    cbp = ContinualBackprop(1, 4, replacement_rate=0.5 / (4 * 10), maturity=15)
    cbp.observe([torch.tensor([3.0, 0.5, 2.0, 0.1])], steps=10)
    assert cbp.select(10) == {}  # nobody mature yet (age 10 < 15); nothing is owed then
    cbp.observe([torch.tensor([3.0, 0.5, 2.0, 0.1])], steps=10)  # age 20
    assert cbp.select(10) == {}  # 0.5 head owed
    assert cbp.select(10) == {0: [3]}  # 1.0 owed: the lowest utility mature head
    cbp.replaced(0, [3])
    assert cbp.age[0, 3] == 0 and cbp.utility[0, 3] == 0
    cbp.observe([torch.tensor([3.0, 0.5, 2.0, 9.0])], steps=10)
    assert cbp.utility[0, 3] == 9.0  # a fresh head's utility restarts at its first measurement
    # 3 mature heads * rate * 40 steps = 1.5 heads owed: one now, head 3 being young again
    assert cbp.select(40) == {0: [1]}


def test_shrink_and_perturb_moves_weights_only() -> None:
    model, fresh = _gpt(0, bias=True), _gpt(1, bias=True)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() < 2:
                p.add_(0.5)  # gains and biases distinct from the fresh model's
    old = {n: p.detach().clone() for n, p in model.named_parameters()}
    changed = shrink_perturb(model, fresh, shrink=0.8, noise=0.1)
    theirs = dict(fresh.named_parameters())
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            assert name in changed
            assert torch.allclose(p, 0.8 * old[name] + 0.1 * theirs[name])
        else:
            assert torch.equal(p, old[name]), name


def test_every_arm_starts_with_the_same_parameter_count() -> None:
    for name in ("cpu-small", "gpu-full"):
        prof = profile(name)
        for vocab in (16, 65):
            counts = check_equal_params(prof, list(ARMS), vocab, torch.device("cpu"))
            assert len(counts) == len(ARMS) and len(set(counts.values())) == 1
