"""`slime package --strip-docstrings`: the ast-based stripping, the bundled source tree, and the
stripped tree run as the executable's launcher runs it, compared with the installed sources."""

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from slime.tools import cli
from slime.tools.package import (
    PackageBuildError,
    strip_docstrings,
    write_build_files,
    write_sources,
)


def _installed(dist):
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


SOURCE = textwrap.dedent(
    '''\
    """Module docstring,
    on two lines."""

    # a comment that stays
    import math  # so does this one

    X = "not a docstring: an assignment"


    class Plain:
        """Class docstring."""

        scale = 2  # kept

        def method(self, x):
            """Method docstring."""
            return x * self.scale


    class OnlyDoc:
        """Nothing but a docstring."""


    def one_liner(): "doc on the def line"


    def shared(): "doc"; return 7


    def spaced():
        """Own line, then code after a semicolon.""";  x = 5
        return x


    async def coroutine():
        """Async docstring."""
        return "done"


    def outer(y):
        r"""Raw docstring with a \\n in it."""

        def inner():
            """Inner docstring."""
            return y + 1

        "a later string expression is not a docstring"
        return inner()


    def formatted():
        f"""an f-string is not a docstring"""
        return math.pi
    '''
)


def docstrings(source: str) -> int:
    owners = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return sum(
        ast.get_docstring(node, clean=False) is not None
        for node in ast.walk(ast.parse(source))
        if isinstance(node, owners)
    )


def run(source: str) -> dict:
    module = types.ModuleType("stripped")
    exec(compile(source, "stripped.py", "exec"), module.__dict__)
    return module.__dict__


def test_strip_removes_every_docstring_and_keeps_comments_and_code():
    stripped = strip_docstrings(SOURCE, "sample.py")
    assert docstrings(SOURCE) == 10 and docstrings(stripped) == 0
    for kept in (
        "# a comment that stays",
        "import math  # so does this one",
        'X = "not a docstring: an assignment"',
        "scale = 2  # kept",
        '"a later string expression is not a docstring"',
        'f"""an f-string is not a docstring"""',
        "def one_liner(): pass",
        "def shared(): return 7",
    ):
        assert kept in stripped
    assert "class OnlyDoc:\n    pass\n" in stripped
    assert "docstring." not in stripped.replace("not a docstring", "")
    before, after = run(SOURCE), run(stripped)
    assert after["Plain"]().method(3) == before["Plain"]().method(3) == 6
    assert after["shared"]() == 7 and after["one_liner"]() is None and after["spaced"]() == 5
    assert "    x = 5\n" in stripped
    assert after["outer"](1) == before["outer"](1) == 2
    assert after["formatted"]() == before["formatted"]()
    assert after["__doc__"] is None and after["Plain"].__doc__ is None
    assert after["Plain"].method.__doc__ is None and after["outer"].__doc__ is None


def test_strip_keeps_a_module_that_reads_docstrings_as_it_is():
    for source in (
        '"""Usage: tool."""\nimport argparse\nparser = argparse.ArgumentParser(description=__doc__)\n',
        '"""Doc."""\ndef f():\n    """F."""\n    return f.__doc__\n',
        '"""Doc."""\nimport inspect\ndef f():\n    """F."""\n    return inspect.getdoc(f)\n',
    ):
        assert strip_docstrings(source) == source


def test_strip_of_a_docstring_only_module_leaves_an_empty_module():
    assert strip_docstrings('"""Only this."""\n') == ""


def test_strip_names_a_file_that_does_not_parse():
    with pytest.raises(PackageBuildError, match=r"broken\.py does not parse"):
        strip_docstrings("def f(:\n", "broken.py")


def test_bundled_tree_holds_every_slime_file_and_compiles(tmp_path):
    root = write_sources(tmp_path / "src", strip=True)
    names = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert {"tools/package.py", "memory/archive.py", "proto/__init__.py"} <= names
    if _installed("slime-train"):  # the tools-only test venv has no slime-train to bundle
        assert "train/configs/default.yaml" in names  # data files travel too
    assert not any("__pycache__" in n for n in names)
    left = []
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        compile(text, str(path), "exec")
        if docstrings(text):
            left.append(path.relative_to(root).as_posix())
            assert "__doc__" in text  # only modules that read their docstrings keep them
    assert "memory/bench.py" in left and "tools/cli.py" not in left
    plain = write_sources(tmp_path / "plain", strip=False)
    assert (plain / "tools/cli.py").read_bytes() == Path(cli.__file__).read_bytes()
    assert (root / "tools/cli.py").read_text() == strip_docstrings(Path(cli.__file__).read_text())


