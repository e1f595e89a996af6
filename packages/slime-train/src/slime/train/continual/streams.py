"""Task streams for continual language modelling: one model, abrupt switches, no task id.

A :class:`Stream` is a list of :class:`Task` s over one shared vocabulary and context length. Each
task is a :class:`~slime.train.datasets.Dataset` (``batch(split, B, generator)`` gives ``(idx,
targets)``, ``-1`` where a target is not scored) with a ``key`` naming what it is: two tasks with the
same key are the same task (a revisit), and per-key caches (the fresh-model reference) rely on that.

- ``permuted``: a character corpus whose token ids are re-permuted at every task (a new random
  permutation per task, drawn from the stream's seed). Every task has the same statistics up to the
  relabelling, so the only thing that changes is which embedding rows mean which character.
- ``circuit``: synthetic tasks that need different attention patterns, in rotation: copy at offset
  ``k``, associative recall with ``K`` keys, reversal of an ``L``-token span, induction over a
  repeated segment of ``m`` tokens. The rule and its parameter change at every task; the rotation
  has :data:`CIRCUIT_CYCLE` distinct tasks, so a long stream revisits each of them.
- ``corpus``: tiny-shakespeare, WikiText-2 and TinyStories in turn, round and round, over the union
  of their characters (needs the data folder).

:func:`builtin_text` is a generated pseudo-English corpus (no download), which the permuted stream
uses when no data folder is given (tests, the cpu-small profile).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from slime.proto import DataError
from slime.train.datasets import CORPORA, CharCorpus, resolve_data_dir
from torch import Tensor

__all__ = [
    "CIRCUIT_CYCLE",
    "STREAMS",
    "CircuitTask",
    "PermutedCorpus",
    "Stream",
    "Task",
    "builtin_text",
    "build_stream",
    "circuit_stream",
    "corpus_stream",
    "permuted_stream",
]

_WORDS = (
    "the a of and to in is was he she it that his her with for as on at by from they we you "
    "king queen lord lady love night day sword crown death life heart blood soul time world man "
    "woman child house door fire water stone light dark good ill fair sweet noble true false old "
    "young speak come go see know think hear tell give take make stand fall rise sleep wake weep "
    "laugh fight fly run walk sing call bring keep leave live die dream hope fear grace honour"
).split()


def builtin_text(n_chars: int = 60_000, seed: int = 0) -> str:
    """Deterministic pseudo-English: sentences of random words with punctuation and line breaks.

    Word choice follows a fixed random bigram table, so the text has structure a character model
    can learn within a few hundred steps (unlike uniform noise).
    """
    rng = random.Random(seed)
    follow = {w: rng.sample(_WORDS, 8) for w in _WORDS}
    out: list[str] = []
    size = 0
    word = rng.choice(_WORDS)
    while size < n_chars:
        n = rng.randint(4, 11)
        sentence = []
        for _ in range(n):
            sentence.append(word)
            word = rng.choice(follow[word]) if rng.random() < 0.8 else rng.choice(_WORDS)
        line = " ".join(sentence)
        line = line[0].upper() + line[1:] + rng.choice(".,;!?.")
        line += "\n" if rng.random() < 0.3 else " "
        out.append(line)
        size += len(line)
    return "".join(out)[:n_chars]


@dataclass(frozen=True)
class Task:
    """One task of a stream: a dataset and the key that identifies it across revisits."""

    key: str
    dataset: object  # a slime.train.datasets.Dataset

    def batch(self, split: str, batch_size: int, generator: torch.Generator):
        return self.dataset.batch(split, batch_size, generator)


@dataclass(frozen=True)
class Stream:
    """A named sequence of tasks over one vocabulary and context."""

    name: str
    tasks: tuple[Task, ...]
    vocab_size: int
    block_size: int

    def __len__(self) -> int:
        return len(self.tasks)

    def first_visits(self) -> list[int]:
        """Indices of the tasks whose key appears for the first time."""
        seen: set[str] = set()
        out = []
        for i, task in enumerate(self.tasks):
            if task.key not in seen:
                seen.add(task.key)
                out.append(i)
        return out


# -- permuted vocabulary ---------------------------------------------------------------------------


class PermutedCorpus:
    """A corpus whose token ids go through a fixed permutation (idx and targets alike)."""

    def __init__(self, corpus: CharCorpus, permutation: Tensor) -> None:
        if sorted(permutation.tolist()) != list(range(corpus.vocab_size)):
            raise DataError(f"expected a permutation of {corpus.vocab_size} ids")
        self.corpus, self.permutation = corpus, permutation
        self.vocab_size, self.block_size = corpus.vocab_size, corpus.block_size

    def batch(self, split: str, batch_size: int, generator: torch.Generator):
        idx, targets = self.corpus.batch(split, batch_size, generator)
        return self.permutation[idx], self.permutation[targets]


def permuted_stream(n_tasks: int, block_size: int, *, seed: int, text: str | None = None) -> Stream:
    """``n_tasks`` relabellings of one character corpus (``text``, default :func:`builtin_text`);
    task 0 keeps the corpus's own ids, each later task draws a fresh permutation from ``seed``."""
    text = builtin_text() if text is None else text
    cut = int(0.9 * len(text))
    corpus = CharCorpus(text[:cut], text[cut:], block_size, vocab_text=text)
    gen = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(n_tasks):
        perm = (
            torch.arange(corpus.vocab_size)
            if t == 0
            else torch.randperm(corpus.vocab_size, generator=gen)
        )
        tasks.append(Task(f"perm{t}", PermutedCorpus(corpus, perm)))
    return Stream("permuted", tuple(tasks), corpus.vocab_size, block_size)


