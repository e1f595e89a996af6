"""Unusual text corpora and tokenizer specs fed to the "train on your own text" path: each is one
typed error naming the value, or it just works."""

from __future__ import annotations

from pathlib import Path

import pytest
from slime.proto import ConfigError
from slime.train import cli
from slime.train.config import DataConfig
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
