"""step_bench runs end to end on the CPU, including the world-size-1 DDP rows (gloo)."""

from __future__ import annotations

import pytest
import torch.distributed as dist
from slime.train import step_bench


def _tiny_argv(tmp_path) -> list[str]:
    """step_bench's arguments for a one-layer model, one warm-up step and one timed step."""
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model: {n_layer: 1, n_embd: 32, n_pods: 2, pod_capacity: 2, block_size: 16,"
        " head_dim: 16}\ntrain: {batch_size: 2}\n"
    )
    return ["--config", str(config), "--device", "cpu", "--steps", "1", "--warmup", "1"]


def test_ddp_rows_time_the_wrapper_against_the_bare_model(tmp_path, capsys):
    argv = _tiny_argv(tmp_path)
    assert step_bench.main([*argv, "--modes", "eager", "--ddp"]) == 0
    out = capsys.readouterr().out
    assert "| eager | baseline DDP(1) |" in out
    assert "| eager | slime cap=2 DDP(1) |" in out
    overhead = [line for line in out.splitlines() if line.startswith("| eager | slime cap=2 |")]
    assert len(overhead) == 2  # the main table's row and the wrapper-overhead row
    assert overhead[1].endswith("% |")
    assert not dist.is_initialized()  # the group of one it joined is left again


def test_rows_are_timed_in_rounds_side_by_side(tmp_path, capsys):
    argv = _tiny_argv(tmp_path)
    assert step_bench.main([*argv, "--modes", "eager", "--rounds", "3"]) == 0
    captured = capsys.readouterr()
    rounds = [line for line in captured.err.splitlines() if " rounds " in line]
    assert len(rounds) == 4  # baseline, slime, slime without tubes, slime with two spare slots
    assert all(len(line.split(" rounds ")[1].split(" / ")) == 3 for line in rounds)
    baseline = next(line for line in captured.out.splitlines() if "| eager | baseline |" in line)
    assert "| 1.000-1.000x |" in baseline  # each round's ratio to the baseline's same round


def test_a_round_count_below_one_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        step_bench.main(["--device", "cpu", "--rounds", "0"])
    assert stop.value.code == 2
    assert "--rounds must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value"), [("--device", "gpu0"), ("--device", "cuda:99"), ("--config", "no-such")]
)
def test_a_device_or_config_that_is_not_there_is_one_error_naming_it(capsys, flag, value):
    with pytest.raises(SystemExit) as stop:
        step_bench.main([flag, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert value in err and "Traceback" not in err
