"""Tokenizers of text runs: characters, or any HF ``tokenizers`` tokenizer (byte-level BPE trained here).

``data.tokenizer`` (``--tokenizer``) is one of

- ``char``: the vocabulary is the sorted set of the corpus's characters (as the built-in corpora);
- ``bpe`` or ``bpe:VOCAB``: a byte-level BPE (GPT-2's pre-tokenizer, all 256 bytes in the alphabet, so
  every text encodes) trained with the HF ``tokenizers`` library on the training split, default
  vocabulary :data:`DEFAULT_BPE_VOCAB`;
- a path to a ``tokenizer.json``: an HF tokenizer file, or the ``slime-char`` file a char run writes.

Every run directory records its tokenizer as ``tokenizer.json`` (:meth:`Tokenizer.save`), so a run
can decode and encode text later (:func:`load_tokenizer`). A tokenizer's :attr:`~Tokenizer.identity`
is the sha256 of its canonical serialisation: token caches are keyed by it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from slime.proto import ConfigError, DataError, shown

__all__ = [
    "DEFAULT_BPE_VOCAB",
    "MAX_BPE_VOCAB",
    "CharTokenizer",
    "HFTokenizer",
    "dropped_chars",
    "Tokenizer",
    "load_tokenizer",
    "parse_tokenizer_spec",
    "train_bpe",
    "write_atomic",
]

DEFAULT_BPE_VOCAB = 4096
MIN_BPE_VOCAB = 256  # the byte alphabet
MAX_BPE_VOCAB = 1 << 20
CHAR_FORMAT = "slime-char"
_BPE = re.compile(r"bpe(?::(.*))?", re.DOTALL)  # fullmatch: 'bpe:300\n' is no spec


def parse_tokenizer_spec(spec: str, path: str = "data.tokenizer") -> tuple[str, int | None]:
    """``"char"`` -> ``("char", None)``, ``"bpe[:N]"`` -> ``("bpe", N)``, else ``("file", None)``.

    Raises:
        ConfigError: ``bpe:`` followed by anything but an int in [256, 2**20].
    """
    if spec == "char":
        return "char", None
    match = _BPE.fullmatch(spec)
    if match is None:
        if not spec:
            raise ConfigError("expected 'char', 'bpe', 'bpe:VOCAB' or a tokenizer.json path", path)
        return "file", None
    if match.group(1) is None:
        return "bpe", DEFAULT_BPE_VOCAB
    text = match.group(1)
    # ASCII digits only: str.isdigit() holds for '²' too, which int() refuses
    if not (text.isascii() and text.isdigit()) or not MIN_BPE_VOCAB <= int(text) <= MAX_BPE_VOCAB:
        raise ConfigError(
            f"expected bpe:VOCAB with VOCAB an integer in [{MIN_BPE_VOCAB}, {MAX_BPE_VOCAB}], "
            f"got {shown(spec)}",
            path,
        )
    return "bpe", int(text)


def show_char(char: str) -> str:
    """``repr(char)``, with its code point when it would not be seen: a combining mark (U+0301
    alone shows as an accent on the quote) or a character ``repr`` prints as itself although it
    draws nothing (a format character: ``repr`` escapes most, not all)."""
    shown_char = repr(char)
    if len(shown_char) == 3 and (unicodedata.category(char)[0] in "MC" or not char.isprintable()):
        return f"{shown_char} (U+{ord(char):04X})"
    return shown_char


def show_chars(chars: list[str], limit: int = 10) -> str:
    """The first ``limit`` of ``chars`` as :func:`show_char` shows each, comma-separated, with
    ``...`` when there are more."""
    listed = ", ".join(show_char(c) for c in chars[:limit])
    return listed + (", ..." if len(chars) > limit else "")


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` whole or not at all: flushed and fsynced before the rename, so a
    crash cannot leave a renamed but empty or partial file; the temporary file never stays."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Tokenizer(ABC):
    """Text <-> token ids; ``kind`` names the algorithm (``char``, ``bpe``, ...)."""

    kind: str
    vocab_size: int

    @abstractmethod
    def to_json(self) -> str:
        """The canonical serialisation (what ``tokenizer.json`` holds)."""

    @abstractmethod
    def encode_array(self, text: str) -> np.ndarray:
        """Text -> ``(N,)`` int64 ids. Raises DataError on text the tokenizer cannot encode."""

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        """:meth:`encode_array` of each text (subclasses may batch)."""
        return [self.encode_array(t) for t in texts]

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text."""

    @property
    def identity(self) -> str:
        """sha256 of :meth:`to_json`: equal for equal tokenizers, whatever file they came from."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def describe(self) -> str:
        return f"{self.kind}, {self.vocab_size} tokens"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` to ``path`` (atomically); returns the path."""
        path = Path(path)
        write_atomic(path, self.to_json())
        return path


