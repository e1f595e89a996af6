"""The ``slime`` console script: Ctrl-C at any moment, the imports included, is exit 130 and a line.

The interrupt is a real SIGINT sent to a real process while it imports torch (seconds): the test
waits until the process has mapped torch's shared libraries (``/proc/PID/maps``), so the signal
lands inside the imports however loaded the machine is, not before Python starts or after: as torch
loads its first library, or once its C extension is in and it imports its Python modules (where
torch runs Python code from C++).
"""

from __future__ import annotations

import importlib
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import slime.train
from slime.train import console

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _script_target() -> tuple[str, str]:
    """The ``module:function`` of the ``slime`` console script, as the package declares it."""
    target = tomllib.loads(PYPROJECT.read_text("utf-8"))["project"]["scripts"]["slime"]
    module, _, function = target.partition(":")
    return module, function


def _console_script() -> list[str]:
    """What the installed ``slime`` script runs (pip's and uv's launchers are these lines)."""
    module, function = _script_target()
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    return [sys.executable, "-c", code]


# When to interrupt: the library that must be mapped, then how long to wait (seconds).
MOMENTS = {
    "torch's first library": ("libtorch", 0.0),  # libtorch_global_deps, its first dlopen
    "torch's modules": ("libtorch_python", 0.3),  # its C extension is in; seconds of imports left
}


def _mapped(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _interrupt_while_importing(
    argv: list[str], cwd: Path, moment: str = "torch's first library"
) -> subprocess.CompletedProcess[str]:
    """Start ``argv``, send SIGINT at ``moment`` of its torch import, and wait for it to end."""
    library, after = MOMENTS[moment]
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not _mapped(proc.pid, library):
            assert proc.poll() is None, f"it ended before loading {library}: {proc.communicate()}"
            assert time.monotonic() < deadline, f"{library} was never loaded"
            time.sleep(0.002)
        time.sleep(after)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_the_console_script_is_the_light_entry_point() -> None:
    assert _script_target() == ("slime.train.console", "main")


def test_importing_the_entry_point_imports_no_torch() -> None:
    # Its imports are the whole window in which a Ctrl-C is answered by Python's default handler.
    code = "import sys, slime.train.console; print(sorted(m for m in sys.modules if 'torch' in m))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(sys.platform != "linux", reason="finds the moment through /proc/PID/maps")
@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize(
    "how",
    ["console script", "python -m slime.train", "python -m slime.train.cli"],
)
def test_ctrl_c_while_importing_is_exit_130_and_one_line(
    tmp_path: Path, how: str, moment: str
) -> None:
    # It printed a KeyboardInterrupt traceback from whichever import it cut, or ended in
    # std::terminate (exit -6, "terminate called after throwing ... KeyboardInterrupt") when the
    # interrupt reached Python code torch runs from C++ while it loads.
    launcher = {
        "console script": _console_script(),
        "python -m slime.train": [sys.executable, "-m", "slime.train"],
        "python -m slime.train.cli": [sys.executable, "-m", "slime.train.cli"],
    }[how]
    argv = [*launcher, "train", "--config", "tiny", "--steps", "100000", "--out", "runs"]
    result = _interrupt_while_importing([*argv, "--quiet"], tmp_path, moment)
    assert "Traceback" not in result.stderr and "terminate" not in result.stderr
    assert result.returncode == console.INTERRUPTED, result.stderr
    # Inside the imports (the usual case) or, on a machine that loads torch's last modules faster
    # than it delivers the signal, in the command: one line either way.
    assert result.stderr.startswith("slime train: interrupted"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""


@pytest.mark.skipif(sys.platform != "linux", reason="finds the moment through /proc/PID/maps")
def test_ctrl_c_while_importing_without_a_command_names_slime(tmp_path: Path) -> None:
    result = _interrupt_while_importing([*_console_script(), "--help"], tmp_path)
    assert result.returncode == console.INTERRUPTED, result.stderr
    assert result.stderr == "slime: interrupted\n"
    assert result.stdout == ""  # --help never got to print


def test_a_keyboard_interrupt_outside_any_command_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Loading a plugin command (slime-tools: torch, matplotlib) happens before cli.main's own
    # handler; the entry point answers an interrupt there.
    from slime.train import cli

    def loading(*args: object, **kwargs: object) -> list[object]:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "entry_points", loading)
    assert console.main(["visualize", "run"]) == console.INTERRUPTED
    assert capsys.readouterr().err == "slime visualize: interrupted\n"


def test_the_entry_point_runs_the_command_and_leaves_sigint_as_it_was(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = signal.getsignal(signal.SIGINT)
    assert console.main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before


def test_the_package_loads_each_public_name_on_first_use() -> None:
    for name in slime.train.__all__:
        module = importlib.import_module(slime.train._WHERE[name])
        assert getattr(slime.train, name) is getattr(module, name)
        assert name in dir(slime.train)
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        slime.train.Nothing  # noqa: B018
