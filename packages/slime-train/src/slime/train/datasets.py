"""Character-level text corpora and random-window batches.

Offline copies live in a data folder given as an argument or by ``$SLIME_DATA_DIR``. Tiny-shakespeare
(public domain) also ships with this package (``corpora/``, see its README): without a data folder
``shakespeare`` loads the bundled copy, so it needs no download and no setup. Splits:

- ``shakespeare``: tiny-shakespeare ``input.txt``, first 90% train / last 10% val (as nanoGPT).
- ``wikitext2``: WikiText-2 (raw tokenised text read character by character). The offline copy has no
  train split, so ``valid.txt`` trains and ``test.txt`` evaluates; with ``train.txt`` present (after
  :func:`download_corpus`), train.txt trains and valid.txt evaluates.
- ``tinystories``: the TinyStories sample ``tinystories_val.txt``, 90% / 10%.

The vocabulary is the sorted set of characters of every file of the corpus, so both splits encode.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from slime.proto import DataError
from slime.train.tokenizer import CharTokenizer
from torch import Tensor

__all__ = [
    "CORPORA",
    "CharCorpus",
    "CorpusFile",
    "Dataset",
    "download_corpus",
    "load_corpus",
    "resolve_data_dir",
]


@runtime_checkable
class Dataset(Protocol):
    """What the trainer samples from: ``batch`` gives ``(idx, targets)``, both ``(B, T)`` int64.

    ``targets`` holds ``-1`` where a position is not scored (cross-entropy ``ignore_index=-1``).
    """

    vocab_size: int
    block_size: int

    def batch(
        self, split: str, batch_size: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus: where it lives under the data folder and where to download it."""

    relpath: str
    url: str
    sha256: str | None  # None: no pinned checksum; download_corpus prints the one it got


_KARPATHY = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare"
_WIKITEXT = (
    "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2"
)
_TINYSTORIES = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main"

