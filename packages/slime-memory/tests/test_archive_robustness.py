"""Bad inputs found by fuzzing the archive: each raises one typed error naming the value and
leaves the archive (and its saved files) exactly as they were."""

from __future__ import annotations

import pytest
import torch
from slime.memory import CVTArchive, GridArchive, TubeNetwork
from slime.proto import ArchiveError, ConfigError
from slime.proto.testing import payloads_equal


def two_cells() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([1.0, 1.0]), torch.tensor([[0.1, 0.1], [0.9, 0.9]])


def snapshot(archive: GridArchive) -> list:
    return [(e.cell, e.objective, e.descriptor, e.genome) for e in archive]


def assert_unchanged(before: list, archive: GridArchive) -> None:
    after = snapshot(archive)
    assert [a[:2] for a in after] == [b[:2] for b in before]
    for a, b in zip(after, before):
        assert torch.equal(a[2], b[2]) and payloads_equal(a[3], b[3])


def test_a_sparse_column_after_dense_ones_raises_and_writes_no_column() -> None:
    # The layout check passed (same dtype and shape), and the sparse column failed inside
    # index_copy_ after the first column's rows were already written over the elites' genomes.
    archive = GridArchive([4, 4], [(0.0, 1.0), (0.0, 1.0)])
    objectives, descriptors = two_cells()
    archive.add({"a": torch.zeros(2, 3), "b": torch.zeros(2, 3)}, objectives, descriptors)
    before = snapshot(archive)
    bad = {"a": torch.ones(2, 3), "b": torch.ones(2, 3).to_sparse()}
    with pytest.raises(ArchiveError, match="genome column 'b' is a tensor .*sparse"):
        archive.add(bad, objectives + 1, descriptors)
    assert_unchanged(before, archive)


@pytest.mark.parametrize(
    "tensor",
    [torch.ones(2, 2).to_sparse(), torch.ones(2, device="meta")],
    ids=["sparse", "meta"],
)
def test_a_payload_tensor_the_archive_cannot_save_is_refused_when_it_lands(tensor, tmp_path):
    # Such a payload used to land, and then the archive could never be saved (or read back).
    archive = GridArchive([4], [(0.0, 1.0)])
    with pytest.raises(ArchiveError, match=r"genomes\[0\]\['x'\] is a tensor"):
        archive.add([{"x": tensor}], torch.ones(1), torch.tensor([[0.5]]))
    assert len(archive) == 0 and archive.genome_form is None
    archive.save(tmp_path / "a")


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.uint16])
def test_payloads_of_a_dtype_no_buffer_takes_are_kept_unpacked(dtype, tmp_path) -> None:
    # Packing them failed inside index_copy_ after the store's bookkeeping had moved the cells
    # to the new pack: the archive lost the genomes it held.
    archive = GridArchive([4], [(0.0, 1.0)])
    archive.add([{"x": torch.zeros(2)}], torch.ones(1), torch.tensor([[0.5]]))
    genome = {"x": torch.ones(2).to(dtype)}
    result = archive.add([genome], torch.full((1,), 2.0), torch.tensor([[0.5]]))
    assert result.status.tolist() == [1]
    (elite,) = archive
    assert elite.genome["x"].dtype == dtype and payloads_equal(elite.genome, genome)
    archive.save(tmp_path / "a")
    (loaded,) = GridArchive.load(tmp_path / "a")
    assert payloads_equal(loaded.genome, genome)


@pytest.mark.parametrize(
    ("column", "says"),
    [
        (torch.ones(1, 2, device="meta"), "meta"),
        (torch.ones(1, 2).to(torch.float8_e4m3fn), "float8_e4m3fn"),
    ],
)
def test_a_column_no_buffer_can_take_raises_naming_it(column, says) -> None:
    archive = GridArchive([4], [(0.0, 1.0)])
    with pytest.raises(ArchiveError, match=f"genome column 'x' .*{says}"):
        archive.add({"x": column}, torch.ones(1), torch.tensor([[0.5]]))
    assert archive.genome_form is None


