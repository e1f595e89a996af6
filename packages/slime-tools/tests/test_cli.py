"""The subcommands as `slime` runs them: (argv) -> exit status, through the entry points."""

import importlib.metadata
import importlib.util
import os
import subprocess
import sys

import pytest
from slime.tools import cli


def _installed(dist):
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# The GPU machine imports slime from packages/*/src without installing it: no entry points there.
@pytest.mark.skipif(not _installed("slime-tools"), reason="slime-tools is not installed")
def test_entry_points_name_the_four_subcommands():
    found = {ep.name: ep.load() for ep in importlib.metadata.entry_points(group="slime.commands")}
    assert found["visualize"] is cli.visualize_command
    assert found["export"] is cli.export_command
    assert found["package"] is cli.package_command
    assert found["inspect"] is cli.inspect_command


@pytest.mark.parametrize("name", ["visualize", "export", "package", "inspect"])
def test_help_exits_zero_and_names_the_slime_subcommand(name, capsys):
    assert cli.COMMANDS[name](["--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: slime {name}")


def test_usage_error_exits_two(capsys):
    assert cli.export_command(["somewhere"]) == 2  # --format is required
    assert "--format" in capsys.readouterr().err


def test_visualize_prints_each_file_written(slime_run, tmp_path, capsys):
    assert (
        cli.visualize_command([str(slime_run[0]), "--out", str(tmp_path), "--format", "svg"]) == 0
    )
    printed = capsys.readouterr().out.split()
    assert len(printed) == 6 and all(p.endswith(".svg") and os.path.isfile(p) for p in printed)


def test_visualize_of_a_baseline_with_a_comparison_notes_what_it_skipped(
    baseline_run, slime_run, tmp_path, capsys
):
    argv = [str(slime_run[0]), "--baseline", str(baseline_run), "--out", str(tmp_path)]
    assert cli.visualize_command(argv) == 0
    assert cli.visualize_command([str(baseline_run), "--out", str(tmp_path / "b")]) == 0
    assert "skipped archive heatmaps and behaviour space" in capsys.readouterr().err


def test_visualize_with_nothing_to_plot_fails_with_a_message(tmp_path, capsys):
    assert cli.visualize_command([str(tmp_path)]) == 2
    assert "slime visualize: error: nothing to plot" in capsys.readouterr().err


def test_visualize_of_a_run_whose_metrics_are_not_utf8_is_one_error_line(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 0, "kind": "train"}\n\xff\n\n')
    assert cli.visualize_command([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slime visualize: error: ") and "metrics.jsonl:2 is not JSON" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_export_reports_the_file_and_the_check(slime_run, tmp_path, capsys):
    target = tmp_path / "frozen.ts"
    argv = [str(slime_run[0]), "--format", "torchscript", "--out", str(target)]
    assert cli.export_command(argv) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(target) and target.is_file()
    assert "checked torchscript against PyTorch on (batch x seq) 1x4, 3x8" in out.err


def test_export_never_replaces_an_existing_out_file(slime_run, capsys):
    # --out RUN_DIR/metrics.jsonl replaced the run's metrics with a TorchScript archive.
    config = slime_run[0] / "metrics.jsonl"
    before = config.read_bytes()
    argv = [str(slime_run[0]), "--format", "torchscript", "--out", str(config)]
    assert cli.export_command(argv) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"slime export: error: --out: {str(config)!r} exists; an export never replaces a file (remove it or name another)\n"
    )
    assert config.read_bytes() == before


def test_export_of_a_v1_model_directory_succeeds(v1_run, tmp_path, capsys):
    target = tmp_path / "v1.pt2"
    argv = [str(v1_run), "--format", "torch-export", "--out", str(target)]
    assert cli.export_command(argv) == 0
    assert capsys.readouterr().out.strip() == str(target) and target.is_file()


def test_export_of_a_baseline_run_fails_with_the_reason(baseline_run, capsys):
    assert cli.export_command([str(baseline_run), "--format", "torch-export"]) == 2
    assert "slime export: error:" in capsys.readouterr().err


def test_package_spec_only_writes_the_build_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda **kw: [
            importlib.metadata.EntryPoint("slime", "slime.train.cli:main", "console_scripts")
        ],
    )
    assert cli.package_command(["--out", str(tmp_path), "--spec-only", "--onefile"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "slime.spec")


@pytest.mark.skipif(importlib.util.find_spec("PyInstaller") is not None, reason="it is installed")
def test_package_without_pyinstaller_fails_naming_the_extra(tmp_path, capsys):
    assert cli.package_command(["--out", str(tmp_path)]) == 2
    assert "slime-tools[package]" in capsys.readouterr().err


def test_module_entry_dispatches_to_the_command(capsys):
    assert cli.main(["package", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: slime package")


def test_module_entry_rejects_an_unknown_command(capsys):
    assert cli.main(["train"]) == 2
    assert (
        "expected a command (visualize, export, package, inspect), got 'train'"
        in capsys.readouterr().err
    )


def test_python_dash_m_slime_tools_runs_a_command():
    done = subprocess.run(
        [sys.executable, "-m", "slime.tools", "visualize", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: slime visualize")


def test_an_output_path_the_file_system_refuses_is_one_error_line(
    slime_run, tmp_path, capsys
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert cli.visualize_command([str(slime_run[0]), "--out", str(blocker / "plots")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(blocker / "plots") in err
