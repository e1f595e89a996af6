"""`slime sample` and `slime eval` on damaged run directories: one error line naming the file,
or one warning naming it and the model used instead; never a hang, a traceback or a silent
answer from the wrong data."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from prose_text import prose
from slime.proto.testing import FifoFeeder
from slime.train import cli
from slime.train.tokenizer import CharTokenizer, load_tokenizer


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 3-step char run of the `tiny` preset on ~40 KB of text (best/, model/, checkpoints/)."""
    root = tmp_path_factory.mktemp("use-faults")
    (root / "data.txt").write_text(prose(40_000), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLIME_CACHE_DIR", str(root / "cache"))
        argv = ["train", "--config", "tiny", "--data", str(root / "data.txt"), "--quiet"]
        assert cli.main([*argv, "--steps", "3", "--out", str(root / "runs")]) == 0
        (found,) = (root / "runs").iterdir()
        yield found


@pytest.fixture
def damaged(run: Path, tmp_path: Path) -> Path:
    """A private copy of ``run`` to damage."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _argv(command: str, run_dir: Path) -> list[str]:
    return (
        ["sample", str(run_dir), "--tokens", "3"]
        if command == "sample"
        else ["eval", str(run_dir), "--quiet"]
    )


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_model_files_that_are_fifos_or_devices_are_never_read(
    damaged: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    # before: best/run.json, summary.json and the model.safetensors of best/ and model/ were read
    # whole without a look at what they were: a link to /dev/zero filled memory (sample and eval
    # hung until the machine ran out), a FIFO blocked forever
    for name in ("best/run.json", "best/model.safetensors"):
        (damaged / name).unlink()
    (damaged / "summary.json").unlink()
    (damaged / "model" / "model.safetensors").unlink()
    (damaged / "model" / "model.safetensors").symlink_to("/dev/null")
    with (
        FifoFeeder(damaged / "best" / "run.json", b'{"step": 1}') as run_json,
        FifoFeeder(damaged / "best" / "model.safetensors", b'{"step": 1}') as weights,
        FifoFeeder(damaged / "summary.json", b'{"step": 1}') as summary,
    ):
        assert cli.main(_argv(command, damaged)) == 0
    assert (run_json.opened, weights.opened, summary.opened) == (0, 0, 0)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "Traceback" not in err
    best, final = damaged / "best" / "model.safetensors", damaged / "model" / "model.safetensors"
    assert f"{best} is a FIFO, not a regular file" in warnings[0]
    assert f"{final} is a character device, not a regular file" in warnings[0]
    assert "falling back to the latest checkpoint" in warnings[0]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda text: "", "it has no model, train, data section"),
        (lambda text: text[: text.index("train:")], "it has no train, data section"),
        (lambda text: text.replace("n_layer: 1", "n_layer: -3"), "model.n_layer: expected a value"),
        (lambda text: "- 1\n- 2\n", "expected a mapping of sections, got list"),
    ],
    ids=["emptied", "cut-short", "bad-value", "not-a-mapping"],
)
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_damaged_config_yaml_is_one_error_naming_it(
    damaged: Path, capsys: pytest.CaptureFixture[str], command: str, edit, message: str
) -> None:
    # before: an emptied config.yaml loaded as the defaults: sample ran on without a word and eval
    # said "--data 'recall' is a synthetic task"; a bad value was an error naming the key only,
    # not the file ("model.n_layer: expected a value >= 1, got -3")
    file = damaged / "config.yaml"
    file.write_text(edit(file.read_text()))
    assert cli.main(_argv(command, damaged)) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"slime {command}: error: {str(file)!r} is damaged: ")
    assert message in err


@pytest.mark.parametrize("stand_in", ["folder", "/dev/null", "dangling"])
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_data_record_that_is_not_a_file_is_one_error_not_a_skipped_check(
    damaged: Path, capsys: pytest.CaptureFixture[str], command: str, stand_in: str
) -> None:
    # before: data.json was read only when a regular file; a folder or a link in its place skipped
    # the tokenizer and text checks it carries, so a tampered tokenizer.json (two characters
    # swapped) sampled and evaluated without a word
    tokenizer = load_tokenizer(damaged / "tokenizer.json")
    assert isinstance(tokenizer, CharTokenizer)
    itos = list(tokenizer.itos)
    itos[-1], itos[-2] = itos[-2], itos[-1]
    CharTokenizer(itos).save(damaged / "tokenizer.json")
    record = damaged / "data.json"
    record.unlink()
    if stand_in == "folder":
        record.mkdir()
    else:
        record.symlink_to(stand_in if stand_in != "dangling" else damaged / "nowhere")
    assert cli.main(_argv(command, damaged)) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"slime {command}: error: {str(record)!r} is ")
    assert "not the run's data record" in err


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"[1, 2]", "it holds list, not the JSON object"), (b"{}", "it records no ")],
    ids=["a-list", "no-keys"],
)
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_data_record_of_the_wrong_shape_is_named(
    damaged: Path, capsys: pytest.CaptureFixture[str], command: str, content: bytes, says: str
) -> None:
    # before: a list said "list indices must be integers or slices, not str", a bare {} "'sha256'"
    record = damaged / "data.json"
    record.write_bytes(content)
    assert cli.main(_argv(command, damaged)) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"slime {command}: error: {str(record)!r} is damaged: {says}")


@pytest.mark.parametrize(
    "line",
    [
        b'{"step": ' + b"9" * 5000 + b', "kind": "eval"}',  # int() refuses > 4300 digits
        b'{"step": 1, "kind": "train", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["huge-integer", "deep-nesting"],
)
def test_eval_on_a_metrics_line_json_cannot_decode_is_one_error_naming_the_line(
    damaged: Path, capsys: pytest.CaptureFixture[str], line: bytes
) -> None:
    # before: eval reads the val_loss logged at its model's step: the ValueError (integer too
    # long) or RecursionError escaped slime eval as a traceback
    lines = (damaged / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (damaged / "metrics.jsonl").write_bytes(b"".join([lines[0], line + b"\n", *lines[1:]]))
    assert cli.main(_argv("eval", damaged)) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"slime eval: error: {damaged / 'metrics.jsonl'}:2 is not JSON")


@pytest.mark.parametrize("stand_in", ["folder", "/dev/null", "dangling"])
def test_a_tokenizer_file_that_is_not_a_file_is_named_as_such(
    damaged: Path, capsys: pytest.CaptureFixture[str], stand_in: str
) -> None:
    # before: "has no tokenizer.json (it trained on 'text', data); sample and eval need a run on
    # text", of a run on text: the reason given was not what was wrong
    file = damaged / "tokenizer.json"
    file.unlink()
    if stand_in == "folder":
        file.mkdir()
    else:
        file.symlink_to(stand_in if stand_in != "dangling" else damaged / "nowhere")
    for command in ("sample", "eval"):
        assert cli.main(_argv(command, damaged)) == 2
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
        assert err.startswith(f"slime {command}: error: {str(file)!r} is ")
        assert "not the run's tokenizer file" in err
