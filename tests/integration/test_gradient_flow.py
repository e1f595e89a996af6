"""Gradients reach every live pod after each birth and death (blueprint: no frozen pods).

A quiet newborn (zero output projection) gets a gradient on that projection at once and on its
q/k/v projections after its first update; a loud newborn gets gradients everywhere at once.
"""

from __future__ import annotations

import pytest
import torch
from slime.core import SlimeConfig, SlimeModel
from slime.train.trainer import Trainer


def _model(quiet_birth: bool) -> SlimeModel:
    config = SlimeConfig(
        vocab_size=8,
        block_size=8,
        n_layer=2,
        n_embd=16,
        n_pods=2,
        pod_capacity=5,
        head_dim=8,
        kernel_backend="torch",
        quiet_birth=quiet_birth,
    )
    return SlimeModel(config, generator=torch.Generator().manual_seed(0))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.randint(0, 8, (4, 8), generator=torch.Generator().manual_seed(3))
    return idx, idx.roll(1, dims=1)


def _backward(model: SlimeModel) -> None:
    model.zero_grad(set_to_none=True)
    _, loss = model(*_batch())
    loss.backward()


def _live_pods(model: SlimeModel):
    """``((layer, slot), {parameter name: (parameter, slot dim)})`` for every live pod."""
    for layer, organism in enumerate(model.organisms):
        names = {id(p): n for n, p in organism.named_parameters()}
        params = {names[id(p)]: (p, dim) for p, dim in organism.slot_parameters()}
        for slot in organism.live_slots():
            yield (layer, slot), params


def _assert_every_live_pod_gets_gradients(model: SlimeModel, quiet: set, after: str = "") -> None:
    _backward(model)
    for key, params in _live_pods(model):
        slot = key[1]
        for name, (p, dim) in params.items():
            assert p.grad is not None, f"after {after}: pod {key} {name} got no gradient"
            grad = p.grad.select(dim, slot)
            assert torch.isfinite(grad).all(), (
                f"after {after}: pod {key} {name} has a non-finite gradient"
            )
            silent = key in quiet and name != "o_weight"  # no path until o_weight moves
            assert (grad.abs().sum() == 0) == silent, f"after {after}: pod {key} {name}"


def _pool_changes(model: SlimeModel):
    """Births (fresh, then from the archive) and deaths, one change at a time, in both layers."""
    first, second = model.organisms
    yield "fresh birth", [(0, first.spawn())]
    model.measure_behaviour(_batch()[0])
    for organism in model.organisms:
        organism.fitness.fill_(1.0)
        organism.archive_elites()
    yield "birth from the archive", [(1, second.spawn())]
    first.cull([0])
    yield "death of a founding pod", []
    second.cull([second.live_slots()[-1]])
    yield "death of a newborn", []
    yield "birth into a freed slot", [(0, first.spawn())]


@pytest.mark.parametrize("quiet_birth", [True, False])
def test_every_live_pod_gets_gradients_after_each_birth_and_death(quiet_birth: bool) -> None:
    model = _model(quiet_birth)
    _assert_every_live_pod_gets_gradients(model, quiet=set(), after="construction")
    quiet: set = set()
    for change, born in _pool_changes(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        if quiet_birth:
            quiet |= set(born)
        quiet &= {key for key, _ in _live_pods(model)}
        _assert_every_live_pod_gets_gradients(model, quiet=quiet, after=change)
        optimizer.step()  # newborns' output projections leave zero: next time q/k/v learn too
        quiet.clear()
        _assert_every_live_pod_gets_gradients(model, quiet=set(), after=f"{change}, one step on")


def test_trainer_updates_every_live_pod_after_births_and_culls(dataset, tiny_config) -> None:
    cfg = tiny_config(train={"steps": 19}, lifecycle={"gentle_steps": 6, "cull_fraction": 0.5})
    trainer = Trainer(cfg, dataset)  # last pool change at step 18, one more training step after
    summary = trainer.fit()
    assert summary["births"] >= 2 and summary["deaths"] >= 2
    state = trainer.optimizer.optimizer.state
    for organism in trainer.model.organisms:
        for p, dim in organism.slot_parameters():
            assert p in state and int(state[p]["step"]) >= 19
            for slot in organism.live_slots():
                moment = state[p]["exp_avg"].select(dim, slot)
                assert moment.abs().sum() > 0, f"slot {slot} never updated"
