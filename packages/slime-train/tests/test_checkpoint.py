"""Checkpoints round-trip exactly, commit atomically and refuse truncated or tampered files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from slime.proto import CheckpointError
from slime.proto.testing import payloads_equal
from slime.train.checkpoint import (
    capture_rng,
    checkpoint_steps,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)


def _state() -> dict:
    w = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    return {
        "model": {"wte.weight": w, "lm_head.weight": w, "half": w.bfloat16()},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "groups": [{"lr": 0.1}]},
        "pool": {"layer0": (0, 2, 5)},
        "note": None,
        "flag": True,
    }


def test_state_round_trips_exactly(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 7, _state())
    loaded = load_checkpoint(tmp_path)
    assert loaded.pop("step") == 7
    assert loaded.pop("folder").name == "step_00000007"
    assert payloads_equal(loaded, _state())
    assert isinstance(loaded["pool"]["layer0"], tuple)
    assert list(loaded["optimizer"]["state"]) == [0]


def test_optimizer_state_loads_into_a_fresh_optimizer(tmp_path: Path) -> None:
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    save_checkpoint(tmp_path, 1, {"optimizer": opt.state_dict()})
    q = torch.nn.Parameter(p.detach().clone())
    fresh = torch.optim.AdamW([q], lr=0.5)
    fresh.load_state_dict(load_checkpoint(tmp_path)["optimizer"])
    assert fresh.param_groups[0]["lr"] == 0.1
    assert torch.equal(fresh.state[q]["exp_avg"], opt.state[p]["exp_avg"])


def test_latest_is_the_highest_committed_step(tmp_path: Path) -> None:
    for step in (5, 20, 10):
        save_checkpoint(tmp_path, step, {"x": torch.tensor(step)}, keep=10)
    assert checkpoint_steps(tmp_path) == [5, 10, 20]
    assert latest_checkpoint(tmp_path).name == "step_00000020"


def test_only_the_newest_checkpoints_are_kept(tmp_path: Path) -> None:
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, {"x": torch.tensor(step)}, keep=2)
    assert checkpoint_steps(tmp_path) == [4, 5]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_00000004",
        "step_00000005",
    ]


def test_a_half_written_checkpoint_is_not_a_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"x": torch.tensor(1)})
    # A crash while step 2 was being written leaves only its temporary folder:
    partial = tmp_path / "checkpoints" / ".step_00000002.tmp"
    partial.mkdir()
    (partial / "tensors.safetensors").write_bytes(b"partial")
    assert load_checkpoint(tmp_path)["step"] == 1
    save_checkpoint(tmp_path, 2, {"x": torch.tensor(2)})  # the debris does not block a retry
    assert load_checkpoint(tmp_path)["step"] == 2


def test_rewriting_a_step_replaces_it(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 3, {"x": torch.tensor(1)})
    save_checkpoint(tmp_path, 3, {"x": torch.tensor(2)})
    assert int(load_checkpoint(tmp_path)["x"]) == 2
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000003"]


def test_writers_fill_subfolders_that_load_returns(tmp_path: Path) -> None:
    def write(folder: Path) -> None:
        folder.mkdir()
        (folder / "data.txt").write_text("archive")

    save_checkpoint(tmp_path, 1, {}, writers={"archive_0": write})
    folder = load_checkpoint(tmp_path)["folder"]
    assert (folder / "archive_0" / "data.txt").read_text() == "archive"


def test_missing_writer_folder_raises(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 1, {}, writers={"archive_0": lambda f: f.mkdir()})
    (path / "archive_0").rmdir()
    with pytest.raises(CheckpointError, match="archive_0"):
        load_checkpoint(path)


def test_truncated_tensor_file_raises(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, _state())
    blob = tmp_path / "checkpoints" / "step_00000001" / "tensors.safetensors"
    blob.write_bytes(blob.read_bytes()[:-9])
    with pytest.raises(CheckpointError, match="truncated or was modified"):
        load_checkpoint(tmp_path)


def test_flipped_byte_in_tensor_file_raises(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, _state())
    blob = tmp_path / "checkpoints" / "step_00000001" / "tensors.safetensors"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path)


def test_truncated_json_raises(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 1, _state()) / "state.json"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path.parent)


def test_edited_json_state_raises(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 1, _state())
    manifest = json.loads((path / "state.json").read_text())
    manifest["state"]["__dict__"][3][1] = "edited"
    (path / "state.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


@pytest.mark.parametrize("step", ["x", None, 3.5, True, -1, 8])
def test_a_step_in_state_json_that_is_not_the_folders_raises(tmp_path: Path, step) -> None:
    # Neither checksum covers "step": an edited one came back as is, and resuming compared it
    # with the metrics' steps (TypeError traceback) or went on from a step that never was.
    folder = save_checkpoint(tmp_path, 7, _state())
    manifest = json.loads((folder / "state.json").read_text())
    manifest["step"] = step
    (folder / "state.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"records step .*expected 7 \(the folder's\)"):
        load_checkpoint(tmp_path)


def test_missing_tensor_file_raises(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 1, _state())
    (path / "tensors.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)


def test_empty_run_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)


def test_unsupported_objects_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"'state\.model' is a Linear"):
        save_checkpoint(tmp_path, 1, {"model": torch.nn.Linear(2, 2)})


def test_restored_rng_replays_every_generator(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"rng": capture_rng()})
    first = (torch.rand(3), random.random(), np.random.rand(2))
    restore_rng(load_checkpoint(tmp_path)["rng"])
    again = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(first[0], again[0])
    assert first[1] == again[1]
    assert np.array_equal(first[2], again[2])


@pytest.mark.parametrize("staged", [None, ".best.tmp", "best.partial"])
def test_a_swap_of_best_cut_between_its_renames_is_finished(tmp_path: Path, staged) -> None:
    """Retire best/ -> .best.old, then rename the new folder in: a crash between the two leaves
    no best/. remove_debris puts the complete new folder in place (else the retired one)."""
    from slime.train.checkpoint import remove_debris

    retired = tmp_path / ".best.old"
    retired.mkdir()
    (retired / "state.json").write_text("old")
    if staged is not None:
        (tmp_path / staged).mkdir()
        (tmp_path / staged / "state.json").write_text("new")
    removed = remove_debris(tmp_path)
    expected = "old" if staged is None else "new"
    assert (tmp_path / "best" / "state.json").read_text() == expected
    assert not retired.exists() and removed == ([] if staged is None else [retired])


def test_a_retired_copy_beside_a_committed_best_is_removed(tmp_path: Path) -> None:
    from slime.train.checkpoint import remove_debris

    for name, text in (("best", "new"), (".best.old", "old")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(text)
    assert remove_debris(tmp_path) == [tmp_path / ".best.old"]
    assert (tmp_path / "best" / "config.json").read_text() == "new"
