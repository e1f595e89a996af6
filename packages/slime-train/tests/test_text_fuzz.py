"""Unusual text corpora and tokenizer specs fed to the "train on your own text" path: each is one
typed error naming the value, or it just works."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from prose_text import prose
from slime.proto import ConfigError, DataError
from slime.train import cli
from slime.train import text as text_module
from slime.train.config import DataConfig
from slime.train.text import load_text, scan_text
from slime.train.tokenizer import parse_tokenizer_spec


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SLIME_CACHE_DIR", str(cache))
    return cache


def _one_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"slime {command}: error: "), err
    return err


# -- bpe:VOCAB ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["bpe:²", "bpe:³⁰⁰", "bpe:٣٠٠", "bpe:300\n", "bpe:300\n\n"])
def test_bpe_sizes_that_are_not_ascii_digits_are_config_errors(spec: str) -> None:
    # 'bpe:²' passed str.isdigit() and then int() raised a bare ValueError (a traceback);
    # 'bpe:٣٠٠' and 'bpe:300\n' were taken as 300
    with pytest.raises(ConfigError, match=r"data.tokenizer: expected bpe:VOCAB .* got 'bpe:"):
        DataConfig(name="text", path="x.txt", tokenizer=spec)


def test_a_bpe_size_in_other_digits_is_one_error_at_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.txt").write_text("some text\n" * 100, encoding="utf-8")
    argv = ["train", "--config", "tiny", "--quiet", "--data", str(tmp_path / "a.txt")]
    assert cli.main([*argv, "--tokenizer", "bpe:²", "--out", str(tmp_path / "runs")]) == 2
    assert "--tokenizer: expected bpe:VOCAB" in _one_error(capsys, "train")
    assert not (tmp_path / "runs").exists()


def test_ascii_bpe_sizes_still_parse() -> None:
    assert parse_tokenizer_spec("bpe:0300") == ("bpe", 300)
    assert parse_tokenizer_spec("bpe") == ("bpe", 4096)


# -- a BPE trained on a very long run without whitespace ----------------------------------------


def test_a_bpe_is_trained_on_bounded_parts_of_a_run_without_whitespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One 60,000-character line of ACGT was one word of the trainer, whose time grows with the
    # square of a word's length: a DNA sequence or a base64 blob of a few MB never finished.
    import random

    random.seed(0)
    dna = "".join(random.choice("ACGT") for _ in range(60_000))
    fed: list[str] = []
    real = text_module.train_bpe

    def spy(chunks, vocab_size, *, length=None):
        chunks = list(chunks)
        fed.extend(chunks)
        return real(chunks, vocab_size, length=length)

    monkeypatch.setattr(text_module, "train_bpe", spy)
    path = tmp_path / "dna.txt"
    path.write_text(dna, encoding="utf-8")
    corpus = load_text(path, 16, tokenizer="bpe:300", progress=None)
    assert "".join(fed) == dna[: corpus.cut]  # every character trains, once, in order
    assert max(len(c) for c in fed) <= 4096  # TRAIN_PART_CHARS; it was one string of 54,000
    assert corpus.tokenizer.decode(corpus.splits["train"].tolist()) == dna[: corpus.cut]


def test_bpe_training_parts_of_prose_are_cut_between_words(tmp_path: Path) -> None:
    # The parts are cut where the pre-tokenizer splits: the merges learned from prose are those
    # learned from the whole text in one string.
    from slime.train.tokenizer import train_bpe

    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    import random

    random.seed(1)
    prose = " ".join(
        random.choice(words) + random.choice(["", ",", ".\n", "\n\n"]) for _ in range(3000)
    )
    path = tmp_path / "prose.txt"
    path.write_text(prose, encoding="utf-8")
    corpus = load_text(path, 16, tokenizer="bpe:320", progress=None)
    whole = train_bpe([prose[: corpus.cut]], 320)
    assert corpus.tokenizer.identity == whole.identity


# -- slime sample --prompt ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A char run and a BPE run, two steps each, on 20,000 characters of prose."""
    root = tmp_path_factory.mktemp("fuzz-runs")
    (root / "data.txt").write_text(prose(20_000), encoding="utf-8")
    found = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLIME_CACHE_DIR", str(root / "cache"))
        for kind in ("char", "bpe:300"):
            out = root / kind.replace(":", "-")
            argv = ["train", "--config", "tiny", "--steps", "2", "--quiet", "--out", str(out)]
            assert cli.main([*argv, "--data", str(root / "data.txt"), "--tokenizer", kind]) == 0
            (found[kind],) = out.iterdir()
        yield found


