"""placement: a pure, process-independent function of an archive cell."""

import hashlib
import importlib
import os
import struct
import subprocess
import sys

import pytest
import torch
from slime.core import placement
from slime.proto import ConfigError

pytest.importorskip("hypothesis")  # CPU-only property tests; the GPU machine may lack it
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

placement_module = importlib.import_module("slime.core.placement")
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


def test_placement_is_identical_in_a_fresh_process_with_another_hash_seed():
    here = [placement((i, 7 - i), 3) for i in range(8)]
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('placement', {placement_module.__file__!r}); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        "print([m.placement((i, 7 - i), 3) for i in range(8)])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert there.stdout.strip() == str(here)


@given(cells, st.integers(1, 16))
def test_placement_is_blake2b_of_the_little_endian_cell(cell, n):
    digest = hashlib.blake2b(struct.pack(f"<{len(cell)}q", *cell), digest_size=8).digest()
    assert placement(tuple(cell), n) == int.from_bytes(digest, "little") % n


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_bad_device_count_raises(n):
    with pytest.raises(ConfigError, match="num_devices"):
        placement((0, 1), n)


@pytest.mark.parametrize("cell", [(), (float("nan"),), ("a",)])
def test_bad_cell_raises(cell):
    with pytest.raises(ConfigError, match="cell"):
        placement(cell, 2)


@pytest.mark.parametrize("cell", [(2**70,), (1e300,), (1e13 + 0.5,), (-(2**64),)])
def test_a_coordinate_beyond_int64_once_quantized_is_named(cell):
    with pytest.raises(ConfigError, match="beyond what placement hashes"):  # struct.error
        placement(cell, 4)


@pytest.mark.parametrize("cell", [5, None])
def test_a_cell_that_is_no_sequence_is_named(cell):
    with pytest.raises(ConfigError, match="cell must be a tensor or a sequence"):  # TypeError
        placement(cell, 4)


def test_numpy_integers_place_as_the_ints_they_are():
    np = pytest.importorskip("numpy")
    # "cell coordinates must be numbers, got np.int64(1)" before
    assert placement(np.array([1, 2]), 7) == placement((1, 2), 7)
    assert placement([np.int32(5)], 7) == placement([5], 7)
