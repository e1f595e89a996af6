"""GridArchive behaviour: insertion rules, validation, queries, capacity, bootstrap."""

from __future__ import annotations

import math

import pytest
import torch
from slime.memory import MAX_ARCHIVE_SIZE, Elite, GridArchive
from slime.proto import ArchiveError, ConfigError


def genomes(n: int, start: int = 0) -> list[dict]:
    return [{"w": torch.full((3,), float(start + i)), "id": start + i} for i in range(n)]


def grid(**kwargs) -> GridArchive:
    return GridArchive([4, 4], [(0.0, 1.0), (0.0, 1.0)], **kwargs)


def desc(*points: tuple[float, float]) -> torch.Tensor:
    return torch.tensor(points, dtype=torch.float32)


def test_valid_batch_fills_the_archive() -> None:
    archive = grid()
    archive.add(genomes(3), torch.tensor([1.0, 2.0, 3.0]), desc((0.1, 0.1), (0.5, 0.5), (0.9, 0.9)))
    assert len(archive) == 3
    assert archive.stats.num_elites == 3


def test_shape_mismatch_raises_naming_both_shapes() -> None:
    archive = grid()
    with pytest.raises(ArchiveError, match=r"objectives \(4,\).*descriptors \(4, 3\)"):
        archive.add(genomes(4), torch.zeros(4), torch.zeros(4, 3))
    assert len(archive) == 0


def test_genome_count_mismatch_raises() -> None:
    with pytest.raises(ArchiveError, match="3 genomes"):
        grid().add(genomes(3), torch.zeros(2), torch.zeros(2, 2))


def test_objectives_must_be_one_dimensional() -> None:
    with pytest.raises(ArchiveError, match=r"objectives \(2, 1\)"):
        grid().add(genomes(2), torch.zeros(2, 1), torch.zeros(2, 2))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_objective_raises_naming_index(bad: float) -> None:
    archive = grid()
    with pytest.raises(ArchiveError, match=r"\[2\] is not finite"):
        archive.add(genomes(3), torch.tensor([1.0, 2.0, bad]), torch.full((3, 2), 0.5))
    assert len(archive) == 0


def test_non_finite_descriptor_raises_naming_index() -> None:
    descriptors = torch.full((3, 2), 0.5)
    descriptors[1, 0] = math.nan
    with pytest.raises(ArchiveError, match=r"\[1\] is not finite"):
        grid().add(genomes(3), torch.ones(3), descriptors)


def test_status_and_value_for_new_cell() -> None:
    result = grid().add(genomes(1), torch.tensor([2.5]), desc((0.1, 0.1)))
    assert result.status.tolist() == [2]
    assert result.value.tolist() == [2.5]


def test_status_and_value_for_improvement_and_rejection() -> None:
    archive = grid()
    archive.add(genomes(1), torch.tensor([2.0]), desc((0.1, 0.1)))
    result = archive.add(genomes(2, 1), torch.tensor([3.0, 1.5]), desc((0.1, 0.1), (0.1, 0.1)))
    assert result.status.tolist() == [1, 0]
    assert result.value.tolist() == [1.0, -0.5]


def test_add_keeps_best_of_batch_per_cell() -> None:
    archive = grid()
    archive.add(genomes(3), torch.tensor([1.0, 5.0, 3.0]), desc((0.1, 0.1), (0.1, 0.1), (0.1, 0.1)))
    (elite,) = list(archive)
    assert elite.objective == 5.0
    assert elite.genome["id"] == 1


def test_ties_in_a_batch_go_to_the_earliest() -> None:
    archive = grid()
    archive.add(genomes(3), torch.tensor([1.0, 4.0, 4.0]), desc((0.1, 0.1), (0.1, 0.1), (0.1, 0.1)))
    assert next(iter(archive)).genome["id"] == 1


def test_statuses_are_computed_against_the_archive_before_the_batch() -> None:
    result = grid().add(genomes(2), torch.tensor([1.0, 2.0]), desc((0.1, 0.1), (0.1, 0.1)))
    assert result.status.tolist() == [2, 2]