def test_a_save_that_fails_midway_leaves_the_previous_files_whole(tmp_path, monkeypatch) -> None:
    # The tensor file used to be overwritten in place before the metadata was written: a save
    # failing between the two (here a full disk, the file-size limit) left a pair that no
    # longer matched, and the archive saved before could not be loaded any more.
    resource = pytest.importorskip("resource")
    signal = pytest.importorskip("signal")
    old = GridArchive([4], [(0.0, 1.0)])
    old.add([{"x": torch.ones(2)}], torch.ones(1), torch.tensor([[0.5]]))
    old.save(tmp_path / "a")
    new = GridArchive([4], [(0.0, 1.0)])
    new.add([{"x": torch.zeros(2), "notes": "n" * 200_000}], torch.ones(1), torch.tensor([[0.1]]))
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, limits[1]))
    try:
        # the tensors fit under the limit, the metadata does not
        with pytest.raises(ArchiveError, match=r"File too large \(EFBIG\); the files it held"):
            new.save(tmp_path / "a")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert_saved_files_are(tmp_path / "a", old)


def assert_saved_files_are(folder, archive: GridArchive) -> None:
    """``folder`` holds exactly ``archive``'s two files (no temporary left behind)."""
    assert_unchanged(snapshot(archive), GridArchive.load(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["archive.json", "tensors.safetensors"]


def saved_pair(tmp_path) -> tuple[GridArchive, GridArchive]:
    """An archive saved to ``tmp_path / "a"`` and a different one to save over it."""
    old = GridArchive([4], [(0.0, 1.0)])
    old.add([{"x": torch.ones(2)}], torch.ones(1), torch.tensor([[0.5]]))
    old.save(tmp_path / "a")
    new = GridArchive([4], [(0.0, 1.0)])
    new.add([{"x": torch.zeros(2)}], torch.ones(1), torch.tensor([[0.1]]))
    return old, new


def expect_os_reason(failure: pytest.ExceptionInfo, folder, code: int) -> None:
    """The ArchiveError names the folder and the OS's reason, chained from the OSError."""
    import errno
    import os

    message = str(failure.value)
    assert str(folder) in message
    assert f"{os.strerror(code)} ({errno.errorcode[code]})" in message
    assert isinstance(failure.value.__cause__, OSError)
    assert failure.value.__cause__.errno == code


@pytest.mark.parametrize("failing", [0, 1], ids=["tensors", "metadata"])
def test_a_full_disk_midway_through_a_write_is_an_archive_error_and_loses_nothing(
    tmp_path, monkeypatch, failing
) -> None:
    # The OSError escaped raw (a caller catching SlimeError missed it). Here the disk fills
    # half way through writing the tensor file or the metadata file.
    import errno
    import os

    old, new = saved_pair(tmp_path)
    real_fdopen, opened = os.fdopen, []

    class HalfWritten:
        def __init__(self, file) -> None:
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.file.close()

        def write(self, data: bytes) -> None:
            self.file.write(data[: len(data) // 2])
            self.file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fdopen(fd, *args, **kwargs):
        file = real_fdopen(fd, *args, **kwargs)
        opened.append(fd)
        return HalfWritten(file) if len(opened) == failing + 1 else file

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(ArchiveError, match="cannot save an archive to") as failure:
        new.save(tmp_path / "a")
    monkeypatch.undo()
    assert len(opened) == failing + 1
    expect_os_reason(failure, tmp_path / "a", errno.ENOSPC)
    assert_saved_files_are(tmp_path / "a", old)


@pytest.mark.parametrize("failing", ["tensors.safetensors", "archive.json"])
def test_a_rename_that_fails_after_the_first_puts_the_previous_files_back(
    tmp_path, monkeypatch, failing
) -> None:
    # The tensor file was renamed into place before the metadata: a failure of the second
    # rename left the new tensors beside the old metadata, a pair that no longer loads.
    import errno
    import os

    old, new = saved_pair(tmp_path)
    real_replace = os.replace

    def replace(source, target, *args, **kwargs):
        if str(source).endswith(".tmp") and os.path.basename(target) == failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(ArchiveError) as failure:
        new.save(tmp_path / "a")
    monkeypatch.undo()
    expect_os_reason(failure, tmp_path / "a", errno.EIO)
    assert_saved_files_are(tmp_path / "a", old)
    new.save(tmp_path / "a")  # and the next save goes through
    assert_saved_files_are(tmp_path / "a", new)


def test_a_read_only_file_system_is_an_archive_error_naming_the_folder(
    tmp_path, monkeypatch
) -> None:
    # EROFS (as a read-only mount gives even to root) escaped as a raw OSError.
    import errno
    import os

    old, new = saved_pair(tmp_path)
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(ArchiveError) as failure:
        new.save(tmp_path / "a")
    monkeypatch.undo()
    expect_os_reason(failure, tmp_path / "a", errno.EROFS)
    assert_saved_files_are(tmp_path / "a", old)


@pytest.mark.parametrize("target", ["a", "a/b"], ids=["existing folder", "new subfolder"])
def test_a_folder_without_write_permission_is_an_archive_error(tmp_path, target) -> None:
    import errno
    import os

    if not hasattr(os, "geteuid") or os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the EROFS test covers this path")
    old, new = saved_pair(tmp_path)
    (tmp_path / "a").chmod(0o555)
    try:
        with pytest.raises(ArchiveError) as failure:
            new.save(tmp_path / target)
    finally:
        (tmp_path / "a").chmod(0o755)
    expect_os_reason(failure, tmp_path / target, errno.EACCES)
    assert_saved_files_are(tmp_path / "a", old)


def test_concurrent_saves_to_one_folder_never_interleave(tmp_path) -> None:
    import threading

    archives = []
    for value in range(3):
        archive = GridArchive([4], [(0.0, 1.0)])
        archive.add({"x": torch.full((1, 256), float(value))}, torch.ones(1), torch.tensor([[0.5]]))
        archives.append(archive)
    archives[0].save(tmp_path / "a")
    failures: list[BaseException] = []

    def save_often(archive: GridArchive) -> None:
        try:
            for _ in range(15):
                archive.save(tmp_path / "a")
        except BaseException as e:  # reported below
            failures.append(e)

    threads = [threading.Thread(target=save_often, args=(a,)) for a in archives]
    for thread in threads:
        thread.start()
    seen = set()
    while any(t.is_alive() for t in threads):
        (elite,) = GridArchive.load(tmp_path / "a")  # a torn pair would raise ArchiveError
        seen.add(elite.genome["x"][0].item())
    for thread in threads:
        thread.join()
    assert not failures
    assert seen <= {0.0, 1.0, 2.0}


def test_payload_keys_with_a_slash_round_trip_beside_nested_keys(tmp_path) -> None:
    # {"a/b": ...} and {"a": {"b": ...}} were both written under the tensor key "genome/0/a/b":
    # the second overwrote the first, and both came back as the second.
    archive = GridArchive([4], [(0.0, 1.0)])
    genome = {"a/b": torch.tensor([1.0]), "a": {"b": torch.tensor([2.0])}}
    archive.add([genome], torch.ones(1), torch.tensor([[0.5]]))
    archive.save(tmp_path / "a")
    (elite,) = GridArchive.load(tmp_path / "a")
    assert payloads_equal(elite.genome, genome)


@pytest.mark.parametrize("make", [GridArchive, CVTArchive])
def test_a_range_whose_width_overflows_raises_a_config_error(make) -> None:
    # (-1e308, 1e308) passed the check (finite, low < high) but its width is inf: every
    # grid cell index became -2**63 and add crashed with an IndexError.
    ranges = [(0.0, 1.0), (-1e308, 1e308)]
    with pytest.raises(ConfigError, match=r"range 1 .*overflows"):
        if make is GridArchive:
            GridArchive([2, 2], ranges)
        else:
            CVTArchive(2, ranges, centroids=torch.zeros(2, 2))


@pytest.mark.parametrize("query", ["cell_index", "thresholds", "retrieve", "bootstrap"])
def test_complex_descriptors_raise_instead_of_losing_their_imaginary_part(query) -> None:
    archive = GridArchive([4, 4], [(0.0, 1.0), (0.0, 1.0)])
    archive.add({"x": torch.zeros(2, 1)}, *two_cells())
    point = torch.tensor([[0.1 + 0.8j, 0.1]])
    with pytest.raises(ArchiveError, match="real-valued, got dtype torch.complex64"):
        getattr(archive, query)(point[0] if query == "bootstrap" else point)


def test_complex_centroids_raise() -> None:
    with pytest.raises(ConfigError, match="centroids must be real"):
        CVTArchive(2, [(0.0, 1.0)], centroids=torch.tensor([[0.0], [1.0 + 1j]]))


def test_elites_and_points_far_outside_the_ranges_still_find_the_nearest() -> None:
    # Scaled distances over ~1e154 overflowed to inf: every elite was as far as any other, so
    # bootstrap took the lowest cell, not the nearest elite, and interpolate weighted by
    # 1 / inf = 0 and returned NaN genomes.
    archive = GridArchive([4, 4], [(0.0, 1.0), (0.0, 1.0)])
    genomes = {"x": torch.tensor([[1.0], [3.0]])}
    descriptors = torch.tensor([[-1e200, -1e200], [1e200, 1e200]], dtype=torch.float64)
    archive.add(genomes, torch.ones(2), descriptors)  # clipped into cells 0 and 15
    point = torch.tensor([3e200, 3e200], dtype=torch.float64)  # 2e200 and 4e200 (x sqrt 2) away
    assert archive.bootstrap(point)["x"].item() == 3.0
    blend = archive.interpolate(point, k_neighbors=2)["x"]
    assert blend.item() == pytest.approx((3.0 * 2 + 1.0) / 3)  # weights 1/2e200 and 1/4e200
    with pytest.raises(ArchiveError, match="too far from every elite"):
        archive.bootstrap(torch.tensor([-1.7e308, -1.7e308], dtype=torch.float64))


def test_meta_tensors_given_to_a_cpu_archive_raise_naming_them() -> None:
    archive = GridArchive([4], [(0.0, 1.0)])
    with pytest.raises(ArchiveError, match="objectives is on the meta device"):
        archive.add({"x": torch.ones(1, 1)}, torch.ones(1, device="meta"), torch.ones(1, 1))
    with pytest.raises(ArchiveError, match="descriptors is on the meta device"):
        archive.retrieve(torch.ones(1, 1, device="meta"))


def filled_grid() -> GridArchive:
    archive = GridArchive([4, 4], [(0.0, 1.0), (0.0, 1.0)])
    objectives, descriptors = two_cells()
    archive.add([{"x": torch.zeros(1)}, {"x": torch.ones(1)}], objectives, descriptors)
    return archive


@pytest.mark.parametrize("generator", [None, 7, "seed"], ids=["none", "int", "str"])
def test_sample_elites_names_a_generator_that_is_not_one(generator) -> None:
    # None and 7 raised AttributeError ('NoneType' object has no attribute 'device').
    with pytest.raises(ArchiveError, match=f"torch.Generator, got {generator!r}"):
        filled_grid().sample_elites(2, generator)


def test_sample_elites_refuses_a_count_above_the_limit() -> None:
    # 10**12 went to torch.randint, which failed allocating (RuntimeError).
    from slime.memory.limits import MAX_SAMPLE_SIZE

    archive = filled_grid()
    with pytest.raises(ArchiveError, match=f"n = {10**12} is above the limit MAX_SAMPLE_SIZE"):
        archive.sample_elites(10**12, torch.Generator())
    assert len(archive.sample_elites(MAX_SAMPLE_SIZE, torch.Generator())) == MAX_SAMPLE_SIZE


@pytest.mark.parametrize("side", ["low", "high"])
def test_where_names_a_bound_beyond_float_range(side) -> None:
    # float(10**400) raised OverflowError.
    bounds = {side: [10**400, None] if side == "high" else [-(10**400), None]}
    with pytest.raises(ArchiveError, match=rf"where: {side}\[0\] = -?1000.* beyond the float64"):
        filled_grid().where(**bounds)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "", 1.5], ids=repr)
@pytest.mark.parametrize("kind", ["grid", "cvt"])
def test_an_archive_names_a_device_torch_cannot_read(kind, device) -> None:
    # torch.device raised RuntimeError (or TypeError for 1.5) from inside the constructor.
    name = "GridArchive" if kind == "grid" else "CVTArchive"
    with pytest.raises(ConfigError, match=rf"{name}.device: device.*{device!r}"):
        if kind == "grid":
            GridArchive([4], [(0.0, 1.0)], device=device)
        else:
            CVTArchive(4, [(0.0, 1.0)], samples=8, device=device)


@pytest.mark.parametrize(
    ("arguments", "path"),
    [
        ({"dims": 3}, "GridArchive.dims"),
        ({"ranges": ((0.0, 1.0) for _ in range(1))}, "GridArchive.ranges"),
        ({"epsilon": "1"}, "GridArchive.epsilon"),
        ({"epsilon": None}, "GridArchive.epsilon"),
        ({"epsilon": True}, "GridArchive.epsilon"),
        ({"epsilon": 10**400}, "GridArchive.epsilon"),
        ({"qd_offset": 10**400}, "GridArchive.qd_offset"),
        ({"threshold_min": 10**400}, "GridArchive.threshold_min"),
        ({"dims": [10**6, 10**6]}, "GridArchive.dims"),
    ],
    ids=[
        "dims-int",
        "ranges-generator",
        "eps-str",
        "eps-none",
        "eps-bool",
        "eps-huge",
        "qd-offset-huge",
        "threshold-huge",
        "dims-huge",
    ],
)
def test_grid_archive_arguments_of_the_wrong_kind_raise_config_error(arguments, path) -> None:
    # TypeError (len(3), len(generator), math.isfinite("1")), OverflowError (10**400), a
    # silent epsilon 1.0 for True, or a RuntimeError allocating 10**12 cells.
    given = {"dims": [4], "ranges": [(0.0, 1.0)], **arguments}
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        GridArchive(given.pop("dims"), given.pop("ranges"), **given)


def test_archive_cells_above_the_limit_raise_config_error() -> None:
    from slime.memory.limits import MAX_ARCHIVE_CELLS

    with pytest.raises(
        ConfigError, match=f"above the limit MAX_ARCHIVE_CELLS = {MAX_ARCHIVE_CELLS}"
    ):
        CVTArchive(MAX_ARCHIVE_CELLS + 1, [(0.0, 1.0)])


@pytest.mark.parametrize("path", [None, 5, b"a"], ids=repr)
def test_save_names_a_path_that_is_not_one(path) -> None:
    # Path(None) and Path(5) raised TypeError.
    with pytest.raises(ArchiveError, match=f"save needs a folder path .*got {path!r}"):
        filled_grid().save(path)


@pytest.mark.parametrize("where", ["file", "below-a-file"])
def test_save_onto_a_regular_file_raises_and_leaves_it_and_the_archive_whole(
    where, tmp_path
) -> None:
    # mkdir raised FileExistsError (NotADirectoryError below a file).
    saved = filled_grid()
    saved.save(tmp_path / "archive")
    (tmp_path / "file").write_bytes(b"keep me")
    target = tmp_path / "file" if where == "file" else tmp_path / "file" / "archive"
    with pytest.raises(ArchiveError, match=f"cannot save an archive to {target}"):
        filled_grid().save(target)
    assert (tmp_path / "file").read_bytes() == b"keep me"
    assert_unchanged(snapshot(saved), GridArchive.load(tmp_path / "archive"))


@pytest.mark.parametrize("call", ["add", "cell_index", "thresholds", "retrieve"])
def test_a_batch_above_the_limit_is_refused_before_it_is_converted(call) -> None:
    # An expand()-ed view of 10**12 rows holds no memory; converting it to float64 asked the
    # allocator for 8 TB (RuntimeError), and a float64 one was summed for minutes.
    from slime.memory.limits import MAX_BATCH_SIZE

    archive = GridArchive([4, 4], [(0.0, 1.0), (0.0, 1.0)])
    archive.add({"x": torch.zeros(2, 3)}, *two_cells())
    before = snapshot(archive)
    n = 10**12
    descriptors = torch.zeros(1, 2).expand(n, 2)
    name = "objectives" if call == "add" else "descriptors"
    with pytest.raises(
        ArchiveError,
        match=f"{name} has {n} rows, above the limit MAX_BATCH_SIZE = {MAX_BATCH_SIZE}",
    ):
        if call == "add":
            archive.add(
                {"x": torch.zeros(1, 3).expand(n, 3)}, torch.zeros(1).expand(n), descriptors
            )
        else:
            getattr(archive, call)(descriptors)
    assert_unchanged(before, archive)


def test_cvt_samples_above_the_limit_raise_before_k_means() -> None:
    from slime.memory.limits import MAX_CVT_SAMPLES

    with pytest.raises(ConfigError, match=f"samples {10**12} is above the limit MAX_CVT_SAMPLES"):
        CVTArchive(4, [(0.0, 1.0)], samples=10**12)
    assert MAX_CVT_SAMPLES >= 100_000  # pyribs' default sample count still fits


@pytest.mark.parametrize(
    "build",
    [
        lambda device: GridArchive([4], [(0.0, 1.0)], device=device),
        lambda device: CVTArchive(
            2, [(0.0, 1.0)], centroids=torch.tensor([[0.2], [0.8]]), device=device
        ),
        lambda device: TubeNetwork(2, 0.5, device=device),
    ],
    ids=["grid", "cvt", "tubes"],
)
def test_a_device_this_process_cannot_use_is_refused_by_name(build) -> None:
    # "cuda" on a machine without a GPU or driver (or an index past the last GPU) parsed as a
    # device, then torch's RuntimeError ("Found no NVIDIA driver...") came from the first tensor
    # made there; TubeNetwork accepted it and failed at its first store.
    with pytest.raises(ConfigError, match=r"device 'cuda:1000' is not usable here"):
        build("cuda:1000")


@pytest.mark.parametrize(
    ("ranges", "says"),
    [
        ([(0.0, 10**400)], r"range 0 is .*beyond the float64 range"),
        ([("0", "1")], r"range 0 is .*expected two real numbers"),
        (["01"], r"range 0 is '01', expected \(low, high\)"),
        ([{0.0, 1.0}], r"range 0 is .*expected \(low, high\)"),
        ([{0: 5.0, 1: 6.0}], r"range 0 is .*expected \(low, high\)"),
        ([(False, True)], r"range 0 is .*expected two real numbers"),
        ([(0.0, 1.0, 2.0)], r"range 0 is .*expected \(low, high\)"),
        ({(0.0, 1.0)}, r"ranges must be a sequence of \(low, high\) pairs"),
    ],
    ids=["huge-int", "strings", "string-pair", "set", "dict", "bools", "triple", "set-of-pairs"],
)
def test_a_range_that_is_not_two_real_numbers_is_refused_by_name(ranges, says) -> None:
    # float() read each side: 10**400 raised a raw OverflowError, "0"/"1", "01", True/False and
    # a dict's keys were taken as numbers, and a set {0.0, 1.0} in whatever order it iterates.
    for build in (
        lambda: GridArchive([4], ranges),
        lambda: CVTArchive(2, ranges, centroids=torch.tensor([[0.2], [0.8]])),
    ):
        with pytest.raises(ConfigError, match=says):
            build()


def test_ranges_given_as_a_tensor_or_array_still_work() -> None:
    import numpy as np

    for ranges in (torch.tensor([[0.0, 2.0]]), np.array([[0, 2]]), [(0, 2)]):
        assert GridArchive([4], ranges).ranges == [(0.0, 2.0)]


@pytest.mark.parametrize("call", ["bootstrap", "interpolate"])
@pytest.mark.parametrize("descriptor", [[0.3, 0.3], (0.3, 0.3)], ids=["list", "tuple"])
def test_a_query_descriptor_that_is_no_tensor_is_named_as_such(call, descriptor) -> None:
    # The message said "descriptor must have shape (2,), got [0.3, 0.3]": a list of the right
    # length, reported as a wrong shape.
    archive = GridArchive([4, 4], [(0.0, 1.0), (0.0, 1.0)])
    archive.add({"x": torch.zeros(2, 3)}, *two_cells())
    with pytest.raises(
        ArchiveError, match=r"descriptor must be a torch.Tensor of shape \(2,\), got (list|tuple)"
    ):
        getattr(archive, call)(descriptor)
