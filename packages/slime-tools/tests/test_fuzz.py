"""Damaged and forged run directories and outputs (hardening issue 14): one typed error naming
the value, no traceback at the CLI, no silent wrong answer, earlier outputs never lost."""

import pytest
from slime.proto import CheckpointError
from slime.tools import cli, read_metrics

GOOD = b'{"step": 0, "kind": "train", "loss": 1.0}\n'


@pytest.mark.parametrize(
    "line",
    [
        b'{"step": ' + b"9" * 5000 + b', "kind": "train"}',  # int() refuses > 4300 digits
        b'{"step": 1, "kind": "train", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["huge-integer", "deep-nesting"],
)
def test_a_line_json_cannot_decode_is_one_error_naming_the_line(tmp_path, capsys, line):
    # before: ValueError / RecursionError escaped read_metrics, a traceback from slime visualize
    (tmp_path / "metrics.jsonl").write_bytes(GOOD + line + b"\n" + GOOD)
    with pytest.raises(CheckpointError, match=r"metrics.jsonl:2 is not JSON"):
        read_metrics(tmp_path)
    assert cli.visualize_command([str(tmp_path), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "metrics.jsonl:2 is not JSON" in err and len(err.strip().splitlines()) == 1


def test_a_torn_last_line_with_a_huge_integer_is_dropped(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(GOOD + b'{"step": ' + b"9" * 5000)
    assert read_metrics(tmp_path) == [{"step": 0, "kind": "train", "loss": 1.0}]


def test_a_metrics_file_that_is_a_folder_is_named_not_taken_as_absent(tmp_path):
    # before: read as "absent or empty", so visualize silently plotted no curves
    (tmp_path / "metrics.jsonl").mkdir()
    with pytest.raises(CheckpointError, match=r"metrics.jsonl is not a regular file"):
        read_metrics(tmp_path)
