"""GridArchive's degenerate configurations: each is one ConfigError naming the value and the
argument, raised before anything is allocated."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from slime.memory import CVTArchive, GridArchive
from slime.proto import ArchiveError, ConfigError


@pytest.mark.parametrize("epsilon", [1.0, 5.0, 1e300])
def test_an_epsilon_of_a_whole_cell_or_more_raises_config_error(epsilon) -> None:
    # epsilon shifts every descriptor by epsilon / width of a cell: at 5.0 over (0, 1) the
    # archive was built and put 0.0 in cell 5 and 0.5 in cell 9, without a word.
    with pytest.raises(
        ConfigError, match=r"GridArchive\.epsilon: epsilon .* not below the width 1\.0 of range 0"
    ):
        GridArchive([10], [(0.0, 1.0)], epsilon=epsilon)


def test_the_default_epsilon_on_a_range_narrower_than_it_raises_config_error() -> None:
    # (0, 1e-7) with the default epsilon 1e-6: every descriptor landed ten cells up (the last).
    with pytest.raises(ConfigError, match=r"width 1e-07 of range 1 .*10\.0 cells"):
        GridArchive([10, 10], [(0.0, 1.0), (0.0, 1e-7)])
    archive = GridArchive([10, 10], [(0.0, 1.0), (0.0, 1e-7)], epsilon=1e-16)
    assert archive.cell_index(torch.tensor([[0.0, 0.0], [0.0, 0.55e-7]])).tolist() == [0, 5]


def test_an_epsilon_below_the_width_keeps_its_meaning() -> None:
    archive = GridArchive([10], [(0.0, 1.0)], epsilon=0.5)  # half a cell: odd, but defined
    assert archive.cell_index(torch.tensor([[0.0], [0.06], [0.04]])).tolist() == [0, 1, 0]


def test_many_dims_name_the_limit_instead_of_failing_to_print_their_product() -> None:
    # 100,000 dims of 2 make a product of 30,103 digits: formatting it into the message raised
    # a bare ValueError ("Exceeds the limit (4300 digits) for integer string conversion").
    with pytest.raises(ConfigError, match=r"GridArchive\.dims: .*above the limit MAX_ARCHIVE"):
        GridArchive([2] * 100_000, [(0.0, 1.0)] * 100_000)


def test_numpy_integer_dims_are_read_as_ints() -> None:
    # np.arange(...)-made dims were refused as "not positive ints".
    archive = GridArchive(np.array([3, 4]), [(0.0, 1.0), (0.0, 1.0)])
    assert archive.dims == [3, 4] and all(type(d) is int for d in archive.dims)
    assert archive.cells == 12


@pytest.mark.parametrize(
    ("dims", "ranges", "says"),
    [
        ([0], [(0.0, 1.0)], "GridArchive.dims"),
        ([], [], "GridArchive.dims"),
        ([-3], [(0.0, 1.0)], "GridArchive.dims"),
        ([np.bool_(True)], [(0.0, 1.0)], "GridArchive.dims"),
        ([2.0], [(0.0, 1.0)], "GridArchive.dims"),
        ([10**30], [(0.0, 1.0)], "GridArchive.dims"),
        ([4], [(1.0, 1.0)], "GridArchive.ranges"),
        ([4], [(2.0, 1.0)], "GridArchive.ranges"),
        ([4], [(math.nan, 1.0)], "GridArchive.ranges"),
        ([4], [(0.0, math.inf)], "GridArchive.ranges"),
        ([4], [(-math.inf, 0.0)], "GridArchive.ranges"),
        ([4], [(-1e308, 1e308)], "GridArchive.ranges"),
        ([4, 4], [(0.0, 1.0)], "GridArchive.ranges"),
    ],
    ids=repr,
)
def test_degenerate_dims_and_ranges_raise_config_error(dims, ranges, says) -> None:
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        GridArchive(dims, ranges)


# ---- the meta device and CMA-MAE's thresholds: what archive.py still owes ------------------


@pytest.mark.parametrize("kind", ["grid", "cvt"])
def test_a_meta_archive_follows_shapes_through_an_unchecked_add(kind) -> None:
    if kind == "grid":
        archive = GridArchive([4], [(0.0, 1.0)], device="meta")
    else:
        archive = CVTArchive(4, [(0.0, 1.0)], samples=8, device="meta")
    meta = {"device": "meta"}
    result = archive.add(
        {"s": torch.zeros(3, 2, **meta)}, torch.zeros(3, **meta), torch.zeros(3, 1, **meta),
        check=False,
    )  # fmt: skip
    assert result.status.shape == (3,) and result.status.is_meta
    archive.clear()


@pytest.mark.parametrize(
    "read", ["len", "stats", "occupied_cells", "cell_index", "checked_add", "save"]
)
def test_a_meta_archive_refuses_value_reads_with_archive_error(read, tmp_path) -> None:
    archive = GridArchive([4], [(0.0, 1.0)], device="meta")
    meta = {"device": "meta"}
    reads = {
        "len": lambda: len(archive),
        "stats": lambda: archive.stats,
        "occupied_cells": archive.occupied_cells,
        "cell_index": lambda: archive.cell_index(torch.zeros(1, 1, **meta)),
        "checked_add": lambda: archive.add(
            {"s": torch.zeros(1, 1, **meta)}, torch.zeros(1, **meta), torch.zeros(1, 1, **meta)
        ),
        "save": lambda: archive.save(tmp_path / "a"),
    }
    with pytest.raises(ArchiveError, match="meta"):
        reads[read]()


@pytest.mark.parametrize("host", [True, False], ids=["host-path", "tensor-path"])
def test_a_cma_mae_threshold_of_huge_finite_objectives_stays_finite(host) -> None:
    archive = GridArchive([4], [(0.0, 1.0)], learning_rate=0.5, threshold_min=0.0)
    archive._host = host
    big = torch.tensor([1e308, 1e308], dtype=torch.float64)
    archive.add({"s": torch.zeros(2, 1)}, big, torch.tensor([[0.1], [0.1]]))
    threshold = archive.thresholds(torch.tensor([[0.1]]))
    # keep = (1 - 0.5) ** 2: 0.25 * threshold_min + 0.75 * mean(1e308, 1e308)
    assert torch.isfinite(threshold).all(), threshold
    torch.testing.assert_close(threshold, torch.tensor([0.75e308], dtype=torch.float64))