# The checksums pinned here are those of the offline copies (../shared/data/README.md).
CORPORA: dict[str, dict[str, CorpusFile]] = {
    "shakespeare": {
        "all": CorpusFile(
            "tinyshakespeare/input.txt",
            f"{_KARPATHY}/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        ),
    },
    "wikitext2": {
        "train": CorpusFile("wikitext-2/train.txt", f"{_WIKITEXT}/train.txt", None),
        "valid": CorpusFile(
            "wikitext-2/valid.txt",
            f"{_WIKITEXT}/valid.txt",
            "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
        ),
        "test": CorpusFile(
            "wikitext-2/test.txt",
            f"{_WIKITEXT}/test.txt",
            "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
        ),
    },
    "tinystories": {
        # The offline sample is the first ~1k stories of the validation split; the full files are
        # TinyStories-valid.txt (~19 MB) and TinyStories-train.txt (~1.9 GB).
        "all": CorpusFile(
            "tinystories/tinystories_val.txt", f"{_TINYSTORIES}/TinyStories-valid.txt", None
        ),
    },
}


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: ``data_dir`` if given, else ``$SLIME_DATA_DIR``.

    Raises:
        DataError: neither is set, or the folder does not exist.
    """
    if data_dir is None:
        data_dir = os.environ.get("SLIME_DATA_DIR")
        if not data_dir:
            raise DataError(
                "no data folder: pass a data_dir (--data-dir) or set SLIME_DATA_DIR to a folder "
                "holding tinyshakespeare/, wikitext-2/ or tinystories/"
            )
    if not str(data_dir):  # as a path, '' would be the current folder
        raise DataError("expected a data folder, got ''")
    path = Path(data_dir)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise DataError(f"data folder {str(path)!r} {what}")
    return path


class CharCorpus:
    """A character-level corpus as two int64 token streams, sampled in random windows.

    Args:
        train_text, val_text: the split texts.
        block_size: window length ``T``.
        vocab_text: text whose characters make the vocabulary (default: both splits).
    """

    def __init__(
        self, train_text: str, val_text: str, block_size: int, vocab_text: str | None = None
    ) -> None:
        chars = sorted(set(vocab_text if vocab_text is not None else train_text + val_text))
        if not chars:
            raise DataError("corpus is empty; expected some text")
        self.itos = chars
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.vocab_size = len(chars)
        self.block_size = block_size
        self.splits = {"train": self.encode(train_text), "val": self.encode(val_text)}
        for split, tokens in self.splits.items():
            if tokens.numel() <= block_size:
                raise DataError(
                    f"{split} split has {tokens.numel()} tokens; expected more than block_size "
                    f"{block_size}"
                )

    @property
    def tokenizer(self) -> CharTokenizer:
        """The vocabulary as a :class:`~slime.train.tokenizer.CharTokenizer` (what a run records)."""
        return CharTokenizer(self.itos)

    def encode(self, text: str) -> Tensor:
        """Text -> ``(N,)`` int64 token ids. Raises DataError on a character outside the vocab."""
        try:
            ids = [self.stoi[c] for c in text]
        except KeyError as exc:
            raise DataError(f"character {exc.args[0]!r} is not in the vocabulary") from exc
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Tensor | list[int]) -> str:
        """Token ids -> text."""
        return "".join(self.itos[int(i)] for i in ids)

    def batch(
        self, split: str, batch_size: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Random windows: ``idx`` ``(B, T)`` and ``targets`` = ``idx`` shifted by one."""
        tokens = split_tokens(self.splits, split)
        return shifted(tokens[window_offsets(len(tokens), self.block_size, batch_size, generator)])


def split_tokens(splits: dict[str, Any], split: str) -> Any:
    """``splits[split]``, or a DataError naming the split."""
    if split not in splits:
        raise DataError(f"unknown split {split!r}; expected 'train' or 'val'")
    return splits[split]


def window_offsets(
    n_tokens: int, block_size: int, batch_size: int, generator: torch.Generator
) -> Tensor:
    """``(B, T + 1)`` token positions of ``batch_size`` random windows of ``block_size + 1``."""
    starts = torch.randint(n_tokens - block_size, (batch_size,), generator=generator)
    return starts[:, None] + torch.arange(block_size + 1)


def shifted(windows: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, T + 1)`` windows -> inputs ``(B, T)`` and targets (the inputs shifted by one)."""
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def _read(data_dir: Path, file: CorpusFile) -> str:
    path = data_dir / file.relpath
    if not path.is_file():
        raise DataError(f"corpus file {str(path)!r} is missing; see slime.train.datasets.CORPORA")
    return path.read_text(encoding="utf-8")


BUNDLED = Path(__file__).parent / "corpora"


def _bundled(name: str) -> bool:
    """Whether every file of corpus ``name`` ships in :data:`BUNDLED`."""
    return all((BUNDLED / f.relpath).is_file() for f in CORPORA[name].values())


def load_corpus(
    name: str, block_size: int, data_dir: str | os.PathLike[str] | None = None
) -> CharCorpus:
    """Load ``shakespeare``, ``wikitext2`` or ``tinystories`` from the data folder
    (``data_dir``, else ``$SLIME_DATA_DIR``, else the bundled copy where one ships).

    Raises:
        DataError: unknown name, missing folder or file, or a split shorter than a window.
    """
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}; expected one of {sorted(CORPORA)}")
    files = CORPORA[name]
    if data_dir is None and not os.environ.get("SLIME_DATA_DIR") and _bundled(name):
        folder = BUNDLED
    else:
        folder = resolve_data_dir(data_dir)
    if name == "wikitext2":
        if (folder / files["train"].relpath).is_file():
            train, val = _read(folder, files["train"]), _read(folder, files["valid"])
        else:  # offline copy: valid trains, test evaluates
            train, val = _read(folder, files["valid"]), _read(folder, files["test"])
        return CharCorpus(train, val, block_size)
    text = _read(folder, files["all"])
    cut = int(0.9 * len(text))
    return CharCorpus(text[:cut], text[cut:], block_size, vocab_text=text)


def download_corpus(name: str, data_dir: str | os.PathLike[str]) -> list[Path]:
    """Download a corpus's files into ``data_dir`` (for users with internet; tests never call it).

    Files already present are kept. A pinned checksum that does not match raises DataError and
    leaves no file behind; an unpinned file's sha256 is printed so that it can be recorded.
    """
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}; expected one of {sorted(CORPORA)}")
    written = []
    for file in CORPORA[name].values():
        path = Path(data_dir) / file.relpath
        if path.is_file():
            written.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(file.url, timeout=60) as response:  # noqa: S310 (https only)
            payload = response.read()
        digest = hashlib.sha256(payload).hexdigest()
        if file.sha256 is not None and digest != file.sha256:
            raise DataError(f"{file.url} has sha256 {digest}; expected {file.sha256}")
        if file.sha256 is None:
            print(f"{path}: sha256 {digest} (not pinned)")
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(payload)
        os.replace(tmp, path)
        written.append(path)
    return written
