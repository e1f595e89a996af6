"""The data-path benchmark runs end to end and prints its table (numbers are the GPU's to make)."""

from __future__ import annotations

from pathlib import Path

import pytest
from slime.train import data_bench


def test_data_bench_prints_a_row_per_tokenizer_and_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 400, encoding="utf-8")
    argv = ["--config", "tiny", "--tokenizers", "char", "--modes", "eager", "--steps", "3"]
    argv += ["--warmup", "1", "--device", "cpu", "--text", str(text)]
    argv += ["--cache-dir", str(tmp_path / "cache")]
    assert data_bench.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| char | eager |")]
    assert len(rows) == 1
    draw, text, fixed = (float(x) for x in rows[0].split("|")[3:6])
    assert draw > 0 and text > 0 and fixed > 0
    assert any((tmp_path / "cache").iterdir())  # the text was tokenised into the given cache


@pytest.mark.parametrize("device", ["gpu0", "cuda:99"])
def test_a_device_that_is_not_there_is_one_error_naming_it(
    capsys: pytest.CaptureFixture[str], device: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        data_bench.main(["--device", device])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert device in err and "Traceback" not in err
