"""GridArchive's degenerate configurations: each is one ConfigError naming the value and the
argument, raised before anything is allocated."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from slime.memory import GridArchive
from slime.proto import ConfigError


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
