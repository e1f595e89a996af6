"""`slime train --data PATH`, `slime sample`, `slime eval` and dotted overrides, end to end.

A few-hundred-KB text file outside the repository trains the `tiny` preset for a dozen steps.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from prose_text import prose
from slime.train import cli
from slime.train import text as text_module
from slime.train.loader import load_config, save_config
from slime.train.tokenizer import CharTokenizer, HFTokenizer, load_tokenizer
from slime.train.use import (
    MAX_SAMPLE_TOKENS,
    MIN_TEMPERATURE,
    heldout_metrics,
    load_run_model,
    open_run,
)


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder with ``data.txt`` (~300 KB); the token cache lives in it for the whole module."""
    root = tmp_path_factory.mktemp("use")
    (root / "data.txt").write_text(prose(300_000), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLIME_CACHE_DIR", str(root / "cache"))
        yield root


def _train(space: Path, out: str, *args: str) -> Path:
    argv = ["train", "--config", "tiny", "--data", str(space / "data.txt"), "--quiet"]
    assert cli.main([*argv, "--out", str(space / out), *args]) == 0
    (run,) = (space / out).iterdir()
    return run


@pytest.fixture(scope="module")
def char_run(space: Path) -> Path:
    return _train(space, "char", "--tokenizer", "char")


@pytest.fixture(scope="module")
def bpe_run(space: Path) -> Path:
    return _train(space, "bpe", "--tokenizer", "bpe:4096", "--model", "baseline")


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _value(out: str, label: str) -> float:
    match = re.search(rf"^{re.escape(label)}: ([0-9.]+)", out, re.MULTILINE)
    assert match, f"{label!r} not in {out!r}"
    return float(match.group(1))


def _one_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"slime {command}: error: ")
    return err


# -- train ---------------------------------------------------------------------------------------


def test_a_char_run_records_its_vocabulary_and_data(space: Path, char_run: Path) -> None:
    text = (space / "data.txt").read_text(encoding="utf-8")
    tokenizer = load_tokenizer(char_run / "tokenizer.json")
    assert isinstance(tokenizer, CharTokenizer) and tokenizer.itos == sorted(set(text))
    data = json.loads((char_run / "data.json").read_text())
    assert data["chars"] == len(text) and data["cut"] == int(0.9 * len(text))
    config = yaml.safe_load((char_run / "config.yaml").read_text())["data"]
    assert config["name"] == "text" and config["path"] == str(space / "data.txt")
    assert config["tokenizer"] == "char" and config["val_fraction"] == 0.1
    assert _summary(char_run)["status"] == "completed"


