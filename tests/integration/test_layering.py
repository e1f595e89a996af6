"""The import-linter contracts bite: a planted upward or sideways import fails lint-imports.

The source tree is copied to a temp dir and the violation planted there. lint-imports runs in an
interpreter started with -S, so the workspace's editable-install .pth files (which point at the real
tree) are not processed; only the copy and the venv's site-packages are importable.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _copy_tree(dest: pathlib.Path) -> list[pathlib.Path]:
    srcs = []
    for src in sorted((ROOT / "packages").glob("slime-*/src")):
        target = dest / src.parent.name / "src"
        shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        srcs.append(target)
    shutil.copy(ROOT / ".importlinter", dest / ".importlinter")
    return srcs


def _lint(dest: pathlib.Path, srcs: list[pathlib.Path]) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys;"
        f"sys.path[:0] = {[str(s) for s in srcs]!r};"
        f"sys.path.append({sysconfig.get_paths()['purelib']!r});"
        f"sys.path.append({sysconfig.get_paths()['platlib']!r});"
        "from importlinter.cli import lint_imports;"
        "sys.exit(lint_imports(config_filename='.importlinter', no_cache=True))"
    )
    return subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=dest, capture_output=True, text=True, timeout=300
    )


def _plant(srcs: list[pathlib.Path], package: str, line: str) -> None:
    src = next(s for s in srcs if s.parent.name == f"slime-{package}")
    init = src / "slime" / package / "__init__.py"
    init.write_text(init.read_text() + f"\n{line}\n")


def test_clean_copy_keeps_every_contract(tmp_path: pathlib.Path) -> None:
    srcs = _copy_tree(tmp_path)
    result = _lint(tmp_path, srcs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("package", "line", "importer", "imported"),
    [
        ("proto", "import slime.core  # planted", "slime.proto", "slime.core"),
        ("memory", "import slime.kernels  # planted", "slime.memory", "slime.kernels"),
        ("proto", "import torch  # planted", "slime.proto", "torch"),
    ],
)
def test_planted_violation_fails_lint_imports(
    tmp_path: pathlib.Path, package: str, line: str, importer: str, imported: str
) -> None:
    srcs = _copy_tree(tmp_path)
    _plant(srcs, package, line)
    result = _lint(tmp_path, srcs)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    assert f"{importer} -> {imported}" in result.stdout
