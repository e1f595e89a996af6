"""Damaged run directories and faults met by the tools (hardening pass 2): one error line naming
the file and what is wrong, no hang, no traceback, nothing of the user's replaced."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from slime.proto import CheckpointError
from slime.proto.testing import FifoFeeder
from slime.tools import cli, load_run_model


@pytest.fixture
def run_copy(slime_run, tmp_path) -> Path:
    """A private copy of ``slime_run`` (the session fixture stays untouched)."""
    run_dir = tmp_path / "run"
    shutil.copytree(slime_run[0], run_dir)
    return run_dir


@pytest.mark.parametrize("kind", ["character device", "FIFO"])
def test_a_model_file_that_is_a_device_or_fifo_is_refused_before_it_is_read(run_copy, capsys, kind):
    # before: from_pretrained read model.safetensors whole: a link to /dev/zero filled memory
    # until the machine ran out (slime visualize, inspect and export hung), a FIFO blocked forever
    target = run_copy / "model" / "model.safetensors"
    target.unlink()
    feeder = None
    if kind == "FIFO":
        feeder = FifoFeeder(target, b"not a safetensors file")
    else:
        target.symlink_to("/dev/null")  # a character device that, unlike /dev/zero, ends
    try:
        with pytest.raises(CheckpointError, match=rf"model.safetensors is a {kind}, not a regular"):
            load_run_model(run_copy)
        for command in ("inspect", "visualize"):
            argv = [str(run_copy)] + (
                ["--out", str(run_copy / "p")] if command == "visualize" else []
            )
            assert cli.COMMANDS[command](argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"{target} is a {kind}, not a regular file" in err[0]
    finally:
        if feeder is not None:
            feeder.close()


@pytest.mark.parametrize("kind", ["folder", "dangling link"])
def test_a_config_json_that_is_no_file_is_named_not_taken_for_a_run_without_a_model(
    run_copy, capsys, kind
):
    # before: model_dir saw no regular config.json and said "holds no saved SlimeModel": inspect
    # blamed the run for having no model, visualize skipped the pool's plots as for a baseline
    target = run_copy / "model" / "config.json"
    target.unlink()
    if kind == "folder":
        target.mkdir()
    else:
        target.symlink_to(run_copy / "nothing-here")
    says = "is a folder, not a regular file" if kind == "folder" else "cannot read"
    for command in ("inspect", "visualize"):
        argv = [str(run_copy)] + (["--out", str(run_copy / "p")] if command == "visualize" else [])
        assert cli.COMMANDS[command](argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(target) in err[0] and says in err[0], err


# pid_max is at most 2**22 on Linux: no process ever has this id
DEAD_PID = 2**22 + 1


def test_an_export_killed_midway_leaves_no_partial_file_after_the_next_export(run_copy):
    # before: `slime export` killed by SIGKILL left its hidden partial file (the whole model's
    # size: .model.<pid>.partial.ts) in RUN_DIR/export/ for ever; every later export kept it
    from slime.tools.export import export_run

    folder = run_copy / "export"
    folder.mkdir(exist_ok=True)  # other tests may have exported into the session run already
    stale = [
        folder / f".model.{DEAD_PID}.partial.ts",
        folder / f".model.{DEAD_PID}.partial.ts.data",
    ]
    for path in stale:
        path.write_bytes(b"half a TorchScript archive")
    running = folder / ".model.1.partial.ts"  # pid 1 runs: an export still under way
    running.write_bytes(b"in progress")
    mine = [folder / ".model.notes.partial.ts", folder / f".other.{DEAD_PID}.partial.ts"]
    for path in mine:
        path.write_bytes(b"the user's")
    check = export_run(run_copy, "torchscript")
    assert check.path == folder / "model.ts" and check.path.is_file()
    assert not any(path.exists() for path in stale)
    assert running.read_bytes() == b"in progress"
    assert all(path.read_bytes() == b"the user's" for path in mine)