def test_train_prints_the_split_rule(space: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train(space, "split", "--steps", "3", "data.val_fraction=0.2")
    out = capsys.readouterr().out
    assert "held out: the last 20% of the characters (data.val_fraction)" in out
    assert "next: slime sample" in out


def test_a_bpe_run_records_its_tokenizer(bpe_run: Path) -> None:
    tokenizer = load_tokenizer(bpe_run / "tokenizer.json")
    assert isinstance(tokenizer, HFTokenizer) and tokenizer.kind == "bpe"
    assert 256 < tokenizer.vocab_size <= 4096
    assert yaml.safe_load((bpe_run / "config.yaml").read_text())["data"]["tokenizer"] == "bpe:4096"
    assert _summary(bpe_run)["model"] == "baseline"


def test_a_second_run_reuses_the_token_cache(
    space: Path, char_run: Path, bpe_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = space / "cache"
    stamps = {f: f.stat().st_mtime_ns for f in cache.iterdir()}

    def fail(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(text_module, "_encode_split", fail)
    monkeypatch.setattr(text_module, "train_bpe", fail)
    for out, tokenizer in (("again-char", "char"), ("again-bpe", "bpe:4096")):
        run = _train(space, out, "--steps", "3", "--tokenizer", tokenizer)
        assert (run / "tokenizer.json").read_bytes() == (
            (char_run if tokenizer == "char" else bpe_run) / "tokenizer.json"
        ).read_bytes()
    assert {f: f.stat().st_mtime_ns for f in cache.iterdir()} == stamps


def test_resuming_a_text_run_uses_its_recorded_tokenizer(
    space: Path, bpe_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = space / "resumed"
    shutil.copytree(bpe_run, run)
    monkeypatch.setattr(text_module, "train_bpe", lambda *a, **k: pytest.fail("BPE retrained"))
    assert cli.main(["train", "--resume", str(run), "--steps", "14", "--quiet"]) == 0
    assert _summary(run)["steps"] == 14


def test_resuming_a_text_run_whose_tokenizer_file_was_deleted_is_refused(
    space: Path, bpe_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The resume built a new tokenizer (a BPE retrained) whose ids need not be the checkpoint's,
    # trained on, and left the run without a tokenizer.json for sample and eval.
    run = space / "resumed-no-tokenizer"
    shutil.copytree(bpe_run, run)
    (run / "tokenizer.json").unlink()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    monkeypatch.setattr(text_module, "train_bpe", lambda *a, **k: pytest.fail("BPE retrained"))
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--steps", "14", "--quiet"]) == 2
    assert "tokenizer.json' is missing" in _one_error(capsys, "train")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resuming_a_text_run_whose_text_changed_is_refused(
    space: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The resume trained on whatever the file now held (same alphabet: no error at all), with
    # the checkpoint's model and the old text's splits.
    text = tmp_path / "own.txt"
    text.write_text((space / "data.txt").read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    argv = ["train", "--config", "tiny", "--data", str(text), "--tokenizer", "char", "--quiet"]
    assert cli.main([*argv, "--out", str(tmp_path / "runs"), "--steps", "4"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    text.write_text(text.read_text(encoding="utf-8")[::-1], encoding="utf-8")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--steps", "8", "--quiet"]) == 2
    assert "changed since the run trained on it" in _one_error(capsys, "train")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


# -- sample --------------------------------------------------------------------------------------


def test_sample_prints_text_in_the_files_alphabet(
    space: Path, char_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alphabet = set((space / "data.txt").read_text(encoding="utf-8"))
    argv = ["sample", str(char_run), "--prompt", "The ", "--tokens", "300", "--seed", "1"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    printed = captured.out.removesuffix("\n")
    assert printed.startswith("The ") and len(printed) == 4 + 300
    assert set(printed) <= alphabet
    best = _summary(char_run)["best_step"]
    assert f"sampled from {char_run / 'best'} (step {best})" in captured.err
    assert cli.main(argv) == 0 and capsys.readouterr().out.removesuffix("\n") == printed
    assert cli.main([*argv[:-1], "2"]) == 0 and capsys.readouterr().out != printed + "\n"


def test_sample_never_draws_ids_beyond_the_tokenizer(
    space: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _train(space, "wide", "--steps", "3", "model.vocab_size=200")  # 42 characters
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--tokens", "400", "--temperature", "5"]) == 0
    assert set(capsys.readouterr().out) <= set((space / "data.txt").read_text(encoding="utf-8"))


def test_sample_top_k_one_is_greedy(char_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outs = []
    for seed in ("1", "2"):
        assert (
            cli.main(["sample", str(char_run), "--tokens", "40", "--top-k", "1", "--seed", seed])
            == 0
        )
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]


def test_sample_decodes_with_a_bpe_run_from_its_checkpoint(
    bpe_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sample", str(bpe_run), "--prompt", "The quick", "--tokens", "20", "--top-k", "5"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("The quick")
    best = _summary(bpe_run)["best_step"]
    assert f"{bpe_run / 'best'} (step {best})" in captured.err  # a checkpoint folder (baseline)


# -- eval ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["char", "bpe"])
def test_eval_reproduces_the_trainers_held_out_loss(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    run = request.getfixturevalue(f"{which}_run")
    data = json.loads((run / "data.json").read_text())
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    trainer = re.search(
        r"^trainer's val loss \(1 x 8 random windows, seed 1341\): ([0-9.]+)", out, re.M
    )
    best = _summary(run)["best_val"]  # eval reads best/
    assert trainer and float(trainer.group(1)) == pytest.approx(best, abs=2e-6)
    loss, bpc = _value(out, "val loss"), _value(out, "bits per character")
    assert _value(out, "perplexity") == pytest.approx(math.exp(loss), rel=1e-4)
    predicted = data["tokens"]["val"] - 1
    chars = data["chars"] - data["cut"]  # both tokenizers decode the split to its own text
    assert f"{predicted:,} tokens predicted, {chars:,} characters" in out
    assert bpc == pytest.approx(loss * predicted / math.log(2) / chars, rel=1e-5)
    assert abs(loss - float(trainer.group(1))) < 0.5  # all windows vs a sample of them


def test_heldout_metrics_equal_the_models_own_loss_on_one_window(char_run: Path) -> None:
    run, cfg = open_run(str(char_run))
    loaded = load_run_model(run, cfg, torch.device("cpu"))
    tokenizer = load_tokenizer(run / "tokenizer.json")
    tokens = np.asarray(tokenizer.encode_array("The fox jumps over the old stone bridge."))
    for n in (17, 11):  # one full window of block_size 16; one shorter window
        part = tokens[:n]
        got = heldout_metrics(
            loaded.model, part, tokenizer, block_size=16, batch_size=4, device=torch.device("cpu")
        )
        x = torch.from_numpy(part[None, :-1].astype(np.int64))
        y = torch.from_numpy(part[None, 1:].astype(np.int64))
        with torch.no_grad():
            expected = loaded.model(x, y)[1].item()
        assert got["loss"] == pytest.approx(expected, rel=1e-5) and got["tokens"] == n - 1
        assert got["chars"] == n
    long = np.tile(tokens, 6)  # several windows, batched, plus a remainder
    whole = heldout_metrics(
        loaded.model, long, tokenizer, block_size=16, batch_size=3, device=torch.device("cpu")
    )
    nats = 0.0
    for s in range(0, len(long) - 1, 16):
        chunk = long[s : min(s + 17, len(long))]
        x = torch.from_numpy(chunk[None, :-1].astype(np.int64))
        y = torch.from_numpy(chunk[None, 1:].astype(np.int64))
        with torch.no_grad():
            nats += loaded.model(x, y)[1].item() * (len(chunk) - 1)
    assert whole["loss"] == pytest.approx(nats / (len(long) - 1), rel=1e-5)


def test_eval_prefers_best_over_the_final_model(
    space: Path, char_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = space / "with-best"
    shutil.copytree(char_run, run)
    shutil.rmtree(run / "best")
    shutil.copytree(run / "checkpoints" / "step_00000006", run / "best")
    logged = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if '"eval"' in line
    ]
    at_six = next(r["val_loss"] for r in logged if r["step"] == 6 and r["kind"] == "eval")
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"model: {run / 'best'} (step 6)" in out
    assert f"(logged at step 6: {at_six:.6f})" in out
    estimate = re.search(r"seed 1341\): ([0-9.]+)", out)
    assert estimate and float(estimate.group(1)) == pytest.approx(at_six, abs=2e-6)


def test_eval_on_other_data_uses_its_held_out_split(
    space: Path, char_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = space / "other.txt"
    other.write_text(prose(20_000, seed=5), encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["eval", str(char_run), "--data", str(other), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"data: {other} (" in out and "trainer's val loss" not in out
    held = len(prose(20_000, seed=5)) - int(0.9 * len(prose(20_000, seed=5)))
    assert f"{held - 1:,} tokens predicted, {held:,} characters" in out
    foreign = space / "foreign.txt"
    foreign.write_text(prose(5_000) + "¿Qué?\n", encoding="utf-8")
    assert cli.main(["eval", str(char_run), "--data", str(foreign), "--quiet"]) == 2
    err = _one_error(capsys, "eval")  # every character it lacks, and the file, before encoding
    assert f"has no token for 3 character(s) of the text in {str(foreign)!r}" in err
    assert "('?', '¿', 'é') and refuses them" in err


def test_a_built_in_corpus_run_samples_and_evaluates(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--config", "tiny", "--data", "shakespeare", "--data-dir", str(data_dir)]
    assert cli.main([*argv, "--steps", "3", "--quiet", "--out", str(tmp_path)]) == 0
    (run,) = tmp_path.iterdir()
    assert len(load_tokenizer(run / "tokenizer.json").itos) == 65  # nanoGPT's characters
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "data: shakespeare, its val split" in out
    estimate = re.search(r"seed 1341\): ([0-9.]+)", out)
    assert estimate and float(estimate.group(1)) == pytest.approx(
        _summary(run)["val_loss"], abs=2e-6
    )
    assert cli.main(["sample", str(run), "--tokens", "50"]) == 0
    shakespeare = set((data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8"))
    assert set(capsys.readouterr().out) <= shakespeare


# -- overrides -----------------------------------------------------------------------------------


def test_dotted_overrides_reach_the_config(space: Path) -> None:
    run = _train(
        space, "over", "train.lr=3e-4", "--steps", "3", "model.n_layer=2", "train.betas=[0.8, 0.9]"
    )
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["lr"] == 3e-4 and config["train"]["steps"] == 3
    assert config["model"]["n_layer"] == 2 and config["train"]["betas"] == [0.8, 0.9]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "train.lrr: unknown key; expected one of ["),
        ("optim.lr=1", "optim: unknown section; expected one of ["),
        ("train.lr=fast", "train.lr: expected float, got 'fast'"),
        ("train.lr=-1", "train.lr: expected a value > 0.0, got -1.0"),
        ("train.lr", "expected an override SECTION.KEY=VALUE, got 'train.lr'"),
        ("train.steps=3", "train.steps: set both by an option and by an override"),
        ("model.n_layer=[1", "not valid YAML"),
    ],
)
def test_bad_overrides_are_one_error(
    space: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    argv = ["train", "--config", "tiny", "--steps", "3", "--out", str(space / "never"), override]
    assert cli.main(argv) == 2
    assert message in _one_error(capsys, "train")
    assert not (space / "never").exists()


def test_resume_refuses_overrides_of_model_and_data(
    char_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["train", "--resume", str(char_run), "model.n_layer=3"]) == 2
    assert "model: a resumed run keeps its model section" in _one_error(capsys, "train")


# -- one line for each bad input -----------------------------------------------------------------


def test_bad_data_is_one_error(space: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (space / "empty.txt").write_text("")
    (space / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (space / "latin1.txt").write_bytes("déjà vu ".encode("latin-1") * 100)
    (space / "bad-tokenizer.json").write_text('{"model": ')
    cases = [
        (["--data", str(space / "missing.txt")], "missing.txt' does not exist"),
        (["--data", str(space / "empty.txt")], "empty.txt' is empty"),
        (["--data", str(space / "binary.txt")], "binary.txt' holds a NUL byte at offset 8"),
        (["--data", str(space / "latin1.txt")], "latin1.txt' is not UTF-8 text (byte 1"),
        (
            ["--data", str(space / "data.txt"), "--tokenizer", str(space / "bad-tokenizer.json")],
            "bad-tokenizer.json' does not parse as JSON",
        ),
        (
            ["--data", str(space / "data.txt"), "--tokenizer", "bpe:x"],
            "--tokenizer: expected bpe:VOCAB",
        ),
        (  # a folder was said not to exist
            ["--data", str(space / "data.txt"), "--tokenizer", str(space)],
            f"tokenizer file {str(space)!r} is not a file (expected 'char', 'bpe'",
        ),
    ]
    for args, message in cases:
        argv = ["train", "--config", "tiny", "--quiet", "--out", str(space / "never"), *args]
        assert cli.main(argv) == 2
        assert message in _one_error(capsys, "train")
    assert not (space / "never").exists()


def test_runs_without_a_model_or_text_are_one_error(
    space: Path, char_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = space / "bare"
    shutil.copytree(char_run, bare, ignore=shutil.ignore_patterns("model", "best", "step_*"))
    task = space / "task"
    task.mkdir()
    save_config(load_config("tiny"), task / "config.yaml")  # the tiny preset: recall
    damaged = space / "damaged"
    shutil.copytree(char_run, damaged)
    (damaged / "tokenizer.json").write_text("[1, 2")
    for command in ("sample", "eval"):
        cases = [
            (bare, "holds no model: no best/, no model/ and no committed checkpoint"),
            (space, "is not a run directory (no config.yaml)"),
            (task, "has no tokenizer.json (it trained on 'recall', a synthetic task"),
            (damaged, "tokenizer.json' does not parse as JSON"),
        ]
        for run, message in cases:
            assert cli.main([command, str(run)]) == 2
            assert message in _one_error(capsys, command)


def test_bad_sample_arguments_are_one_error(
    char_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["--temperature", "0"], "--temperature: expected a finite value > 0, got 0.0"),
        (["--top-k", "0"], "--top-k: expected at least 1, got 0"),
        (["--tokens", "0"], "--tokens: expected at least 1 token, got 0"),
        (
            ["--prompt", "The \u2603"],
            "character '\u2603' is not in the run's character vocabulary",
        ),
        (["--prompt", ""], "encodes to no tokens"),
        (["--seed", "-1"], "--seed: expected a seed in [0, 9223372036854775807], got -1"),
        (  # torch's generator raised "Overflow when unpacking long long" with a traceback
            ["--seed", str(2**64)],
            f"--seed: expected a seed in [0, 9223372036854775807], got {2**64}",
        ),
        (["--tokens", "-5"], "--tokens: expected at least 1 token, got -5"),
        (  # it generated for hours (each token one forward), then ran out of memory
            ["--tokens", str(10**12)],
            "--tokens: expected at most 1,000,000 tokens, got 1000000000000",
        ),
        (["--tokens", str(MAX_SAMPLE_TOKENS + 1)], "--tokens: expected at most 1,000,000 tokens"),
        (["--temperature", "-1"], "--temperature: expected a finite value > 0, got -1.0"),
        (["--temperature", "inf"], "--temperature: expected a finite value > 0, got inf"),
        (  # the logits / temperature overflowed: torch.multinomial's RuntimeError, a traceback
            ["--temperature", "1e-320"],
            "--temperature: expected at least 0.0001 (below, the scaled logits can overflow; "
            "--top-k 1 samples greedily), got 9.99989e-321",
        ),
        (
            ["--top-k", str(10**30)],
            "--top-k: expected at most 16,777,216 (the largest vocabulary), "
            "got 1000000000000000000000000000000",
        ),
        (  # torch read the index in 8 bits: cuda:256 was cuda:0, cuda:2**31 a traceback
            ["--device", "cuda:256"],
            "--device: expected 'auto', 'cpu', 'cuda', 'cuda:N' (N from 0 to 127) or 'mps', "
            "got 'cuda:256'",
        ),
        (["--device", "cuda:99999999999999999999"], "(N from 0 to 127)"),
    ]
    for args, message in cases:
        assert cli.main(["sample", str(char_run), *args]) == 2
        assert message in _one_error(capsys, "sample")


def test_the_limits_of_sample_are_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"tokens to generate, 1 to {MAX_SAMPLE_TOKENS:,}" in text
    assert f"at least {MIN_TEMPERATURE:g}" in text and "1 to 16,777,216" in text


def test_sample_at_the_lowest_temperature_draws_finite_tokens(
    char_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # float32 logits on the CPU: bf16 ones (CUDA autocast) tie often, and ties draw at random
    argv = ["sample", str(char_run), "--prompt", "The ", "--tokens", "8", "--device", "cpu"]
    assert cli.main([*argv, "--temperature", str(MIN_TEMPERATURE)]) == 0
    cold = capsys.readouterr().out
    assert cold.startswith("The ") and len(cold) == len("The ") + 8 + 1
    assert cli.main([*argv, "--top-k", "1"]) == 0
    assert cold == capsys.readouterr().out  # that cold is greedy


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "--batch-size: expected from 1 to 16,777,216, got 0"),
        ("-3", "--batch-size: expected from 1 to 16,777,216, got -3"),
        (str(10**12), "--batch-size: expected from 1 to 16,777,216, got 1000000000000"),
    ],
)
def test_bad_eval_batch_sizes_are_one_error(
    char_run: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    assert cli.main(["eval", str(char_run), "--quiet", "--batch-size", value]) == 2
    assert message in _one_error(capsys, "eval")


def test_eval_refuses_text_that_changed_since_training(
    space: Path, char_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = space / "changed"
    shutil.copytree(char_run, run)
    moved = space / "changed.txt"
    moved.write_text(prose(30_000, seed=9), encoding="utf-8")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["path"] = str(moved)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["eval", str(run), "--quiet"]) == 2
    assert "changed since the run trained on it" in _one_error(capsys, "eval")


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_an_empty_run_dir_is_refused_not_read_as_the_current_folder(
    char_run: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    # Path("") is ".": `slime sample ''` from inside a run used that run, and elsewhere the error
    # named '.' instead of the empty value given.
    monkeypatch.chdir(char_run)
    assert cli.main([command, ""]) == 2
    assert _one_error(capsys, command).endswith("expected a run directory, got ''")


def test_an_empty_data_path_is_refused_not_read_as_the_current_folder(
    space: Path, char_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Path("").resolve() is the current folder: --data '' trained (or evaluated) on every .txt
    # file under wherever the command ran.
    here = space / "cwd-with-text"
    here.mkdir()
    (here / "notes.txt").write_text(prose(30_000, seed=3), encoding="utf-8")
    monkeypatch.chdir(here)
    out = space / "empty-data-out"
    assert cli.main(["train", "--config", "tiny", "--data", "", "--out", str(out), "--quiet"]) == 2
    assert "--data: expected a dataset" in _one_error(capsys, "train") and not out.exists()
    assert cli.main(["eval", str(char_run), "--quiet", "--data", ""]) == 2
    assert "--data: expected a dataset" in _one_error(capsys, "eval")


@pytest.mark.parametrize("task", ["copy", "recall"])
def test_eval_of_a_text_run_on_a_synthetic_task_is_one_error(
    char_run: Path, capsys: pytest.CaptureFixture[str], task: str
) -> None:
    # A synthetic task has no tokenizer: eval read dataset.tokenizer and died with an
    # AttributeError traceback.
    assert cli.main(["eval", str(char_run), "--quiet", "--data", task]) == 2
    assert f"--data {task!r} is a synthetic task with no text" in _one_error(capsys, "eval")


def test_eval_on_a_run_with_a_damaged_metrics_log_is_one_error(
    space: Path, char_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # eval reads the val_loss logged at its model's step; a line that was not UTF-8 raised a
    # UnicodeDecodeError (and one that was not an object an AttributeError) with a traceback.
    run = space / "damaged-metrics"
    shutil.copytree(char_run, run)
    lines = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    for bad in (b"\xff\xfe\n", b"5\n"):
        (run / "metrics.jsonl").write_bytes(b"".join([lines[0], bad, *lines[1:]]))
        assert cli.main(["eval", str(run), "--quiet"]) == 2
        assert "metrics.jsonl:2 is not" in _one_error(capsys, "eval")


def test_sample_and_eval_refuse_a_tampered_tokenizer_file(
    space: Path, char_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two characters swapped in the vocabulary: the same size, so sample decoded every token as
    # another character and eval scored the text with the wrong ids, silently.
    run = space / "tampered-tokenizer"
    shutil.copytree(char_run, run)
    tokenizer = load_tokenizer(run / "tokenizer.json")
    assert isinstance(tokenizer, CharTokenizer)
    itos = list(tokenizer.itos)
    itos[-1], itos[-2] = itos[-2], itos[-1]
    CharTokenizer(itos).save(run / "tokenizer.json")
    for command in ("sample", "eval"):
        assert (
            cli.main([command, str(run), "--quiet"] if command == "eval" else [command, str(run)])
            == 2
        )
        message = _one_error(capsys, command)
        assert "is not the tokenizer the run trained with" in message
        # Both hashes shown alike, 12 hex digits; the recorded one was a repr cut mid-quote.
        recorded = json.loads((run / "data.json").read_text())["tokenizer"]
        assert f"data.json records {recorded[:12]}): it was edited" in message


def test_help_lists_sample_and_eval(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert "sample" in usage and "eval" in usage and "train" in usage
    assert {"train", "sample", "eval"} <= set(cli.commands())
