"""Genomes as tensor columns: the batched storage form of an archive."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from slime.memory import GridArchive
from slime.proto import ArchiveError


def grid(**kwargs) -> GridArchive:
    return GridArchive([4, 4], [(0.0, 1.0), (0.0, 1.0)], **kwargs)


def batch(n: int, start: int = 0):
    ids = torch.arange(start, start + n)
    columns = {"w": ids[:, None].float().expand(n, 3).clone(), "id": ids}
    descriptors = torch.rand(n, 2, generator=torch.Generator().manual_seed(start))
    return columns, torch.arange(n, dtype=torch.float64) + start, descriptors


def test_columns_fill_the_archive_with_one_row_per_elite() -> None:
    archive = grid()
    columns, objectives, descriptors = batch(5)
    archive.add(columns, objectives, descriptors)
    elites = list(archive)
    assert len(elites) == len(archive) > 0
    for elite in elites:
        assert set(elite.genome) == {"w", "id"}
        assert elite.genome["w"].shape == (3,)
        assert elite.genome["w"][0].item() == elite.genome["id"].item() == elite.objective


def test_column_elites_are_copies_not_views_of_the_buffers() -> None:
    archive = grid()
    archive.add({"w": torch.zeros(1, 2)}, torch.ones(1), torch.full((1, 2), 0.1))
    genome = next(iter(archive)).genome
    archive.add({"w": torch.ones(1, 2)}, torch.full((1,), 2.0), torch.full((1, 2), 0.1))
    assert genome["w"].tolist() == [0.0, 0.0]


def test_column_with_wrong_row_count_raises_naming_its_shape() -> None:
    with pytest.raises(
        ArchiveError, match=r"column 'w' has shape \(2, 3\); expected \(4, \.\.\.\)"
    ):
        grid().add({"w": torch.zeros(2, 3)}, torch.zeros(4), torch.zeros(4, 2))


def test_columns_must_keep_their_shapes_across_batches() -> None:
    archive = grid()
    archive.add({"w": torch.zeros(1, 3)}, torch.ones(1), torch.full((1, 2), 0.1))
    with pytest.raises(ArchiveError, match="differ from the archive's"):
        archive.add({"w": torch.zeros(1, 4)}, torch.ones(1), torch.full((1, 2), 0.1))


def test_mixing_payloads_into_a_column_archive_raises() -> None:
    archive = grid()
    archive.add({"w": torch.zeros(1, 3)}, torch.ones(1), torch.full((1, 2), 0.1))
    with pytest.raises(ArchiveError, match="stores tensor columns"):
        archive.add([{"w": torch.zeros(3)}], torch.ones(1), torch.full((1, 2), 0.1))


def test_mixing_columns_into_a_payload_archive_raises() -> None:
    archive = grid()
    archive.add([{"w": torch.zeros(3)}], torch.ones(1), torch.full((1, 2), 0.1))
    with pytest.raises(ArchiveError, match="stores per-item payloads"):
        archive.add({"w": torch.zeros(1, 3)}, torch.ones(1), torch.full((1, 2), 0.1))


def test_clear_lets_the_next_batch_choose_the_form_again() -> None:
    archive = grid()
    archive.add({"w": torch.zeros(1, 3)}, torch.ones(1), torch.full((1, 2), 0.1))
    archive.clear()
    archive.add([{"w": torch.zeros(3)}], torch.ones(1), torch.full((1, 2), 0.1))
    assert len(archive) == 1


def test_bootstrap_and_interpolate_work_on_columns() -> None:
    archive = grid()
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    archive.add({"w": torch.tensor([[0.0, 0.0], [4.0, 8.0]])}, torch.ones(2), points)
    assert archive.bootstrap(torch.tensor([0.9, 0.0]))["w"].tolist() == [4.0, 8.0]
    blended = archive.interpolate(torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(blended["w"], torch.tensor([2.0, 4.0]))


def test_column_archive_round_trips(tmp_path: Path) -> None:
    archive = grid()
    archive.add(*batch(6))
    archive.save(tmp_path / "a")
    loaded = GridArchive.load(tmp_path / "a")
    assert [(e.cell, e.objective) for e in loaded] == [(e.cell, e.objective) for e in archive]
    for x, y in zip(loaded, archive):
        assert torch.equal(x.genome["w"], y.genome["w"]) and torch.equal(
            x.genome["id"], y.genome["id"]
        )
    loaded.add(*batch(3, start=10))  # the loaded buffers accept further batches


@pytest.mark.gpu
def test_add_on_cuda_synchronises_a_few_times_per_batch_not_per_item() -> None:
    # Expected: the finiteness check; torch.unique's output size when the batch is small.
    archive = GridArchive([32, 32], [(0.0, 1.0), (0.0, 1.0)], device="cuda", max_size=1024)
    columns = {"w": torch.randn(4096, 64, device="cuda")}
    objectives = torch.randn(4096, device="cuda")
    descriptors = torch.rand(4096, 2, device="cuda")
    archive.add(columns, objectives, descriptors)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with pytest.warns(UserWarning) as caught:
            result = archive.add(columns, objectives + 1.0, descriptors)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(caught) <= 3
    assert result.status.device.type == "cuda"
