"""``slime package``: a standalone executable of the ``slime`` command, built by PyInstaller.

:func:`write_build_files` writes three files into one folder: ``slime_launcher.py`` (imports the
installed ``slime`` console script's function), ``slime.spec`` (the PyInstaller recipe) and
``slime_version.txt`` (the Windows version resource). The spec decides platform matters when
PyInstaller runs it, so the same folder builds ``slime`` on Linux or macOS and ``slime.exe`` on
Windows. PyInstaller does not cross-compile: build on the OS you target.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from slime.proto import ConfigError, SlimeError
from slime.tools._errors import require

__all__ = [
    "EXECUTABLE",
    "BuildFiles",
    "PackageBuildError",
    "build_executable",
    "cli_entry_point",
    "executable_path",
    "render_launcher",
    "render_spec",
    "render_windows_version",
    "write_build_files",
]

EXECUTABLE = "slime"

_LAUNCHER = '''"""Entry script of the standalone `slime` executable (written by `slime package`)."""

import sys
from multiprocessing import freeze_support

from {module} import {function} as main

if __name__ == "__main__":
    freeze_support()  # torch DataLoader workers re-enter the executable on Windows
    sys.exit(main())
'''

_SPEC = """# -*- mode: python ; coding: utf-8 -*-
# PyInstaller spec of the `slime` command, written by `slime package` (slime-tools {version}).
# Build:  pyinstaller --noconfirm slime.spec      (on the target OS: there is no cross-compiling)
# Output ({layout}): dist/{executable} on Linux and macOS, the same path with .exe on Windows.
import importlib.metadata
import importlib.util
import os
import sys

from PyInstaller.utils.hooks import collect_data_files, collect_submodules, copy_metadata

ONEFILE = {onefile!r}
NAME = {name!r}
HERE = SPECPATH  # noqa: F821  (PyInstaller defines it: the folder of this spec)
WINDOWS = sys.platform == "win32"

# Every slime module: subcommands are found through entry points, which static analysis misses.
hiddenimports = collect_submodules("slime")
# Shipped data files (run presets as YAML) and the metadata holding the "slime.commands" entry
# points; opentelemetry finds its context implementation through entry points too.
datas = collect_data_files("slime")
for dist in importlib.metadata.distributions():
    dist_name = (dist.metadata["Name"] or "").lower()
    if dist_name.startswith("slime-") or dist_name.startswith("opentelemetry-"):
        datas += copy_metadata(dist.metadata["Name"])

# Triton compiles kernels from their Python source (inspect.getsource): keep the .py files.
collection_mode = {{"slime.kernels": "pyz+py"}}
if importlib.util.find_spec("triton") is not None:
    collection_mode["triton"] = "pyz+py"

a = Analysis(  # noqa: F821
    [os.path.join(HERE, {launcher!r})],
    pathex=[],
    hiddenimports=hiddenimports,
    datas=datas,
    excludes=["pytest", "hypothesis", "nox", "IPython", "tkinter"],
    module_collection_mode=collection_mode,
    noarchive=False,
)
pyz = PYZ(a.pure)  # noqa: F821

# UPX is off: compressing torch's and CUDA's shared libraries breaks them.
common = dict(
    name=NAME,
    console=True,
    upx=False,
    strip=False,
    debug=False,
    version=os.path.join(HERE, {version_file!r}) if WINDOWS else None,
)
if ONEFILE:
    exe = EXE(pyz, a.scripts, a.binaries, a.datas, [], **common)  # noqa: F821
else:
    exe = EXE(pyz, a.scripts, [], exclude_binaries=True, **common)  # noqa: F821
    coll = COLLECT(exe, a.binaries, a.datas, name=NAME, upx=False, strip=False)  # noqa: F821
