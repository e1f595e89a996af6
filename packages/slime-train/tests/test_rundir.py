"""Run directories: metrics log, resume truncation, plots; the progress bar's text."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from slime.proto import CheckpointError
from slime.train.rundir import ProgressBar, RunDir


def test_create_makes_a_fresh_folder_each_time(tmp_path: Path) -> None:
    a = RunDir.create(tmp_path, "slime")
    b = RunDir.create(tmp_path, "slime")
    assert a.path != b.path
    assert a.checkpoints.is_dir()


def test_metrics_round_trip_in_order(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.log({"step": 1, "kind": "train", "loss": 2.0})
    run.log({"step": 2, "kind": "eval", "val_loss": 1.5})
    assert [r["step"] for r in run.read_metrics()] == [1, 2]


def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.log({"step": 1, "kind": "train", "loss": 2.0})
    with open(run.metrics_path, "a") as handle:
        handle.write('{"step": 2, "ki')
    assert run.read_metrics() == [{"step": 1, "kind": "train", "loss": 2.0}]


def test_truncate_keeps_records_up_to_the_step(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for step in range(1, 6):
        run.log({"step": step, "kind": "train", "loss": 1.0})
    run.truncate_metrics(3)
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3]


def test_plot_writes_loss_and_pool_pngs(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for step in range(1, 4):
        run.log({"step": step, "kind": "train", "loss": 3.0 / step, "pool_size": 4 + step})
    run.log({"step": 3, "kind": "eval", "val_loss": 1.2})
    written = run.plot()
    assert [p.name for p in written] == ["loss.png", "pool.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_plot_skips_pool_for_a_model_without_one(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.log({"step": 1, "kind": "train", "loss": 1.0})
    assert [p.name for p in run.plot()] == ["loss.png"]


def test_progress_text_shows_step_loss_rate_and_eta() -> None:
    bar = ProgressBar(100, stream=io.StringIO())
    text = bar.render(25, 1.23456, 12345.0, elapsed=10.0)
    assert text == "[######..................] 25/100 loss 1.2346 | 12,345 tok/s | ETA 0:00:30"


def test_progress_writes_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar(10, stream=stream)
    bar.update(1, 2.0, 100.0)
    bar.update(2, 1.5, 100.0)
    assert stream.getvalue().count("\n") == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"\xff\xfe not utf-8", "is not JSON"),
        (b"5", "is not a record with an integer 'step'"),
        (b'{"kind": "train"}', "is not a record with an integer 'step'"),
        (b'{"step": "x", "kind": "train"}', "is not a record with an integer 'step'"),
        (b'{"step": 3}', "is not a record with an integer 'step' and a 'kind'"),
        # json.loads raised a plain ValueError (int() refuses > 4300 digits) and RecursionError
        (b'{"step": ' + b"9" * 5000 + b', "kind": "eval"}', "is not JSON"),
        (
            b'{"step": 1, "kind": "train", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "is not JSON",
        ),
    ],
)
def test_a_damaged_line_is_a_checkpoint_error_naming_it(
    tmp_path: Path, line: bytes, message: str
) -> None:
    # Resuming such a run read these as records and failed with a traceback (UnicodeDecodeError,
    # TypeError, KeyError) in truncate_metrics; now the damage is named, file and line.
    run = RunDir(tmp_path)
    run.log({"step": 1, "kind": "train", "loss": 2.0})
    with open(run.metrics_path, "ab") as handle:
        handle.write(line + b"\n")
    run.log({"step": 2, "kind": "train", "loss": 1.0})
    before = run.metrics_path.read_bytes()
    with pytest.raises(CheckpointError, match=f"metrics.jsonl:2 {message}"):
        run.truncate_metrics(1)
    assert run.metrics_path.read_bytes() == before


def test_a_torn_last_line_that_is_not_utf8_is_dropped(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.log({"step": 1, "kind": "train", "loss": 2.0})
    with open(run.metrics_path, "ab") as handle:
        handle.write(b'{"step": 2, "kind": "\xe2\x82')  # cut inside a multi-byte character
    assert [r["step"] for r in run.read_metrics()] == [1]