def test_equal_objective_does_not_replace_an_elite() -> None:
    archive = grid()
    archive.add(genomes(1), torch.tensor([2.0]), desc((0.1, 0.1)))
    result = archive.add(genomes(1, 1), torch.tensor([2.0]), desc((0.1, 0.1)))
    assert result.status.tolist() == [0]
    assert next(iter(archive)).genome["id"] == 0


def test_out_of_range_descriptors_clip_into_edge_cells() -> None:
    archive = grid()
    cells = archive.cell_index(desc((-5.0, -5.0), (5.0, 5.0), (-1.0, 2.0)))
    assert cells.tolist() == [0, 15, 3]


def test_cell_index_is_row_major() -> None:
    archive = GridArchive([2, 3], [(0.0, 1.0), (0.0, 3.0)])
    assert archive.cell_index(desc((0.2, 0.5), (0.2, 2.5), (0.7, 1.5))).tolist() == [0, 2, 4]


def test_iteration_is_in_ascending_cell_order() -> None:
    archive = grid()
    points = desc((0.9, 0.9), (0.1, 0.1), (0.6, 0.3))
    archive.add(genomes(3), torch.tensor([1.0, 1.0, 1.0]), points)
    assert [e.cell for e in archive] == sorted(e.cell for e in archive)


def test_stored_genome_is_a_copy_of_the_payload() -> None:
    archive = grid()
    payload = genomes(1)
    archive.add(payload, torch.tensor([1.0]), desc((0.1, 0.1)))
    payload[0]["w"].add_(100.0)
    assert next(iter(archive)).genome["w"].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("form", ["columns", "payloads"])
def test_inputs_that_require_grad_leave_no_graph_in_the_archive(form: str) -> None:
    archive = grid()
    objectives = torch.tensor([1.0, 2.0], requires_grad=True)
    weights = torch.ones(2, 3, requires_grad=True) * 2
    points = desc((0.1, 0.1), (0.9, 0.9)).requires_grad_()
    genomes = {"w": weights} if form == "columns" else [{"w": w} for w in weights]
    result = archive.add(genomes, objectives * 3, points * 1)
    assert not result.value.requires_grad
    for elite in archive:
        assert not (elite.genome["w"].requires_grad or elite.descriptor.requires_grad)


def test_genome_with_object_reference_raises_naming_its_path() -> None:
    with pytest.raises(ArchiveError, match=r"genomes\[0\]\['module'\] is a Linear"):
        grid().add([{"module": torch.nn.Linear(2, 2)}], torch.ones(1), desc((0.1, 0.1)))


def test_retrieve_reports_occupancy_and_elites() -> None:
    archive = grid()
    archive.add(genomes(1), torch.tensor([1.0]), desc((0.1, 0.1)))
    occupied, elites = archive.retrieve(desc((0.1, 0.1), (0.9, 0.9)))
    assert occupied.tolist() == [True, False]
    assert isinstance(elites[0], Elite) and elites[0].genome["id"] == 0
    assert elites[1] is None


def test_sample_elites_is_reproducible_with_a_seeded_generator() -> None:
    archive = grid()
    archive.add(genomes(4), torch.ones(4), desc((0.1, 0.1), (0.4, 0.4), (0.6, 0.6), (0.9, 0.9)))
    draw = [
        [e.cell for e in archive.sample_elites(8, torch.Generator().manual_seed(7))]
        for _ in range(2)
    ]
    assert draw[0] == draw[1]
    assert set(draw[0]) <= {e.cell for e in archive}


def test_sample_elites_from_empty_archive_raises() -> None:
    with pytest.raises(ArchiveError, match="empty"):
        grid().sample_elites(1, torch.Generator())


