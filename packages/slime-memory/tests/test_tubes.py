"""TubeNetwork: the Memory protocol with exponential decay in a bounded ring buffer."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from slime.memory import TubeNetwork
from slime.proto import ArchiveError, ConfigError, Memory
from slime.proto.testing import assert_conforms


def reference_recall(items: list[tuple[torch.Tensor, float]], capacity: int, decay: float):
    """Float64 reference: weight of the j-th most recent of the last ``capacity`` is w * decay**j."""
    kept = items[-capacity:]
    weights = [w * decay ** (len(kept) - 1 - i) for i, (_, w) in enumerate(kept)]
    total = sum(weights)
    return sum(w * x.double() for w, (x, _) in zip(weights, kept)) / total


def test_conforms_to_memory_protocol() -> None:
    assert_conforms(TubeNetwork(4, 0.9), Memory)


def test_recall_of_empty_memory_is_none() -> None:
    assert TubeNetwork(4, 0.9).recall() is None


def test_recall_of_one_item_is_that_item() -> None:
    tubes = TubeNetwork(4, 0.5)
    tubes.store(torch.tensor([1.0, 2.0]), 3.0)
    torch.testing.assert_close(tubes.recall(), torch.tensor([1.0, 2.0]))


def test_older_items_weigh_less() -> None:
    tubes = TubeNetwork(4, 0.5)
    tubes.store(torch.tensor([0.0]), 1.0)
    tubes.store(torch.tensor([3.0]), 1.0)
    # weights 0.5 (old) and 1.0 (new): (0 * 0.5 + 3 * 1) / 1.5 = 2
    torch.testing.assert_close(tubes.recall(), torch.tensor([2.0]))


def test_capacity_bounds_what_is_remembered() -> None:
    tubes = TubeNetwork(2, 1.0)
    for value in (100.0, 1.0, 3.0):
        tubes.store(torch.tensor([value]), 1.0)
    assert len(tubes) == 2
    torch.testing.assert_close(tubes.recall(), torch.tensor([2.0]))


@settings(max_examples=30, deadline=None)
@given(
    capacity=st.integers(1, 5),
    decay=st.floats(0.05, 1.0),
    items=st.lists(st.tuples(st.floats(-100, 100), st.floats(0.01, 10.0)), min_size=1, max_size=12),
)
def test_recall_matches_float64_reference(capacity, decay, items) -> None:
    tubes = TubeNetwork(capacity, decay)
    stored = [(torch.tensor([x, -x], dtype=torch.float64), w) for x, w in items]
    for data, weight in stored:
        tubes.store(data, weight)
    torch.testing.assert_close(tubes.recall(), reference_recall(stored, capacity, decay))


def test_tensor_weights_are_accepted() -> None:
    tubes = TubeNetwork(3, 0.9)
    tubes.store(torch.ones(2), torch.tensor(2.0))
    torch.testing.assert_close(tubes.recall(), torch.ones(2))


def test_stored_data_is_a_detached_copy() -> None:
    tubes = TubeNetwork(3, 0.9)
    data = torch.ones(2, requires_grad=True)
    tubes.store(data, 1.0)
    with torch.no_grad():
        data.mul_(5.0)
    recalled = tubes.recall()
    assert not recalled.requires_grad
    torch.testing.assert_close(recalled, torch.ones(2))


def test_shape_mismatch_raises_naming_both_shapes() -> None:
    tubes = TubeNetwork(3, 0.9)
    tubes.store(torch.ones(2, 3), 1.0)
    with pytest.raises(ArchiveError, match=r"\(3, 2\).*\(2, 3\)"):
        tubes.store(torch.ones(3, 2), 1.0)


def test_a_tensor_above_the_element_limit_is_refused_before_anything_is_copied() -> None:
    from slime.memory.limits import MAX_TUBE_ELEMENTS

    tubes = TubeNetwork(4, 0.9)
    huge = torch.zeros(1).expand(MAX_TUBE_ELEMENTS + 1)  # no storage: the buffer would be 4 copies
    with pytest.raises(ArchiveError, match=rf"{MAX_TUBE_ELEMENTS + 1} elements.*MAX_TUBE_ELEMENTS"):
        tubes.store(huge, 1.0)  # allocated (capacity, 2**24 + 1) floats before
    assert len(tubes) == 0 and tubes.recall() is None
    tubes.store(torch.ones(3), 1.0)  # nothing was kept: a first store of another shape is fine
    assert tubes.shape == (3,)


def test_clear_forgets_items_and_shape() -> None:
    tubes = TubeNetwork(3, 0.9)
    tubes.store(torch.ones(2), 1.0)
    tubes.clear()
    assert tubes.recall() is None and len(tubes) == 0
    tubes.store(torch.ones(5), 1.0)
    assert tubes.shape == (5,)


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_invalid_float_weight_raises(weight: float) -> None:
    with pytest.raises(ArchiveError, match="weight"):
        TubeNetwork(3, 0.9).store(torch.ones(1), weight)


def test_non_scalar_tensor_weight_raises() -> None:
    with pytest.raises(ArchiveError, match="0-d"):
        TubeNetwork(3, 0.9).store(torch.ones(1), torch.ones(2))


@pytest.mark.parametrize(("capacity", "decay"), [(0, 0.5), (-1, 0.5), (3, 0.0), (3, 1.5)])
def test_invalid_construction_raises(capacity: int, decay: float) -> None:
    with pytest.raises(ConfigError):
        TubeNetwork(capacity, decay)


def test_recall_keeps_the_stored_dtype() -> None:
    tubes = TubeNetwork(3, 0.9)
    tubes.store(torch.ones(2, dtype=torch.bfloat16), 1.0)
    assert tubes.recall().dtype == torch.bfloat16


@pytest.mark.gpu
def test_store_and_recall_do_not_synchronise_on_cuda() -> None:
    tubes = TubeNetwork(8, 0.9, device="cuda")
    data = torch.randn(16, device="cuda")
    weight = torch.tensor(0.5, device="cuda")
    tubes.store(data, weight)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            tubes.store(data, weight)
            tubes.store(data, 0.25)
            recalled = tubes.recall()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert recalled.device.type == "cuda"


@pytest.mark.parametrize(
    ("data", "weight", "says"),
    [
        (torch.ones(2), 1e300, "weight must be finite and >= 0 in torch.float32"),
        (torch.ones(2), 10**400, "weight must be finite"),
        (torch.eye(2)[0].to_sparse(), 1.0, "dense"),
    ],
    ids=["float32-overflow", "huge-int", "sparse"],
)
def test_a_refused_store_changes_nothing(data, weight, says) -> None:
    # The weights were decayed (and a sparse item's weight written) before the store failed
    # inside torch (fill_ overflow, copy_ from sparse): the memory was no longer what it was.
    memory, untouched = TubeNetwork(capacity=3, decay=0.5), TubeNetwork(capacity=3, decay=0.5)
    for item in (torch.tensor([1.0, 3.0]), torch.tensor([5.0, 7.0])):
        memory.store(item, 1.0)
        untouched.store(item, 1.0)
    with pytest.raises(ArchiveError, match=says):
        memory.store(data, weight)
    assert len(memory) == 2
    for m in (memory, untouched):
        m.store(torch.tensor([9.0, 9.0]), 1.0)  # weighs against the old ones as if never refused
    assert torch.equal(memory.recall(), untouched.recall())


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"capacity": 10**12}, "capacity 1000000000000 is above the limit MAX_TUBE_CAPACITY"),
        ({"device": "gpu"}, "TubeNetwork.device: device 'gpu' is not a torch device"),
        ({"device": "cuda:x"}, "TubeNetwork.device: device 'cuda:x' is not a torch device"),
        ({"device": 1.5}, "TubeNetwork.device: device must be a torch.device"),
    ],
    ids=["huge-capacity", "unknown-type", "cuda-x", "float"],
)
def test_construction_names_a_capacity_above_the_limit_or_an_unreadable_device(
    arguments, says
) -> None:
    # 10**12 failed allocating at the first store; a bad device string raised torch's
    # RuntimeError from the constructor.
    with pytest.raises(ConfigError, match=says):
        TubeNetwork(**{"capacity": 3, "decay": 0.5, **arguments}).store(torch.ones(1), 1.0)


def test_a_complex_tensor_weight_is_refused() -> None:
    # The cast to the float weights dropped the imaginary part silently.
    memory = TubeNetwork(3, 0.5)
    memory.store(torch.ones(1), 1.0)
    with pytest.raises(ArchiveError, match="weight must be real, got a torch.complex64 tensor"):
        memory.store(torch.ones(1), torch.tensor(1 + 2j))
    assert len(memory) == 1


@pytest.mark.parametrize(
    ("weight", "says"),
    [
        (-1.0, "weight must be finite and >= 0"),
        (torch.ones(2), "weight must be 0-d"),
        ("1", "weight must be a float or 0-d tensor"),
    ],
    ids=["negative", "not-0d", "str"],
)
def test_a_refused_first_store_fixes_no_shape(weight, says) -> None:
    # The first store allocated its buffers (fixing the shape, dtype and device) before the
    # weight was checked: after the refusal, shape was (3,) and a store of shape (2,) raised.
    memory = TubeNetwork(capacity=2, decay=0.5)
    with pytest.raises(ArchiveError, match=says):
        memory.store(torch.zeros(3), weight)
    assert memory.shape is None and len(memory) == 0
    memory.store(torch.tensor([1.0, 2.0], dtype=torch.float64), 1.0)
    assert memory.shape == (2,)
    assert torch.equal(memory.recall(), torch.tensor([1.0, 2.0], dtype=torch.float64))
