"""placement: a pure, process-independent function of an archive cell."""

import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from slime.core import placement
from slime.proto import ConfigError

cells = st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=4)


@given(cells, st.integers(1, 16))
def test_placement_lies_in_device_range(cell, n):
    assert 0 <= placement(tuple(cell), n) < n


@given(cells, st.integers(1, 16))
def test_tensor_and_tuple_cells_place_alike(cell, n):
    assert placement(torch.tensor(cell), n) == placement(tuple(cell), n)


def test_one_device_always_gets_index_zero():
    assert {placement((i, j), 1) for i in range(8) for j in range(8)} == {0}


def test_cells_spread_over_devices():
    used = {placement((i, j), 4) for i in range(8) for j in range(8)}
    assert used == {0, 1, 2, 3}


def test_placement_is_identical_in_a_fresh_process():
    here = [placement((i, 7 - i), 3) for i in range(8)]
    code = "from slime.core import placement; print([placement((i, 7 - i), 3) for i in range(8)])"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert there.stdout.strip() == str(here)


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_bad_device_count_raises(n):
    with pytest.raises(ConfigError, match="num_devices"):
        placement((0, 1), n)


@pytest.mark.parametrize("cell", [(), (float("nan"),), ("a",)])
def test_bad_cell_raises(cell):
    with pytest.raises(ConfigError, match="cell"):
        placement(cell, 2)
