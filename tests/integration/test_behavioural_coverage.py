"""Behavioural-space coverage grows during training: more archive cells hold elites over time."""

from __future__ import annotations

import pytest
from slime.train.trainer import Trainer


@pytest.mark.parametrize("seed", [0, 1])
def test_archive_coverage_never_shrinks_and_grows_over_a_run(
    seed: int, dataset, tiny_config
) -> None:
    trainer = Trainer(tiny_config(train={"steps": 36, "seed": seed}), dataset)
    coverage = []
    for step in range(6, 37, 6):
        trainer.fit(step)  # continues the same run up to ``step``
        coverage.append(sum(o.archive.stats.coverage for o in trainer.model.organisms))
    assert coverage == sorted(coverage), f"coverage shrank: {coverage}"
    assert coverage[-1] > coverage[0] > 0


def test_archive_holds_one_elite_per_occupied_cell_within_its_limits(dataset, tiny_config) -> None:
    trainer = Trainer(tiny_config(train={"steps": 24}), dataset)
    trainer.fit()
    for organism in trainer.model.organisms:
        stats = organism.archive.stats
        cells = organism.archive.cells
        assert stats.num_elites == len(organism.archive) == round(stats.coverage * cells)
        assert len(set(organism.archive.occupied_cells())) == stats.num_elites
