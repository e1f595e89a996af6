"""Built-in tasks: toy validation sets and sequence tasks that need attention."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from slime.train.datasets import Dataset
from slime.train.tasks import (
    CopyTask,
    RecallTask,
    parity_classification,
    sine_regression,
    xor_classification,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sine_targets_are_sin_of_inputs() -> None:
    x, y = sine_regression(64, _gen())
    assert x.shape == y.shape == (64, 1)
    assert torch.allclose(y, torch.sin(x))
    assert x.abs().max() <= torch.pi


def test_xor_labels_match_the_truth_table() -> None:
    x, y = xor_classification(256, _gen())
    assert torch.equal(y, (x[:, 0] != x[:, 1]).long())


@given(st.integers(1, 12), st.integers(0, 2**31))
def test_parity_label_is_sum_of_bits_mod_two(n_bits: int, seed: int) -> None:
    x, y = parity_classification(16, n_bits, _gen(seed))
    assert torch.equal(y, x.sum(1).long() % 2)


@settings(deadline=None, max_examples=30)
@given(st.integers(3, 40), st.integers(3, 64), st.integers(0, 2**31))
def test_copy_scores_only_the_copied_half_and_it_equals_the_first(
    v: int, t: int, seed: int
) -> None:
    task = CopyTask(v, t)
    idx, targets = task.batch("train", 4, _gen(seed))
    L = task.length
    assert idx.shape == targets.shape == (4, task.block_size)
    assert task.block_size <= t
    assert (targets[:, :L] == -1).all()
    assert torch.equal(targets[:, L:], idx[:, :L])
    assert int(idx.max()) < v


@settings(deadline=None, max_examples=30)
@given(st.integers(4, 32), st.integers(0, 2**31))
def test_recall_targets_are_the_value_first_paired_with_the_key(v: int, seed: int) -> None:
    task = RecallTask(v, 2 * (v // 2) + 9)
    idx, targets = task.batch("train", 3, _gen(seed))
    assert idx.shape == (3, task.block_size)
    for b in range(3):
        first: dict[int, int] = {}
        for t in range(0, idx.shape[1] - 1, 2):
            first.setdefault(int(idx[b, t]), int(idx[b, t + 1]))
        scored = (targets[b] >= 0).nonzero().flatten().tolist()
        assert scored, "every sequence has recall queries"
        for t in scored:
            assert int(targets[b, t]) == first[int(idx[b, t])]


def test_recall_presents_every_key_before_any_query() -> None:
    task = RecallTask(16, 31)
    idx, _ = task.batch("train", 5, _gen())
    keys = idx[:, 0 : 2 * task.n_keys : 2]
    assert torch.equal(keys.sort(dim=1).values, torch.arange(task.n_keys).expand(5, -1))


def test_sequence_tasks_follow_the_dataset_protocol() -> None:
    assert isinstance(CopyTask(8, 16), Dataset)
    assert isinstance(RecallTask(8, 16), Dataset)
