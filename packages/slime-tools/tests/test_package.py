"""The PyInstaller build files of `slime package`: the spec is run here as PyInstaller runs it,
with recording stand-ins for PyInstaller's build classes, on Linux and as if on Windows."""

import ast
import importlib.metadata
import importlib.util
import subprocess
import sys
import types

import pytest
from slime.proto import ConfigError
from slime.tools import MissingExtraError, build_executable, render_spec, write_build_files
from slime.tools.package import (
    cli_entry_point,
    executable_path,
    render_launcher,
    render_windows_version,
)


class _Recorder:
    """Stands in for Analysis / PYZ / EXE / COLLECT: keeps its arguments."""

    calls: list

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        type(self).calls.append(self)
        self.pure, self.scripts, self.binaries, self.datas = ["pure"], ["scripts"], ["bins"], []


def run_spec(text, spec_dir, monkeypatch, platform="linux"):
    """Execute spec ``text`` as PyInstaller would; returns ``{class name: [calls]}``."""
    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_submodules = lambda package: [f"{package}.tools.cli", f"{package}.train.cli"]
    hooks.collect_data_files = lambda package: [("configs/default.yaml", "slime/train/configs")]
    hooks.copy_metadata = lambda dist: [(f"{dist}.dist-info", f"{dist}.dist-info")]
    for name in ("PyInstaller", "PyInstaller.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "PyInstaller.utils.hooks", hooks)
    monkeypatch.setattr(sys, "platform", platform)
    classes = {
        n: type(n, (_Recorder,), {"calls": []}) for n in ("Analysis", "PYZ", "EXE", "COLLECT")
    }
    exec(compile(text, "slime.spec", "exec"), {"SPECPATH": str(spec_dir), **classes})
    return {n: c.calls for n, c in classes.items()}


def test_spec_analyses_the_launcher_beside_it_with_every_slime_module(tmp_path, monkeypatch):
    calls = run_spec(render_spec(onefile=False), tmp_path, monkeypatch)
    (analysis,) = calls["Analysis"]
    assert analysis.args[0] == [str(tmp_path / "slime_launcher.py")]
    assert {"slime.tools.cli", "slime.train.cli"} <= set(analysis.kwargs["hiddenimports"])


@pytest.mark.skipif(
    not any(d.metadata["Name"] == "slime-tools" for d in importlib.metadata.distributions()),
    reason="slime-tools is not installed (sources on PYTHONPATH): no metadata to ship",
)
def test_spec_ships_the_entry_point_metadata_of_the_slime_distributions(tmp_path, monkeypatch):
    calls = run_spec(render_spec(onefile=False), tmp_path, monkeypatch)
    datas = {dest for _, dest in calls["Analysis"][0].kwargs["datas"]}
    installed = {d.metadata["Name"] for d in importlib.metadata.distributions()}
    slime = {f"{name}.dist-info" for name in installed if name.startswith("slime-")}
    assert {"slime-tools.dist-info", "slime-core.dist-info"} <= slime <= datas
    assert "slime/train/configs" in datas


def test_spec_keeps_kernel_sources_for_triton_to_compile(tmp_path, monkeypatch):
    calls = run_spec(render_spec(onefile=True), tmp_path, monkeypatch)
    mode = calls["Analysis"][0].kwargs["module_collection_mode"]
    assert mode["slime.kernels"] == "pyz+py"
    assert ("triton" in mode) == (importlib.util.find_spec("triton") is not None)


def test_onefile_spec_packs_binaries_into_one_console_executable(tmp_path, monkeypatch):
    calls = run_spec(render_spec(onefile=True), tmp_path, monkeypatch)
    (exe,) = calls["EXE"]
    assert calls["COLLECT"] == []
    assert exe.args[2] == ["bins"]  # the binaries go inside the executable
    assert exe.kwargs["name"] == "slime" and exe.kwargs["console"] is True
    assert exe.kwargs["upx"] is False


def test_onedir_spec_collects_binaries_beside_the_executable(tmp_path, monkeypatch):
    calls = run_spec(render_spec(onefile=False), tmp_path, monkeypatch)
    (exe,), (collect,) = calls["EXE"], calls["COLLECT"]
    assert exe.kwargs["exclude_binaries"] is True
    assert collect.args[1] == ["bins"] and collect.kwargs["name"] == "slime"


def test_spec_on_windows_attaches_the_version_resource(tmp_path, monkeypatch):
    windows = run_spec(render_spec(onefile=True), tmp_path, monkeypatch, platform="win32")
    assert windows["EXE"][0].kwargs["version"] == str(tmp_path / "slime_version.txt")
    assert windows["EXE"][0].kwargs["name"] == "slime"  # PyInstaller appends .exe on Windows


def test_spec_elsewhere_has_no_version_resource(tmp_path, monkeypatch):
    linux = run_spec(render_spec(onefile=True), tmp_path, monkeypatch, platform="linux")
    assert linux["EXE"][0].kwargs["version"] is None


def test_windows_version_resource_names_the_exe_and_the_version():
    text = render_windows_version("0.3.1", name="slime")
    ast.parse(text, mode="eval")  # PyInstaller evaluates it as one expression
    assert "filevers=(0, 3, 1, 0)" in text
    assert 'StringStruct("OriginalFilename", "slime.exe")' in text
    assert 'StringStruct("ProductVersion", "0.3.1")' in text


def test_windows_version_rejects_a_non_numeric_version():
    with pytest.raises(ConfigError, match="'dev'"):
        render_windows_version("dev")


def test_entry_point_is_read_from_the_slime_console_script_metadata(monkeypatch):
    fake = [importlib.metadata.EntryPoint("slime", "pkg.cli:main", "console_scripts")]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: fake)
    assert cli_entry_point() == "pkg.cli:main"


