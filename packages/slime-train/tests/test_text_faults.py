"""Fault injection on text data, the token cache and tokenizer files (hardening issue 14)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from prose_text import prose
from slime.proto import DataError
from slime.train import text as text_module
from slime.train.text import load_text, scan_text


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SLIME_CACHE_DIR", str(cache))
    return cache


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _entry(corpus: text_module.TextCorpus) -> str:
    assert corpus.cache_entry is not None
    return corpus.cache_entry.name.removesuffix(".json")


def test_a_flipped_byte_in_cached_tokens_is_detected_and_encoded_again(
    tmp_path: Path, _cache: Path
) -> None:
    path = _write(tmp_path / "a.txt", prose(5_000))
    first = load_text(path, 8, progress=None)
    expected = np.array(first.splits["train"])
    cached = _cache / f"{_entry(first)}.train.bin"
    data = bytearray(cached.read_bytes())
    data[0] ^= 1  # still a token id inside the vocabulary: only a hash sees it
    del first
    cached.write_bytes(bytes(data))
    report = io.StringIO()
    again = load_text(path, 8, progress=report)
    assert "damaged" in report.getvalue() and "sha256" in report.getvalue()
    assert np.array_equal(np.array(again.splits["train"]), expected)


def test_another_corpus_cache_copied_over_an_entry_is_not_used(
    tmp_path: Path, _cache: Path
) -> None:
    a = _write(tmp_path / "a.txt", prose(5_000))
    b = _write(tmp_path / "b.txt", prose(5_000, seed=1))
    first = load_text(a, 8, progress=None)
    expected = {s: np.array(t) for s, t in first.splits.items()}
    other = load_text(b, 8, progress=None)
    key, other_key = _entry(first), _entry(other)
    del first, other
    for suffix in ("train.bin", "val.bin", "json"):
        shutil.copy(_cache / f"{other_key}.{suffix}", _cache / f"{key}.{suffix}")
    report = io.StringIO()
    again = load_text(a, 8, progress=report)
    assert "damaged" in report.getvalue() and "sha256" in report.getvalue()
    for split, tokens in expected.items():
        assert np.array_equal(np.array(again.splits[split]), tokens)


def test_text_that_changes_while_it_is_encoded_is_refused_and_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _cache: Path
) -> None:
    path = _write(tmp_path / "a.txt", prose(5_000))
    scan = text_module.scan_text

    def scan_then_edit(target: Path) -> text_module.TextSource:
        source = scan(target)
        _write(path, prose(5_000, seed=3))  # another text after the hash was taken
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        return source

    monkeypatch.setattr(text_module, "scan_text", scan_then_edit)
    with pytest.raises(DataError, match="changed while it was being read"):
        load_text(path, 8, progress=None)
    assert not list(_cache.glob("*.json"))  # no manifest: nothing keyed by the old hash
    monkeypatch.setattr(text_module, "scan_text", scan)
    assert load_text(path, 8, progress=None).source.sha256 == scan_text(path).sha256


def _word_level(vocab: dict[str, int], unk: str | None = "<unk>") -> str:
    import json

    return json.dumps(
        {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [],
            "normalizer": None,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": None,
            "decoder": None,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": unk},
        }
    )


def test_a_tokenizer_that_cannot_encode_the_text_is_a_data_error(tmp_path: Path) -> None:
    file = _write(tmp_path / "tok.json", _word_level({"hello": 0, "world": 1}))
    path = _write(tmp_path / "a.txt", "hello world foo " * 300)
    with pytest.raises(DataError, match="wordlevel tokenizer cannot encode the text.*UNK"):
        load_text(path, 8, tokenizer=str(file), progress=None)


@pytest.mark.parametrize(
    ("vocab", "match"),
    [
        ({"hello": 0, "world": 100_000, "<unk>": 1}, "3 tokens but gives one the id 100,000"),
        ({f"w{i}": i for i in range((1 << 20) + 1)}, "1,048,577 tokens; at most 1,048,576"),
    ],
)
def test_tokenizer_files_whose_ids_do_not_fit_a_vocabulary_are_refused(
    tmp_path: Path, vocab: dict[str, int], match: str
) -> None:
    from slime.train.tokenizer import load_tokenizer

    file = _write(tmp_path / "tok.json", _word_level(vocab))
    with pytest.raises(DataError, match=f"{file.name}.*{match}"):
        load_tokenizer(file)


def test_a_utf8_byte_order_mark_is_not_text(tmp_path: Path) -> None:
    text = prose(3_000)
    folder = tmp_path / "bom"
    _write(folder / "a.txt", b"\xef\xbb\xbf" + text.encode())
    _write(folder / "b.txt", b"\xef\xbb\xbf" + text.encode())
    corpus = load_text(folder, 8, progress=None)
    assert "\ufeff" not in corpus.tokenizer.itos  # each file's mark became a token before
    assert corpus.source.chars == 2 * len(text)
    joined = "".join(corpus.tokenizer.decode(corpus.splits[s].tolist()) for s in ("train", "val"))
    assert joined == text + text


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_utf16_and_utf32_files_are_named_as_such(tmp_path: Path, encoding: str) -> None:
    path = _write(tmp_path / "a.txt", prose(1_000).encode(encoding))
    with pytest.raises(DataError, match="UTF-16 \\(or UTF-32\\) byte-order mark.*expected UTF-8"):
        scan_text(path)


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    _write(folder / "a.txt", prose(2_000))
    _write(folder / "sub" / "b.txt", prose(2_000, seed=1))
    return folder


def test_a_link_to_a_folder_is_followed(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    _write(tmp_path / "elsewhere" / "c.txt", prose(2_000, seed=2))
    os.symlink(tmp_path / "elsewhere", folder / "linked")
    names = [f.relative_to(folder).as_posix() for f in scan_text(folder).files]
    assert names == ["a.txt", "linked/c.txt", "sub/b.txt"]  # linked/ was skipped silently


def test_a_link_loop_in_a_data_folder_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    os.symlink(folder, folder / "sub" / "up")
    with pytest.raises(DataError, match="up' links back to a folder that holds it"):
        scan_text(folder)


@pytest.mark.parametrize("kind", ["broken link", "fifo"])
def test_a_txt_that_is_no_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    folder = _folder(tmp_path)
    odd = folder / "sub" / "odd.txt"
    if kind == "fifo":
        os.mkfifo(odd)
    else:
        os.symlink(tmp_path / "gone.txt", odd)
    with pytest.raises(DataError, match="odd.txt' is not a regular file"):
        scan_text(folder)


def test_a_txt_that_is_a_folder_is_read_as_a_folder(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    _write(folder / "notes.txt" / "c.txt", prose(2_000, seed=2))
    names = [f.relative_to(folder).as_posix() for f in scan_text(folder).files]
    assert names == ["a.txt", "notes.txt/c.txt", "sub/b.txt"]


def test_a_sub_folder_that_cannot_be_listed_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As root a chmod 000 folder still lists, so the refusal is injected (`setpriv --reuid=nobody`
    # on a chmod 000 sub-folder showed the same: its files were dropped from the text silently).
    folder = _folder(tmp_path)
    scandir = os.scandir

    def refuse(path: os.PathLike[str] | str) -> object:
        if Path(path) == folder / "sub":
            raise PermissionError(13, "Permission denied")
        return scandir(path)

    monkeypatch.setattr(text_module.os, "scandir", refuse)
    with pytest.raises(DataError, match="cannot read data folder .*sub': Permission denied"):
        scan_text(folder)


def test_a_tokenizer_file_that_would_drop_characters_is_refused(tmp_path: Path) -> None:
    import json

    vocab = {c: i for i, c in enumerate("helo ")}
    bpe = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None,
        "model": {"type": "BPE", "vocab": vocab, "merges": [], "unk_token": None},
    }  # fmt: skip
    file = _write(tmp_path / "tok.json", json.dumps(bpe))
    path = _write(tmp_path / "a.txt", "hello world\n" * 300)  # w, r, d have no token
    with pytest.raises(DataError, match=r"no token for 3 character.*'d', 'r', 'w'"):
        load_text(path, 8, tokenizer=str(file), progress=None)
    covered = _write(tmp_path / "b.txt", "hello hole\n" * 300)  # whitespace aside, all covered
    assert load_text(covered, 8, tokenizer=str(file), progress=None).vocab_size == 5


def test_a_tokenizer_file_write_that_fails_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slime.train import tokenizer as tokenizer_module

    target = _write(tmp_path / "run" / "tokenizer.json", '{"old": true}')
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        tokenizer_module.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd)
    )

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tokenizer_module.os, "replace", crash)
    with pytest.raises(OSError, match="No space"):
        tokenizer_module.write_atomic(target, '{"new": true}')
    assert synced, "the new text must reach the disk before it replaces the old file"
    assert target.read_text() == '{"old": true}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["tokenizer.json"]
