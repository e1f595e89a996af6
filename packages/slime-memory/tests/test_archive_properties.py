"""Archive invariants that hold for every stream of batches (hypothesis)."""

from __future__ import annotations

import hypothesis.strategies as st
import torch
from hypothesis import given, settings
from slime.memory import GridArchive

DIMS = [3, 2]
RANGES = [(0.0, 1.0), (0.0, 1.0)]

batches = st.lists(
    st.lists(
        st.tuples(
            st.integers(-4, 4).map(float),  # few values: ties are common
            st.floats(-0.2, 1.2, allow_nan=False),
            st.floats(-0.2, 1.2, allow_nan=False),
        ),
        min_size=1,
        max_size=12,
    ),
    min_size=1,
    max_size=5,
)


def run(archive: GridArchive, stream: list[list[tuple[float, float, float]]]):
    """Feed ``stream``; genomes carry their global item number. Returns (cell, objective, id)."""
    items = []
    for batch in stream:
        start = len(items)
        objectives = torch.tensor([o for o, _, _ in batch], dtype=torch.float64)
        descriptors = torch.tensor([[x, y] for _, x, y in batch], dtype=torch.float64)
        cells = archive.cell_index(descriptors).tolist()
        genomes = [{"id": start + i} for i in range(len(batch))]
        archive.add(genomes, objectives, descriptors)
        items.extend((c, o, start + i) for i, (c, (o, _, _)) in enumerate(zip(cells, batch)))
    return items


@settings(max_examples=60, deadline=None)
@given(stream=batches)
def test_add_never_loses_a_better_elite(stream) -> None:
    archive = GridArchive(DIMS, RANGES)
    items = run(archive, stream)
    best: dict[int, tuple[float, int]] = {}
    for cell, objective, item in items:  # strictly better replaces: ties keep the first seen
        if cell not in best or objective > best[cell][0]:
            best[cell] = (objective, item)
    assert {e.cell: (e.objective, e.genome["id"]) for e in archive} == best


@settings(max_examples=60, deadline=None)
@given(stream=batches, offset=st.integers(-5, 5).map(float))
def test_stats_are_consistent_with_contents(stream, offset) -> None:
    archive = GridArchive(DIMS, RANGES, qd_offset=offset)
    run(archive, stream)
    elites = list(archive)
    objectives = [e.objective for e in elites]
    stats = archive.stats
    assert stats.num_elites == len(archive) == len(elites)
    assert stats.coverage == len(elites) / archive.cells
    assert stats.qd_score == sum(o - offset for o in objectives)
    assert stats.obj_max == max(objectives)
    assert stats.obj_mean == sum(objectives) / len(objectives)


@settings(max_examples=60, deadline=None)
@given(stream=batches, max_size=st.integers(1, 5))
def test_size_never_exceeds_max_size(stream, max_size) -> None:
    archive = GridArchive(DIMS, RANGES, max_size=max_size)
    for prefix in range(1, len(stream) + 1):
        run(archive, stream[prefix - 1 : prefix])
        assert len(archive) <= max_size
        assert len(list(archive)) == len(archive)


@settings(max_examples=40, deadline=None)
@given(stream=batches, max_size=st.integers(1, 5))
def test_a_full_archive_keeps_a_newcomer_only_if_it_beat_the_worst(stream, max_size) -> None:
    archive = GridArchive(DIMS, RANGES, max_size=max_size)
    run(archive, stream[:-1])
    before = {e.cell: e.objective for e in archive}
    run(archive, stream[-1:])
    newcomers = [e for e in archive if e.cell not in before]
    if len(before) == max_size and newcomers:
        assert min(e.objective for e in newcomers) > min(before.values())


@settings(max_examples=40, deadline=None)
@given(stream=batches, max_size=st.integers(1, 7))
def test_payload_and_column_forms_give_the_same_archive(stream, max_size) -> None:
    payloads = GridArchive(DIMS, RANGES, max_size=max_size)
    columns = GridArchive(DIMS, RANGES, max_size=max_size)
    start = 0
    for batch in stream:
        objectives = torch.tensor([o for o, _, _ in batch], dtype=torch.float64)
        descriptors = torch.tensor([[x, y] for _, x, y in batch], dtype=torch.float64)
        ids = torch.arange(start, start + len(batch))
        a = payloads.add([{"id": i} for i in ids], objectives, descriptors)
        b = columns.add({"id": ids}, objectives, descriptors)
        assert torch.equal(a.status, b.status) and torch.equal(a.value, b.value)
        start += len(batch)
    left, right = list(payloads), list(columns)
    assert [(e.cell, e.objective, int(e.genome["id"])) for e in left] == [
        (e.cell, e.objective, int(e.genome["id"])) for e in right
    ]
