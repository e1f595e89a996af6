"""step_bench runs end to end on the CPU, including the world-size-1 DDP rows (gloo)."""

from __future__ import annotations

import torch.distributed as dist
from slime.train import step_bench


def test_ddp_rows_time_the_wrapper_against_the_bare_model(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model: {n_layer: 1, n_embd: 32, n_pods: 2, pod_capacity: 2, block_size: 16,"
        " head_dim: 16}\ntrain: {batch_size: 2}\n"
    )
    argv = ["--config", str(config), "--device", "cpu", "--steps", "1", "--warmup", "1"]
    assert step_bench.main([*argv, "--modes", "eager", "--ddp"]) == 0
    out = capsys.readouterr().out
    assert "| eager | baseline DDP(1) |" in out
    assert "| eager | slime cap=2 DDP(1) |" in out
    overhead = [line for line in out.splitlines() if line.startswith("| eager | slime cap=2 |")]
    assert len(overhead) == 2  # the main table's row and the wrapper-overhead row
    assert overhead[1].endswith("% |")
    assert not dist.is_initialized()  # the group of one it joined is left again
