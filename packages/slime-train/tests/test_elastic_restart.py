"""slime train under torchrun's elastic agent finds, on a restart, the run its own job made."""

from __future__ import annotations

import json

import pytest
from slime.proto import ConfigError
from slime.train import cli
from slime.train.distributed import elastic_restart

ARGV = ["--config", "tiny", "--out", "runs"]


def _made(tmp_path, name: str, run_id: str, argv: list[str]) -> None:
    run = tmp_path / name
    run.mkdir()
    (run / cli.ELASTIC_FILE).write_text(json.dumps({"run_id": run_id, "argv": argv}))


def test_a_first_attempt_or_no_launcher_resumes_nothing(tmp_path, monkeypatch) -> None:
    _made(tmp_path, "20261201-000000-slime-recall", "job", ARGV)
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert elastic_restart() is None and cli._elastic_run(str(tmp_path), ARGV) is None
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    assert cli._elastic_run(str(tmp_path), ARGV) is None


def test_a_restart_takes_the_newest_run_of_the_same_job_and_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    _made(tmp_path, "20261201-000000-slime-recall", "job", ARGV)
    _made(tmp_path, "20261201-000100-slime-recall", "job", ARGV)
    _made(tmp_path, "20261201-000200-slime-recall", "other-job", ARGV)  # another job
    _made(tmp_path, "20261201-000300-slime-recall", "job", [*ARGV, "--steps", "9"])  # command
    (tmp_path / "20261201-000400-slime-recall").mkdir()  # made without a launcher
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / cli.ELASTIC_FILE).write_text("{not json")
    assert elastic_restart() == ("job", 2)
    found = cli._elastic_run(str(tmp_path), ARGV)
    assert found is not None and found.name == "20261201-000100-slime-recall"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-never-ran")
    assert cli._elastic_run(str(tmp_path), ARGV) is None  # died before making one: start anew


def test_a_malformed_restart_count_is_named(monkeypatch) -> None:
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "x")
    with pytest.raises(ConfigError, match="TORCHELASTIC_RESTART_COUNT"):
        elastic_restart()