def test_without_a_slime_console_script_packaging_says_to_install_slime_train(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: [])
    with pytest.raises(ConfigError, match="install slime-train"):
        cli_entry_point()


def test_launcher_calls_the_slime_console_script_function():
    text = render_launcher("slime.train.cli:main")
    ast.parse(text)
    assert "from slime.train.cli import main as main" in text
    assert "freeze_support()" in text and "sys.exit(main())" in text


@pytest.mark.parametrize("bad", ["slime.train.cli", "slime train:main", "a.b:c()"])
def test_launcher_rejects_an_entry_point_that_is_not_module_function(bad):
    with pytest.raises(ConfigError, match="module:function"):
        render_launcher(bad)


def test_write_build_files_puts_spec_launcher_and_version_together(tmp_path):
    files = write_build_files(tmp_path / "pkg", onefile=True, entry_point="slime.train.cli:main")
    assert {p.name for p in (tmp_path / "pkg").iterdir()} == {
        "slime.spec",
        "slime_launcher.py",
        "slime_version.txt",
    }
    assert files.spec.read_text() == render_spec(onefile=True)


def test_executable_path_follows_the_layout(tmp_path):
    suffix = ".exe" if sys.platform == "win32" else ""
    assert executable_path(tmp_path, onefile=True) == tmp_path / "dist" / f"slime{suffix}"
    assert (
        executable_path(tmp_path, onefile=False) == tmp_path / "dist" / "slime" / f"slime{suffix}"
    )


@pytest.mark.skipif(importlib.util.find_spec("PyInstaller") is not None, reason="it is installed")
def test_building_without_pyinstaller_names_the_package_extra(tmp_path):
    with pytest.raises(MissingExtraError, match=r"pip install 'slime-tools\[package\]'"):
        build_executable(tmp_path, onefile=False)
    assert not (tmp_path / "slime.spec").exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("PyInstaller") is None, reason="needs PyInstaller")
def test_built_executable_prints_help_and_exports_a_run(tmp_path, slime_run):
    exe = build_executable(tmp_path / "pkg", onefile=False)
    shown = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and "usage" in shown.stdout.lower()
    target = tmp_path / "model.pt2"
    run = [str(exe), "export", str(slime_run[0]), "--format", "torch-export", "--out", str(target)]
    exported = subprocess.run(run, capture_output=True, text=True, timeout=600)
    assert exported.returncode == 0, exported.stderr
    assert target.is_file() and "max |logit difference| 0" in exported.stderr
