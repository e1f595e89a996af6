"""Your own text: a ``.txt`` file or a folder of them, tokenized once into a memory-mapped cache.

``slime train --data PATH`` reads PATH (a folder: every ``*.txt`` under it, recursively and through
links to folders, in sorted order of their relative paths, concatenated as they are). Split rule: the last ``data.val_fraction``
of the characters (default 10%) is held out, the rest trains, as the built-in corpora split
(``cut = int((1 - val_fraction) * characters)``). Each split is encoded on its own, so no token spans
the cut. A BPE tokenizer is trained on the training split only.

Encoded tokens live in a cache folder (``data.cache_dir``, else ``$SLIME_CACHE_DIR``, else
``$XDG_CACHE_HOME/slime/tokens`` or ``~/.cache/slime/tokens``) as raw ``uint16`` (``uint32`` for
vocabularies over 65536) arrays, one per split, keyed by the sha256 of the text's bytes, the cut and the
tokenizer's identity; a JSON manifest written last (every file written to a temporary name and renamed)
marks an entry complete. It records the text's hash, cut, tokenizer identity and each array's sha256,
all checked on every load: an entry that does not match (a flipped byte, another corpus's files copied
over it) is reported and encoded again, and text that changes while it is encoded is refused, not
cached. A second run with the same text and tokenizer memory-maps the cache and
encodes nothing; a BPE tokenizer trained on the same split is cached too. Batches are random windows
read from the memory map, so corpora larger than RAM work: the text is read in pieces of about a
million characters, cut between a non-space character and the whitespace after it, where GPT-2's
pre-tokenizer splits anyway, so a byte-level BPE (or char) tokenizes the pieces as it would the whole
text; a tokenizer file with another pre-tokenizer may tokenize a piece's edges differently). A run
of text without whitespace is cut where it must be: every 16,384 characters when encoded, every
1,024 when a BPE is trained on it (the trainer's time grows with the square of a word's length).

Refused with one :class:`~slime.proto.DataError` naming the file: a missing path, a folder without
``.txt`` files, a sub-folder that cannot be listed, a link loop, a ``.txt`` that is no regular file
(a broken link, a pipe), empty text, a UTF-16 or UTF-32 file (by its byte-order mark), a NUL byte or bytes
that are not UTF-8 (a binary file), a split shorter than
one window, a tokenizer file that does not parse, characters a loaded tokenizer file has no token for
(named, with their code points where they would not show, before anything is encoded).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from slime.proto import DataError, shown
from slime.train.datasets import shifted, split_tokens, window_offsets
from slime.train.tokenizer import (
    CharTokenizer,
    Tokenizer,
    dropped_chars,
    load_tokenizer,
    parse_tokenizer_spec,
    show_chars,
    train_bpe,
    write_atomic,
)
from torch import Tensor

__all__ = ["TextCorpus", "TextSource", "load_text", "resolve_cache_dir", "scan_text"]

CACHE_FORMAT = "slime-tokens/2"  # 2: arrays hashed, a leading BOM is no text
_READ_BYTES = 1 << 20
PIECE_CHARS = 1 << 20  # characters read and encoded at a time
# The longest string a BPE is trained on: HF's trainer takes time quadratic in the length of a
# word, and a run without whitespace (a DNA sequence, a base64 blob) is one word of up to a piece.
TRAIN_PART_CHARS = 1 << 10


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The token cache folder: ``cache_dir``, ``$SLIME_CACHE_DIR``, ``$XDG_CACHE_HOME/slime/tokens``
    or ``~/.cache/slime/tokens``, in that order."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("SLIME_CACHE_DIR"):
        return Path(os.environ["SLIME_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "slime" / "tokens"


@dataclass(frozen=True)
class TextSource:
    """The files of a text corpus, their combined sha256 and their length in characters."""

    path: Path
    files: tuple[Path, ...]
    sha256: str
    chars: int
    bytes: int
    alphabet: frozenset[str]
    stamps: tuple[tuple[int, int, int], ...] = ()  # each file's size, mtime_ns, inode when hashed

    def check_unchanged(self) -> None:
        """Raise DataError naming the first file whose size, mtime or inode is no longer that of
        the bytes hashed: tokens read from it would not be the text of :attr:`sha256`."""
        for file, stamp in zip(self.files, self.stamps, strict=False):
            try:
                now = _stamp(os.stat(file))
            except OSError as exc:
                now = exc.strerror or str(exc)
            if now != stamp:
                raise DataError(
                    f"{str(file)!r} changed while it was being read (size, mtime or inode now "
                    f"{now}, {stamp} when hashed); nothing was cached: run again once it is "
                    "complete"
                )

    def pieces(self, start: int, stop: int) -> Iterator[str]:
        """The text's characters ``[start, stop)``, in pieces of about :data:`PIECE_CHARS`, each cut
        between a non-space character and the whitespace after it (when the piece holds one)."""
        carry, position = "", 0
        for file in self.files:
            with open(file, encoding="utf-8-sig", newline="") as handle:
                while position < stop:
                    block = handle.read(PIECE_CHARS)
                    if not block:
                        break
                    lo, hi = max(start - position, 0), min(stop - position, len(block))
                    position += len(block)
                    if lo >= hi:
                        continue
                    carry += block[lo:hi]
                    if len(carry) >= PIECE_CHARS:
                        cut = _boundary(carry)
                        yield carry[:cut]
                        carry = carry[cut:]
            if position >= stop:
                break
        if carry:
            yield carry


_CUT = re.compile(r"\S(?=\s)")


def _boundary(text: str) -> int:
    """Just before the last whitespace character that follows a non-space one, else ``len(text)``.

    GPT-2's pre-tokenizer never joins a non-space character with the whitespace after it (only a
    space with the word after it), so a byte-level BPE encodes the two sides of such a cut as it
    encodes the whole text."""
    window = 4096
    while True:
        lo = max(len(text) - window, 0)
        last = None
        for last in _CUT.finditer(text, lo):  # noqa: B007 (the last match is wanted)
            pass
        if last is not None:
            return last.end()
        if lo == 0:
            return len(text)
        window *= 4


def _split(piece: str, size: int = 1 << 14) -> list[str]:
    """``piece`` in parts of about ``size`` characters cut as :meth:`TextSource.pieces` cuts (so an
    HF tokenizer encodes them in parallel, with the ids of the whole piece)."""
    parts, at = [], 0
    while len(piece) - at > size:
        cut = at + _boundary(piece[at : at + size])
        parts.append(piece[at:cut])
        at = cut
    parts.append(piece[at:])
    return parts


def _walk(folder: Path, ancestors: frozenset[tuple[int, int]]) -> Iterator[Path]:
    """Every ``*.txt`` under ``folder``, following links to folders; a folder that cannot be
    listed, a link back to a folder above it, or a ``.txt`` that is no regular file (a broken
    link, a pipe, a socket, a device) is a DataError naming it, never skipped."""
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError as exc:
        raise DataError(f"cannot read data folder {str(folder)!r}: {exc.strerror or exc}") from None
    for entry in entries:
        child = Path(entry.path)
        try:
            is_dir = entry.is_dir()  # follows a link
            stat = child.stat() if is_dir else None
        except OSError as exc:
            raise DataError(f"cannot read {str(child)!r}: {exc.strerror or exc}") from None
        if stat is not None:
            identity = (stat.st_dev, stat.st_ino)
            if identity in ancestors:
                raise DataError(
                    f"{str(child)!r} links back to a folder that holds it (a loop); remove the "
                    "link or point --data below it"
                )
            yield from _walk(child, ancestors | {identity})
        elif entry.name.endswith(".txt"):
            if not child.is_file():
                raise DataError(
                    f"{str(child)!r} is not a regular file (a broken link, a pipe, a socket or a "
                    "device); remove it or move it out of the data folder"
                )
            yield child


def _text_files(path: Path) -> tuple[Path, ...]:
    if path.is_file():
        return (path,)
    if path.is_dir():
        root = path.stat()
        files = tuple(sorted(_walk(path, frozenset({(root.st_dev, root.st_ino)}))))
        if not files:
            raise DataError(f"data folder {str(path)!r} holds no .txt files")
        return files
    if path.exists():  # a device, a pipe, a socket
        raise DataError(
            f"data path {str(path)!r} is neither a regular file nor a folder (expected a .txt "
            "file or a folder of them)"
        )
    raise DataError(f"data path {str(path)!r} does not exist (expected a .txt file or a folder)")


def scan_text(path: str | os.PathLike[str]) -> TextSource:
    """Read every byte once: hash, check it is UTF-8 text without NUL bytes, count characters.

    Raises:
        DataError: missing path, no .txt files, a binary or non-UTF-8 file, or no text at all.
    """
    path = Path(path)
    files = _text_files(path)
    digest = hashlib.sha256()
    chars = total = 0
    alphabet: set[str] = set()
    stamps: list[tuple[int, int, int]] = []
    for file in files:
        if path.is_dir():  # the order and names of a folder's files are part of its text
            # the name's bytes: a name that is not UTF-8 (U+DCxx in Python) is a name too
            digest.update(os.fsencode(file.relative_to(path).as_posix()) + b"\0")
        decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")  # a leading BOM is no text
        offset = 0
        try:
            with open(file, "rb") as handle:
                stamps.append(_stamp(os.fstat(handle.fileno())))
                while block := handle.read(_READ_BYTES):
                    if offset == 0 and block[:2] in (b"\xff\xfe", b"\xfe\xff"):
                        raise DataError(
                            f"{str(file)!r} starts with a UTF-16 (or UTF-32) byte-order mark; "
                            "expected UTF-8 text (convert it: iconv -f UTF-16 -t UTF-8)"
                        )
                    nul = block.find(b"\0")
                    if nul >= 0:
                        raise DataError(
                            f"{str(file)!r} holds a NUL byte at offset {offset + nul}: a binary "
                            "file, not text"
                        )
                    try:
                        text = decoder.decode(block)
                    except UnicodeDecodeError as exc:
                        raise DataError(
                            f"{str(file)!r} is not UTF-8 text (byte {offset + exc.start}: "
                            f"{exc.reason}); a binary file?"
                        ) from None
                    chars += len(text)
                    alphabet.update(text)
                    digest.update(block)
                    offset += len(block)
                try:
                    decoder.decode(b"", final=True)
                except UnicodeDecodeError:
                    raise DataError(
                        f"{str(file)!r} is not UTF-8 text (it ends inside a character)"
                    ) from None
        except OSError as exc:
            raise DataError(f"cannot read {str(file)!r}: {exc.strerror or exc}") from None
        total += offset
    if chars == 0:
        what = "file" if path.is_file() else "folder's .txt files"
        raise DataError(f"data {what} {str(path)!r} is empty; expected some text")
    source = TextSource(
        path, files, digest.hexdigest(), chars, total, frozenset(alphabet), tuple(stamps)
    )
    source.check_unchanged()  # written to while it was hashed
    return source


def _stamp(stat: os.stat_result) -> tuple[int, int, int]:
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)


class _Progress:
    """A plain progress line on a stream: redrawn in place on a terminal, every 10% elsewhere."""

    def __init__(self, label: str, total: int, stream: TextIO | None) -> None:
        self.label, self.total, self.stream = label, max(total, 1), stream
        self.inline = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.t0, self.shown = time.perf_counter(), -1

    def update(self, done: int) -> None:
        if self.stream is None:
            return
        tenth = 10 * done // self.total
        if not self.inline and tenth == self.shown:
            return
        self.shown = tenth
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        filled = 24 * done // self.total
        text = (
            f"{self.label} [{'#' * filled}{'.' * (24 - filled)}] {100 * done // self.total}% "
            f"({done:,}/{self.total:,} chars, {rate:,.0f} chars/s)"
        )
        self.stream.write(f"\r{text}" if self.inline else f"{text}\n")
        if self.inline and done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _writable(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the token cache {str(folder)!r}: {exc.strerror or exc} (set "
            "data.cache_dir or SLIME_CACHE_DIR)"
        ) from None
    return folder


def _encode_split(
    source: TextSource,
    start: int,
    stop: int,
    tokenizer: Tokenizer,
    dtype: np.dtype,
    target: Path,
    progress: _Progress,
    digest: Any,
) -> int:
    """Encode characters ``[start, stop)`` into the raw array file ``target`` (via a temporary
    file and a rename), feeding its bytes to ``digest``; returns the number of tokens."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    count, done = 0, 0
    try:
        with os.fdopen(fd, "wb") as handle:
            for piece in source.pieces(start, stop):
                ids = np.concatenate([np.zeros(0, np.int64), *tokenizer.encode_many(_split(piece))])
                if ids.size and int(ids.max()) >= tokenizer.vocab_size:
                    raise DataError(
                        f"the tokenizer produced id {int(ids.max())}, outside its vocabulary of "
                        f"{tokenizer.vocab_size}"
                    )
                payload = ids.astype(dtype).tobytes()
                digest.update(payload)
                handle.write(payload)
                count += ids.size
                done += len(piece)
                progress.update(done)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _file_sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while block := handle.read(_READ_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _map(file: Path, dtype: np.dtype | str, count: int) -> np.ndarray:
    """A read-only memory map of ``count`` tokens (mmap refuses empty files: an empty array)."""
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(file, dtype=dtype, mode="r", shape=(count,))


def _cached_tokens(
    source: TextSource,
    cut: int,
    tokenizer: Tokenizer,
    cache: Path,
    stream: TextIO | None,
) -> tuple[dict[str, np.ndarray], Path]:
    """The memory-mapped ``train`` and ``val`` token arrays of ``source`` split at ``cut``."""
    key = hashlib.sha256(
        json.dumps([CACHE_FORMAT, source.sha256, cut, tokenizer.identity]).encode()
    ).hexdigest()[:40]
    manifest = cache / f"{key}.json"
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
    expected = {
        "format": CACHE_FORMAT,
        "sha256": source.sha256,
        "cut": cut,
        "tokenizer": tokenizer.identity,
        "dtype": dtype.name,
    }
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text("utf-8"))
            for field, value in expected.items():
                if meta[field] != value:
                    raise ValueError(f"its {field} is {shown(meta[field])}, expected {value!r}")
            arrays = {}
            for split in ("train", "val"):
                file = cache / f"{key}.{split}.bin"
                if file.stat().st_size != meta[split] * dtype.itemsize:
                    raise ValueError(f"{file} has the wrong size")
                if _file_sha256(file) != meta[f"{split}_sha256"]:
                    raise ValueError(f"{file} does not hash to the sha256 the manifest records")
                arrays[split] = _map(file, dtype, meta[split])
            return arrays, manifest
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            if stream is not None:
                stream.write(f"token cache entry {manifest} is damaged ({exc}); encoding again\n")
    _writable(cache)
    counts, hashes = {}, {}
    for split, (start, stop) in (("train", (0, cut)), ("val", (cut, source.chars))):
        label = f"encoding {split} split ({tokenizer.kind})"
        digest = hashlib.sha256()
        counts[split] = _encode_split(
            source,
            start,
            stop,
            tokenizer,
            dtype,
            cache / f"{key}.{split}.bin",
            _Progress(label, stop - start, stream),
            digest,
        )
        hashes[f"{split}_sha256"] = digest.hexdigest()
    source.check_unchanged()  # tokens of text that changed since its hash must not be cached
    meta = {**expected, "source": str(source.path), **counts, **hashes}
    write_atomic(manifest, json.dumps(meta))  # on disk before the rename, as the arrays are
    arrays = {split: _map(cache / f"{key}.{split}.bin", dtype, n) for split, n in counts.items()}
    return arrays, manifest


