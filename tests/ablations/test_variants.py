"""Arms injected by composition: uniform elite births, archive-free births, config switches."""

from __future__ import annotations

import torch
from slime.proto import Chemotaxis
from slime.proto.testing import assert_conforms
from slime.train.ablations import ARMS, Starved, UniformElites
from slime.train.config import RunConfig


def _fill_archive(model, tokens: torch.Tensor) -> None:
    """Measure behaviour and offer every live pod to its layer's archive."""
    model.measure_behaviour(tokens)
    organism = model.organisms[0]
    organism.archive_elites({slot: 1.0 + slot for slot in organism.live_slots()})


def _elite_weights(organism) -> list[torch.Tensor]:
    return [elite.genome["params"]["q_weight"] for elite in organism.archive]


def test_replacement_chemotaxes_conform_to_the_protocol(tiny_slime) -> None:
    archive = tiny_slime.organisms[0].archive
    assert_conforms(UniformElites(archive), Chemotaxis)
    assert_conforms(Starved(archive), Chemotaxis)


def test_uniform_elites_samples_every_elite_location_and_nothing_else(tiny_slime, tokens) -> None:
    _fill_archive(tiny_slime, tokens)
    organism = tiny_slime.organisms[0]
    chemotaxis = UniformElites(organism.archive, generator=torch.Generator().manual_seed(0))
    locations = {tuple(e.descriptor.float().tolist()) for e in organism.archive}
    assert chemotaxis.sense() == len(locations) >= 1
    drawn = {tuple(chemotaxis.sample(torch.zeros(2), 0.25, 0.5).tolist()) for _ in range(64)}
    assert drawn == locations


def test_uniform_birth_copies_an_archived_elite(tiny_slime, tokens) -> None:
    _fill_archive(tiny_slime, tokens)
    organism = tiny_slime.organisms[0]
    ARMS["uniform"].inject(tiny_slime)
    slot = organism.spawn()
    born = organism.pods[str(slot)].q_weight.detach()
    assert any(torch.equal(born, w) for w in _elite_weights(organism))


def test_archive_free_birth_ignores_a_stocked_archive(tiny_slime, tokens) -> None:
    _fill_archive(tiny_slime, tokens)
    organism = tiny_slime.organisms[0]
    ARMS["no_archive"].inject(tiny_slime)
    slot = organism.spawn()
    born = organism.pods[str(slot)]
    assert not any(torch.allclose(born.q_weight.detach(), w) for w in _elite_weights(organism))
    assert torch.count_nonzero(born.o_weight) == 0  # still a quiet birth


def test_tubes_off_arm_removes_every_organism_temporal_memory(tiny_slime) -> None:
    ARMS["no_tubes"].inject(tiny_slime)
    assert all(o.tubes is None for o in tiny_slime.organisms)


def test_default_arm_injects_nothing(tiny_slime) -> None:
    before = [(type(o.chemotaxis), o.tubes) for o in tiny_slime.organisms]
    ARMS["slime"].inject(tiny_slime)
    assert [(type(o.chemotaxis), o.tubes) for o in tiny_slime.organisms] == before


def test_static_arm_switches_off_births_and_culls_only() -> None:
    cfg = ARMS["static"].configure(RunConfig())
    assert (cfg.lifecycle.births_per_event, cfg.lifecycle.cull_fraction) == (0, 0.0)
    assert cfg.lifecycle.enabled and cfg.model.kind == "slime"


def test_fitness_arms_set_the_weights_they_name() -> None:
    weights = {
        name: (c.fitness.w_task, c.fitness.w_eff, c.fitness.w_grad)
        for name in ("acc_only", "task_only", "grad_only", "slime")
        for c in [ARMS[name].configure(RunConfig())]
    }
    assert weights == {
        "acc_only": (0.7, 0.0, 0.1),
        "task_only": (1.0, 0.0, 0.0),
        "grad_only": (0.0, 0.0, 1.0),
        "slime": (0.7, 0.2, 0.1),
    }


def test_baseline_arm_selects_the_baseline_model() -> None:
    assert ARMS["baseline"].configure(RunConfig()).model.kind == "baseline"


def test_taylor_arm_scores_the_task_by_the_first_order_estimate() -> None:
    cfg = ARMS["taylor_only"].configure(RunConfig())
    assert cfg.fitness.task == "taylor" and cfg.fitness.w_task == 1.0
    assert ARMS["slime"].configure(RunConfig()).fitness.task == "masked"
