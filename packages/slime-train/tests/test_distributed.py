"""The data-parallel pieces that need no second process: seeds, batch checks, the launcher's
variables and the sharded checkpoint format (written here by one process).

Runs of several processes are tested in tests/distributed (the ``distributed`` nox session)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from slime.proto import CheckpointError, ConfigError
from slime.train import RunDir, Trainer, build_dataset, load_checkpoint, load_config
from slime.train.checkpoint import save_sharded_checkpoint
from slime.train.cli import main
from slime.train.distributed import Distributed, data_seed, resumed_data_seed


def _cfg(**train):
    return load_config("tiny").replace(train={"steps": 12, "checkpoint_interval": 6, **train})


def test_rank_zero_keeps_the_one_process_data_stream() -> None:
    assert data_seed(1337, 0) == 1338  # as Trainer always seeded it
    seeds = {data_seed(1337, r) for r in range(64)} | {
        resumed_data_seed(1337, 1, s) for s in (0, 6)
    }
    assert len(seeds) == 66
    assert all(0 <= s < 2**64 for s in seeds)
    assert data_seed(2**63 - 1, 5) < 2**64  # the largest train.seed still seeds a generator


def test_global_batch_must_split_evenly_over_the_ranks() -> None:
    cfg = _cfg(batch_size=7)
    dataset = build_dataset(cfg.data, cfg.model.block_size)
    with pytest.raises(ConfigError, match="multiple of the 2 processes.*got 7") as info:
        Trainer(cfg, dataset, distributed=Distributed(rank=0, world_size=2))
    assert info.value.path == "train.batch_size"


def test_cli_refuses_an_uneven_batch_before_joining(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["train", "--config", "tiny", "--out", str(tmp_path), "train.batch_size=7"])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.batch_size" in err and "got 7" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing created


def test_cli_names_a_malformed_world_size(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    assert main(["train", "--config", "tiny", "--out", str(tmp_path)]) == 2
    assert "WORLD_SIZE: expected a positive whole number, got 'two'" in capsys.readouterr().err


def test_one_process_is_not_distributed() -> None:
    ctx = Distributed.current()
    assert (ctx.rank, ctx.world_size, ctx.active, ctx.is_main) == (0, 1, False, True)
    loss = torch.tensor(2.5)
    assert ctx.average(loss) is loss and ctx.any(True, torch.device("cpu"))
    assert ctx.broadcast_object("x") == "x" and ctx.rank_batch(7) == 7


def _as_sharded(run: Path, to: Path, step: int) -> None:
    """Rewrite ``run``'s one-process checkpoint of ``step`` as a sharded one in ``to``."""
    shutil.copytree(run, to)
    folder = to / "checkpoints" / f"step_{step:08d}"
    state = load_checkpoint(folder)
    shutil.rmtree(folder)
    archives = {
        name: (lambda dst, src=run / "checkpoints" / folder.name / name: shutil.copytree(src, dst))
        for name in ("archive_0",)
    }
    for key in ("step", "folder"):
        state.pop(key)
    save_sharded_checkpoint(to, step, state, per_rank=("rng", "data_rng"), writers=archives)


def test_sharded_checkpoint_resumes_exactly_in_one_process(tmp_path) -> None:
    """Every part of the trainer's state survives the sharded format: resuming from it replays the
    uninterrupted run exactly."""
    torch.set_num_threads(1)
    cfg = _cfg()
    dataset = build_dataset(cfg.data, cfg.model.block_size)
    whole = Trainer(cfg, dataset, run_dir=RunDir(tmp_path / "whole"))
    whole.fit()
    half = Trainer(cfg, dataset, run_dir=RunDir(tmp_path / "half"))
    half.fit(steps=6)
    _as_sharded(tmp_path / "half", tmp_path / "sharded", 6)
    manifest = json.loads((tmp_path / "sharded/checkpoints/step_00000006/state.json").read_text())
    assert manifest["format"] == "slime-checkpoint-dcp/1" and manifest["world_size"] == 1
    resumed = Trainer.resume(RunDir(tmp_path / "sharded"), dataset, cfg)
    assert resumed.step == 6
    resumed.fit()
    for name, value in whole.model.state_dict().items():  # bit for bit (NaN: no tube entry)
        torch.testing.assert_close(
            resumed.model.state_dict()[name], value, rtol=0, atol=0, equal_nan=True, msg=name
        )
    assert resumed.tokens_seen == whole.tokens_seen
    assert resumed.lifecycle.births == whole.lifecycle.births


def test_sharded_checkpoint_detects_damage(tmp_path) -> None:
    state = {"model": {"w": torch.arange(6.0)}, "rng": {"x": torch.ones(2)}, "n": 3}
    folder = save_sharded_checkpoint(tmp_path, 2, state, per_rank=("rng",))
    loaded = load_checkpoint(tmp_path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["n"] == 3
    assert torch.equal(loaded["rng"]["x"], torch.ones(2)) and loaded["world_size"] == 1
    (shard,) = (folder / "dcp").glob("*.distcp")
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or was modified"):
        load_checkpoint(folder)
    shard.unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        load_checkpoint(folder)
