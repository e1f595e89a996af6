"""Character corpora: nanoGPT's splits, the data-folder lookup, random-window batches."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
from slime.proto import DataError
from slime.train import datasets
from slime.train.datasets import CORPORA, CharCorpus, Dataset, load_corpus, resolve_data_dir


def test_shakespeare_splits_first_ninety_percent_for_training(data_dir: Path) -> None:
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    corpus = load_corpus("shakespeare", block_size=8, data_dir=data_dir)
    cut = int(0.9 * len(text))
    assert corpus.vocab_size == 65  # nanoGPT's shakespeare_char vocabulary
    assert corpus.decode(corpus.splits["train"][:50]) == text[:50]
    assert corpus.splits["train"].numel() == cut
    assert corpus.decode(corpus.splits["val"]) == text[cut:]


def test_wikitext2_offline_copy_trains_on_valid_and_evaluates_on_test(all_corpora: Path) -> None:
    corpus = load_corpus("wikitext2", block_size=8, data_dir=all_corpora)
    valid = (all_corpora / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")
    test = (all_corpora / "wikitext-2" / "test.txt").read_text(encoding="utf-8")
    assert corpus.splits["train"].numel() == len(valid)
    assert corpus.decode(corpus.splits["val"][:100]) == test[:100]


def test_tinystories_sample_loads(all_corpora: Path) -> None:
    corpus = load_corpus("tinystories", block_size=8, data_dir=all_corpora)
    assert corpus.vocab_size > 26
    assert isinstance(corpus, Dataset)


def test_data_dir_falls_back_to_environment(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLIME_DATA_DIR", str(data_dir))
    assert resolve_data_dir() == data_dir


def test_missing_data_dir_raises_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLIME_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="SLIME_DATA_DIR"):
        resolve_data_dir()


def test_shakespeare_ships_with_the_package_and_loads_with_no_data_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SLIME_DATA_DIR", raising=False)
    bundled = datasets.BUNDLED / CORPORA["shakespeare"]["all"].relpath
    digest = hashlib.sha256(bundled.read_bytes()).hexdigest()
    assert digest == CORPORA["shakespeare"]["all"].sha256  # the published file, unchanged
    corpus = load_corpus("shakespeare", block_size=8)
    assert corpus.vocab_size == 65
    with pytest.raises(DataError, match="no data folder"):  # the others are never bundled
        load_corpus("wikitext2", block_size=8)


def test_an_explicit_data_folder_wins_over_the_bundled_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("abcab" * 40, encoding="utf-8")
    assert load_corpus("shakespeare", block_size=8, data_dir=tmp_path).vocab_size == 3
    monkeypatch.setenv("SLIME_DATA_DIR", str(tmp_path))
    assert load_corpus("shakespeare", block_size=8).vocab_size == 3


def test_missing_corpus_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="tinyshakespeare/input.txt"):
        load_corpus("shakespeare", block_size=8, data_dir=tmp_path)


def test_unknown_corpus_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown corpus 'imagenet'"):
        load_corpus("imagenet", block_size=8, data_dir=tmp_path)


def test_every_corpus_file_names_an_https_url() -> None:
    for files in CORPORA.values():
        for file in files.values():
            assert file.url.startswith("https://")


def test_batch_targets_are_inputs_shifted_by_one() -> None:
    corpus = CharCorpus("abcdefghijklmnopqrstuvwxyz" * 4, "zyxwvutsrqponmlkjihgfedcba", 5)
    idx, targets = corpus.batch("train", 3, torch.Generator().manual_seed(0))
    assert idx.shape == targets.shape == (3, 5)
    assert torch.equal(idx[:, 1:], targets[:, :-1])
    assert torch.equal((idx + 1) % 26, targets)  # consecutive letters of the alphabet


def test_batches_are_a_function_of_the_generator_seed() -> None:
    corpus = CharCorpus("hello world, " * 20, "goodbye world" * 3, 4)
    a = corpus.batch("val", 2, torch.Generator().manual_seed(7))
    b = corpus.batch("val", 2, torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_split_shorter_than_a_window_is_rejected() -> None:
    with pytest.raises(DataError, match="val split has 3 tokens"):
        CharCorpus("abcdefghij", "abc", 4)


def test_unknown_split_is_rejected() -> None:
    corpus = CharCorpus("abcdefghij", "abcdefghij", 4)
    with pytest.raises(DataError, match="unknown split 'test'"):
        corpus.batch("test", 1, torch.Generator())


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serve(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> list[str]:
    """Answer every download with ``payload`` (no network in tests); returns the URLs asked."""
    asked: list[str] = []

    def urlopen(url: str, timeout: float):
        asked.append(url)
        return _Response(payload)

    monkeypatch.setattr(datasets.urllib.request, "urlopen", urlopen)
    return asked


def test_download_refuses_a_file_whose_pinned_checksum_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _serve(monkeypatch, b"not shakespeare")
    with pytest.raises(DataError, match="expected 86c4e6aa"):
        datasets.download_corpus("shakespeare", tmp_path)
    assert asked == [CORPORA["shakespeare"]["all"].url]
    assert not list(tmp_path.rglob("*.txt")) and not list(tmp_path.rglob("*.part"))


def test_download_keeps_an_unpinned_file_and_prints_its_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _serve(monkeypatch, b"Once upon a time.")
    (path,) = datasets.download_corpus("tinystories", tmp_path)
    assert path.read_bytes() == b"Once upon a time."
    digest = hashlib.sha256(b"Once upon a time.").hexdigest()
    assert f"sha256 {digest} (not pinned)" in capsys.readouterr().out


def test_download_skips_files_already_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "tinystories" / "tinystories_val.txt"
    target.parent.mkdir()
    target.write_text("kept")
    asked = _serve(monkeypatch, b"new")
    datasets.download_corpus("tinystories", tmp_path)
    assert target.read_text() == "kept" and asked == []


def test_a_data_folder_that_is_a_file_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        resolve_data_dir(tmp_path / "f")


def test_an_empty_data_folder_path_is_refused_not_read_as_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Path("") is ".": --data-dir '' looked for the corpora in the current folder.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="expected a data folder, got ''"):
        resolve_data_dir("")
