"""The continual streams: tasks have the structure they claim, and a switch really hurts."""

from __future__ import annotations

import pytest
import torch
from slime.proto import DataError
from slime.train.baseline import GPT
from slime.train.config import ModelConfig
from slime.train.continual.streams import (
    CircuitTask,
    build_stream,
    builtin_text,
    circuit_stream,
    corpus_stream,
    permuted_stream,
)


def _train_eval(
    stream, t: int, steps: int, *, lr: float = 3e-3, seed: int = 0
) -> tuple[float, float]:
    """Train a fresh tiny GPT on task ``t`` of ``stream``; returns its val loss on ``t`` and ``t+1``."""
    cfg = ModelConfig(
        kind="baseline", vocab_size=stream.vocab_size, block_size=stream.block_size,
        n_layer=2, n_embd=32, n_pods=4, pod_capacity=4, head_dim=8, dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = GPT(cfg, generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        idx, targets = stream.tasks[t].batch("train", 16, gen)
        _, loss = model(idx, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out = []
    with torch.no_grad():
        for task in (stream.tasks[t], stream.tasks[t + 1]):
            g = torch.Generator().manual_seed(7)
            losses = [model(*task.batch("val", 32, g))[1] for _ in range(3)]
            out.append(float(torch.stack(losses).mean()))
    return out[0], out[1]


def test_permuted_tasks_relabel_one_corpus_and_the_switch_hurts() -> None:
    stream = permuted_stream(3, 32, seed=5, text=builtin_text(20_000))
    assert [t.key for t in stream.tasks] == ["perm0", "perm1", "perm2"]
    a, b = stream.tasks[0].dataset, stream.tasks[1].dataset
    assert not torch.equal(a.permutation, b.permutation)
    # the same windows, relabelled: task 1's batch is task 0's through the permutation
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    idx0, tgt0 = a.batch("train", 4, g1)
    idx1, tgt1 = b.batch("train", 4, g2)
    inverse = torch.argsort(b.permutation)
    assert torch.equal(b.permutation[inverse[idx1]], idx1)
    assert torch.equal(b.permutation[idx0], idx1) and torch.equal(b.permutation[tgt0], tgt1)
    on_t, on_next = _train_eval(stream, 0, 150)
    assert on_next > on_t + 0.5, (on_t, on_next)


def test_permuted_stream_depends_on_the_seed() -> None:
    s1 = permuted_stream(2, 16, seed=1, text=builtin_text(5_000))
    s2 = permuted_stream(2, 16, seed=2, text=builtin_text(5_000))
    assert not torch.equal(s1.tasks[1].dataset.permutation, s2.tasks[1].dataset.permutation)


def _scored(task: CircuitTask, n: int = 64):
    idx, targets = task.batch("train", n, torch.Generator().manual_seed(0))
    assert idx.shape == targets.shape == (n, task.block_size)
    return idx, targets


def test_circuit_copy_targets_repeat_at_offset_k() -> None:
    for k in (2, 5):
        idx, targets = _scored(CircuitTask("copy", k, 16, 32))
        seq = torch.cat([idx, targets[:, -1:]], dim=1)
        for j in range(32):
            if targets[0, j] >= 0:
                assert torch.equal(targets[:, j], seq[:, j + 1 - k])
        assert (targets[:, k - 1 :] >= 0).all() and (targets[:, : k - 1] == -1).all()


def test_circuit_reverse_scores_the_mirrored_span() -> None:
    L, T = 6, 32
    idx, targets = _scored(CircuitTask("reverse", L, 16, T))
    assert (targets[:, -1] >= 0).all()
    seq = torch.cat([idx, targets[:, -1:]], dim=1)  # s_0 .. s_T
    start = T + 1 - (2 * L + 1)
    span, sep, back = seq[:, start : start + L], seq[:, start + L], seq[:, start + L + 1 :]
    assert (sep == 15).all() and torch.equal(back, span.flip(1))
    scored = (targets >= 0).nonzero()[:, 1].view(-1, L) + 1  # positions of scored s_t
    assert (scored == torch.arange(start + L + 1, T + 1)).all()


def test_circuit_recall_scores_values_of_repeated_keys() -> None:
    K, T = 4, 32
    idx, targets = _scored(CircuitTask("recall", K, 16, T))
    n_pairs = (T + 1) // 2
    pad = T + 1 - 2 * n_pairs
    seq = torch.cat([idx, targets[:, -1:]], dim=1)
    pairs = seq[:, pad:].view(-1, n_pairs, 2)
    keys, values = pairs[..., 0], pairs[..., 1]
    assert (keys < K).all() and (values >= K).all() and (values < 15).all()
    assert (keys[:, :K].sort(dim=1).values == torch.arange(K)).all()  # every key once first
    for row in range(keys.shape[0]):
        mapping = {}
        for k, v in zip(keys[row].tolist(), values[row].tolist()):
            assert mapping.setdefault(k, v) == v  # one value per key within a sequence
    scored = torch.zeros_like(seq, dtype=torch.bool)
    scored[:, 1:] = targets >= 0
    expected = torch.zeros_like(scored)
    expected[:, pad + 2 * K + 1 :: 2] = True  # values of the pairs after the first K
    assert torch.equal(scored, expected)


def test_circuit_induction_scores_a_repeat_of_an_earlier_segment() -> None:
    m = 4
    idx, targets = _scored(CircuitTask("induction", m, 16, 32))
    for row in range(16):
        scored = torch.nonzero(targets[row] >= 0).flatten().tolist()
        assert len(scored) == m - 1
        first = scored[
            0
        ]  # predicts s_{first+1}, the second token of the repeat; s_first is its first
        seq = idx[row].tolist() + [int(targets[row, -1])]
        segment = seq[first : first + m]
        earlier = [seq[a : a + m] for a in range(0, first - m + 1)]
        assert segment in earlier


def test_circuit_rotation_changes_rule_every_task_and_revisits() -> None:
    stream = circuit_stream(10, 32)
    keys = [t.key for t in stream.tasks]
    rules = [t.dataset.rule for t in stream.tasks]
    assert all(a != b for a, b in zip(rules, rules[1:]))
    assert keys[8] == keys[0] and len(set(keys[:8])) == 8
    assert stream.first_visits() == list(range(8))
    on_t, on_next = _train_eval(stream, 0, 150, lr=1e-2)
    assert on_next > on_t + 0.5, (on_t, on_next)


def _fake_corpora(root) -> None:
    files = {
        "tinyshakespeare/input.txt": ("ROMEO:\nO fair love, thou art my soul.\n\n", 3000),
        "wikitext-2/valid.txt": (
            " = Battle of 1842 = \n The army @-@ corps fought in 1842 . \n",
            3000,
        ),
        "wikitext-2/test.txt": (" = River 77 = \n The river flows 77 km east . \n", 600),
        "tinystories/tinystories_val.txt": (
            "Once upon a time, a little cat sat. She was happy.\n",
            3000,
        ),
    }
    for rel, (text, repeat) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text * (repeat // len(text) * 10 + 5), encoding="utf-8")


def test_corpus_stream_cycles_corpora_over_one_vocabulary(tmp_path) -> None:
    _fake_corpora(tmp_path)
    stream = corpus_stream(4, 32, tmp_path)
    assert [t.key for t in stream.tasks] == [
        "shakespeare",
        "wikitext2",
        "tinystories",
        "shakespeare",
    ]
    assert stream.tasks[0].dataset is stream.tasks[3].dataset
    assert len({t.dataset.vocab_size for t in stream.tasks}) == 1 == len({stream.vocab_size})
    on_t, on_next = _train_eval(stream, 0, 150)
    assert on_next > on_t + 0.5, (on_t, on_next)


def test_corpus_stream_without_data_says_what_is_missing(tmp_path) -> None:
    with pytest.raises(DataError, match="tinyshakespeare"):
        corpus_stream(3, 32, tmp_path)
    with pytest.raises(DataError, match="unknown stream"):
        build_stream("nope", 3, 32, seed=0)
