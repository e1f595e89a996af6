"""Your own text: split rule, char and BPE tokenizers, the memory-mapped token cache, refusals."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from prose_text import prose
from slime.proto import ConfigError, DataError
from slime.train import text as text_module
from slime.train.config import DataConfig
from slime.train.text import TextCorpus, load_text, resolve_cache_dir, scan_text
from slime.train.tokenizer import (
    CharTokenizer,
    HFTokenizer,
    load_tokenizer,
    parse_tokenizer_spec,
)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SLIME_CACHE_DIR", str(cache))
    return cache


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def _joined(corpus: TextCorpus) -> str:
    return "".join(corpus.tokenizer.decode(corpus.splits[s].tolist()) for s in ("train", "val"))


def test_char_text_holds_out_the_last_tenth_of_the_characters(tmp_path: Path) -> None:
    text = prose(20_000) + "naïve café ☕\n"  # multi-byte characters count once each
    corpus = load_text(_write(tmp_path / "a.txt", text), 16, progress=None)
    cut = int(0.9 * len(text))
    assert corpus.tokenizer.itos == sorted(set(text))
    assert corpus.tokenizer.decode(corpus.splits["train"].tolist()) == text[:cut]
    assert corpus.tokenizer.decode(corpus.splits["val"].tolist()) == text[cut:]
    assert isinstance(corpus.splits["train"], np.memmap)
    assert corpus.splits["train"].dtype == np.uint16
    assert "last 10% of the characters" in corpus.describe()


def test_val_fraction_sets_the_cut(tmp_path: Path) -> None:
    text = prose(5_000)
    corpus = load_text(_write(tmp_path / "a.txt", text), 8, val_fraction=0.25, progress=None)
    assert len(corpus.splits["val"]) == len(text) - int(0.75 * len(text))


def test_a_folder_is_its_txt_files_in_sorted_order(tmp_path: Path) -> None:
    parts = {"b/2.txt": prose(3000, 2), "a.txt": prose(3000, 1), "c/z.txt": prose(3000, 3)}
    for name, text in parts.items():
        _write(tmp_path / "corpus" / name, text)
    _write(tmp_path / "corpus" / "notes.md", "ignored \x00")
    corpus = load_text(tmp_path / "corpus", 8, progress=None)
    assert _joined(corpus) == parts["a.txt"] + parts["b/2.txt"] + parts["c/z.txt"]
    assert "3 .txt files" in corpus.describe()


def test_bpe_trains_on_the_training_split_and_round_trips_any_text(tmp_path: Path) -> None:
    text = prose(30_000)
    text = text + "Ünïcödé and 日本語 only in the held-out part.\n" * 30
    corpus = load_text(_write(tmp_path / "a.txt", text), 8, tokenizer="bpe:300", progress=None)
    assert isinstance(corpus.tokenizer, HFTokenizer) and corpus.tokenizer.kind == "bpe"
    assert 256 < corpus.vocab_size <= 300
    assert _joined(corpus) == text  # byte-level: every character encodes, nothing is lost
    assert len(corpus.splits["train"]) < 0.6 * int(0.9 * len(text))  # merges compress
    merged = [corpus.tokenizer.decode([i]) for i in range(256, corpus.vocab_size)]
    assert "日" not in "".join(merged) and "Ü" not in "".join(merged)  # only in the val split


def test_bpe_default_vocabulary_is_4096(tmp_path: Path) -> None:
    assert parse_tokenizer_spec("bpe") == ("bpe", 4096)
    assert parse_tokenizer_spec("bpe:4096") == ("bpe", 4096)
    rng = random.Random(0)  # enough distinct words for 4096 tokens
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(6)) for _ in range(6000)]
    text = "\n".join(" ".join(rng.choice(words) for _ in range(10)) for _ in range(6000))
    corpus = load_text(_write(tmp_path / "a.txt", text), 8, tokenizer="bpe:4096", progress=None)
    assert corpus.vocab_size == 4096 and "asked" not in corpus.describe()


def test_a_small_corpus_gives_fewer_bpe_tokens_and_says_so(tmp_path: Path) -> None:
    corpus = load_text(_write(tmp_path / "a.txt", prose(10_000)), 8, tokenizer="bpe:4096")
    assert corpus.vocab_size < 4096
    assert "(asked 4096: the training split has no more merges)" in corpus.describe()


@pytest.mark.parametrize("spec", ["char", "bpe:400"])
def test_encoding_in_pieces_equals_encoding_the_whole_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    text = prose(40_000).replace(".\n", ".  \n\n", 50)  # some whitespace runs around newlines
    path = _write(tmp_path / "a.txt", text)
    whole = load_text(path, 8, tokenizer=spec, progress=None)
    monkeypatch.setattr(text_module, "PIECE_CHARS", 997)
    monkeypatch.setenv("SLIME_CACHE_DIR", str(tmp_path / "other-cache"))
    tokenizer = str(tmp_path / "tok.json")
    whole.tokenizer.save(tokenizer)
    pieces = load_text(path, 8, tokenizer=tokenizer, progress=None)
    for split in ("train", "val"):
        assert np.array_equal(pieces.splits[split], whole.splits[split])
        expected = whole.tokenizer.encode_array(
            text[: whole.cut] if split == "train" else text[whole.cut :]
        )
        assert np.array_equal(whole.splits[split], expected)


def test_a_second_load_reads_the_cache_and_encodes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _cache: Path
) -> None:
    path = _write(tmp_path / "a.txt", prose(20_000))
    first = load_text(path, 8, tokenizer="bpe:300", progress=None)
    files = sorted(_cache.iterdir())
    stamps = {f: f.stat().st_mtime_ns for f in files}
    assert len(files) == 4  # the BPE tokenizer, a manifest and the two splits

    def fail(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(text_module, "_encode_split", fail)
    monkeypatch.setattr(text_module, "train_bpe", fail)
    second = load_text(path, 8, tokenizer="bpe:300", progress=None)
    assert {f: f.stat().st_mtime_ns for f in sorted(_cache.iterdir())} == stamps
    assert second.tokenizer.identity == first.tokenizer.identity
    for split in ("train", "val"):
        assert np.array_equal(second.splits[split], first.splits[split])


def test_a_damaged_cached_bpe_tokenizer_is_trained_again(tmp_path: Path, _cache: Path) -> None:
    path = _write(tmp_path / "a.txt", prose(5_000))
    first = load_text(path, 8, tokenizer="bpe:300", progress=None)
    (cached,) = _cache.glob("bpe-*.json")
    cached.write_text("{damaged")
    again = load_text(path, 8, tokenizer="bpe:300", progress=None)
    assert again.tokenizer.identity == first.tokenizer.identity
    assert load_tokenizer(cached).identity == first.tokenizer.identity


def test_the_cache_is_keyed_by_content_and_tokenizer(tmp_path: Path, _cache: Path) -> None:
    path = _write(tmp_path / "a.txt", prose(5_000))
    load_text(path, 8, progress=None)
    load_text(path, 8, tokenizer="bpe:300", progress=None)
    _write(path, prose(5_000, seed=1))
    load_text(path, 8, progress=None)
    assert len(list(_cache.glob("*.json"))) == 4  # 3 manifests + the BPE tokenizer
    assert not list(_cache.glob(".*"))  # no temporary files left behind


def test_encoding_reports_progress(tmp_path: Path) -> None:
    import io

    stream = io.StringIO()
    load_text(_write(tmp_path / "a.txt", prose(5_000)), 8, progress=stream)
    lines = stream.getvalue().splitlines()
    assert any(line.startswith("encoding train split (char)") and "100%" in line for line in lines)


def test_batches_are_consecutive_tokens_from_the_map(tmp_path: Path) -> None:
    corpus = load_text(_write(tmp_path / "a.txt", prose(5_000)), 12, progress=None)
    idx, targets = corpus.batch("val", 5, torch.Generator().manual_seed(3))
    assert idx.shape == targets.shape == (5, 12) and idx.dtype == torch.long
    assert torch.equal(idx[:, 1:], targets[:, :-1])
    tokens = torch.from_numpy(corpus.splits["val"].astype(np.int64))
    for row in idx:
        starts = [s for s in range(len(tokens) - 12) if torch.equal(tokens[s : s + 12], row)]
        assert starts
    again = corpus.batch("val", 5, torch.Generator().manual_seed(3))
    assert torch.equal(again[0], idx)


def test_large_vocabularies_are_stored_as_uint32(tmp_path: Path) -> None:
    text = "".join(chr(c) for c in range(0x10000, 0x10000 + 70_000)) * 2
    corpus = load_text(_write(tmp_path / "a.txt", text), 8, progress=None)
    assert corpus.vocab_size == 70_000 and corpus.splits["train"].dtype == np.uint32
    assert _joined(corpus) == text


def test_tokenizers_save_and_load_with_their_identity(tmp_path: Path) -> None:
    corpus = load_text(_write(tmp_path / "a.txt", prose(5_000)), 8, tokenizer="bpe:300")
    for tokenizer in (corpus.tokenizer, CharTokenizer("\nab c")):
        loaded = load_tokenizer(tokenizer.save(tmp_path / "t.json"))
        assert loaded.identity == tokenizer.identity and loaded.kind == tokenizer.kind
        assert loaded.decode(loaded.encode_array("a b\n").tolist()) == "a b\n"


def test_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_cache_dir(tmp_path) == tmp_path
    monkeypatch.delenv("SLIME_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == tmp_path / "xdg" / "slime" / "tokens"


# -- refusals -------------------------------------------------------------------------------------


def test_missing_and_empty_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        scan_text(tmp_path / "nope.txt")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(DataError, match="neither a regular file nor a folder"):
        scan_text(tmp_path / "pipe")
    with pytest.raises(DataError, match="is empty"):
        scan_text(_write(tmp_path / "empty.txt", ""))
    (tmp_path / "folder").mkdir()
    _write(tmp_path / "folder" / "x.md", "text")
    with pytest.raises(DataError, match="holds no .txt files"):
        scan_text(tmp_path / "folder")


def test_binary_files_are_refused_with_the_offset(tmp_path: Path) -> None:
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"hello\x00world")
    with pytest.raises(DataError, match="NUL byte at offset 5: a binary file"):
        scan_text(nul)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(DataError, match="is not UTF-8 text \\(byte 3"):
        scan_text(latin)
    cut = tmp_path / "cut.txt"
    cut.write_bytes("café".encode()[:-1])
    with pytest.raises(DataError, match="ends inside a character"):
        scan_text(cut)


def test_unparsable_tokenizer_files_are_refused(tmp_path: Path) -> None:
    text = _write(tmp_path / "a.txt", prose(3000))
    for name, body in [("garbage.json", "{not json"), ("other.json", '{"a": 1}')]:
        _write(tmp_path / name, body)
        with pytest.raises(DataError, match=f"tokenizer file .*{name}.* (does not parse|is not a)"):
            load_text(text, 8, tokenizer=str(tmp_path / name), progress=None)
    bad_char = _write(
        tmp_path / "char.json", '{"type": "slime-char", "version": 1, "vocab": ["ab"]}'
    )
    with pytest.raises(DataError, match="single characters"):
        load_tokenizer(bad_char)
    with pytest.raises(DataError, match="does not exist"):
        load_text(text, 8, tokenizer=str(tmp_path / "missing.json"), progress=None)


def test_a_loaded_char_vocabulary_refuses_other_characters(tmp_path: Path) -> None:
    vocab = CharTokenizer("abc \n").save(tmp_path / "t.json")
    path = _write(tmp_path / "a.txt", "abc cab\n" * 100 + "abz\n")
    with pytest.raises(DataError, match=r"has no token for 1 character\(s\) .* \('z'\)"):
        load_text(path, 8, tokenizer=str(vocab), progress=None)


def test_a_split_shorter_than_a_window_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="val split of .* has 3 tokens; expected more than"):
        load_text(_write(tmp_path / "a.txt", "x" * 30), 8, progress=None)


@pytest.mark.parametrize("spec", ["bpe:", "bpe:12", "bpe:4k", "bpe:99999999"])
def test_malformed_bpe_sizes_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError, match="data.tokenizer: expected bpe:VOCAB"):
        DataConfig(name="text", path="x.txt", tokenizer=spec)


def test_data_section_relations() -> None:
    with pytest.raises(ConfigError, match="data.path: expected a .txt file"):
        DataConfig(name="text")
    with pytest.raises(ConfigError, match="data.path: expected null unless name is 'text'"):
        DataConfig(name="recall", path="x.txt")
    with pytest.raises(ConfigError, match="data.tokenizer: expected 'char'"):
        DataConfig(name="shakespeare", tokenizer="bpe")
    with pytest.raises(ConfigError, match="data.val_fraction"):
        DataConfig(name="text", path="x.txt", val_fraction=1.0)


def test_no_cache_folder_is_one_error(tmp_path: Path) -> None:
    blocker = _write(tmp_path / "file", "not a folder")
    path = _write(tmp_path / "a.txt", prose(3000))
    with pytest.raises(DataError, match="cannot create the token cache"):
        load_text(path, 8, cache_dir=blocker / "cache", progress=None)
