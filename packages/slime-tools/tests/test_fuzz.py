"""Damaged and forged run directories and outputs (hardening issue 14): one typed error naming
the value, no traceback at the CLI, no silent wrong answer, earlier outputs never lost."""

import ast
import importlib.metadata
import json
import os
import re
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from slime.proto import CheckpointError, ConfigError
from slime.tools import cli, load_run_model, package, read_metrics
from slime.tools.package import PackageBuildError, write_build_files, write_sources
from slime.tools.query import inspect_run
from slime.tools.visualize import visualize_run

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


@pytest.fixture(scope="module")
def forged_descriptor_run(slime_run, tmp_path_factory):
    """``slime_run`` with layer 1's second live pod's activation sparsity set to 5.0 and saved
    again through save_pretrained (so every sha256 is consistent)."""
    run_dir = tmp_path_factory.mktemp("forged-descriptor")
    shutil.copy(slime_run[0] / "metrics.jsonl", run_dir / "metrics.jsonl")
    model = load_run_model(slime_run[0])
    organism = model.organisms[1]
    slot = organism.live_slots()[1]
    organism.descriptors[slot, 1] = 5.0
    model.save_pretrained(run_dir / "model")
    return run_dir, slot


def test_a_live_descriptor_outside_0_1_is_refused_naming_the_pod(forged_descriptor_run, capsys):
    # before: inspect listed the pod with activation_sparsity 5 as matching '>0.9'
    run_dir, slot = forged_descriptor_run
    message = rf"slot {slot} of layer 1 has activation_sparsity = 5.0, outside \[0, 1\]"
    with pytest.raises(CheckpointError, match=message):
        inspect_run(run_dir, "activation_sparsity>0.9")
    assert cli.inspect_command([str(run_dir)]) == 2
    assert cli.visualize_command([str(run_dir), "--out", str(run_dir / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("activation_sparsity = 5.0" in line for line in err)


def test_pods_never_measured_match_no_condition_and_show_no_descriptors(
    tmp_path, make_model, capsys
):
    # before: an unmeasured pod's placeholder zeros matched 'attention_distance<0.3' as if measured
    model = make_model()
    model.save_pretrained(tmp_path / "model")
    total = sum(len(o.live_slots()) for o in model.organisms)
    report = inspect_run(tmp_path, "attention_distance<0.3")
    assert report.pods == () and report.unmeasured == total == report.live_pods
    everything = inspect_run(tmp_path)
    assert len(everything.pods) == total and not any(p.measured for p in everything.pods)
    assert cli.inspect_command([str(tmp_path), "--where", "attention_distance<0.3"]) == 0
    out = capsys.readouterr().out
    assert f"live pods: 0 of {total} ({total} never measured" in out
    assert "match no condition" in out
    assert cli.inspect_command([str(tmp_path)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.split()[0].isdigit()]
    assert len(rows) == total and all(row.split()[2:5] == ["-", "-", "-"] for row in rows)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


ENTRY = "slime.train.cli:main"


@pytest.mark.parametrize("name", ["slime.spec", "slime_launcher.py", "slime_version.txt"])
def test_package_never_replaces_a_file_it_did_not_write(tmp_path, capsys, name):
    # before: the user's own file of that name was overwritten without a word
    (tmp_path / name).write_text("# my own build recipe\n")
    with pytest.raises(ConfigError, match=rf"{name} exists and was not written by `slime package`"):
        write_build_files(tmp_path, onefile=False, entry_point=ENTRY)
    assert _files(tmp_path) == {name: b"# my own build recipe\n"}  # nothing else written either
    if importlib.metadata.entry_points(group="console_scripts", name="slime"):
        assert cli.package_command(["--spec-only", "--out", str(tmp_path)]) == 2
        assert "not written by `slime package`" in capsys.readouterr().err
    assert (tmp_path / name).read_text() == "# my own build recipe\n"


def test_package_rewrites_its_own_files(tmp_path):
    write_build_files(tmp_path, onefile=False, entry_point=ENTRY)
    old = os.umask(0o022)
    try:
        files = write_build_files(tmp_path, onefile=True, entry_point=ENTRY, strip_docstrings=True)
    finally:
        os.umask(old)
    assert "ONEFILE = True" in files.spec.read_text()
    # written under temporary names (mkstemp/mkdtemp: 0600/0700), then given ordinary modes
    for path in (files.spec, files.launcher, files.version):
        assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "src" / "slime").st_mode & 0o777 == 0o755
    assert ast.parse(files.version.read_text(), mode="eval")  # PyInstaller evaluates it


def _fake_pyinstaller(monkeypatch, status=0):
    """build_executable without PyInstaller: ``require`` passes and the run writes what
    PyInstaller would (dist/slime/slime, build/slime/, the log); returns the list of runs."""
    runs = []

    def run(command, stdout, stderr, env):
        out = Path(command[command.index("--distpath") + 1]).parent
        (out / "dist" / "slime").mkdir(parents=True, exist_ok=True)
        (out / "dist" / "slime" / "slime").write_text(f"executable {len(runs)}")
        (out / "build" / "slime").mkdir(parents=True, exist_ok=True)
        stdout.write("INFO: PyInstaller\n")
        runs.append(command)
        return subprocess.CompletedProcess(command, status)

    monkeypatch.setattr(package, "require", lambda *args: None)
    monkeypatch.setattr(package, "cli_entry_point", lambda: ENTRY)
    monkeypatch.setattr(package.subprocess, "run", run)
    return runs


@pytest.mark.parametrize("name", ["dist", "build", "pyinstaller.log"])
def test_package_never_builds_over_a_dist_build_or_log_it_did_not_make(
    tmp_path, capsys, monkeypatch, name
):
    # before: PyInstaller ran with --noconfirm into OUT/dist and OUT/build and the log was opened
    # for writing, so the user's own folder or log of that name was replaced without a word
    runs = _fake_pyinstaller(monkeypatch)
    mine = tmp_path / name if name.endswith(".log") else tmp_path / name / "slime"
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_text("my own")
    message = rf"{name} exists and was not made by an earlier `slime package` build"
    with pytest.raises(ConfigError, match=message):
        package.build_executable(tmp_path, onefile=False)
    assert package_command_refuses(tmp_path, capsys, message)
    assert runs == [] and _files(tmp_path) == {mine.relative_to(tmp_path).as_posix(): b"my own"}


def package_command_refuses(out, capsys, message):
    status = cli.package_command(["--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    return status == 2 and len(err) == 1 and re.search(message, err[0]) is not None


@pytest.mark.parametrize("status", [0, 1], ids=["built", "failed"])
def test_package_builds_again_over_its_own_earlier_build(tmp_path, monkeypatch, status):
    # its own dist/, build/ and log (marked before PyInstaller starts, so a failed build counts)
    runs = _fake_pyinstaller(monkeypatch, status)
    out = tmp_path / "pkg"
    if status:
        with pytest.raises(PackageBuildError, match="PyInstaller exited with status 1"):
            package.build_executable(out, onefile=False)
    else:
        assert package.build_executable(out, onefile=False) == out / "dist" / "slime" / "slime"
    assert "written by `slime package`" in (out / ".slime-package-build").read_text()
    runs = _fake_pyinstaller(monkeypatch)
    assert package.build_executable(out, onefile=True) == out / "dist" / "slime"
    assert len(runs) == 1 and (out / "pyinstaller.log").read_text() == "INFO: PyInstaller\n"


def test_package_never_replaces_a_build_marker_it_did_not_write(tmp_path, monkeypatch):
    runs = _fake_pyinstaller(monkeypatch)
    (tmp_path / ".slime-package-build").write_text("mine")
    with pytest.raises(ConfigError, match=r"slime-package-build exists and was not written by"):
        package.build_executable(tmp_path, onefile=False)
    assert runs == [] and _files(tmp_path) == {".slime-package-build": b"mine"}


def test_package_never_deletes_a_src_slime_folder_it_did_not_write(tmp_path):
    # before: --strip-docstrings ran shutil.rmtree on OUT/src/slime, whatever it held
    mine = tmp_path / "src" / "slime" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("keep me")
    with pytest.raises(ConfigError, match=r"slime exists and was not written by `slime package`"):
        write_sources(tmp_path / "src", strip=False)
    assert mine.read_text() == "keep me"


def test_a_failed_source_copy_leaves_the_earlier_copy_whole(tmp_path, monkeypatch):
    # before: the earlier copy was deleted first, so a source that failed to strip left a partial
    # tree behind in its place
    root = write_sources(tmp_path / "src", strip=True)
    before = _files(root)

    def fail(source, filename="<source>"):
        if filename.endswith("query.py"):
            raise PackageBuildError(f"stripping the docstrings of {filename} would change its code")
        return source

    monkeypatch.setattr(package, "strip_docstrings", fail)
    with pytest.raises(PackageBuildError, match="query.py"):
        write_sources(tmp_path / "src", strip=True)
    assert _files(root) == before
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == [
        ".slime-package-sources",
        "slime",
    ]


def test_a_failed_write_of_a_build_file_leaves_the_earlier_file_whole(tmp_path):
    # before: write_text truncated the spec first, so a refused write (here: a file-size limit of
    # 1000 bytes, as a full disk would) left a cut spec in place of the earlier one
    files = write_build_files(tmp_path, onefile=False, entry_point=ENTRY)
    before = _files(tmp_path)
    pid = os.fork()
    if pid == 0:  # the child writes under RLIMIT_FSIZE; a write past it fails with EFBIG
        status = 3
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
            write_build_files(tmp_path, onefile=True, entry_point=ENTRY)
        except OSError:
            status = 0
        finally:
            os._exit(status)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert _files(tmp_path) == before and "ONEFILE = False" in files.spec.read_text()


def _in_child_under_a_file_size_limit(limit, action):
    """Run ``action()`` in a forked child whose writes past ``limit`` bytes fail (EFBIG, as a full
    disk would); returns True when it raised OSError."""
    pid = os.fork()
    if pid == 0:
        status = 3
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            action()
        except OSError:
            status = 0
        finally:
            os._exit(status)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_a_failed_plot_write_leaves_the_earlier_plots_whole(slime_run, tmp_path):
    # before: savefig wrote straight to the path, so a refused write cut the earlier plot
    out = tmp_path / "plots"
    visualize_run(slime_run[0], out)
    before = _files(out)
    assert _in_child_under_a_file_size_limit(2000, lambda: visualize_run(slime_run[0], out))
    assert _files(out) == before
    assert all(os.stat(out / name).st_mode & 0o444 == 0o444 for name in before)


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_visualize_never_replaces_a_file_it_did_not_write(slime_run, tmp_path, capsys, fmt):
    # before: a run folder's own pool.png (or a folder of that name) in --out was replaced by the
    # plot without a word
    out = tmp_path / "plots"
    (out / f"behaviour_space.{fmt}").mkdir(parents=True)
    (out / f"pool.{fmt}").write_bytes(b"my own pool plot")
    message = rf"pool.{fmt} exists and was not written by `slime visualize`"
    with pytest.raises(ConfigError, match=message):
        visualize_run(slime_run[0], out, fmt=fmt)
    argv = [str(slime_run[0]), "--out", str(out), "--format", fmt]
    assert cli.visualize_command(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0])
    (out / f"pool.{fmt}").rename(tmp_path / "mine")
    with pytest.raises(ConfigError, match=rf"behaviour_space.{fmt} exists and was not written"):
        visualize_run(slime_run[0], out, fmt=fmt)
    # nothing was written by the refused runs
    assert sorted(p.name for p in out.iterdir()) == [f"behaviour_space.{fmt}"]
    (out / f"behaviour_space.{fmt}").rmdir()
    first = visualize_run(slime_run[0], out, fmt=fmt).written
    again = visualize_run(slime_run[0], out, fmt=fmt).written  # its own plots: replaced
    assert again == first and len(first) >= 4
    assert all(b"written by `slime visualize`" in p.read_bytes()[:4096] for p in again)


def test_behaviour_space_leaves_out_pods_never_measured_and_says_so(tmp_path, make_model):
    # before: a pod born after the last measurement was drawn at its placeholder zeros, a point
    # in kernel-PCA space that no pod occupies
    model = make_model()
    model.measure_behaviour(torch.randint(0, model.config.vocab_size, (2, 8)))
    model.organisms[1].spawn()  # born unmeasured
    model.save_pretrained(tmp_path / "model")
    live = sum(len(o.live_slots()) for o in model.organisms)
    report = visualize_run(tmp_path, tmp_path / "p", fmt="svg")
    assert (
        f"behaviour space: 1 of {live} live pods never measured (no descriptors yet), left out of it"
        in report.skipped
    )
    svg = (tmp_path / "p" / "behaviour_space.svg").read_text()
    assert f"behaviour of the live pods: {live - 1} pods" in svg


@pytest.mark.parametrize(
    "records, key, number",
    [
        ([{"step": 1, "kind": "train", "loss": 1e308}, {"step": 2, "kind": "train", "loss": -1e308}],
         "loss", "1e+308"),
        ([{"step": -1e308, "kind": "eval", "val_loss": 1}, {"step": 1e308, "kind": "eval", "val_loss": 2}],
         "val_loss", "-1e+308"),
        ([{"step": 1, "kind": "m", "pool_size": 1e308}, {"step": 2, "kind": "m", "pool_size": -1e308}],
         "pool_size", "1e+308"),
        ([{"step": 1, "kind": "m", "archive_coverage": 0.5, "archive_qd_score": 1e308},
          {"step": 2, "kind": "m", "archive_qd_score": -1e308}], "archive_qd_score", "1e+308"),
    ],
    ids=["loss", "steps", "pool-size", "qd-score"],
)  # fmt: skip
def test_numbers_too_large_to_draw_skip_the_plot_naming_them(
    tmp_path, capsys, records, key, number
):
    # before: values spanning ±1e308 made matplotlib's tick locator raise a bare ValueError
    # ('arange: cannot compute length') while saving: a traceback from slime visualize
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (tmp_path / "metrics.jsonl").write_text(lines)
    assert cli.visualize_command([str(tmp_path), "--out", str(tmp_path / "p")]) in (0, 2)
    err = capsys.readouterr().err
    assert f"'{key}' has the " in err and f"{number}, too large to draw" in err
    assert "Traceback" not in err
