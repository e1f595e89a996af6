"""The CPU archive's numpy insertion path and packed payloads agree with the reference paths.

A CPU archive works a batch out in numpy (``_add_on_host``); the tensor path that accelerators
use is the reference here (``_host = False`` forces it on the CPU). Flat payloads of tensors are
packed into shared buffers; payload-by-payload copies (the packing switched off) are the
reference for those.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from slime.memory import Archive, CVTArchive, GridArchive, _stores
from slime.proto import ArchiveError

RANGES = [(-1.0, 1.0), (0.0, 2.0)]


def stream(seed: int, batches: int = 8, batch: int = 30, dim: int = 3):
    """Few objective values (ties), repeated cells, descriptors beyond the ranges."""
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        solutions = torch.from_numpy(rng.normal(size=(batch, dim)))
        objectives = torch.from_numpy(rng.integers(-3, 4, size=batch) / 2.0)
        descriptors = torch.from_numpy(rng.uniform([-1.3, -0.3], [1.3, 2.3], size=(batch, 2)))
        yield solutions, objectives, descriptors


def genomes_of(solutions: torch.Tensor, form: str):
    if form == "columns":
        return {"x": solutions, "id": torch.arange(solutions.shape[0])}
    return [{"x": row, "id": torch.tensor(i)} for i, row in enumerate(solutions)]


def assert_same_contents(ours: Archive, reference: Archive) -> None:
    assert torch.equal(ours._state, reference._state)
    mine, theirs = list(ours), list(reference)
    assert [e.cell for e in mine] == [e.cell for e in theirs]
    for a, b in zip(mine, theirs):
        assert a.objective == b.objective and torch.equal(a.descriptor, b.descriptor)
        assert a.genome.keys() == b.genome.keys()
        for key in a.genome:
            assert a.genome[key].dtype == b.genome[key].dtype
            assert torch.equal(a.genome[key], b.genome[key])


ARCHIVES = {
    "grid dense": lambda **kw: GridArchive([5, 4], RANGES, max_size=20, **kw),
    "grid sparse": lambda **kw: GridArchive([12, 9], RANGES, max_size=108, **kw),
    "grid evicting": lambda **kw: GridArchive([12, 9], RANGES, max_size=7, **kw),
    "grid dense evicting": lambda **kw: GridArchive([5, 4], RANGES, max_size=5, **kw),
    "cma-mae": lambda **kw: GridArchive(
        [6, 5], RANGES, learning_rate=0.3, threshold_min=-0.5, max_size=30, **kw
    ),
    "cma-mae evicting": lambda **kw: GridArchive(
        [6, 5], RANGES, learning_rate=0.5, threshold_min=-1.0, max_size=4, **kw
    ),
    "cvt": lambda **kw: CVTArchive(
        15,
        RANGES,
        centroids=torch.from_numpy(np.random.default_rng(4).uniform(-1, 2, size=(15, 2))),
        max_size=9,
        **kw,
    ),
    "cvt brute force": lambda **kw: CVTArchive(
        15,
        RANGES,
        centroids=torch.from_numpy(np.random.default_rng(4).uniform(-1, 2, size=(15, 2))),
        nearest="brute_force",
        **kw,
    ),
}


@pytest.mark.parametrize("form", ["columns", "payloads"])
@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_host_path_matches_the_tensor_path_item_by_item(name: str, form: str) -> None:
    ours, reference = ARCHIVES[name](), ARCHIVES[name]()
    assert ours._host
    reference._host = False
    for seed, (solutions, objectives, descriptors) in enumerate(stream(7)):
        got = ours.add(genomes_of(solutions, form), objectives, descriptors)
        expected = reference.add(genomes_of(solutions, form), objectives, descriptors)
        assert got.status.dtype == expected.status.dtype == torch.int32
        assert torch.equal(got.status, expected.status), f"batch {seed}"
        assert torch.equal(got.value, expected.value), f"batch {seed}"
        assert_same_contents(ours, reference)
    assert ours.stats == reference.stats


def test_host_grid_cells_match_the_tensor_arithmetic_on_boundaries() -> None:
    archive = GridArchive([7, 3], RANGES)
    points = np.random.default_rng(3).uniform([-1.5, -0.5], [1.5, 2.5], size=(300, 2))
    edges = np.array([[-1.0 + 2.0 * i / 7, 2.0 * i / 3] for i in range(8)])
    points = np.concatenate([points, edges, -edges])
    host = archive._host_cell_index(points.copy())
    tensor = archive._cell_index(torch.from_numpy(points))
    np.testing.assert_array_equal(host, tensor.numpy())


def test_host_path_raises_naming_the_first_non_finite_item_and_changes_nothing() -> None:
    archive = GridArchive([5, 4], RANGES)
    archive.add([{"x": torch.ones(2)}], torch.tensor([1.0]), torch.tensor([[0.0, 1.0]]))
    state = archive._state.clone()
    descriptors = torch.tensor([[0.0, 1.0], [0.5, float("nan")], [float("inf"), 0.0]])
    with pytest.raises(ArchiveError, match=r"objectives/descriptors\[1\] is not finite"):
        archive.add([{"x": torch.ones(2)}] * 3, torch.tensor([5.0, 5.0, 5.0]), descriptors)
    assert torch.equal(archive._state, state)


def loose_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_stores, "_stack_flat", lambda payloads: None)


def mixed_batches(seed: int):
    """Flat tensor payloads (packable), then payloads with plain data or mixed dtypes (not)."""
    for i, (solutions, objectives, descriptors) in enumerate(stream(seed, batches=9)):
        rows = solutions.unbind(0)
        if i % 3 == 0:
            genomes = [{"x": r, "id": torch.tensor(j)} for j, r in enumerate(rows)]
        elif i % 3 == 1:
            genomes = [{"x": r, "note": f"b{i}", "nested": [r[:1]]} for r in rows]
        else:  # one key, but float32 and float64 rows: stacking would promote
            genomes = [{"x": r if j % 2 else r.float()} for j, r in enumerate(rows)]
        yield genomes, objectives, descriptors


@pytest.mark.parametrize("max_size", [108, 6])
def test_packed_payloads_read_back_as_payload_by_payload_copies(monkeypatch, max_size) -> None:
    packed = GridArchive([12, 9], RANGES, max_size=max_size)
    for genomes, objectives, descriptors in mixed_batches(3):
        packed.add(genomes, objectives, descriptors)
    assert packed._store._packs, "the flat batches were packed"
    loose_only(monkeypatch)
    reference = GridArchive([12, 9], RANGES, max_size=max_size)
    for genomes, objectives, descriptors in mixed_batches(3):
        reference.add(genomes, objectives, descriptors)
    assert not reference._store._packs
    assert torch.equal(packed._state, reference._state)
    mine, theirs = list(packed), list(reference)
    assert [e.cell for e in mine] == [e.cell for e in theirs]
    for a, b in zip(mine, theirs):
        assert list(a.genome) == list(b.genome)  # the same keys in the same order
        for key, value in b.genome.items():
            if isinstance(value, torch.Tensor):
                assert a.genome[key].dtype == value.dtype and torch.equal(a.genome[key], value)
            else:
                assert a.genome[key] == value
    assert packed._store.payloads.keys() == reference._store.payloads.keys()


def test_packed_payloads_are_copies_the_caller_cannot_edit() -> None:
    archive = GridArchive([5, 4], RANGES)
    rows = torch.zeros(2, 3)
    archive.add([{"w": r} for r in rows], torch.tensor([1.0, 2.0]), RANGE_POINTS)
    assert archive._store._packs
    rows.add_(7.0)
    for elite in archive:
        assert elite.genome["w"].tolist() == [0.0, 0.0, 0.0]
    elite = next(iter(archive))
    elite.genome["w"].add_(1.0)  # a read copy: the archive keeps its own
    assert next(iter(archive)).genome["w"].tolist() == [0.0, 0.0, 0.0]


RANGE_POINTS = torch.tensor([[-0.9, 0.1], [0.9, 1.9]])


def test_packed_rows_are_reused_when_elites_are_replaced() -> None:
    archive = GridArchive([5, 4], RANGES)
    for round_ in range(20):
        genomes = [{"w": torch.full((4,), float(round_))} for _ in range(2)]
        archive.add(genomes, torch.tensor([1.0, 2.0]) + round_, RANGE_POINTS)
    (pack,) = archive._store._packs
    assert pack.buffers["w"].shape[0] <= 16  # two live rows; replaced rows are freed
    assert [e.genome["w"].tolist() for e in archive] == [[19.0] * 4] * 2


def test_packed_archive_round_trips(tmp_path) -> None:
    archive = GridArchive([12, 9], RANGES, max_size=20)
    for genomes, objectives, descriptors in mixed_batches(5):
        archive.add(genomes, objectives, descriptors)
    archive.save(tmp_path / "a")
    loaded = Archive.load(tmp_path / "a")
    assert torch.equal(loaded._state, archive._state)
    for a, b in zip(loaded, archive):
        assert a.genome.keys() == b.genome.keys()
        assert torch.equal(a.genome["x"], b.genome["x"])
    solutions, objectives, descriptors = next(stream(11))
    result = loaded.add([{"x": r} for r in solutions], objectives + 5, descriptors)
    assert bool((result.status > 0).any()) and len(loaded) <= 20  # it still takes batches


def test_a_bad_landing_payload_in_a_flat_looking_batch_raises_and_changes_nothing() -> None:
    archive = GridArchive([5, 4], RANGES)
    archive.add([{"w": torch.ones(2)}], torch.tensor([0.0]), RANGE_POINTS[:1])
    state, before = archive._state.clone(), archive._store.payloads
    genomes = [{"w": torch.ones(2)}, {"w": object()}]
    with pytest.raises(ArchiveError, match=r"genomes\[1\]\['w'\] is a object"):
        archive.add(genomes, torch.tensor([1.0, 2.0]), RANGE_POINTS)
    assert torch.equal(archive._state, state)
    after = archive._store.payloads
    assert after.keys() == before.keys()
    assert all(torch.equal(after[c]["w"], before[c]["w"]) for c in after)