"""

_VERSION = """VSVersionInfo(
  ffi=FixedFileInfo(
    filevers={numbers},
    prodvers={numbers},
    mask=0x3F,
    flags=0x0,
    OS=0x40004,
    fileType=0x1,
    subtype=0x0,
    date=(0, 0),
  ),
  kids=[
    StringFileInfo([
      StringTable("040904B0", [
        StringStruct("CompanyName", "slime"),
        StringStruct("FileDescription", "slime: the Slime Mold Transformer command"),
        StringStruct("FileVersion", "{version}"),
        StringStruct("InternalName", "{name}"),
        StringStruct("OriginalFilename", "{name}.exe"),
        StringStruct("ProductName", "slime"),
        StringStruct("ProductVersion", "{version}"),
      ])
    ]),
    VarFileInfo([VarStruct("Translation", [1033, 1200])]),
  ],
)
"""

LAUNCHER_FILE = "slime_launcher.py"
SPEC_FILE = "slime.spec"
VERSION_FILE = "slime_version.txt"


class PackageBuildError(SlimeError):
    """PyInstaller ran and failed; the message holds its exit status and where its log is."""


@dataclass(frozen=True)
class BuildFiles:
    """The files :func:`write_build_files` wrote."""

    spec: Path
    launcher: Path
    version: Path


def _tools_version() -> str:
    try:
        return importlib.metadata.version("slime-tools")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def cli_entry_point() -> str:
    """``"module:function"`` of the installed ``slime`` console script (slime-train's CLI).

    Read from package metadata, so slime.tools never imports slime.train.

    Raises:
        ConfigError: no distribution declares a ``slime`` console script.
    """
    found = list(importlib.metadata.entry_points(group="console_scripts", name=EXECUTABLE))
    if not found:
        raise ConfigError(
            "no installed distribution declares the 'slime' console script; install slime-train",
            "entry_point",
        )
    return found[0].value


def render_launcher(entry_point: str) -> str:
    """The launcher script for ``entry_point`` (``"module:function"``).

    Raises:
        ConfigError: ``entry_point`` is not ``module:function`` of dotted identifiers.
    """
    module, sep, function = entry_point.partition(":")
    if (
        not sep
        or not function.isidentifier()
        or not all(part.isidentifier() for part in module.split("."))
    ):
        raise ConfigError(f"expected 'module:function', got {entry_point!r}", "entry_point")
    return _LAUNCHER.format(module=module, function=function)


def render_spec(*, onefile: bool, name: str = EXECUTABLE) -> str:
    """The PyInstaller spec (Python source) building ``name`` from the files beside it."""
    if not name.isidentifier():
        raise ConfigError(f"expected a plain executable name, got {name!r}", "name")
    return _SPEC.format(
        version=_tools_version(),
        onefile=bool(onefile),
        name=name,
        layout="one file" if onefile else "one folder",
        executable=name if onefile else f"{name}/{name}",
        launcher=LAUNCHER_FILE,
        version_file=VERSION_FILE,
    )


def render_windows_version(version: str | None = None, name: str = EXECUTABLE) -> str:
    """The Windows version resource (PyInstaller's ``VSVersionInfo`` text) for ``name.exe``.

    Raises:
        ConfigError: ``version`` does not start with up to four dot-separated integers.
    """
    version = version or _tools_version()
    parts = version.split("+")[0].split(".")[:4]
    if not all(p.isdigit() for p in parts):
        raise ConfigError(f"expected a version like 1.2.3, got {version!r}", "version")
    numbers = tuple(int(p) for p in parts) + (0,) * (4 - len(parts))
    return _VERSION.format(numbers=numbers, version=version, name=name)


def write_build_files(
    out: str | os.PathLike[str], *, onefile: bool, entry_point: str | None = None
) -> BuildFiles:
    """Write the launcher, spec and Windows version file into ``out``.

    Args:
        entry_point: ``"module:function"`` the executable runs; default :func:`cli_entry_point`.
    """
    entry_point = entry_point if entry_point is not None else cli_entry_point()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = BuildFiles(out / SPEC_FILE, out / LAUNCHER_FILE, out / VERSION_FILE)
    files.launcher.write_text(render_launcher(entry_point), encoding="utf-8")
    files.spec.write_text(render_spec(onefile=onefile), encoding="utf-8")
    files.version.write_text(render_windows_version(), encoding="utf-8")
    return files


def executable_path(out: str | os.PathLike[str], *, onefile: bool) -> Path:
    """Where the build in ``out`` puts the executable on this OS."""
    suffix = ".exe" if sys.platform == "win32" else ""
    dist = Path(out) / "dist"
    return (
        dist / f"{EXECUTABLE}{suffix}" if onefile else dist / EXECUTABLE / f"{EXECUTABLE}{suffix}"
    )


def build_executable(out: str | os.PathLike[str], *, onefile: bool) -> Path:
    """Write the build files into ``out`` and run PyInstaller on them; returns the executable.

    Raises:
        MissingExtraError: PyInstaller is not installed (extra ``package``).
        PackageBuildError: PyInstaller failed.
    """
    require("PyInstaller", "package", "slime package")
    out = Path(out)
    files = write_build_files(out, onefile=onefile)
    log = out / "pyinstaller.log"
    command = [
        sys.executable, "-m", "PyInstaller", "--noconfirm",
        "--distpath", str(out / "dist"), "--workpath", str(out / "build"), str(files.spec),
    ]  # fmt: skip
    with open(log, "w", encoding="utf-8") as handle:
        status = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode
    if status != 0:
        raise PackageBuildError(f"PyInstaller exited with status {status}; its log is {log}")
    return executable_path(out, onefile=onefile)