def analysed_path(spec, monkeypatch):
    """Run ``spec`` as PyInstaller would (stand-ins record Analysis); returns (its pathex,
    sys.path afterwards)."""
    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_submodules = lambda package: [f"{package}.tools.cli"]
    hooks.collect_data_files = lambda package: []
    hooks.copy_metadata = lambda dist: []
    for name in ("PyInstaller", "PyInstaller.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "PyInstaller.utils.hooks", hooks)
    monkeypatch.setattr(sys, "path", list(sys.path))
    seen = {}

    def analysis(*args, **kwargs):
        seen.update(kwargs)
        return types.SimpleNamespace(pure=[], scripts=[], binaries=[], datas=[])

    names = {"Analysis": analysis, "PYZ": lambda *a, **k: None}
    names.update(EXE=lambda *a, **k: None, COLLECT=lambda *a, **k: None)
    exec(compile(spec.read_text(), str(spec), "exec"), {"SPECPATH": str(spec.parent), **names})
    return seen["pathex"], list(sys.path)


@pytest.mark.skipif(
    not _installed("slime-train"), reason="needs the installed `slime` console script"
)
def test_package_cli_writes_the_stripped_tree_and_points_the_spec_at_it(
    tmp_path, capsys, monkeypatch
):
    out = tmp_path / "pkg"
    assert cli.package_command(["--out", str(out), "--spec-only", "--strip-docstrings"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "slime.spec")
    assert (out / "src/slime/tools/cli.py").is_file()
    pathex, path = analysed_path(out / "slime.spec", monkeypatch)
    assert pathex == [str(out / "src")] and path[0] == str(out / "src")
    plain = write_build_files(tmp_path / "plain", onefile=False, entry_point="a.b:c")
    assert not (tmp_path / "plain/src").exists()
    pathex, path = analysed_path(plain.spec, monkeypatch)
    assert pathex == [] and str(tmp_path / "plain/src") not in path


_DRIVER = """
import contextlib, io, json, runpy, sys
import slime.memory.archive, slime.tools.cli
docs = [slime.tools.cli.__doc__, slime.memory.archive.Archive.add.__doc__]
print(json.dumps({"cli": slime.tools.cli.__file__, "docs": docs}))
launcher, runs = sys.argv[1], json.loads(sys.argv[2])
for argv in runs:  # the launcher as the executable runs it, once per argv
    sys.argv = [launcher, *argv]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(launcher, run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code
    print(json.dumps({"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue()}))
"""


def _launch(launcher, runs, first_on_path=None):
    """Run ``launcher`` once per argv of ``runs`` in one process, ``first_on_path`` ahead of
    everything on the path; returns (what was imported, [(status, stdout, stderr)])."""
    env = dict(os.environ)
    if first_on_path is not None:
        rest = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
        env["PYTHONPATH"] = os.pathsep.join([str(first_on_path), *rest])
    command = [sys.executable, "-c", _DRIVER, str(launcher), json.dumps(runs)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    first, *rest = [json.loads(line) for line in done.stdout.splitlines()]
    return first, [(r["code"], r["out"], r["err"]) for r in rest]


@pytest.mark.skipif(
    not _installed("slime-train"), reason="needs the installed `slime` console script"
)
def test_stripped_bundle_prints_the_same_help_and_exports_the_same_model(tmp_path, slime_run):
    files = write_build_files(tmp_path / "pkg", onefile=False, strip_docstrings=True)
    sources = tmp_path / "pkg" / "src"
    results = {}
    for name, path in (("stripped", sources), ("installed", None)):
        target = tmp_path / name / "model.pt2"
        export = ["export", str(slime_run[0]), "--format", "torch-export", "--out", str(target)]
        runs = [["--help"], ["export", "--help"], ["inspect", "--help"], export]
        imported, outcomes = _launch(files.launcher, runs, path)
        outcomes = [(c, o.replace(str(target), "OUT"), e) for c, o, e in outcomes]
        results[name] = imported, outcomes
        assert target.is_file()
    (stripped, ours), (installed, theirs) = results["stripped"], results["installed"]
    assert stripped == {"cli": str(sources / "slime/tools/cli.py"), "docs": [None, None]}
    assert installed["cli"] != stripped["cli"] and None not in installed["docs"]
    assert ours == theirs
    assert all(code == 0 for code, _, _ in ours) and "usage" in ours[0][1]
    assert ours[3][1] == "OUT\n" and "max |logit difference| 0 (exact)" in ours[3][2]
