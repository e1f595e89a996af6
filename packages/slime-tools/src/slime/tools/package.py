"""``slime package``: a standalone executable of the ``slime`` command, built by PyInstaller.

:func:`write_build_files` writes three files into one folder: ``slime_launcher.py`` (imports the
installed ``slime`` console script's function), ``slime.spec`` (the PyInstaller recipe) and
``slime_version.txt`` (the Windows version resource). The spec decides platform matters when
PyInstaller runs it, so the same folder builds ``slime`` on Linux or macOS and ``slime.exe`` on
Windows. PyInstaller does not cross-compile: build on the OS you target.

With ``strip_docstrings`` it also copies every ``slime`` source beside them (``src/slime/...``,
see :func:`write_sources`) with the docstrings removed (:func:`strip_docstrings`), and the spec
analyses that tree instead of the installed one.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from slime.proto import ConfigError, SlimeError
from slime.tools._errors import require
from slime.tools._owned import check_ours

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
    "strip_docstrings",
    "write_build_files",
    "write_sources",
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
# A folder beside this spec holding slime's sources (written by --strip-docstrings), or None:
# it goes first on the path, so the analysis below collects those files, not the installed ones.
SOURCES = os.path.join(HERE, {sources!r}) if {sources!r} else None
if SOURCES is not None:
    sys.path.insert(0, SOURCES)

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
    pathex=[SOURCES] if SOURCES is not None else [],
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

_VERSION = """# Windows version resource of the `slime` executable, written by `slime package`.
VSVersionInfo(
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
SOURCES_DIR = "src"
# What every file `slime package` writes says; a file without it is the user's and is never
# replaced. The copied sources are marked by a file beside their folder (SOURCES_MARKER).
WRITTEN_BY = "written by `slime package`"
SOURCES_MARKER = ".slime-package-sources"
# What PyInstaller writes into OUT (--distpath, --workpath, its log). They are built over only when
# BUILD_MARKER beside them says an earlier `slime package` build made them; it is written before
# PyInstaller starts, so a failed or interrupted build can be run again.
DIST_DIR, WORK_DIR, BUILD_LOG = "dist", "build", "pyinstaller.log"
BUILD_OUTPUTS = (DIST_DIR, WORK_DIR, BUILD_LOG)
BUILD_MARKER = ".slime-package-build"


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


def render_spec(*, onefile: bool, name: str = EXECUTABLE, sources: str | None = None) -> str:
    """The PyInstaller spec (Python source) building ``name`` from the files beside it.

    Args:
        sources: a folder beside the spec holding the ``slime`` sources to collect instead of
            the installed ones (``"src"`` with ``--strip-docstrings``); None: the installed ones.
    """
    if not name.isidentifier():
        raise ConfigError(f"expected a plain executable name, got {name!r}", "name")
    if sources is not None and (
        not sources or os.path.isabs(sources) or ".." in Path(sources).parts
    ):
        raise ConfigError(f"expected a folder name beside the spec, got {sources!r}", "sources")
    return _SPEC.format(
        sources=sources,
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
    out: str | os.PathLike[str],
    *,
    onefile: bool,
    entry_point: str | None = None,
    strip_docstrings: bool = False,
) -> BuildFiles:
    """Write the launcher, spec and Windows version file into ``out``.

    Args:
        entry_point: ``"module:function"`` the executable runs; default :func:`cli_entry_point`.
        strip_docstrings: also write the ``slime`` sources without docstrings into
            ``out/src`` (:func:`write_sources`) and point the spec at them.

    Raises:
        PackageBuildError: with ``strip_docstrings``, a source that cannot be stripped safely.
    """
    entry_point = entry_point if entry_point is not None else cli_entry_point()
    out = Path(out)
    files = BuildFiles(out / SPEC_FILE, out / LAUNCHER_FILE, out / VERSION_FILE)
    sources = SOURCES_DIR if strip_docstrings else None
    texts = {
        files.launcher: render_launcher(entry_point),
        files.spec: render_spec(onefile=onefile, sources=sources),
        files.version: render_windows_version(),
    }
    for path in texts:  # refuse before anything is written
        check_ours(path, WRITTEN_BY)
    if strip_docstrings:
        _check_ours_sources(out / SOURCES_DIR)
    out.mkdir(parents=True, exist_ok=True)
    if strip_docstrings:
        write_sources(out / SOURCES_DIR, strip=True)
    for path, text in texts.items():
        _write_replacing(path, text)
    return files


def _check_ours_sources(dest: Path) -> None:
    """ConfigError when ``dest/slime`` exists but is not a source copy `slime package` wrote."""
    target = dest / "slime"
    if (target.exists() or target.is_symlink()) and not (
        target.is_dir() and not target.is_symlink() and (dest / SOURCES_MARKER).is_file()
    ):
        raise ConfigError(
            f"{target} exists and was not written by `slime package`; refusing to replace it "
            "(move it away or choose another --out)",
            "out",
        )


def _check_ours_build(out: Path) -> None:
    """ConfigError when ``out`` holds a ``dist``, ``build`` or ``pyinstaller.log`` that no earlier
    `slime package` build made (no :data:`BUILD_MARKER` written by it beside them)."""
    marker = out / BUILD_MARKER
    check_ours(marker, WRITTEN_BY)
    if marker.exists():
        return
    for name in BUILD_OUTPUTS:
        path = out / name
        if path.exists() or path.is_symlink():
            raise ConfigError(
                f"{path} exists and was not made by an earlier `slime package` build; refusing "
                "to build over it (move it away or choose another --out)",
                "out",
            )


def _write_replacing(path: Path, text: str) -> None:
    """Write ``text`` under a temporary name beside ``path`` and rename it over ``path``: a
    failed or interrupted write leaves the earlier file whole."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it 0600: an ordinary file's mode
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


_DOC_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _docstring(node: ast.AST) -> ast.Expr | None:
    """The docstring statement of a module, class or function (``body[0]``), if it has one."""
    body = getattr(node, "body", None)
    if not isinstance(node, _DOC_OWNERS) or not body:
        return None
    first = body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return first
    return None


def _reads_docstrings(tree: ast.AST) -> bool:
    """Whether the code may read a docstring at run time: a ``__doc__`` name or attribute (e.g.
    ``argparse.ArgumentParser(description=__doc__)``) or anything named ``getdoc``."""
    for node in ast.walk(tree):
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        if name in ("__doc__", "getdoc") and isinstance(node, ast.Name | ast.Attribute):
            return True
    return False


def _without_docstrings(tree: ast.Module) -> ast.Module:
    """``tree`` with every docstring statement dropped (``pass`` where a body would be empty)."""
    for node in ast.walk(tree):
        if _docstring(node) is not None:
            node.body = node.body[1:] or ([] if isinstance(node, ast.Module) else [ast.Pass()])
    return tree


def strip_docstrings(source: str, filename: str = "<source>") -> str:
    """``source`` without its module, class and function docstrings; everything else (code,
    comments, formatting) is kept byte for byte.

    A docstring on lines of its own is removed with those lines (a comment after it on its last
    line goes with it), one followed by ``;`` and code on its line with that ``;``; one that is
    the only statement of a class or function body becomes ``pass``. A module whose code reads docstrings (``__doc__``,
    ``getdoc``) is returned unchanged. The result is parsed and checked to have exactly the
    syntax tree of ``source`` minus the docstrings.

    Raises:
        PackageBuildError: ``source`` does not parse, or stripping would change its code (both
            naming ``filename``).
    """
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as exc:
        raise PackageBuildError(f"{filename} does not parse: {exc}") from exc
    if _reads_docstrings(tree):
        return source
    lines = [line.encode("utf-8") for line in source.splitlines(keepends=True)]
    edits = []
    for node in ast.walk(tree):
        doc = _docstring(node)
        if doc is None:
            continue
        first, last = doc.lineno - 1, doc.end_lineno - 1  # ast columns count UTF-8 bytes
        start, end = doc.col_offset, doc.end_col_offset
        before, after = lines[first][:start], lines[last][end:].strip()
        own_lines = not before.strip() and (not after or after.startswith(b"#"))
        more = len(node.body) > 1 or isinstance(node, ast.Module)
        if own_lines and more:
            edits.append((first, 0, last, len(lines[last]), b""))
        elif more and after.startswith(b";"):  # '"""doc"""; code': drop it with its ';'
            rest = lines[last][end:]
            cut = rest.index(b";") + 1
            cut += len(rest[cut:]) - len(rest[cut:].lstrip(b" \t"))
            edits.append((first, start, last, end + cut, b""))
        else:
            edits.append((first, start, last, end, b"pass"))
    for first, start, last, end, text in sorted(edits, reverse=True):
        lines[first : last + 1] = [lines[first][:start] + text + lines[last][end:]]
    stripped = b"".join(lines).decode("utf-8")
    try:
        same = ast.dump(ast.parse(stripped, filename)) == ast.dump(_without_docstrings(tree))
    except SyntaxError:
        same = False
    if not same:
        raise PackageBuildError(f"stripping the docstrings of {filename} would change its code")
    return stripped


def write_sources(dest: str | os.PathLike[str], *, strip: bool) -> Path:
    """Copy every file of the installed ``slime`` namespace package (all its portions:
    slime-proto, slime-core, ..., caches left out) into ``dest/slime``; with ``strip`` the
    ``.py`` files go through :func:`strip_docstrings`. Returns ``dest/slime``.

    The copy is written into a temporary folder beside it and swapped in only when complete, so
    a failure leaves an earlier copy whole. An earlier copy is replaced only when this function
    wrote it (a ``.slime-package-sources`` file beside it says so).

    Raises:
        ConfigError: ``dest/slime`` exists and was not written here.
        PackageBuildError: two portions hold the same file, or a source cannot be stripped.
    """
    dest = Path(dest)
    _check_ours_sources(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target, aside = dest / "slime", None
    staging = Path(tempfile.mkdtemp(prefix=".slime.", suffix=".tmp", dir=dest))
    try:
        _copy_sources(staging, strip=strip)
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it 0700: an ordinary folder's mode
        if target.exists():
            aside = Path(tempfile.mkdtemp(prefix=".slime.old.", suffix=".tmp", dir=dest))
            os.replace(target, aside / "slime")
        os.replace(staging, target)
    except BaseException:
        if aside is not None and not target.exists():  # put the earlier copy back
            os.replace(aside / "slime", target)
        shutil.rmtree(staging, ignore_errors=True)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        raise
    (dest / SOURCES_MARKER).write_text(f"slime sources {WRITTEN_BY}\n", encoding="utf-8")
    if aside is not None:
        shutil.rmtree(aside)
    return target


def _copy_sources(target: Path, *, strip: bool) -> None:
    spec = importlib.util.find_spec("slime")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    origin: dict[Path, Path] = {}
    for root in map(Path, roots):
        for path in sorted(root.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
                continue
            relative = path.relative_to(root)
            if relative in origin:
                raise PackageBuildError(
                    f"slime/{relative.as_posix()} is in two places: {origin[relative]} and {path}"
                )
            origin[relative] = path
            out = target / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            if strip and path.suffix == ".py":
                text = strip_docstrings(path.read_text(encoding="utf-8"), str(path))
                out.write_text(text, encoding="utf-8")
            else:
                shutil.copy2(path, out)


def executable_path(out: str | os.PathLike[str], *, onefile: bool) -> Path:
    """Where the build in ``out`` puts the executable on this OS."""
    suffix = ".exe" if sys.platform == "win32" else ""
    dist = Path(out) / DIST_DIR
    return (
        dist / f"{EXECUTABLE}{suffix}" if onefile else dist / EXECUTABLE / f"{EXECUTABLE}{suffix}"
    )


def build_executable(
    out: str | os.PathLike[str], *, onefile: bool, strip_docstrings: bool = False
) -> Path:
    """Write the build files into ``out`` and run PyInstaller on them; returns the executable.

    Args:
        strip_docstrings: bundle the ``slime`` sources without docstrings (see
            :func:`write_build_files`).

    Raises:
        MissingExtraError: PyInstaller is not installed (extra ``package``).
        PackageBuildError: PyInstaller failed, or a source cannot be stripped.
        ConfigError: ``out`` holds a ``dist``, ``build`` or ``pyinstaller.log`` that no earlier
            `slime package` build made, or a build file it did not write (nothing is written).
    """
    require("PyInstaller", "package", "slime package")
    out = Path(out)
    _check_ours_build(out)  # before anything is written: PyInstaller replaces what it builds over
    files = write_build_files(out, onefile=onefile, strip_docstrings=strip_docstrings)
    _write_replacing(
        out / BUILD_MARKER, f"dist/, build/ and pyinstaller.log in this folder are {WRITTEN_BY}\n"
    )
    env = None
    if strip_docstrings:  # PyInstaller's hook subprocesses import slime too: the same tree first
        sources = str((out / SOURCES_DIR).resolve())
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([sources, *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
    log = out / BUILD_LOG
    command = [
        sys.executable, "-m", "PyInstaller", "--noconfirm",
        "--distpath", str(out / DIST_DIR), "--workpath", str(out / WORK_DIR),
        str(files.spec),
    ]  # fmt: skip
    with open(log, "w", encoding="utf-8") as handle:
        status = subprocess.run(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env
        ).returncode
    if status != 0:
        raise PackageBuildError(f"PyInstaller exited with status {status}; its log is {log}")
    return executable_path(out, onefile=onefile)
