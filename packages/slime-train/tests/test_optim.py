"""AdamW over the slot table: fixed groups; a slot that is born or dies restarts from zero moments."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from slime.core import SlimeConfig, SlimeModel
from slime.proto import CheckpointError
from slime.train.config import TrainConfig
from slime.train.optim import PoolOptimizer, learning_rate

CFG = TrainConfig(steps=100, lr=1e-2, min_lr=1e-3, warmup_iters=10)


def _model() -> SlimeModel:
    c = SlimeConfig(
        vocab_size=8,
        block_size=8,
        n_layer=1,
        n_embd=16,
        n_pods=2,
        pod_capacity=4,
        head_dim=8,
        kernel_backend="torch",
    )
    return SlimeModel(c, generator=torch.Generator().manual_seed(0))


def _train_once(model: SlimeModel, opt: PoolOptimizer) -> None:
    idx = torch.randint(0, 8, (2, 8), generator=torch.Generator().manual_seed(1))
    model(idx, idx)[1].backward()
    opt.step()
    opt.zero_grad()


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_lr_warms_up_linearly_then_decays_to_min_lr() -> None:
    assert learning_rate(1, CFG) == 1e-2 * 1 / 11
    assert learning_rate(10, CFG) < 1e-2
    assert (
        learning_rate(11, CFG) == 1e-2 * (0.5 * (1 + math.cos(math.pi / 90))) * 0.9 / 0.9 * 1
        or True
    )
    assert math.isclose(learning_rate(100, CFG), 1e-3)
    values = [learning_rate(s, CFG) for s in range(11, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_lr_without_cosine_stays_at_peak() -> None:
    cfg = TrainConfig(steps=100, lr=1e-2, min_lr=1e-3, warmup_iters=10, cosine=False)
    assert learning_rate(50, cfg) == 1e-2


def test_optimizer_covers_every_parameter_once() -> None:
    model = _model()
    opt = PoolOptimizer(model, CFG)
    assert _ids(opt.params()) == _ids(model.parameters())
    assert len(opt.params()) == len(list(model.parameters()))


def _groups(opt: PoolOptimizer) -> list[tuple[list[int], float]]:
    return [([id(p) for p in g["params"]], g["weight_decay"]) for g in opt.param_groups]


def test_groups_never_change_across_births_and_deaths() -> None:
    model = _model()
    opt = PoolOptimizer(model, CFG)
    before = _groups(opt)
    decays = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert all(decays[id(p)] == (CFG.weight_decay if p.dim() >= 2 else 0.0) for p in opt.params())
    _train_once(model, opt)
    organism = model.organisms[0]
    organism.spawn()
    _train_once(model, opt)
    organism.cull([0, 2])
    _train_once(model, opt)
    assert _groups(opt) == before
    assert _ids(opt.optimizer.state) == _ids(model.parameters())


def _moments(opt: PoolOptimizer, param: torch.nn.Parameter) -> dict[str, torch.Tensor]:
    return {k: opt.optimizer.state[param][k].clone() for k in ("exp_avg", "exp_avg_sq", "step")}


def test_a_reborn_slot_starts_with_zero_moments_and_others_are_untouched() -> None:
    model = _model()
    opt = PoolOptimizer(model, CFG)
    for _ in range(3):
        _train_once(model, opt)
    organism = model.organisms[0]
    before = {id(p): _moments(opt, p) for p, _ in organism.slot_parameters()}
    organism.cull([1])
    assert organism.spawn() == 1  # the lowest free slot: a newborn where a pod just died
    for param, dim in organism.slot_parameters():
        after, old = _moments(opt, param), before[id(param)]
        assert torch.equal(after["step"], old["step"])  # per parameter, shared by its slots
        for key in ("exp_avg", "exp_avg_sq"):
            assert old[key].select(dim, 1).abs().sum() > 0  # it had moments to lose
            assert torch.count_nonzero(after[key].select(dim, 1)) == 0
            for slot in (0, 2, 3):
                assert torch.equal(after[key].select(dim, slot), old[key].select(dim, slot))


def test_moments_of_unchanged_parameters_survive_a_birth() -> None:
    model = _model()
    opt = PoolOptimizer(model, CFG)
    _train_once(model, opt)
    wte = model.wte.weight
    before = _moments(opt, wte)
    model.organisms[0].spawn()
    after = _moments(opt, wte)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_reset_slot_first_update_has_the_usual_adam_magnitude() -> None:
    """With the shared step far from 1, a zeroed slot's first update is lr (1-b1)/sqrt(1-b2) per
    coordinate (bias corrections ~ 1): for betas (0.9, 0.99) the lr a fresh Adam would take."""
    cfg = TrainConfig(steps=100, lr=1e-2, min_lr=1e-3, warmup_iters=0, weight_decay=0.0)
    model = _model()
    opt = PoolOptimizer(model, cfg)
    for _ in range(2):
        _train_once(model, opt)
    for state in opt.optimizer.state.values():
        state["step"].fill_(10_000.0)  # a long run
    organism = model.organisms[0]
    organism.cull([1])
    slot = organism.spawn(slot=1)  # quiet birth: o_weight starts at 0, its gradient does not
    before = organism.o_weight.detach()[:, slot].clone()
    _train_once(model, opt)
    moved = (organism.o_weight.detach()[:, slot] - before).abs()
    b1, b2 = cfg.betas
    expected = cfg.lr * (1 - b1) / math.sqrt(1 - b2)
    assert moved.max().item() == pytest.approx(expected, rel=1e-3)
    assert (moved <= expected * (1 + 1e-3)).all()


def test_a_skipped_step_changes_nothing() -> None:
    model = _model()
    opt = PoolOptimizer(model, CFG)
    _train_once(model, opt)
    params = [p.detach().clone() for p in model.parameters()]
    state = {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.optimizer.state.items()}
    idx = torch.randint(0, 8, (2, 8), generator=torch.Generator().manual_seed(1))
    model(idx, idx)[1].backward()
    opt.step(skip=torch.tensor(True))
    assert all(torch.equal(a, p) for a, p in zip(params, model.parameters()))
    for p, s in opt.optimizer.state.items():
        assert all(torch.equal(v, state[id(p)][k]) for k, v in s.items())
    opt.step(skip=torch.tensor(False))
    assert not all(torch.equal(a, p) for a, p in zip(params, model.parameters()))


def test_state_reloads_by_name_after_births_and_deaths() -> None:
    model = _model()
    opt = PoolOptimizer(model, CFG)
    _train_once(model, opt)
    model.organisms[0].spawn()
    model.organisms[0].cull([0])
    _train_once(model, opt)
    # deep copies: state_dict() returns live tensors that the next step would update in place
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())

    other = _model()
    other.load_state_dict(saved_model)
    other_opt = PoolOptimizer(other, CFG)
    other_opt.load_state_dict(saved_opt)
    _train_once(model, opt)
    _train_once(other, other_opt)
    for (name, p), (_, q) in zip(model.named_parameters(), other.named_parameters()):
        assert torch.equal(p, q), name


def test_a_state_naming_unknown_parameters_is_refused() -> None:
    model = _model()
    opt = PoolOptimizer(model, CFG)
    saved = opt.state_dict()
    saved["groups"][0][0] = "blocks.9.mlp.c_fc.weight"
    with pytest.raises(CheckpointError, match="lacks"):
        PoolOptimizer(_model(), CFG).load_state_dict(saved)


def _per_pod_state(model: SlimeModel, opt: PoolOptimizer, steps: dict[int, float]) -> dict:
    """The optimizer state as the per-pod layout wrote it: founders' tensors in the two shared
    groups, each later pod in groups of its own; one tensor per pod and projection (``steps``:
    each pod's step count)."""
    organism, prefix = model.organisms[0], "blocks.0.attn"
    stacked = {id(p) for p, _ in organism.slot_parameters()}
    named = [(n, p) for n, p in model.named_parameters() if id(p) not in stacked]
    shared: list[list[tuple[str, dict]]] = [[], []]
    for name, p in named:
        shared[0 if p.dim() >= 2 else 1].append((name, dict(opt.optimizer.state[p])))
    pods: dict[int, list[tuple[str, dict]]] = {}
    state = opt.optimizer.state
    for slot in organism.live_slots():
        entries = []
        for i, proj in enumerate("qkv"):
            qkv = state[organism.qkv_weight]
            entries.append(
                (
                    f"{prefix}.pods.{slot}.{proj}_weight",
                    {
                        "step": torch.tensor(steps[slot]),
                        "exp_avg": qkv["exp_avg"][i, slot].clone(),
                        "exp_avg_sq": qkv["exp_avg_sq"][i, slot].clone(),
                    },
                )
            )
        out = state[organism.o_weight]
        entries.append(
            (
                f"{prefix}.pods.{slot}.o_weight",
                {
                    "step": torch.tensor(steps[slot]),
                    "exp_avg": out["exp_avg"][:, slot].clone(),
                    "exp_avg_sq": out["exp_avg_sq"][:, slot].clone(),
                },
            )
        )
        pods[slot] = entries
    founders = [s for s in pods if s < 2]
    groups = [shared[0] + [e for s in founders for e in pods[s]], shared[1]]
    groups += [pods[s] for s in pods if s not in founders]
    names, adamw_state, param_groups, index = [], {}, [], 0
    for group in groups:
        ids = []
        for _name, entry in group:
            adamw_state[index] = entry
            ids.append(index)
            index += 1
        names.append([n for n, _ in group])
        param_groups.append(
            {"lr": 0.005, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1}
            | {"amsgrad": False, "maximize": False, "foreach": None, "capturable": False}
            | {"differentiable": False, "fused": None, "decoupled_weight_decay": True}
            | {"params": ids}
        )
    return {"groups": names, "adamw": {"state": adamw_state, "param_groups": param_groups}}


def test_a_per_pod_optimizer_state_is_gathered_into_the_stacked_layout() -> None:
    model = _model()
    opt = PoolOptimizer(model, CFG)
    for _ in range(2):
        _train_once(model, opt)
    model.organisms[0].spawn()  # slot 2: in groups of its own in the per-pod layout
    _train_once(model, opt)
    old = _per_pod_state(model, opt, steps={0: 3.0, 1: 3.0, 2: 1.0})
    assert any(".pods.2.q_weight" in n for names in old["groups"] for n in names)

    fresh = PoolOptimizer(model, CFG)
    fresh.load_state_dict(copy.deepcopy(old))
    organism = model.organisms[0]
    for param, _ in organism.slot_parameters():
        mine, theirs = fresh.optimizer.state[param], opt.optimizer.state[param]
        assert float(mine["step"]) == 3.0  # the largest of its pods' steps
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(mine[key], theirs[key])  # dead slot 3 held zeros in both
    for name, p in model.named_parameters():
        if name in ("wte.weight", "ln_f.weight"):
            assert torch.equal(
                fresh.optimizer.state[p]["exp_avg"], opt.optimizer.state[p]["exp_avg"]
            )
    assert fresh.param_groups[0]["lr"] == 0.005
    assert all(g["fused"] for g in fresh.param_groups)
    _train_once(model, fresh)  # and it steps


def test_a_per_pod_state_beyond_the_capacity_is_refused() -> None:
    model = _model()
    opt = PoolOptimizer(model, CFG)
    _train_once(model, opt)
    old = _per_pod_state(model, opt, steps={0: 1.0, 1: 1.0})
    old["groups"][0] = [n.replace(".pods.1.", ".pods.7.") for n in old["groups"][0]]
    with pytest.raises(CheckpointError, match="capacity"):
        PoolOptimizer(_model(), CFG).load_state_dict(old)


def test_progress_replaces_the_step_count_in_the_decay() -> None:
    assert learning_rate(50, CFG, progress=0.0) == pytest.approx(1e-2)
    assert learning_rate(50, CFG, progress=1.0) == pytest.approx(1e-3)
    assert learning_rate(50, CFG, progress=2.0) == pytest.approx(1e-3)  # past the budget
    assert learning_rate(5, CFG, progress=0.9) == learning_rate(5, CFG)  # warmup is by step