# -- circuit switching -----------------------------------------------------------------------------


class CircuitTask:
    """A synthetic sequence task of length ``block_size`` over symbols ``0 .. vocab_size - 2``
    (``vocab_size - 1`` is a separator). ``rule`` and ``param``:

    - ``copy``, ``k``: the sequence repeats with period ``k`` (``s_t = s_{t-k}``); every target
      ``k`` or more positions in is scored. Solved by attending ``k`` back (a fixed offset).
    - ``recall``, ``K`` keys: key-value pairs (keys ``0 .. K-1``, values from the rest); after every
      key has appeared once, repeated keys' values are scored (content-addressed lookup).
    - ``reverse``, ``L``: ``L`` random symbols, the separator, the same symbols reversed; the
      reversed half is scored (attention to a mirrored position).
    - ``induction``, ``m``: random symbols where a segment of ``m`` tokens recurs later at a random
      place; the recurrence is scored after its first token (an induction head: find the previous
      occurrence of the current token, copy what followed it).

    Every row is a fresh random draw, so train and val splits are the same distribution.
    """

    RULES = ("copy", "recall", "reverse", "induction")

    def __init__(self, rule: str, param: int, vocab_size: int, block_size: int) -> None:
        if rule not in self.RULES:
            raise DataError(f"unknown circuit rule {rule!r}; expected one of {self.RULES}")
        if vocab_size < 6:
            raise DataError(f"circuit tasks need vocab_size >= 6, got {vocab_size}")
        self.rule, self.param = rule, param
        self.vocab_size, self.block_size = vocab_size, block_size
        n_sym, T = vocab_size - 1, block_size
        limits = {
            "copy": 1 <= param < T,
            "recall": 2 <= param < n_sym - 1 and 2 * param + 2 <= T,
            "reverse": 1 <= param and 2 * param + 1 <= T + 1,
            "induction": 2 <= param and 2 * param + 1 <= T,
        }
        if not limits[rule]:
            raise DataError(
                f"{rule} parameter {param} does not fit block_size {T}, vocab {vocab_size}"
            )

    def batch(self, split: str, batch_size: int, generator: torch.Generator):
        B, T, n_sym = batch_size, self.block_size, self.vocab_size - 1
        make: dict[str, Callable[[], tuple[Tensor, Tensor]]] = {
            "copy": lambda: self._copy(B, T, n_sym, generator),
            "recall": lambda: self._recall(B, T, n_sym, generator),
            "reverse": lambda: self._reverse(B, T, n_sym, generator),
            "induction": lambda: self._induction(B, T, n_sym, generator),
        }
        seq, scored = make[self.rule]()  # (B, T + 1), (B, T + 1): whether s_t is scored
        idx, targets = seq[:, :-1].clone(), seq[:, 1:].clone()
        targets[~scored[:, 1:]] = -1
        return idx, targets

    def _copy(self, B, T, n_sym, gen):
        k = self.param
        base = torch.randint(0, n_sym, (B, k), generator=gen)
        seq = base.repeat(1, (T + 1) // k + 1)[:, : T + 1]
        scored = torch.zeros(B, T + 1, dtype=torch.bool)
        scored[:, k:] = True
        return seq, scored

    def _recall(self, B, T, n_sym, gen):
        K = self.param
        n_pairs = (T + 1) // 2
        mapping = K + torch.randint(0, n_sym - K, (B, K), generator=gen)
        first = torch.argsort(torch.rand(B, K, generator=gen), dim=1)
        rest = torch.randint(0, K, (B, n_pairs - K), generator=gen)
        keys = torch.cat([first, rest], dim=1)
        pairs = torch.stack([keys, torch.gather(mapping, 1, keys)], dim=2).reshape(B, 2 * n_pairs)
        scored = torch.zeros(B, 2 * n_pairs, dtype=torch.bool)
        scored[:, 2 * K + 1 :: 2] = True  # values of repeated keys
        pad = T + 1 - 2 * n_pairs  # 0 or 1: an unscored symbol in front
        if pad:
            pairs = torch.cat([torch.randint(0, n_sym, (B, pad), generator=gen), pairs], dim=1)
            scored = torch.cat([torch.zeros(B, pad, dtype=torch.bool), scored], dim=1)
        return pairs, scored

    def _reverse(self, B, T, n_sym, gen):
        L = self.param
        filler = T + 1 - (2 * L + 1)
        span = torch.randint(0, n_sym, (B, L), generator=gen)
        sep = torch.full((B, 1), n_sym, dtype=torch.long)
        head = torch.randint(0, n_sym, (B, filler), generator=gen)
        seq = torch.cat([head, span, sep, span.flip(1)], dim=1)
        scored = torch.zeros(B, T + 1, dtype=torch.bool)
        scored[:, filler + L + 1 :] = True
        return seq, scored

    def _induction(self, B, T, n_sym, gen):
        m = self.param
        seq = torch.randint(0, n_sym, (B, T + 1), generator=gen)
        scored = torch.zeros(B, T + 1, dtype=torch.bool)
        # source start a in [0, T + 1 - 2m], destination b in [a + m, T + 1 - m]
        a = torch.randint(0, T + 2 - 2 * m, (B,), generator=gen)
        span = (T + 1 - m) - (a + m) + 1
        b = a + m + (torch.rand(B, generator=gen) * span).long().clamp(max=span - 1)
        offsets = torch.arange(m)
        rows = torch.arange(B)[:, None]
        seq[rows, b[:, None] + offsets] = seq[rows, a[:, None] + offsets]
        scored[rows, b[:, None] + offsets[1:]] = True
        return seq, scored


def circuit_cycle(block_size: int) -> tuple[tuple[str, int], ...]:
    """The rotation of (rule, parameter) for a context of ``block_size``: every rule twice, with
    different parameters, the rule changing at every step."""
    T = block_size
    return (
        ("copy", 2),
        ("recall", max(2, T // 8)),
        ("reverse", max(1, T // 4)),
        ("induction", max(2, T // 8)),
        ("copy", max(3, T // 6)),
        ("recall", max(3, T // 5)),
        ("reverse", max(1, T // 2 - 1)),
        ("induction", max(3, T // 4)),
    )


CIRCUIT_CYCLE = 8


def circuit_stream(n_tasks: int, block_size: int, *, vocab_size: int = 16) -> Stream:
    """``n_tasks`` circuit tasks, rotating through :func:`circuit_cycle`."""
    cycle = circuit_cycle(block_size)
    tasks = []
    for t in range(n_tasks):
        rule, param = cycle[t % len(cycle)]
        tasks.append(Task(f"{rule}{param}", CircuitTask(rule, param, vocab_size, block_size)))
    return Stream("circuit", tuple(tasks), vocab_size, block_size)


# -- corpus cycling --------------------------------------------------------------------------------

CORPUS_ORDER = ("shakespeare", "wikitext2", "tinystories")


def _corpus_texts(folder: Path) -> dict[str, tuple[str, str]]:
    """(train, val) text of each corpus of :data:`CORPUS_ORDER`, split as
    :func:`slime.train.datasets.load_corpus` splits it."""
    out = {}
    for name in CORPUS_ORDER:
        files = CORPORA[name]
        missing = [
            f.relpath for f in files.values() if name != "wikitext2" or "train" not in f.relpath
        ]
        missing = [p for p in missing if not (folder / p).is_file()]
        if missing:
            raise DataError(f"corpus stream needs {missing} under {str(folder)!r}")
        if name == "wikitext2":
            train_file = folder / files["train"].relpath
            if train_file.is_file():
                train, val = train_file, folder / files["valid"].relpath
            else:
                train, val = folder / files["valid"].relpath, folder / files["test"].relpath
            out[name] = (train.read_text("utf-8"), val.read_text("utf-8"))
        else:
            text = (folder / files["all"].relpath).read_text("utf-8")
            cut = int(0.9 * len(text))
            out[name] = (text[:cut], text[cut:])
    return out


def corpus_stream(n_tasks: int, block_size: int, data_dir: str | Path | None) -> Stream:
    """``n_tasks`` tasks cycling shakespeare -> WikiText-2 -> TinyStories -> shakespeare ...

    Raises:
        DataError: no data folder, or a corpus file is missing.
    """
    folder = resolve_data_dir(data_dir)
    texts = _corpus_texts(folder)
    union = "".join(sorted(set("".join(a + b for a, b in texts.values()))))
    corpora = {n: CharCorpus(tr, va, block_size, vocab_text=union) for n, (tr, va) in texts.items()}
    tasks = tuple(Task(CORPUS_ORDER[t % 3], corpora[CORPUS_ORDER[t % 3]]) for t in range(n_tasks))
    return Stream("corpus", tasks, len(union), block_size)


STREAMS = ("permuted", "circuit", "corpus")


def build_stream(
    name: str,
    n_tasks: int,
    block_size: int,
    *,
    seed: int,
    data_dir: str | Path | None = None,
    task_vocab: int = 16,
    shakespeare: bool = False,
) -> Stream:
    """The stream called ``name``. ``permuted`` relabels tiny-shakespeare when ``shakespeare`` is
    set (``data_dir`` then must hold it), else :func:`builtin_text`.

    Raises:
        DataError: unknown name, or a corpus the stream needs is missing.
    """
    if name == "permuted":
        text = None
        if shakespeare:
            path = resolve_data_dir(data_dir) / CORPORA["shakespeare"]["all"].relpath
            if not path.is_file():
                raise DataError(f"permuted stream on shakespeare needs {str(path)!r}")
            text = path.read_text("utf-8")
        return permuted_stream(n_tasks, block_size, seed=seed, text=text)
    if name == "circuit":
        return circuit_stream(n_tasks, block_size, vocab_size=task_vocab)
    if name == "corpus":
        return corpus_stream(n_tasks, block_size, data_dir)
    raise DataError(f"unknown stream {name!r}; expected one of {STREAMS}")
