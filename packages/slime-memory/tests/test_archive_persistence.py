"""Save/load: safetensors + JSON, exact round-trip, typed errors for damaged files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from slime.memory import Archive, CVTArchive, GridArchive
from slime.memory._persist import META, TENSORS
from slime.proto import ArchiveError, ConfigError
from slime.proto.testing import payloads_equal


def populated_grid() -> GridArchive:
    archive = GridArchive(
        [3, 3], [(0.0, 1.0), (-1.0, 1.0)], qd_offset=-1.5, learning_rate=0.5, threshold_min=0.0
    )
    genomes = [
        {
            "w": torch.randn(2, 3, generator=torch.Generator().manual_seed(i)),
            "steps": torch.tensor([i], dtype=torch.int64),
            "meta": {"name": f"pod{i}", "shape": (2, 3), "tags": [True, None, 1.5, math.nan]},
        }
        for i in range(5)
    ]
    descriptors = torch.tensor([[0.1, -0.9], [0.5, 0.0], [0.9, 0.9], [0.5, 0.1], [0.2, 0.8]])
    archive.add(genomes, torch.tensor([1.0, 2.0, 3.0, 2.5, 0.25]), descriptors)
    return archive


def assert_same_archive(a: Archive, b: Archive) -> None:
    assert type(a) is type(b)
    assert (a.cells, a.ranges, a.qd_offset, a.learning_rate, a.threshold_min, a.max_size) == (
        b.cells,
        b.ranges,
        b.qd_offset,
        b.learning_rate,
        b.threshold_min,
        b.max_size,
    )
    left, right = list(a), list(b)
    assert [e.cell for e in left] == [e.cell for e in right]
    for x, y in zip(left, right):
        assert x.objective == y.objective
        assert torch.equal(x.descriptor, y.descriptor)
        assert payloads_equal(x.genome, y.genome)
    assert a.stats == b.stats


def test_grid_round_trips_exactly(tmp_path: Path) -> None:
    archive = populated_grid()
    archive.save(tmp_path / "a")
    loaded = GridArchive.load(tmp_path / "a")
    assert_same_archive(archive, loaded)


def test_round_trip_preserves_thresholds_for_further_adds(tmp_path: Path) -> None:
    archive = populated_grid()
    archive.save(tmp_path / "a")
    loaded = Archive.load(tmp_path / "a")
    batch = ([{"x": torch.ones(1)}] * 2, torch.tensor([2.2, 0.3]), torch.tensor([[0.5, 0.0]] * 2))
    expected, got = archive.add(*batch), loaded.add(*batch)
    assert torch.equal(expected.status, got.status) and torch.equal(expected.value, got.value)


def test_cvt_round_trips_with_its_centroids(tmp_path: Path) -> None:
    archive = CVTArchive(6, [(0.0, 1.0), (0.0, 1.0)], samples=200, seed=3)
    archive.add([{"x": torch.arange(3)}] * 3, torch.ones(3), torch.rand(3, 2))
    archive.save(tmp_path / "c")
    loaded = CVTArchive.load(tmp_path / "c")
    assert torch.equal(loaded.centroids, archive.centroids)
    assert_same_archive(archive, loaded)


def test_empty_archive_round_trips(tmp_path: Path) -> None:
    archive = GridArchive([2], [(0.0, 1.0)])
    archive.save(tmp_path / "e")
    assert len(GridArchive.load(tmp_path / "e")) == 0


def test_no_pickle_is_written(tmp_path: Path) -> None:
    populated_grid().save(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted([META, TENSORS])
    json.loads((tmp_path / "a" / META).read_text())


def test_truncated_tensor_file_raises(tmp_path: Path) -> None:
    populated_grid().save(tmp_path / "a")
    blob = (tmp_path / "a" / TENSORS).read_bytes()
    (tmp_path / "a" / TENSORS).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ArchiveError, match="truncated or modified"):
        GridArchive.load(tmp_path / "a")


def test_tampered_tensor_file_raises(tmp_path: Path) -> None:
    populated_grid().save(tmp_path / "a")
    blob = bytearray((tmp_path / "a" / TENSORS).read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / "a" / TENSORS).write_bytes(bytes(blob))
    with pytest.raises(ArchiveError, match="sha256"):
        GridArchive.load(tmp_path / "a")


def test_tampered_metadata_raises(tmp_path: Path) -> None:
    populated_grid().save(tmp_path / "a")
    path = tmp_path / "a" / META
    document = json.loads(path.read_text())
    document["meta"]["config"]["qd_offset"] = {"plain": 99.0}
    path.write_text(json.dumps(document))
    with pytest.raises(ArchiveError, match="metadata sha256"):
        GridArchive.load(tmp_path / "a")


def test_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="archive folder .*nothing does not exist"):
        GridArchive.load(tmp_path / "nothing")


@pytest.mark.parametrize(
    ("name", "damage", "says"),
    [
        (META, lambda b: b[: len(b) // 2], "not readable JSON"),
        (META, lambda b: b[:10] + b"\xff\xfe" + b[12:], "not readable JSON"),
        (META, lambda b: b"", "not readable JSON"),
        (META, None, "is missing"),
        (TENSORS, None, "is missing"),
    ],
)
def test_a_damaged_or_missing_file_is_named(tmp_path: Path, name, damage, says) -> None:
    populated_grid().save(tmp_path / "a")
    path = tmp_path / "a" / name
    if damage is None:
        path.unlink()
    else:
        path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ArchiveError, match=says) as info:
        GridArchive.load(tmp_path / "a")
    assert str(path) in str(info.value)


def test_loading_as_the_wrong_kind_raises(tmp_path: Path) -> None:
    populated_grid().save(tmp_path / "a")
    with pytest.raises(ArchiveError, match="'GridArchive' archive, not a CVTArchive"):
        CVTArchive.load(tmp_path / "a")


def _forge(path: Path, edit_meta=None, edit_tensors=None) -> None:
    """Change a saved archive and recompute both checksums, as a deliberate forger would."""
    import hashlib

    from safetensors.torch import load, save

    document = json.loads((path / META).read_text())
    meta = document["meta"]
    if edit_tensors is not None:
        tensors = load((path / TENSORS).read_bytes())
        edit_tensors(tensors)
        blob = save(tensors)
        (path / TENSORS).write_bytes(blob)
        meta["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
    if edit_meta is not None:
        edit_meta(meta)
    canonical = json.dumps(meta, sort_keys=True, allow_nan=False).encode()
    document["meta_sha256"] = hashlib.sha256(canonical).hexdigest()
    (path / META).write_text(json.dumps(document))


def _nan_objective(tensors: dict) -> None:
    objective = tensors["archive/objective"]
    objective[tensors["archive/occupied"].bool().nonzero()[0]] = math.nan


def _bad_occupied(tensors: dict) -> None:
    tensors["archive/occupied"] = tensors["archive/occupied"].to(torch.float64) * 3


@pytest.mark.parametrize(
    ("edit_meta", "edit_tensors"),
    [
        (lambda m: m.pop("kind"), None),
        (lambda m: m.pop("tensors_sha256"), None),
        (lambda m: m.update(config=[]), None),
        (lambda m: m["config"].update(cells={"plain": "many"}), None),
        (lambda m: m["config"].pop("ranges"), None),
        (lambda m: m["config"].update(bogus={"plain": 1}), None),
        (None, _nan_objective),
        (None, _bad_occupied),
    ],
    ids=["no-kind", "no-digest", "config-list", "bad-cells", "no-ranges", "unknown-key",
         "nan-objective", "occupied-3"],
)  # fmt: skip
def test_a_forged_archive_is_refused_with_an_archive_error(tmp_path, edit_meta, edit_tensors):
    populated_grid().save(tmp_path / "a")
    _forge(tmp_path / "a", edit_meta, edit_tensors)
    with pytest.raises(ArchiveError):
        GridArchive.load(tmp_path / "a")


def _threshold(value: float):
    def edit(tensors: dict) -> None:
        tensors["archive/threshold"][4] = value

    return edit


def _move_an_elite(tensors: dict) -> None:
    # cell 0 of the 3 x 3 grid holds the elite at (0.1, -0.9); put it in cell 8's corner
    tensors["archive/descriptors"][0] = torch.tensor([0.9, 0.9])


@pytest.mark.parametrize(
    ("edit_meta", "edit_tensors", "says"),
    [
        (lambda m: m["config"].update(dims={"list": [{"plain": 10**6}] * 2}), None,
         f"asks for {10**12} cells, above the limit MAX_ARCHIVE_CELLS"),
        (lambda m: m["config"].update(dims={"list": [{"plain": 300}] * 2}), None,
         "asks for 90000 cells, the stored state holds 9"),
        (None, _threshold(math.inf), "cell 4 has threshold inf"),
        (None, _threshold(math.nan), "cell 4 has threshold nan"),
        (None, _move_an_elite, "the elite in cell 0 has a descriptor of cell 8"),
    ],
    ids=["huge-dims", "dims-disagree", "threshold-inf", "threshold-nan", "elite-elsewhere"],
)  # fmt: skip
def test_a_forged_configuration_or_state_is_refused_before_it_is_built(
    tmp_path, edit_meta, edit_tensors, says
) -> None:
    # 10**12 cells were allocated before the shapes were compared (MemoryError); 90000 were
    # built and then refused; an inf threshold and an elite outside its cell loaded as if sound.
    populated_grid().save(tmp_path / "a")
    _forge(tmp_path / "a", edit_meta, edit_tensors)
    with pytest.raises(ArchiveError, match=says):
        GridArchive.load(tmp_path / "a")


def test_a_forged_cvt_cell_count_is_refused(tmp_path) -> None:
    archive = CVTArchive(4, [(0.0, 1.0)], samples=8)
    archive.save(tmp_path / "a")
    _forge(tmp_path / "a", lambda m: m["config"].update(cells={"plain": 5}))
    with pytest.raises(ArchiveError, match="asks for 5 cells, the stored state holds 4"):
        CVTArchive.load(tmp_path / "a")


def test_a_cvt_elite_on_a_tie_between_centroids_counts_as_in_either_cell() -> None:
    # The k-d tree, cdist and the column sums may break a tie differently: an archive saved on
    # one device must load on another, so load's check accepts either side of a tie.
    archive = CVTArchive(
        2, [(-1.0, 2.0), (-1.0, 1.0)], centroids=torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    )
    points = torch.tensor([[0.5, 0.0], [0.5, 0.0], [0.2, 0.0], [0.9, 0.3]], dtype=torch.float64)
    cells = torch.tensor([0, 1, 1, 0])
    assert archive._in_own_cells(points, cells).tolist() == [True, True, False, False]


def test_a_forged_cvt_without_centroids_cannot_ask_k_means_for_a_huge_sample(tmp_path) -> None:
    # With its centroids removed, load rebuilt them by k-means over the saved sample count:
    # samples=10**12 raised numpy's MemoryError (7 TiB), not an ArchiveError.
    CVTArchive(4, [(0.0, 1.0)], samples=8).save(tmp_path / "a")

    def drop_centroids(meta: dict) -> None:
        meta["config_tensors"] = []
        meta["config"]["samples"] = {"plain": 10**12}

    _forge(tmp_path / "a", drop_centroids, lambda tensors: tensors.pop("archive/centroids"))
    with pytest.raises(ArchiveError, match="samples 1000000000000 is above the limit"):
        CVTArchive.load(tmp_path / "a")


@pytest.mark.parametrize("path", [None, 3, b"/tmp/a"], ids=["none", "int", "bytes"])
def test_load_of_a_path_that_is_no_path_raises_archive_error(path) -> None:
    # Path(None) and Path(3) raised TypeError from pathlib; save already refused them.
    with pytest.raises(ArchiveError, match="load needs a folder path"):
        GridArchive.load(path)


def test_load_of_a_file_says_it_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ArchiveError, match="archive folder .*f is a file, not a folder"):
        GridArchive.load(tmp_path / "f")


@pytest.mark.parametrize(
    ("device", "says"),
    [
        ("gpu", "device 'gpu' is not a torch device"),
        (1.5, "device must be a torch.device"),
        ("cuda:1000", "device 'cuda:1000' is not usable here"),
    ],
    ids=["unknown", "float", "unusable"],
)
def test_load_onto_a_bad_device_raises_config_error_naming_it(tmp_path: Path, device, says) -> None:
    # torch.device(device) inside the loader raised RuntimeError or TypeError.
    populated_grid().save(tmp_path / "a")
    with pytest.raises(ConfigError, match=f"GridArchive.load.device: {says}"):
        GridArchive.load(tmp_path / "a", device=device)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        (META, b"my own notes, not an archive"),
        (META, b'{"meta": {"format": "someone-else/2"}}'),
        (TENSORS, b"\x00" * 64),
    ],
    ids=["json-text", "other-format", "other-tensors"],
)
def test_save_never_replaces_a_file_of_that_name_that_is_not_an_archive(
    tmp_path: Path, name: str, content: bytes
) -> None:
    # save() wrote into any existing folder and replaced whatever archive.json or
    # tensors.safetensors it held: a user's own file of that name was destroyed.
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / name).write_bytes(content)
    with pytest.raises(ArchiveError, match=f"its {name} is not a slime archive's"):
        populated_grid().save(folder)
    assert (folder / name).read_bytes() == content
    assert sorted(p.name for p in folder.iterdir()) == [name]


def _special(path: Path, kind: str) -> None:
    """Make ``path`` a link to /dev/zero or a FIFO (what no read of it ever finishes)."""
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        os.mkfifo(path)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
@pytest.mark.parametrize("name", [META, TENSORS])
def test_a_file_that_is_no_regular_file_is_named_by_load_and_kept_by_save(
    tmp_path: Path, name: str, kind: str
) -> None:
    # save() read an archive.json that was a link to /dev/zero until memory ran out, and
    # opened a tensors.safetensors FIFO, which blocks for ever; load() called either missing
    populated_grid().save(tmp_path / "a")
    (tmp_path / "a" / name).unlink()
    _special(tmp_path / "a" / name, kind)
    with pytest.raises(ArchiveError, match=f"{name} is no regular file"):
        GridArchive.load(tmp_path / "a")
    folder = tmp_path / "mine"
    folder.mkdir()
    _special(folder / name, kind)
    with pytest.raises(ArchiveError, match=f"its {name} is not a slime archive's"):
        populated_grid().save(folder)
    assert sorted(p.name for p in folder.iterdir()) == [name]


def test_save_still_replaces_an_archive_and_a_lone_archive_tensor_file(tmp_path: Path) -> None:
    first, second = GridArchive([2], [(0.0, 1.0)]), populated_grid()
    first.save(tmp_path / "a")
    second.save(tmp_path / "a")  # over a previous save
    assert len(GridArchive.load(tmp_path / "a")) == len(second)
    (tmp_path / "a" / META).unlink()  # as a save stopped between its two renames leaves it
    second.save(tmp_path / "a")
    assert len(GridArchive.load(tmp_path / "a")) == len(second)


@pytest.mark.parametrize("verb", ["save", "load"])
def test_an_empty_path_is_refused_not_read_as_the_current_folder(
    tmp_path: Path, monkeypatch, verb: str
) -> None:
    # Path("") is Path("."): save("") wrote the archive's files into the working directory
    # and load("") read from it.
    monkeypatch.chdir(tmp_path)
    populated_grid().save(tmp_path / "a")
    monkeypatch.chdir(tmp_path / "a")
    with pytest.raises(ArchiveError, match=f"{verb} needs a folder path, got the empty string"):
        if verb == "save":
            populated_grid().save("")
        else:
            GridArchive.load("")


def test_a_saved_max_size_below_the_stored_elites_is_refused(tmp_path: Path) -> None:
    # max_size was not checked against the stored elites: the archive loaded holding more
    # elites than its cap, and its next add silently evicted all but max_size of them.
    archive = populated_grid()
    assert len(archive) >= 2
    archive.save(tmp_path / "a")
    _forge(tmp_path / "a", lambda m: m["config"].update(max_size={"plain": 1}))
    with pytest.raises(
        ArchiveError, match=f"{len(archive)} cells hold an elite, above the saved max_size 1"
    ):
        GridArchive.load(tmp_path / "a")