def _bpe(source: TextSource, cut: int, vocab: int, cache: Path, stream: TextIO | None) -> Tokenizer:
    """A byte-level BPE trained on characters ``[0, cut)`` of ``source``, cached by text and size."""
    import tokenizers

    key = hashlib.sha256(
        json.dumps(
            ["bpe", CACHE_FORMAT, source.sha256, cut, vocab, tokenizers.__version__]
        ).encode()
    ).hexdigest()[:40]
    path = cache / f"bpe-{key}.json"
    if path.is_file():
        try:
            return load_tokenizer(path)
        except DataError as exc:  # a damaged cache entry: train again and replace it
            if stream is not None:
                stream.write(f"{exc}; training the tokenizer again\n")
    if stream is not None:
        stream.write(f"training a byte-level BPE tokenizer (vocab {vocab}) on the training split\n")
    # In parts cut as the pieces are (where GPT-2's pre-tokenizer splits anyway, so the words
    # counted are the same), and inside a word only when it is longer than a part.
    parts = (part for piece in source.pieces(0, cut) for part in _split(piece, TRAIN_PART_CHARS))
    tokenizer = train_bpe(parts, vocab, length=-(-cut // TRAIN_PART_CHARS))
    tokenizer.save(_writable(cache) / path.name)
    return tokenizer


class TextCorpus:
    """Token streams of a text corpus (memory-mapped arrays), sampled in random windows.

    Follows the :class:`~slime.train.datasets.Dataset` protocol; ``splits`` maps ``train`` and
    ``val`` to their token arrays, ``chars`` to their lengths in characters.
    """

    def __init__(
        self,
        splits: dict[str, np.ndarray],
        tokenizer: Tokenizer,
        block_size: int,
        *,
        source: TextSource,
        cut: int,
        val_fraction: float,
        cache_entry: Path | None = None,
    ) -> None:
        self.splits, self.tokenizer, self.block_size = splits, tokenizer, block_size
        self.vocab_size = tokenizer.vocab_size
        self.source, self.cut, self.val_fraction = source, cut, val_fraction
        self.cache_entry = cache_entry
        self.requested_vocab: int | None = None  # bpe:VOCAB asked for (the result may be smaller)
        self.chars = {"train": cut, "val": source.chars - cut}
        for split, tokens in splits.items():
            if len(tokens) <= block_size:
                raise DataError(
                    f"{split} split of {str(source.path)!r} has {len(tokens)} tokens; expected "
                    f"more than block_size {block_size} (a longer text, or another "
                    "data.val_fraction)"
                )

    def encode(self, text: str) -> Tensor:
        return torch.from_numpy(self.tokenizer.encode_array(text))

    def decode(self, ids: Tensor | list[int]) -> str:
        return self.tokenizer.decode(ids.tolist() if isinstance(ids, Tensor) else ids)

    def describe(self) -> str:
        """The corpus and its split rule, in one line."""
        files = len(self.source.files)
        what = (
            f"{files} .txt file{'s' if files != 1 else ''}, " if self.source.path.is_dir() else ""
        )
        train, val = (len(self.splits[s]) for s in ("train", "val"))
        asked = self.requested_vocab
        short = asked is not None and asked > self.vocab_size
        note = f" (asked {asked}: the training split has no more merges)" if short else ""
        return (
            f"data: {self.source.path} ({what}{self.source.chars:,} characters); tokenizer "
            f"{self.tokenizer.describe()}{note}; held out: the last {100 * self.val_fraction:g}% of the "
            f"characters (data.val_fraction): train {self.chars['train']:,} characters = "
            f"{train:,} tokens, val {self.chars['val']:,} characters = {val:,} tokens"
        )

    def batch(
        self, split: str, batch_size: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Random windows (as :class:`~slime.train.datasets.CharCorpus`), read from the map."""
        tokens = split_tokens(self.splits, split)
        offsets = window_offsets(len(tokens), self.block_size, batch_size, generator)
        return shifted(torch.from_numpy(tokens[offsets.numpy()].astype(np.int64)))


def _check_covers(tok: Tokenizer, source: TextSource, path: str) -> None:
    """DataError naming the characters of the text at ``source`` that the tokenizer file at
    ``path`` has no token for, before anything is encoded: a char vocabulary (another run's, or
    the run's own when ``slime eval --data`` scores other text) refuses them, and a BPE or
    WordPiece without an unknown token drops them (whitespace aside) and the model would train on
    the text without them."""
    if isinstance(tok, CharTokenizer):
        known = set(tok.itos)
        lost = sorted(c for c in source.alphabet if c not in known)
        how = "refuses them"
    else:
        lost = dropped_chars(tok, source.alphabet)
        how = "would drop them silently; use a byte-level BPE (--tokenizer bpe) or a tokenizer with an unknown token"
    if lost:
        listed = show_chars(lost)
        raise DataError(
            f"tokenizer file {path!r} has no token for {len(lost)} character(s) of the text in "
            f"{str(source.path)!r} ({listed}) and {how}"
        )


def load_text(
    path: str | os.PathLike[str],
    block_size: int,
    *,
    tokenizer: str = "char",
    val_fraction: float = 0.1,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: TextIO | None = sys.stderr,
) -> TextCorpus:
    """Read, split, tokenize (or find in the cache) and memory-map the text at ``path``.

    Args:
        tokenizer: ``char``, ``bpe``, ``bpe:VOCAB`` or a tokenizer file (see slime.train.tokenizer).
        progress: where encoding reports progress (None: silent).

    Raises:
        DataError: see the module docstring. ConfigError: a malformed ``bpe:VOCAB``.
    """
    source = scan_text(path)
    cut = int((1.0 - val_fraction) * source.chars)
    cache = resolve_cache_dir(cache_dir)
    kind, vocab = parse_tokenizer_spec(tokenizer)
    if kind == "char":
        tok: Tokenizer = CharTokenizer(sorted(source.alphabet))  # both splits, as built-ins do
    elif kind == "bpe":
        tok = _bpe(source, cut, vocab, cache, progress)
    else:
        tok = load_tokenizer(tokenizer)
        _check_covers(tok, source, tokenizer)
    splits, entry = _cached_tokens(source, cut, tok, cache, progress)
    corpus = TextCorpus(
        splits,
        tok,
        block_size,
        source=source,
        cut=cut,
        val_fraction=val_fraction,
        cache_entry=entry,
    )
    corpus.requested_vocab = vocab if kind == "bpe" else None
    return corpus