@pytest.mark.parametrize("kind", ["char", "bpe:300"])
def test_a_prompt_byte_that_is_not_utf8_is_named(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    # `slime sample RUN --prompt $'\xff'`: Python hands the byte over as U+DCFF; a BPE run said
    # "TextEncodeInput must be Union[TextInputSequence, ...]", a char run that U+DCFF is no
    # character of its vocabulary
    capsys.readouterr()
    assert cli.main(["sample", str(runs[kind]), "--prompt", "the \udcff fox"]) == 2
    err = _one_error(capsys, "sample")
    assert "--prompt: 'the \\udcff fox' holds the byte 0xff, which is not UTF-8" in err


@pytest.mark.parametrize("prompt", ["Zebra ☃ 👩‍👩‍👧", "\u202eשלום", "e\u0301", "\x00"])
def test_a_bpe_run_continues_prompts_of_characters_it_never_saw(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str], prompt: str
) -> None:
    capsys.readouterr()
    assert cli.main(["sample", str(runs["bpe:300"]), "--prompt", prompt, "--tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith(prompt)


# -- file names ---------------------------------------------------------------------------------


def test_a_folder_holding_a_file_name_that_is_not_utf8_is_read(tmp_path: Path) -> None:
    # os.listdir hands a name with the byte 0xff over as U+DCFF; hashing the folder's names
    # encoded it as UTF-8, a bare UnicodeEncodeError (a traceback at the CLI)
    folder = tmp_path / "data"
    folder.mkdir()
    odd = Path(os.fsdecode(os.fsencode(folder) + b"/a\xff.txt"))
    try:
        odd.write_text("alpha beta gamma\n" * 50, encoding="utf-8")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    (folder / "b.txt").write_text("delta epsilon\n" * 50, encoding="utf-8")
    source = scan_text(folder)
    assert source.files == (odd, folder / "b.txt")
    assert source.chars == 17 * 50 + 14 * 50
    # the name's bytes are part of the text's identity: another name, another hash
    odd.rename(folder / "a\u00ff.txt")
    assert scan_text(folder).sha256 != source.sha256


def test_the_hash_of_a_folder_with_utf8_names_is_unchanged(tmp_path: Path) -> None:
    # token caches are keyed by it: a folder of UTF-8 names must keep its key
    import hashlib

    folder = tmp_path / "data"
    (folder / "é").mkdir(parents=True)
    (folder / "é" / "ü.txt").write_bytes(b"one\n")
    (folder / "z.txt").write_bytes(b"two\n")
    want = hashlib.sha256(b"z.txt\0two\n" + "é/ü.txt\0".encode() + b"one\n").hexdigest()  # z < é
    assert scan_text(folder).sha256 == want


# -- text a loaded char vocabulary has no token for ---------------------------------------------


def test_eval_on_text_with_characters_outside_the_runs_vocabulary_names_the_file_and_them(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said only "character 'Z' is not in the run's character vocabulary": not which file,
    # nor that '☃' and a combining accent were missing too
    other = tmp_path / "other.txt"
    other.write_text(prose(3000) + "Zebra ☃ e\u0301\n", encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["eval", str(runs["char"]), "--data", str(other), "--quiet"]) == 2
    err = _one_error(capsys, "eval")
    assert f"tokenizer file {str(runs['char'] / 'tokenizer.json')!r} has no token for" in err
    assert f"of the text in {str(other)!r}" in err
    assert "('Z', '́' (U+0301), '☃') and refuses them" in err


def test_a_char_vocabulary_refusal_is_made_before_any_encoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slime.train.tokenizer import CharTokenizer

    vocab = CharTokenizer("ab \n").save(tmp_path / "tok.json")
    data = tmp_path / "a.txt"
    data.write_text("ab ba\n" * 100 + "abc\u200b\n", encoding="utf-8")

    def encode(*args, **kwargs):
        raise AssertionError("encoded text the vocabulary does not cover")

    monkeypatch.setattr(text_module, "_encode_split", encode)
    with pytest.raises(DataError, match=r"2 character\(s\) .* \('c', '\\u200b'\) and refuses"):
        load_text(data, 8, tokenizer=str(vocab), progress=None)


def test_a_prompt_character_outside_the_vocabulary_shows_its_code_point(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # an accent alone printed as "character '́'": a quote with an accent on it
    capsys.readouterr()
    assert cli.main(["sample", str(runs["char"]), "--prompt", "e\u0301"]) == 2
    assert "character '\u0301' (U+0301) is not in the run's" in _one_error(capsys, "sample")


def test_a_prompt_character_a_tokenizer_file_would_drop_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A run on a tokenizer file without an unknown token (which covers the training text) took
    # `--prompt "hello xyz"` as "hello " and continued that, without a word
    import json

    vocab = {c: i for i, c in enumerate("helowrd \n")}
    bpe = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None,
        "model": {"type": "BPE", "vocab": vocab, "merges": [], "unk_token": None},
    }  # fmt: skip
    (tmp_path / "tok.json").write_text(json.dumps(bpe), encoding="utf-8")
    (tmp_path / "a.txt").write_text("hello world\n" * 300, encoding="utf-8")
    out = tmp_path / "runs"
    argv = ["train", "--config", "tiny", "--steps", "2", "--quiet", "--out", str(out)]
    argv += ["--data", str(tmp_path / "a.txt"), "--tokenizer", str(tmp_path / "tok.json")]
    assert cli.main(argv) == 0
    (run,) = out.iterdir()
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--prompt", "hello xyz", "--tokens", "2"]) == 2
    err = _one_error(capsys, "sample")
    assert "--prompt: 'hello xyz' holds 3 character(s) the run's tokenizer.json has no token" in err
    assert "('x', 'y', 'z'); it would drop them silently" in err
    assert cli.main(["sample", str(run), "--prompt", "hello ", "--tokens", "2"]) == 0
