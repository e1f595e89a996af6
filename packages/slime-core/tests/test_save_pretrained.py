"""save_pretrained never loses a model: a failed or interrupted save leaves the previous one."""

from __future__ import annotations

import errno
import os

import pytest
import torch
from slime.core import SlimeConfig, SlimeModel
from slime.core.api import native
from slime.memory import GridArchive
from slime.proto import CheckpointError

V, T = 13, 8


def make(seed: int) -> SlimeModel:
    cfg = SlimeConfig(vocab_size=V, block_size=T, n_layer=2, n_embd=16, n_pods=2, pod_capacity=3)
    return SlimeModel(cfg, generator=torch.Generator().manual_seed(seed))


def logits(model: SlimeModel) -> torch.Tensor:
    idx = torch.arange(2 * T).remainder(V).view(2, T)
    return model(idx)[0]


def test_a_save_that_fails_midway_leaves_the_previous_model_and_other_files(tmp_path, monkeypatch):
    target = tmp_path / "model"
    old = make(0)
    old.save_pretrained(target)
    (target / "tokenizer.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    calls = []

    def full_disk(self, path):  # the second layer's archive hits a full disk
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, path)

    real = GridArchive.save
    monkeypatch.setattr(GridArchive, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left"):
        make(1).save_pretrained(target)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["config.json", "model.safetensors", "archive_0", "archive_1", "tokenizer.json"]
    )
    assert torch.equal(logits(SlimeModel.from_pretrained(target)), logits(old))


def test_a_failed_move_puts_every_file_back(tmp_path, monkeypatch):
    target = tmp_path / "model"
    old = make(0)
    old.save_pretrained(target)
    moves = []
    real = os.rename

    def flaky(src, dst):  # the second new file's move into place fails
        if os.path.basename(os.path.dirname(src)) == ".saving":
            moves.append(src)
            if len(moves) == 2:
                raise OSError(errno.EIO, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(native.os, "rename", flaky)
    with pytest.raises(CheckpointError, match="I/O error"):
        make(1).save_pretrained(target)
    monkeypatch.undo()
    assert len(moves) == 2  # the old model's files had gone aside, one new file was in
    assert not (target / ".saving").exists() and not (target / ".replaced").exists()
    assert torch.equal(logits(SlimeModel.from_pretrained(target)), logits(old))


def test_saving_again_replaces_the_model_and_keeps_other_files(tmp_path):
    target = tmp_path / "model"
    make(0).save_pretrained(target)
    (target / "notes.txt").write_text("mine")
    new = make(1)
    new.save_pretrained(target)
    assert torch.equal(logits(SlimeModel.from_pretrained(target)), logits(new))
    assert (target / "notes.txt").read_text() == "mine"
    assert not (target / ".saving").exists() and not (target / ".replaced").exists()


def test_a_save_stopped_while_moving_files_in_is_named_and_never_deleted(tmp_path):
    target = tmp_path / "model"
    make(0).save_pretrained(target)
    aside = target / ".replaced"
    aside.mkdir()  # what a crash between the two halves of the move leaves
    os.rename(target / "config.json", aside / "config.json")
    with pytest.raises(CheckpointError, match=r"\.replaced"):
        SlimeModel.from_pretrained(target)
    with pytest.raises(CheckpointError, match="stopped midway"):
        make(1).save_pretrained(target)
    assert (aside / "config.json").exists()


def test_saving_onto_a_file_is_refused_and_the_file_kept(tmp_path):
    path = tmp_path / "model"
    path.write_text("not a folder")
    with pytest.raises(CheckpointError, match="is a file"):
        make(0).save_pretrained(path)
    assert path.read_text() == "not a folder"


def test_a_failed_first_save_leaves_no_folder_behind(tmp_path, monkeypatch):
    target = tmp_path / "new" / "model"

    def refuse(self, path):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(GridArchive, "save", refuse)
    with pytest.raises(CheckpointError, match="Permission denied"):
        make(0).save_pretrained(target)
    assert not target.exists()


def test_a_damaged_archive_is_named_once(tmp_path):
    target = tmp_path / "model"
    make(0).save_pretrained(target)
    files = sorted(p for p in (target / "archive_1").iterdir() if p.is_file())
    for file in files:
        file.write_bytes(b"damaged")
    with pytest.raises(CheckpointError) as err:
        SlimeModel.from_pretrained(target)
    assert str(err.value).count(str(target / "archive_1")) == 1, str(err.value)
