"""Edge inputs of the `slime` command (issue 14): each is one error line naming the value and the
option or key, exit status 2, no traceback and nothing written, or a behaviour said on stderr.

- `--cuda-graphs` (or `train.cuda_graphs`) on a device that is not CUDA;
- `slime sample --top-k` above the run's vocabulary, and other bad sampling values;
- warmups longer than the run (`train.warmup_iters`, `lifecycle.warmup_steps`);
- a run whose `best/` is missing, empty, incomplete or damaged: sample and eval say which file
  and which model they fall back to, or refuse naming every damaged file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from prose_text import prose
from slime.train import cli
from slime.train.config import RunConfig
from slime.train.loader import load_config


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


# -- warmups longer than the run ----------------------------------------------------------------


def test_a_learning_rate_warmup_longer_than_the_run_is_named() -> None:
    cfg = load_config("tiny")  # warmup_iters 2; lifecycle warmup 3, medium events every 3 steps
    assert cfg.replace(train={"steps": 3}).schedule_warnings() == []  # warms up, then decays
    short = cfg.replace(train={"steps": 2}, lifecycle={"enabled": False})
    assert short.schedule_warnings() == []  # equal: the last step ends the warmup
    (warning,) = cfg.replace(train={"steps": 12, "warmup_iters": 50}).schedule_warnings()
    assert warning.startswith(
        "train.warmup_iters (50) is above train.steps (12): the learning rate will still be "
        "warming up when the run ends"
    )


def test_a_lifecycle_that_could_never_change_the_pool_is_named() -> None:
    cfg = load_config("tiny")
    (warning,) = cfg.replace(lifecycle={"warmup_steps": 50, "gentle_steps": 60}).schedule_warnings(
        "--steps"
    )
    assert warning.startswith(
        "lifecycle.warmup_steps (50) is above train.steps (12, set by --steps): the pool will "
        "stay as it started"
    )
    # within the run, but the first medium event after the warmup is past its end
    late = cfg.replace(
        lifecycle={
            "warmup_steps": 10,
            "gentle_steps": 60,
            "medium_interval": 8,
            "slow_interval": 100,
        }
    )
    (warning,) = late.schedule_warnings()
    assert "lifecycle.warmup_steps (10) is step 16 (lifecycle.medium_interval 8)" in warning
    # the lifecycle off, or the baseline (no lifecycle), or a cull by a slow event in the run
    assert late.replace(lifecycle={"enabled": False}).schedule_warnings() == []
    assert late.replace(model={"kind": "baseline"}).schedule_warnings() == []
    slow = late.replace(lifecycle={"gentle_steps": 10, "slow_interval": 12})
    assert slow.schedule_warnings() == []
    assert RunConfig().replace(train={"steps": 1000}).schedule_warnings() == []
    # the defaults alone (an empty config file): 200 steps, a lifecycle warmup of 1000 steps
    (warning,) = RunConfig().schedule_warnings()
    assert warning.startswith("lifecycle.warmup_steps (1000) is above train.steps (200)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (  # one step trained with the learning rate a third of train.lr, silently
            ["--steps", "1"],
            "train.warmup_iters (2) is above train.steps (1, set by --steps)",
        ),
        (
            ["train.warmup_iters=50"],
            "train.warmup_iters (50) is above train.steps (12)",
        ),
        (  # a slime run whose pool stayed as it started, silently
            ["lifecycle.warmup_steps=40", "lifecycle.gentle_steps=40"],
            "lifecycle.warmup_steps (40) is above train.steps (12)",
        ),
    ],
)
def test_schedules_longer_than_the_run_train_as_configured_and_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "runs"
    assert cli.main(["train", "--config", "tiny", "--quiet", "--out", str(out), *args]) == 0
    warnings = _warnings(capsys.readouterr().err, "train")
    assert [w for w in warnings if message in w], warnings  # --steps 1 also names the lifecycle
    assert out.exists()


# -- sample and eval on a text run --------------------------------------------------------------


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("edges")
    (root / "data.txt").write_text(prose(40_000), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLIME_CACHE_DIR", str(root / "cache"))
        yield root


def _train(space: Path, name: str, *args: str) -> Path:
    argv = ["train", "--config", "tiny", "--steps", "6", "--quiet", "--out", str(space / name)]
    assert cli.main([*argv, "--data", str(space / "data.txt"), *args]) == 0
    (run,) = (space / name).iterdir()
    return run


@pytest.fixture(scope="module")
def slime_run(space: Path) -> Path:
    """best/ (the evaluation at step 6), model/ and checkpoints/step_00000006."""
    return _train(space, "slime")


@pytest.fixture(scope="module")
def baseline_run(space: Path) -> Path:
    """best/ as a checkpoint folder, no model/, checkpoints/step_00000006."""
    return _train(space, "baseline", "--model", "baseline")


def test_sample_top_k_above_the_vocabulary_names_both_numbers(
    slime_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from slime.train.tokenizer import load_tokenizer

    vocab = load_tokenizer(slime_run / "tokenizer.json").vocab_size
    argv = ["sample", str(slime_run), "--tokens", "4", "--prompt", "The "]
    assert cli.main([*argv, "--top-k", str(vocab + 1)]) == 2  # it sampled among all, silently
    assert (
        f"--top-k: expected at most {vocab}, the size of the run's vocabulary (tokenizer.json), "
        f"got {vocab + 1}"
    ) in _one_error(capsys, "sample")
    assert cli.main([*argv, "--top-k", str(vocab)]) == 0
    assert capsys.readouterr().out.startswith("The ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--temperature", "nan"], "--temperature: expected a finite value > 0, got nan"),
        (["--temperature=-inf"], "--temperature: expected a finite value > 0, got -inf"),
        (["--top-k", "-3"], "--top-k: expected at least 1, got -3"),
        (
            ["--prompt", "Zebra"],
            "--prompt: 'Zebra' does not encode: character 'Z' is not in the run's character "
            "vocabulary",
        ),
        (["--prompt", ""], "--prompt: '' encodes to no tokens"),
        (["--tokens", "0"], "--tokens: expected at least 1 token, got 0"),
    ],
)
def test_bad_sampling_values_are_one_error_naming_the_option(
    slime_run: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert cli.main(["sample", str(slime_run), *args]) == 2
    assert message in _one_error(capsys, "sample")


def _copy(run: Path, space: Path, name: str) -> Path:
    copy = space / "copies" / name
    shutil.copytree(run, copy)
    return copy


def _sample(run: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(["sample", str(run), "--tokens", "3", "--prompt", "The "])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("damage", ["missing", "empty", "incomplete", "not-a-folder"])
def test_sample_says_which_best_file_is_missing_and_falls_back_to_the_final_model(
    slime_run: Path, space: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    # Each fell back to model/ without a word.
    run = _copy(slime_run, space, f"best-{damage}")
    best = run / "best"
    if damage == "incomplete":
        (best / "config.json").unlink()
    else:
        shutil.rmtree(best)
        if damage == "empty":
            best.mkdir()
        elif damage == "not-a-folder":
            best.write_text("")
    what = {
        "missing": f"{str(best)!r} is missing (no evaluation of the run kept a best model)",
        "empty": f"{str(best / 'config.json')!r} is missing (best/ is empty)",
        "incomplete": f"{str(best / 'config.json')!r} is missing (best/ is incomplete)",
        "not-a-folder": f"{str(best)!r} is not a folder",
    }[damage]
    status, out, err = _sample(run, capsys)
    assert status == 0 and out.startswith("The ")
    assert _warnings(err, "sample") == [
        f"slime sample: warning: {what}; falling back to the final model, {run / 'model'}, step 6"
    ]
    assert f"sampled from {run / 'model'} (step 6)" in err


def test_eval_says_the_best_model_is_damaged_and_which_model_it_scores(
    slime_run: Path, space: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A damaged best/ was an error even though model/ was whole.
    run = _copy(slime_run, space, "best-damaged")
    weights = run / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert cli.main(["eval", str(run), "--quiet"]) == 0
    captured = capsys.readouterr()
    (line,) = _warnings(captured.err, "eval")
    assert line.startswith(
        f"slime eval: warning: the best model in {str(run / 'best')!r} is damaged"
    )
    assert f"{weights} does not match the sha256 in config.json" in line
    assert line.endswith(f"; falling back to the final model, {run / 'model'}, step 6")
    assert f"model: {run / 'model'} (step 6)" in captured.out


def test_a_best_model_without_its_step_is_used_and_said(
    slime_run: Path, space: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(slime_run, space, "best-no-step")
    (run / "best" / "run.json").unlink()
    status, _, err = _sample(run, capsys)
    assert status == 0
    assert _warnings(err, "sample") == [
        f"slime sample: warning: {str(run / 'best' / 'run.json')!r} is missing or damaged: the "
        "step of the best model is unknown"
    ]
    assert f"sampled from {run / 'best'}\n" in err


def test_a_baseline_run_falls_back_to_its_latest_checkpoint_and_says_so(
    baseline_run: Path, space: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(baseline_run, space, "baseline-best-damaged")
    blob = run / "best" / "tensors.safetensors"
    blob.write_bytes(blob.read_bytes() + b"x")
    status, out, err = _sample(run, capsys)
    assert status == 0 and out.startswith("The ")
    (line,) = _warnings(err, "sample")
    assert line.startswith(f"slime sample: warning: the best model in {str(run / 'best')!r} is ")
    assert f"{str(blob)!r} has sha256" in line
    latest = run / "checkpoints" / "step_00000006"
    assert line.endswith(f"; falling back to the latest checkpoint, {latest}, step 6")


def test_no_model_that_loads_is_one_error_naming_each_damaged_file(
    slime_run: Path, space: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(slime_run, space, "all-damaged")
    shutil.rmtree(run / "best")
    (run / "best").mkdir()
    (run / "model" / "model.safetensors").write_bytes(b"")
    blob = run / "checkpoints" / "step_00000006" / "tensors.safetensors"
    blob.write_bytes(blob.read_bytes()[:-1])
    for command in ("sample", "eval"):
        assert cli.main([command, str(run), *(["--quiet"] if command == "eval" else [])]) == 2
        err = _one_error(capsys, command)
        assert f"{str(run)!r} holds no model that loads: " in err
        assert f"{str(run / 'best' / 'config.json')!r} is missing (best/ is empty)" in err
        assert f"the final model in {str(run / 'model')!r} is damaged" in err
        assert f"{str(blob)!r} has sha256" in err


# -- your own text at its edges -----------------------------------------------------------------


def test_text_of_one_repeated_character_trains_samples_and_bounds_top_k(
    space: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (space / "one.txt").write_text("a" * 4000, encoding="utf-8")
    argv = [
        "train",
        "--config",
        "tiny",
        "--steps",
        "3",
        "--quiet",
        "--data",
        str(space / "one.txt"),
    ]
    assert cli.main([*argv, "--out", str(space / "one")]) == 0
    (run,) = (space / "one").iterdir()
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--prompt", "a", "--tokens", "4"]) == 0
    assert capsys.readouterr().out == "aaaaa\n"
    assert cli.main(["sample", str(run), "--prompt", "a", "--top-k", "2"]) == 2
    assert "--top-k: expected at most 1, the size of the run's vocabulary" in _one_error(
        capsys, "sample"
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text(""), "is empty; expected some text"),
        (lambda p: p.write_text("ab\n"), "has 2 tokens; expected more than block_size 16"),
        (lambda p: p.mkdir(), "holds no .txt files"),
    ],
    ids=["empty-file", "too-short", "empty-folder"],
)
def test_unusable_text_is_one_error_and_writes_no_run(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    make,
    message: str,
) -> None:
    monkeypatch.setenv("SLIME_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data.txt"
    make(data)
    out = tmp_path / "runs"
    argv = ["train", "--config", "tiny", "--quiet", "--data", str(data), "--out", str(out)]
    assert cli.main(argv) == 2
    assert message in _one_error(capsys, "train")
    assert not out.exists()
