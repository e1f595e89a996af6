"""Edge inputs of the `slime` command (issue 14): each is one error line naming the value and the
option or key, exit status 2, no traceback and nothing written, or a behaviour said on stderr.

- `--cuda-graphs` (or `train.cuda_graphs`) on a device that is not CUDA;
- `slime sample --top-k` above the run's vocabulary, and other bad sampling values;
- warmups longer than the run (`train.warmup_iters`, `lifecycle.warmup_steps`);
- a run whose `best/` is missing, empty, incomplete or damaged: sample and eval say which file
  and which model they fall back to, or refuse naming every damaged file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from slime.train import cli


def _one_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"slime {command}: error: "), err
    return err


def _warnings(err: str, command: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith(f"slime {command}: warning: ")]


# -- --cuda-graphs off CUDA ---------------------------------------------------------------------

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is off CUDA")


@no_cuda
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (  # it compiled without graphs, silently (and warned about CUDA_HOME)
            ["--cuda-graphs"],
            "--cuda-graphs (train.cuda_graphs): CUDA graphs need a CUDA device, and this run's "
            "device is cpu (train.device 'cpu'): leave out --cuda-graphs",
        ),
        (
            ["--cuda-graphs", "--device", "auto"],
            "this run's device is cpu (train.device 'auto' found no CUDA device)",
        ),
        (
            ["train.compile=true", "train.cuda_graphs=true"],
            "train.cuda_graphs: CUDA graphs need a CUDA device, and this run's device is cpu "
            "(train.device 'cpu'): set train.cuda_graphs=false",
        ),
    ],
)
def test_cuda_graphs_off_cuda_are_one_error_naming_the_option_and_the_device(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled anyway"))
    out = tmp_path / "runs"
    argv = ["train", "--config", "tiny", "--steps", "3", "--quiet", "--out", str(out), *args]
    assert cli.main(argv) == 2
    assert message in _one_error(capsys, "train")
    assert not out.exists()


@no_cuda
def test_cuda_graphs_off_cuda_exit_2_from_the_console_script(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "slime.train", "train", "--config", "tiny", "--cuda-graphs"]
    done = subprocess.run(
        [*argv, "--quiet", "--out", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "slime train: error: --cuda-graphs (train.cuda_graphs): CUDA graphs need" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_an_unavailable_device_names_the_option_that_asked_for_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    device = "mps" if not torch.backends.mps.is_available() else "cuda:99"
    assert cli.main(["train", "--config", "tiny", "--device", device, "--quiet"]) == 2
    assert f"--device (train.device): expected an available device, got {device!r}" in (
        _one_error(capsys, "train")
    )