class CharTokenizer(Tokenizer):
    """One token per character; ``chars`` in id order (sorted for a vocabulary built from text)."""

    kind = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        self.itos = list(chars)
        if not self.itos:
            raise DataError("a character vocabulary needs at least one character")
        if any(not isinstance(c, str) or len(c) != 1 for c in self.itos):
            raise DataError("a character vocabulary holds single characters only")
        if len(set(self.itos)) != len(self.itos):
            raise DataError("a character vocabulary lists a character twice")
        self.vocab_size = len(self.itos)
        codes = np.array([ord(c) for c in self.itos], dtype=np.int64)
        self._order = np.argsort(codes)
        self._sorted = codes[self._order]

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    def to_json(self) -> str:
        return json.dumps({"type": CHAR_FORMAT, "version": 1, "vocab": self.itos})

    def encode_array(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(
            np.int64
        )
        where = np.searchsorted(self._sorted, codes).clip(max=len(self._sorted) - 1)
        known = self._sorted[where] == codes
        if not known.all():
            bad = chr(int(codes[np.argmin(known)]))
            raise DataError(f"character {show_char(bad)} is not in the run's character vocabulary")
        return self._order[where]

    def decode(self, ids: Iterable[int]) -> str:
        try:
            return "".join(self.itos[int(i)] for i in ids)
        except IndexError:
            raise DataError(
                f"a token id is outside the vocabulary [0, {self.vocab_size})"
            ) from None


class HFTokenizer(Tokenizer):
    """A tokenizer of the HF ``tokenizers`` library; ``kind`` is its model type, lower case
    (``bpe``, ``wordpiece``, ``unigram``, ``wordlevel``).

    Special tokens are neither added when encoding nor dropped when decoding: the ids are the text's.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        model = json.loads(tokenizer.to_str()).get("model") or {}
        self.kind = str(model.get("type", "unknown")).lower()
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        if self.vocab_size < 1:
            raise DataError("the tokenizer has an empty vocabulary")
        if self.vocab_size > MAX_BPE_VOCAB:
            raise DataError(
                f"the tokenizer has {self.vocab_size:,} tokens; at most {MAX_BPE_VOCAB:,} are "
                "supported"
            )
        top = max(tokenizer.get_vocab(with_added_tokens=True).values())
        if top >= self.vocab_size:  # ids with gaps: the model's embedding has vocab_size rows
            raise DataError(
                f"the tokenizer has {self.vocab_size:,} tokens but gives one the id {top:,}; "
                f"expected ids 0 to {self.vocab_size - 1:,}"
            )

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    def encode_array(self, text: str) -> np.ndarray:
        return self.encode_many([text])[0]

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        try:
            encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        except Exception as exc:  # tokenizers raises a bare Exception; re-typed, not hidden
            message = " ".join(str(exc).split())
            raise DataError(
                f"the {self.kind} tokenizer cannot encode the text: {message}"
            ) from None
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


def dropped_chars(tokenizer: Tokenizer, text: str | Iterable[str]) -> list[str]:
    """The characters of ``text`` (whitespace aside), sorted, that ``tokenizer`` encodes to no
    token at all: an HF BPE or WordPiece without an unknown token drops what it has no token for.
    Empty for a char vocabulary, which refuses unknown characters itself."""
    if not isinstance(tokenizer, HFTokenizer):
        return []
    chars = sorted({c for c in text if not c.isspace()})
    return [c for c, ids in zip(chars, tokenizer.encode_many(chars), strict=True) if ids.size == 0]


def train_bpe(chunks: Iterable[str], vocab_size: int, *, length: int | None = None) -> HFTokenizer:
    """A byte-level BPE with at most ``vocab_size`` tokens trained on the texts ``chunks``.

    Fewer tokens result when the text has no more pairs to merge (a small or repetitive corpus).
    """
    from tokenizers import Tokenizer as HF
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = HF(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: any text encodes
        special_tokens=[],
        show_progress=False,
    )
    tokenizer.train_from_iterator(chunks, trainer, length=length)
    return HFTokenizer(tokenizer)


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """A tokenizer file: the ``slime-char`` JSON of a char run, or any HF ``tokenizer.json``.

    Raises:
        DataError: the file is missing, unreadable, or does not parse as either.
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise DataError(
            f"tokenizer file {str(path)!r} {what} (expected 'char', 'bpe', 'bpe:VOCAB' "
            "or a tokenizer.json)"
        )
    try:
        text = path.read_bytes().decode("utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        message = " ".join(str(exc).split())
        raise DataError(f"tokenizer file {str(path)!r} does not parse as JSON: {message}") from None
    if isinstance(data, dict) and data.get("type") == CHAR_FORMAT:
        vocab = data.get("vocab")
        if data.get("version") != 1 or not isinstance(vocab, list):
            raise DataError(f"tokenizer file {str(path)!r}: expected version 1 and a 'vocab' list")
        try:
            return CharTokenizer(vocab)
        except DataError as exc:
            raise DataError(f"tokenizer file {str(path)!r}: {exc}") from None
    from tokenizers import Tokenizer as HF

    try:
        tokenizer = HF.from_str(text)
    except Exception as exc:  # tokenizers raises a bare Exception; re-typed, not hidden
        message = " ".join(str(exc).split())
        raise DataError(
            f"tokenizer file {str(path)!r} is not a tokenizers JSON file: {message}"
        ) from None
    try:
        return HFTokenizer(tokenizer)
    except DataError as exc:
        raise DataError(f"tokenizer file {str(path)!r}: {exc}") from None
