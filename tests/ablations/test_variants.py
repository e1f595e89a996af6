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
    for slot in organism.live_slots():
        organism.pod(slot).fitness = 1.0 + slot
    organism.archive_elites()


def _elite_weights(organism) -> list[torch.Tensor]:
    """Each elite's q projection ``(d, D)`` (genomes are archive column rows)."""
    return [elite.genome["qkv_weight"][0] for elite in organism.archive]


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
    born = organism.pod(slot).q_weight
    assert len(_elite_weights(organism)) >= 1
    assert any(torch.equal(born, w) for w in _elite_weights(organism))


def test_archive_free_birth_ignores_a_stocked_archive(tiny_slime, tokens) -> None:
    _fill_archive(tiny_slime, tokens)
    organism = tiny_slime.organisms[0]
    ARMS["no_archive"].inject(tiny_slime)
    slot = organism.spawn()
    born = organism.pod(slot)
    assert not any(torch.allclose(born.q_weight, w) for w in _elite_weights(organism))
    assert torch.count_nonzero(born.o_weight) == 0  # still a quiet birth


def _train_forward(model, tokens: torch.Tensor) -> None:
    model.train()
    _, loss = model(tokens, tokens.roll(-1, dims=1))
    loss.backward()


def test_tubes_off_arm_removes_every_organism_temporal_memory(tiny_slime, tokens) -> None:
    ARMS["no_tubes"].inject(tiny_slime)
    assert all(o.tube_trace.shape[0] == 0 for o in tiny_slime.organisms)
    _train_forward(tiny_slime, tokens)  # a forward that would feed the tubes
    for organism in tiny_slime.organisms:
        _, remembered = organism.tube_recall()
        assert not remembered.any() and not organism.stats()["tube_memory"]
    tiny_slime.measure_behaviour(tokens)  # sparsity from the probe alone: still measurable
    assert all(torch.isfinite(o.live_descriptors(full=True)).all() for o in tiny_slime.organisms)


def test_default_arm_injects_nothing(tiny_slime, tokens) -> None:
    def parts():
        return [(type(o.chemotaxis), tuple(o.tube_trace.shape)) for o in tiny_slime.organisms]

    before = parts()
    ARMS["slime"].inject(tiny_slime)
    assert parts() == before
    _train_forward(tiny_slime, tokens)
    assert all(o.tube_recall()[1][o.alive].all() for o in tiny_slime.organisms)  # tubes on


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


def test_pod_latency_costs_time_every_live_pod(tiny_slime, tokens) -> None:
    from slime.train.ablations.variants import pod_latency_costs

    organism = tiny_slime.organisms[0]
    organism.spawn()
    organism.cull([0])
    costs = pod_latency_costs(tiny_slime, tokens, repeats=2)
    assert sorted(costs) == [(0, 1), (0, 2)]
    assert all(c > 0 for c in costs.values())