def test_stats_with_offset() -> None:
    archive = grid(qd_offset=-1.0)
    archive.add(genomes(2), torch.tensor([1.0, 3.0]), desc((0.1, 0.1), (0.9, 0.9)))
    stats = archive.stats
    assert stats.coverage == 2 / 16
    assert stats.qd_score == (1.0 + 1.0) + (3.0 + 1.0)
    assert stats.norm_qd_score == 6.0 / 16
    assert (stats.obj_max, stats.obj_mean) == (3.0, 2.0)


def test_stats_of_empty_archive() -> None:
    stats = grid().stats
    assert (stats.num_elites, stats.qd_score, stats.obj_max, stats.obj_mean) == (0, 0.0, None, None)


def test_default_max_size_is_the_blueprint_limit() -> None:
    assert grid().max_size == MAX_ARCHIVE_SIZE == 1000


def test_full_archive_evicts_its_worst_elite_for_a_better_newcomer() -> None:
    archive = grid(max_size=2)
    archive.add(genomes(2), torch.tensor([1.0, 2.0]), desc((0.1, 0.1), (0.4, 0.4)))
    result = archive.add(genomes(1, 2), torch.tensor([1.5]), desc((0.9, 0.9)))
    assert result.status.tolist() == [2]
    assert sorted(e.objective for e in archive) == [1.5, 2.0]


def test_full_archive_rejects_a_newcomer_no_better_than_its_worst() -> None:
    archive = grid(max_size=2)
    archive.add(genomes(2), torch.tensor([1.0, 2.0]), desc((0.1, 0.1), (0.4, 0.4)))
    result = archive.add(genomes(1, 2), torch.tensor([1.0]), desc((0.9, 0.9)))
    assert result.status.tolist() == [0]
    assert sorted(e.genome["id"] for e in archive) == [0, 1]


def test_bootstrap_copies_the_nearest_elite() -> None:
    archive = grid()
    archive.add(genomes(2), torch.tensor([1.0, 2.0]), desc((0.1, 0.1), (0.9, 0.9)))
    start = archive.bootstrap(torch.tensor([0.8, 0.7]))
    assert start["id"] == 1
    start["w"].add_(1.0)
    assert next(e for e in archive if e.genome["id"] == 1).genome["w"].tolist() == [1.0] * 3


def test_bootstrap_on_empty_archive_raises() -> None:
    with pytest.raises(ArchiveError, match="empty"):
        grid().bootstrap(torch.tensor([0.5, 0.5]))


def test_interpolate_blends_by_inverse_distance() -> None:
    archive = grid()
    archive.add(genomes(2), torch.tensor([1.0, 2.0]), desc((0.0, 0.0), (1.0, 0.0)))
    blended = archive.interpolate(torch.tensor([0.25, 0.0]), k_neighbors=2)
    # Weights 1/0.25 and 1/0.75 -> 0.75 and 0.25 of the total.
    torch.testing.assert_close(blended["w"], torch.full((3,), 0.25))
    assert blended["id"] == 0


def test_interpolate_at_an_elite_returns_that_elite() -> None:
    archive = grid()
    archive.add(genomes(2), torch.tensor([1.0, 2.0]), desc((0.0, 0.0), (1.0, 0.0)))
    assert archive.interpolate(torch.tensor([1.0, 0.0]))["w"].tolist() == [1.0] * 3


def test_constructor_rejects_mismatched_dims_and_ranges() -> None:
    with pytest.raises(ConfigError, match="dims has 2 entries but ranges has 1"):
        GridArchive([2, 2], [(0.0, 1.0)])


def test_constructor_rejects_cma_mae_without_threshold_min() -> None:
    with pytest.raises(ConfigError, match="threshold_min"):
        grid(learning_rate=0.5)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"learning_rate": "0.5"}, "learning_rate"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"threshold_min": math.nan}, "threshold_min"),
        ({"qd_offset": math.inf}, "qd_offset"),
        ({"max_size": 0}, "max_size"),
    ],
)
def test_constructor_rejects_bad_numbers_naming_the_field(kwargs, field) -> None:
    with pytest.raises(ConfigError, match=f"GridArchive.{field}"):
        grid(**kwargs)
