"""Bulk copies of flat payloads that are not packed (``_stores._copy_flat``).

Payload-by-payload copies (``copy_payload``, both fast paths switched off) are the reference:
the same genomes land, with the same values, dtypes and shapes, and a bad landing payload
raises the same ArchiveError, naming the same value.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from slime.memory import GridArchive, _stores
from slime.proto import ArchiveError

RANGES = [(-1.0, 1.0), (0.0, 2.0)]


def _batch(seed: int, n: int = 30):
    rng = np.random.default_rng(seed)
    objectives = torch.from_numpy(rng.normal(size=n))
    descriptors = torch.from_numpy(rng.uniform([-1.2, -0.2], [1.2, 2.2], size=(n, 2)))
    return objectives, descriptors


def _streams(seed: int):
    """Batches of flat payloads ``_stack_flat`` leaves out: large ones (above
    PACK_MAX_BYTES), one shape per item, mixed dtypes, tensors that require grad, and two keys
    in the same order."""
    rng = np.random.default_rng(seed)
    for kind in range(5):
        objectives, descriptors = _batch(seed * 10 + kind)
        n = objectives.shape[0]
        if kind == 0:
            genomes = [{"w": torch.from_numpy(rng.normal(size=300))} for _ in range(n)]
        elif kind == 1:
            genomes = [{"w": torch.ones(1 + i % 4)} for i in range(n)]
        elif kind == 2:
            dtypes = [torch.float64, torch.float32, torch.int64]
            genomes = [{"w": torch.ones(3, dtype=dtypes[i % 3])} for i in range(n)]
        elif kind == 3:
            weights = torch.ones(n, 200, requires_grad=True)
            genomes = [{"w": row * 2.0} for row in weights]
        else:
            genomes = [
                {"a": torch.full((200,), float(i)), "b": torch.tensor([i, i])} for i in range(n)
            ]
        yield genomes, objectives, descriptors


def _fill(archive: GridArchive, seed: int) -> None:
    for genomes, objectives, descriptors in _streams(seed):
        archive.add(genomes, objectives, descriptors)


def _genomes(archive: GridArchive) -> list:
    return [(e.cell, e.genome) for e in archive]


@pytest.mark.parametrize("host", [True, False])
def test_bulk_copies_equal_payload_by_payload_copies(monkeypatch, host) -> None:
    calls = []
    copy_flat = _stores._copy_flat
    monkeypatch.setattr(_stores, "_copy_flat", lambda p: calls.append(1) or copy_flat(p))
    bulk = GridArchive([12, 9], RANGES)
    bulk._host = host
    _fill(bulk, 3)
    assert calls, "the batches went through the bulk copy"
    monkeypatch.setattr(_stores, "_copy_flat", lambda payloads: None)
    monkeypatch.setattr(_stores, "_stack_flat", lambda payloads: None)
    reference = GridArchive([12, 9], RANGES)
    reference._host = host
    _fill(reference, 3)
    assert torch.equal(bulk._state, reference._state)
    mine, theirs = _genomes(bulk), _genomes(reference)
    assert [cell for cell, _ in mine] == [cell for cell, _ in theirs]
    for (_, a), (_, b) in zip(mine, theirs):
        assert list(a) == list(b)
        for key, value in b.items():
            assert a[key].dtype == value.dtype and a[key].shape == value.shape
            assert torch.equal(a[key], value)
            assert not a[key].requires_grad


def test_bulk_copies_are_copies() -> None:
    archive = GridArchive([5, 4], RANGES)
    weights = torch.zeros(2, 300, requires_grad=True)
    genomes = [{"w": row} for row in weights.unbind(0)]
    archive.add(genomes, torch.tensor([1.0, 2.0]), torch.tensor([[-0.9, 0.1], [0.9, 1.9]]))
    assert not archive._store._packs, "large payloads stay loose"
    with torch.no_grad():
        weights.add_(5.0)
    genomes[0]["w"] = torch.full((300,), 9.0)
    elites = list(archive)
    assert all(torch.equal(e.genome["w"], torch.zeros(300)) for e in elites)
    assert not any(e.genome["w"].requires_grad for e in elites)


BAD = {
    "sparse tensor": {"w": torch.ones(300).to_sparse()},
    "meta tensor": {"w": torch.ones(300, device="meta")},
    "numpy array": {"w": np.ones(300)},
    "non-str key": {1: torch.ones(300)},
    "nested dict": {"w": {"x": object()}},
    "not a dict": [torch.ones(300)],
    "tensor subclass": {"w": torch.nn.Parameter(torch.ones(300))},
}


@pytest.mark.parametrize("bad", list(BAD), ids=list(BAD))
def test_a_bad_landing_payload_raises_what_payload_by_payload_copies_raise(
    monkeypatch, bad
) -> None:
    objectives = torch.tensor([1.0, 2.0, 3.0, 4.0])
    descriptors = torch.tensor([[-0.9, 0.1], [0.9, 1.9], [-0.9, 1.9], [0.9, 0.1]])

    def genomes():
        batch = [{"w": torch.full((300,), float(i))} for i in range(4)]
        batch[2] = BAD[bad]
        return batch

    def outcome(archive: GridArchive):
        try:
            archive.add(genomes(), objectives, descriptors)
        except ArchiveError as error:
            return str(error)
        return _genomes(archive)

    fast = GridArchive([5, 4], RANGES)
    got = outcome(fast)
    monkeypatch.setattr(_stores, "_copy_flat", lambda payloads: None)
    monkeypatch.setattr(_stores, "_stack_flat", lambda payloads: None)
    reference = GridArchive([5, 4], RANGES)
    expected = outcome(reference)
    if bad == "tensor subclass":  # a Parameter is a tensor: copied, as a plain one
        assert isinstance(got, list) and isinstance(expected, list)
        assert [c for c, _ in got] == [c for c, _ in expected]
        assert all(type(g["w"]) is torch.Tensor for _, g in got)
        return
    assert isinstance(got, str), "the bad payload raised"
    assert got == expected
    assert "genomes[2]" in got
    assert len(fast) == 0, "the archive is unchanged"


def test_a_bad_payload_that_does_not_land_is_not_read() -> None:
    archive = GridArchive([5, 4], RANGES)
    point = torch.tensor([[0.5, 1.0], [0.5, 1.0]])
    genomes = [{"w": torch.ones(300)}, {"w": np.ones(300)}]  # the second loses its cell
    archive.add(genomes, torch.tensor([2.0, 1.0]), point)
    (elite,) = list(archive)
    assert torch.equal(elite.genome["w"], torch.ones(300))
