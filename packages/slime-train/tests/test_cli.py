"""The `slime` command: `train` with overrides, resume, errors, entry-point subcommands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from slime.train import cli


def _only_run(out: Path) -> Path:
    (run,) = out.iterdir()
    return run


def test_train_writes_a_run_directory_and_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(
        ["train", "--config", "tiny", "--steps", "4", "--out", str(tmp_path), "--quiet"]
    )
    assert status == 0
    run = _only_run(tmp_path)
    assert f"results: {run}" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["model"] == "slime"


def test_model_flag_trains_the_baseline(tmp_path: Path) -> None:
    argv = ["train", "--config", "tiny", "--steps", "3", "--model", "baseline"]
    assert cli.main([*argv, "--out", str(tmp_path), "--quiet"]) == 0
    assert json.loads((_only_run(tmp_path) / "summary.json").read_text())["model"] == "baseline"


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["train", "--config", "tiny", "--steps", "3", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "3/3 loss" in err and "tok/s" in err and "ETA" in err


def test_resume_continues_to_more_steps(tmp_path: Path) -> None:
    cli.main(["train", "--config", "tiny", "--steps", "6", "--out", str(tmp_path), "--quiet"])
    run = _only_run(tmp_path)
    assert cli.main(["train", "--resume", str(run), "--steps", "9", "--quiet"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 9
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)


def test_bad_config_value_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  lr: -1\n")
    assert cli.main(["train", "--config", str(config), "--out", str(tmp_path)]) == 2
    assert "train.lr: expected a value > 0.0, got -1.0" in capsys.readouterr().err


def test_missing_corpus_exits_2_with_a_data_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", "shakespeare", "--data-dir", str(tmp_path), "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "tinyshakespeare/input.txt" in capsys.readouterr().err


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_no_arguments_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: slime {" in capsys.readouterr().out


def test_entry_point_commands_are_dispatched(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    class FakeEntryPoint:
        name = "visualize"

        def load(self):
            return lambda argv: seen.append(argv) or 0

    monkeypatch.setattr(cli, "entry_points", lambda group: [FakeEntryPoint()])
    assert cli.main(["visualize", "run_dir", "--out", "x.png"]) == 0
    assert seen == [["run_dir", "--out", "x.png"]]


def test_compile_flag_sets_train_compile_and_compiles_the_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    import yaml

    compiled: list[object] = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn) or fn)
    argv = ["train", "--config", "tiny", "--steps", "3", "--compile", "--quiet"]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 0
    run = _only_run(tmp_path)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["compile"] is True
    assert any(isinstance(fn, torch.nn.Module) for fn in compiled)  # the model's forward


def test_cuda_graphs_flag_compiles_in_reduce_overhead_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    import yaml

    modes: list[object] = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: modes.append(kw.get("mode")) or fn)
    # Off CUDA the flag is refused (test_cli_edges); the check is lifted here to see it reach
    # torch.compile on a machine without a GPU.
    monkeypatch.setattr(cli, "_check_cuda_graphs", lambda *args: None)
    argv = ["train", "--config", "tiny", "--steps", "3", "--cuda-graphs", "--quiet"]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 0
    train = yaml.safe_load((_only_run(tmp_path) / "config.yaml").read_text())["train"]
    assert train["compile"] is True and train["cuda_graphs"] is True
    assert "reduce-overhead" in modes


def test_resuming_after_the_model_config_was_edited_names_the_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    cli.main(["train", "--config", "tiny", "--steps", "3", "--out", str(tmp_path), "--quiet"])
    run = _only_run(tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["n_embd"] = 32
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--steps", "6", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) <= 2
    assert "wte.weight" in err and "config.yaml" in err


@pytest.mark.parametrize("where", ["a-file", "under-a-file"])
def test_an_output_path_that_cannot_hold_a_run_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker if where == "a-file" else blocker / "runs"
    argv = ["train", "--config", "tiny", "--steps", "3", "--quiet", "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--out" in err


def test_an_unavailable_device_is_one_error(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    device = "mps" if not torch.backends.mps.is_available() else "cuda:99"
    assert cli.main(["train", "--config", "tiny", "--steps", "3", "--device", device]) == 2
    assert "train.device" in capsys.readouterr().err


def test_resuming_a_path_that_is_no_run_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "not-a-run"
    target.mkdir()
    assert cli.main(["train", "--resume", str(target), "--quiet"]) == 2
    assert list(target.iterdir()) == []


def test_resuming_a_finished_run_changes_nothing(tmp_path: Path) -> None:
    cli.main(["train", "--config", "tiny", "--steps", "4", "--out", str(tmp_path), "--quiet"])
    run = _only_run(tmp_path)
    files = {name: (run / name).read_bytes() for name in ("metrics.jsonl", "summary.json")}
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 0
    assert cli.main(["train", "--resume", str(run), "--steps", "4", "--quiet"]) == 0
    assert {name: (run / name).read_bytes() for name in files} == files


def test_a_run_killed_before_its_first_checkpoint_restarts_from_step_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    cli.main(["train", "--config", "tiny", "--steps", "3", "--out", str(tmp_path), "--quiet"])
    run = _only_run(tmp_path)
    checkpoints = run / "checkpoints"
    for folder in checkpoints.iterdir():  # as if killed while writing the first checkpoint
        shutil.rmtree(folder)
    (checkpoints / ".step_00000003.tmp").mkdir()
    (run / "summary.json").unlink()
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "restarting from step 0" in capsys.readouterr().out
    assert [p.name for p in checkpoints.iterdir()] == ["step_00000003"]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and json.loads((run / "summary.json").read_text())["steps"] == 3


def _run_files(run: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and not p.name.endswith(".png")
    }


def test_a_refused_resume_leaves_the_runs_config_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The config was rewritten with the resume's overrides before the checkpoint was read: a
    # damaged checkpoint then left a run whose config.yaml said steps: 9.
    cli.main(["train", "--config", "tiny", "--steps", "3", "--out", str(tmp_path), "--quiet"])
    run = _only_run(tmp_path)
    (latest,) = (run / "checkpoints").iterdir()
    blob = latest / "tensors.safetensors"
    blob.write_bytes(blob.read_bytes()[:100])
    before = _run_files(run)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--steps", "9", "--quiet"]) == 2
    assert "truncated or was modified" in capsys.readouterr().err
    assert _run_files(run) == before


def test_resuming_to_fewer_steps_than_the_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It printed "completed: ... 4 steps" and left config.yaml saying steps: 2.
    cli.main(["train", "--config", "tiny", "--steps", "4", "--out", str(tmp_path), "--quiet"])
    run = _only_run(tmp_path)
    before = _run_files(run)
    capsys.readouterr()
    for argv in (["--steps", "2"], ["train.steps=3"]):
        assert cli.main(["train", "--resume", str(run), *argv, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("slime train: error: train.steps: expected at least 4, the step of")
        assert len(err.splitlines()) == 1
    assert _run_files(run) == before


@pytest.mark.parametrize("option", ["--config", "--resume", "--out"])
def test_an_empty_path_option_is_refused_not_read_as_the_current_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, option: str
) -> None:
    # Path("") is ".": --out '' wrote the run into the current folder, and --config '' and
    # --resume '' were refused naming '.' or nothing instead of the empty value given.
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--config", "tiny", "--steps", "3", "--quiet"]
    assert cli.main([*argv, option, ""]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"slime train: error: {option}: expected a file or folder path, got ''"
    assert list(tmp_path.iterdir()) == []


def test_a_resume_refuses_config_and_out_options_it_would_ignore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --config and --out were silently ignored on resume: the run's own config.yaml was read and
    # the run carried on in its own folder, whatever the options said.
    out = tmp_path / "out"
    cli.main(["train", "--config", "tiny", "--steps", "3", "--out", str(out), "--quiet"])
    run = _only_run(out)
    before = _run_files(run)
    capsys.readouterr()
    for argv, message in (
        (["--config", "shakespeare_cpu"], "--resume: a resumed run keeps its config.yaml, got "),
        (["--out", str(tmp_path / "elsewhere")], "--resume: a resumed run stays in its own folder"),
    ):
        assert cli.main(["train", "--resume", str(run), "--steps", "4", *argv, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"slime train: error: {message}") and len(err.splitlines()) == 1
    assert _run_files(run) == before and not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("finished", [True, False])
def test_a_run_whose_checkpoints_were_deleted_is_not_restarted_over_its_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], finished: bool
) -> None:
    # With no committed checkpoint, resume restarted from step 0: it cleared metrics.jsonl and
    # replaced summary.json, best/ and model/ of a run that had got far past its first checkpoint.
    import shutil

    argv = ["train", "--config", "tiny", "--steps", "6", "train.checkpoint_interval=2"]
    cli.main([*argv, "--out", str(tmp_path), "--quiet"])
    run = _only_run(tmp_path)
    shutil.rmtree(run / "checkpoints")
    if not finished:  # as if its checkpoints were lost mid-run
        (run / "summary.json").unlink()
    before = _run_files(run)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no committed checkpoint" in err and len(err.splitlines()) == 1
    assert ("summary.json is there" if finished else "logs step 6") in err
    assert _run_files(run) == before


def test_ctrl_c_during_training_is_one_line_and_leaves_a_resumable_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGINT ended `slime train` with a KeyboardInterrupt traceback from wherever it landed.
    from slime.train.trainer import Trainer

    step = Trainer.train_step
    calls = []

    def interrupted_at_step_7(self: Trainer):  # noqa: ANN202
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(Trainer, "train_step", interrupted_at_step_7)
    argv = ["train", "--config", "tiny", "--steps", "12", "train.checkpoint_interval=3"]
    assert cli.main([*argv, "--out", str(tmp_path), "--quiet"]) == cli.INTERRUPTED
    run = _only_run(tmp_path)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert err == (
        f"slime train: interrupted at step 6; its latest checkpoint is step 6: "
        f"slime train --resume {run} carries it on"
    )
    monkeypatch.setattr(Trainer, "train_step", step)
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 12


def test_ctrl_c_in_any_command_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(argv: list[str]) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.BUILTIN, "eval", interrupted)
    assert cli.main(["eval", "somewhere"]) == cli.INTERRUPTED
    assert capsys.readouterr().err == "slime eval: interrupted\n"


@pytest.mark.parametrize("damage", [b"{bad", b"\xff\xfe", b"[1, 2]"])
def test_resuming_a_finished_run_with_a_damaged_summary_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: bytes
) -> None:
    # It died with a JSONDecodeError (or UnicodeDecodeError) traceback.
    cli.main(["train", "--config", "tiny", "--steps", "3", "--out", str(tmp_path), "--quiet"])
    run = _only_run(tmp_path)
    (run / "summary.json").write_bytes(damage)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slime train: error: ") and "summary.json' is damaged" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (  # 10**12 steps trained until stopped
            ["--steps", str(10**12)],
            "--steps (train.steps): expected a value <= 1000000000, got 1000000000000",
        ),
        (["--steps", "0"], "--steps (train.steps): expected a value >= 1, got 0"),
        (["--steps", "-4"], "--steps (train.steps): expected a value >= 1, got -4"),
        (["--seed", str(2**64)], f"--seed (train.seed): expected a value <= {2**63 - 1}"),
        (["--device", "cuda:256"], "--device (train.device): expected 'auto', 'cpu', 'cuda'"),
        (  # the trainer's loss buffer: a TypeError traceback ("Overflow when unpacking long long")
            ["train.log_interval=1000000000000"],
            "train.log_interval: expected a value <= 1048576, got 1000000000000",
        ),
        (
            ["lifecycle.medium_interval=1e30"],
            "lifecycle.medium_interval: expected int, got 1e+30",
        ),
    ],
)
def test_out_of_range_counts_are_one_error_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "runs"
    assert cli.main(["train", "--config", "tiny", "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"slime train: error: {message}") and err.count("\n") == 1, err
    assert not out.exists()


def test_the_limit_of_steps_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "overrides train.steps (1 to 1,000,000,000)" in capsys.readouterr().out


def test_a_failed_allocation_is_one_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Values each within bounds can still multiply past the memory (a probe batch of a million
    # windows of a long block): torch's allocator refused with a RuntimeError traceback.
    import torch

    def allocates_four_exbibytes(argv: list[str]) -> int:
        torch.empty(1 << 62, dtype=torch.uint8)
        return 0

    monkeypatch.setitem(cli.BUILTIN, "eval", allocates_four_exbibytes)
    assert cli.main(["eval", "somewhere"]) == 2
    assert capsys.readouterr().err == (
        "slime eval: error: out of memory: could not allocate 4,294,967,296.0 GiB of CPU memory "
        "(smaller batches, windows or model fit)\n"
    )

    def python_runs_out(argv: list[str]) -> int:
        bytearray(1 << 62)
        return 0

    monkeypatch.setitem(cli.BUILTIN, "eval", python_runs_out)
    assert cli.main(["eval", "somewhere"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slime eval: error: out of memory: ") and err.count("\n") == 1

    def cuda_runs_out(argv: list[str]) -> int:  # the message torch's CUDA allocator writes
        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.11 "
            "GiB of which 3.94 GiB is free.\nOf the allocated memory 70.01 GiB is allocated by "
            "PyTorch"
        )

    monkeypatch.setitem(cli.BUILTIN, "eval", cuda_runs_out)
    assert cli.main(["eval", "somewhere"]) == 2
    assert capsys.readouterr().err == (
        "slime eval: error: out of memory: CUDA out of memory. Tried to allocate 20.00 GiB "
        "(smaller batches, windows or model fit)\n"
    )

    def other_runtime_error(argv: list[str]) -> int:
        raise RuntimeError("not about memory")

    monkeypatch.setitem(cli.BUILTIN, "eval", other_runtime_error)
    with pytest.raises(RuntimeError, match="not about memory"):  # a bug keeps its traceback
        cli.main(["eval", "somewhere"])
