"""Use a trained run: ``slime sample`` (generate text) and ``slime eval`` (held-out loss).

Both read a run directory written by ``slime train``: its ``config.yaml``, its ``tokenizer.json``
(every text run records one: a char vocabulary or an HF tokenizer), and its weights, taken from

1. ``best/`` when it exists: the trainer keeps there the model of the lowest held-out loss so
   far (a slime run: a ``save_pretrained`` directory with the step in ``run.json``; a baseline
   run: a checkpoint folder of :mod:`slime.train.checkpoint`);
2. else ``model/`` (the final model of a slime run, ``SlimeModel.from_pretrained``);
3. else the latest committed checkpoint in ``checkpoints/`` (baseline runs, interrupted runs).

A source that is missing, incomplete or damaged is passed over for the next one, never silently:
both commands print one ``warning:`` line on stderr naming the missing or damaged file and the
model used instead (the final model or the latest checkpoint, with its step); when none loads,
the error names each one's file.

``slime eval`` reports two measurements of the held-out split:

- the whole split, deterministically: consecutive non-overlapping windows of ``block_size`` tokens
  (each token but the first is predicted once, with the context since its window began), giving the
  loss in nats per token, the perplexity, and bits per character (the total nats over the predicted
  tokens / ln 2 / the number of characters of the split's decoded text);
- on the run's own data, the trainer's estimate recomputed: the mean loss over the same
  ``train.eval_iters`` batches of ``train.batch_size`` random windows that
  :meth:`slime.train.trainer.Trainer.evaluate` draws (generator seeded ``train.seed + 4``), which
  equals the run's logged ``val_loss`` for the same weights.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from slime.core import SlimeModel, generate_tokens
from slime.proto import CheckpointError, ConfigError, DataError, PoolError, shown
from slime.train.build import build_dataset, build_model, resolve_device
from slime.train.checkpoint import latest_checkpoint, load_checkpoint
from slime.train.config import DATASETS, MAX_BATCH_SIZE, ModelConfig, RunConfig
from slime.train.datasets import Dataset
from slime.train.loader import load_config
from slime.train.rundir import read_metrics
from slime.train.tokenizer import Tokenizer, dropped_chars, load_tokenizer, show_chars
from torch import Tensor, nn

__all__ = [
    "LoadedModel",
    "data_changes",
    "eval_command",
    "heldout_metrics",
    "load_run_model",
    "open_run",
    "run_tokenizer",
    "sample_command",
    "trainer_val_loss",
]

TOKENIZER_FILE = "tokenizer.json"
# Sections of config.yaml that every run's trainer wrote (save_config dumps them all), and that
# sample and eval read.
RUN_SECTIONS = ("model", "train", "data")
MAX_SEED = 2**63 - 1
DATA_FILE = "data.json"
# The most tokens one ``slime sample`` generates: every token is one forward of the model over up
# to block_size tokens, so a million is hours on a CPU already.
MAX_SAMPLE_TOKENS = 1_000_000
# The most --top-k takes before the run is read: no model's vocabulary is larger (the upper bound of
# model.vocab_size). Above the run's own vocabulary it is refused too, naming its size.
MAX_TOP_K = {f.name: f for f in dataclasses.fields(ModelConfig)}["vocab_size"].metadata["range"][1]
# Below this temperature the logits divided by it can overflow to inf (no token can be drawn);
# --top-k 1 samples greedily.
MIN_TEMPERATURE = 1e-4


def data_changes(value: str) -> dict[str, Any]:
    """``--data VALUE`` as changes of the ``data`` section: a built-in name, else a text path
    (made absolute, so the run finds it from anywhere).

    Raises:
        ConfigError: ``value`` is empty (as a path it would mean the current folder).
    """
    if not value:
        raise ConfigError(
            f"expected a dataset ({', '.join(DATASETS)}) or a .txt file or folder, got ''", "--data"
        )
    if value in DATASETS:
        return {"name": value, "path": None}
    return {"name": "text", "path": str(Path(value).expanduser().resolve())}


def open_run(path: str) -> tuple[Path, RunConfig]:
    """A run directory and its config.

    Raises:
        CheckpointError: ``path`` is not a run directory (no config.yaml), or is empty; its
            config.yaml is not a valid config, or lacks a section the trainer always writes
            (emptied or truncated: the defaults would stand in for the run's values silently),
            naming the file.
    """
    if not str(path):  # as a path, '' would be the current folder
        raise CheckpointError("expected a run directory, got ''")
    run = Path(path)
    file = run / "config.yaml"
    if not file.is_file():
        raise CheckpointError(f"{str(run)!r} is not a run directory (no config.yaml)")
    try:
        cfg = load_config(file, required=RUN_SECTIONS)
    except ConfigError as exc:
        message = str(exc).removeprefix(f"{file}: ").removeprefix(f"{file} ")
        raise CheckpointError(f"{str(file)!r} is damaged: {message}") from None
    return run, cfg


def run_tokenizer(run: Path, cfg: RunConfig) -> Tokenizer:
    """The tokenizer a run recorded.

    Raises:
        CheckpointError: the run has none (a run on a synthetic task, which has no text), or it
            is not the tokenizer whose identity the run's ``data.json`` records.
    """
    file = run / TOKENIZER_FILE
    kind = _stand_in(file)
    if kind is not None:
        raise CheckpointError(f"{str(file)!r} is {kind}, not the run's tokenizer file")
    if not file.is_file():
        what = "a synthetic task with no text" if cfg.data.name in ("copy", "recall") else "data"
        raise CheckpointError(
            f"{str(run)!r} has no {TOKENIZER_FILE} (it trained on {cfg.data.name!r}, {what}); "
            "sample and eval need a run on text"
        )
    try:
        tokenizer = load_tokenizer(file)
    except DataError as exc:
        raise CheckpointError(str(exc)) from None
    record = _data_record(run)
    if record is not None:  # a text run recorded its tokenizer's identity beside it
        recorded = _recorded(record, "tokenizer")
        if recorded != tokenizer.identity:
            raise CheckpointError(
                f"{str(file)!r} is not the tokenizer the run trained with (sha256 "
                f"{tokenizer.identity[:12]}, {DATA_FILE} records "
                f"{recorded[:12] if isinstance(recorded, str) else shown(recorded)}): it was "
                "edited or replaced"
            )
    return tokenizer


@dataclass
class LoadedModel:
    """A run's model in eval mode, where it came from, and the training step of its weights.

    ``passed_over``: why the sources before ``source`` in the order of :func:`load_run_model` were
    not used (``best/`` missing, incomplete or damaged, naming the file), or what is unknown about
    it; empty when the model is the run's best. ``slime sample`` and ``slime eval`` print them on
    stderr: they never use another model without saying so.
    """

    model: nn.Module
    source: Path
    step: int | None
    passed_over: list[str] = dataclasses.field(default_factory=list)


def _from_checkpoint(folder: Path, cfg: RunConfig, device: torch.device) -> LoadedModel:
    state = load_checkpoint(folder)
    tensors = state.get("model")
    if not isinstance(tensors, dict) or not isinstance(tensors.get("wte.weight"), Tensor):
        raise CheckpointError(f"{str(folder)!r} holds no model weights ('wte.weight' missing)")
    vocab = cfg.model.vocab_size or int(tensors["wte.weight"].shape[0])
    model = build_model(
        cfg.model,
        vocab,
        device=device,
        generator=torch.Generator().manual_seed(0),  # every weight is then loaded
        max_archive_size=cfg.lifecycle.max_archive_size,
    )
    try:
        model.load_state_dict(tensors)
    except (RuntimeError, PoolError, ConfigError) as exc:
        message = " ".join(str(exc).split())[:300]
        raise CheckpointError(
            f"{str(folder)!r} does not fit the model of the run's config.yaml: {message}"
        ) from None
    return LoadedModel(model.eval(), folder, int(state["step"]))


def _from_model_dir(folder: Path, device: torch.device, step: int | None) -> LoadedModel:
    # from_pretrained reads only regular files (/dev/zero would fill memory, a FIFO block).
    model = SlimeModel.from_pretrained(folder, device=device)
    return LoadedModel(model.eval(), folder, step)


def _noted_int(path: Path, key: str) -> int | None:
    """``key`` of the JSON object in ``path`` when it is an int (a run's ``summary.json`` steps,
    the step a ``best/`` model directory's ``run.json`` notes); None when absent or unreadable
    (a folder, a device or a FIFO is not read: a link to /dev/zero never ends)."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text("utf-8")).get(key)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _model_dir_problem(folder: Path) -> str | None:
    """What is missing in a model directory that ``save_pretrained`` left incomplete (its
    ``config.json`` is written last); None when it is complete enough to try loading."""
    if (folder / "config.json").is_file():
        return None
    if not folder.is_dir():
        return f"{str(folder)!r} is not a folder"
    state = "incomplete" if any(folder.iterdir()) else "empty"
    return f"{str(folder / 'config.json')!r} is missing ({folder.name}/ is {state})"


def _best_problem(best: Path, kind: str) -> str:
    """Why ``best/`` holds nothing to load: missing, not a folder, empty or incomplete."""
    if not best.exists():
        return f"{str(best)!r} is missing (no evaluation of the run kept a best model)"
    if not best.is_dir():
        return f"{str(best)!r} is not a folder"
    file = best / ("config.json" if kind == "slime" else "state.json")
    state = "incomplete" if any(best.iterdir()) else "empty"
    return f"{str(file)!r} is missing (best/ is {state})"


def load_run_model(run: Path, cfg: RunConfig, device: torch.device) -> LoadedModel:
    """The run's weights: ``best/``, else ``model/``, else the latest checkpoint (module docstring).

    A source that is missing, incomplete or damaged (a file missing, truncated or altered) is
    passed over for the next one, and the result's ``passed_over`` says which file and why.

    Raises:
        CheckpointError: none of them loads: naming each one's missing or damaged file.
    """
    passed: list[str] = []
    best = run / "best"
    try:
        if (best / "config.json").is_file():
            loaded = _from_model_dir(best, device, _noted_int(best / "run.json", "step"))
            if loaded.step is None:
                loaded.passed_over.append(
                    f"{str(best / 'run.json')!r} is missing or damaged: the step of the best "
                    "model is unknown"
                )
            return loaded
        if (best / "state.json").is_file():
            return _from_checkpoint(best, cfg, device)
        passed.append(_best_problem(best, cfg.model.kind))
    except CheckpointError as exc:
        passed.append(f"the best model in {str(best)!r} is damaged: {exc}")
    final = run / "model"
    if final.exists():
        problem = _model_dir_problem(final)
        if problem is None:
            try:
                steps = _noted_int(run / "summary.json", "steps")
                return dataclasses.replace(
                    _from_model_dir(final, device, steps), passed_over=passed
                )
            except CheckpointError as exc:
                problem = f"the final model in {str(final)!r} is damaged: {exc}"
        passed.append(problem)
    latest = latest_checkpoint(run)
    if latest is not None:
        try:
            loaded = _from_checkpoint(latest, cfg, device)
        except CheckpointError as exc:
            passed.append(f"the latest checkpoint {str(latest)!r} is damaged: {exc}")
        else:
            return dataclasses.replace(loaded, passed_over=passed)
    if not best.exists() and not final.exists() and latest is None:
        raise CheckpointError(
            f"{str(run)!r} holds no model: no best/, no model/ and no committed checkpoint in "
            "checkpoints/ (did the run finish a checkpoint interval?)"
        )
    if latest is None:
        passed.append(f"no committed checkpoint in {str(run / 'checkpoints')!r}")
    raise CheckpointError(f"{str(run)!r} holds no model that loads: {'; '.join(passed)}")


def _describe_source(loaded: LoadedModel) -> str:
    """``loaded``'s source for a fallback line: the final model or the latest checkpoint."""
    step = f", step {loaded.step}" if loaded.step is not None else ""
    if loaded.source.parent.name == "checkpoints":
        return f"the latest checkpoint, {loaded.source}{step}"
    return f"the final model, {loaded.source}{step}"


def _say_fallbacks(command: str, loaded: LoadedModel) -> None:
    """One line on stderr when the model is not the run's best, or its step is unknown."""
    if not loaded.passed_over:
        return
    reasons = "; ".join(loaded.passed_over)
    if loaded.source.name == "best":
        print(f"slime {command}: warning: {reasons}", file=sys.stderr)
    else:
        print(
            f"slime {command}: warning: {reasons}; falling back to {_describe_source(loaded)}",
            file=sys.stderr,
        )


def _vocab(model: nn.Module) -> int:
    return int(model.wte.weight.shape[0])


def _check_vocab(tokenizer: Tokenizer, loaded: LoadedModel) -> None:
    if tokenizer.vocab_size > _vocab(loaded.model):
        raise CheckpointError(
            f"the run's {TOKENIZER_FILE} has {tokenizer.vocab_size} tokens but the model in "
            f"{str(loaded.source)!r} only {_vocab(loaded.model)}"
        )


def _autocast(cfg: RunConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.train.amp and device.type == "cuda":  # as the trainer evaluates
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _device(value: str | None, cfg: RunConfig) -> torch.device:
    if value is None:
        return resolve_device(cfg.train.device)
    try:
        return resolve_device(cfg.replace(train={"device": value}).train.device)
    except ConfigError as exc:
        raise ConfigError(str(exc).removeprefix("train.device: "), "--device") from None


# -- slime sample -------------------------------------------------------------------------------


def _sample_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slime sample",
        description="Print text sampled from a run's model (best/, else model/, else the latest "
        "checkpoint), decoded with the run's tokenizer.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument(
        "--tokens",
        type=int,
        default=200,
        help=f"tokens to generate, 1 to {MAX_SAMPLE_TOKENS:,} (default 200)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help=f"at least {MIN_TEMPERATURE:g}, finite (default 1.0; --top-k 1 is greedy)",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        help=f"sample among the k most likely tokens, 1 to {MAX_TOP_K:,} and at most the run's "
        "vocabulary size (default: all)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help=f"sampling seed, 0 to {MAX_SEED} (default 0)"
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the run's)")
    return parser


def _check_prompt_text(prompt: str) -> None:
    """ConfigError naming ``--prompt`` when it holds a byte that is not UTF-8: Python hands such
    a byte of the command line over as a lone surrogate (U+DC80 to U+DCFF), which no text holds
    and no tokenizer encodes (an HF one said only "TextEncodeInput must be Union[...]")."""
    bad = next((c for c in prompt if "\ud800" <= c <= "\udfff"), None)
    if bad is None:
        return
    what = (
        f"the byte 0x{ord(bad) - 0xDC00:02x}, which is not UTF-8 (is the terminal's encoding "
        "UTF-8?)"
        if "\udc80" <= bad <= "\udcff"
        else f"a lone surrogate U+{ord(bad):04X}, which is not text"
    )
    raise ConfigError(f"{shown(prompt)} holds {what}", "--prompt")


def sample_command(argv: list[str]) -> int:
    """``slime sample RUN_DIR``: prints the prompt and its sampled continuation to stdout."""
    args = _sample_parser().parse_args(argv)
    if args.tokens < 1:
        raise ConfigError(f"expected at least 1 token, got {args.tokens}", "--tokens")
    if args.tokens > MAX_SAMPLE_TOKENS:
        raise ConfigError(
            f"expected at most {MAX_SAMPLE_TOKENS:,} tokens, got {shown(args.tokens)}", "--tokens"
        )
    if not math.isfinite(args.temperature) or args.temperature <= 0:
        raise ConfigError(f"expected a finite value > 0, got {args.temperature}", "--temperature")
    if args.temperature < MIN_TEMPERATURE:
        raise ConfigError(
            f"expected at least {MIN_TEMPERATURE:g} (below, the scaled logits can overflow; "
            f"--top-k 1 samples greedily), got {args.temperature:g}",
            "--temperature",
        )
    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"expected at least 1, got {args.top_k}", "--top-k")
    if args.top_k is not None and args.top_k > MAX_TOP_K:
        raise ConfigError(
            f"expected at most {MAX_TOP_K:,} (the largest vocabulary), got {shown(args.top_k)}",
            "--top-k",
        )
    if not 0 <= args.seed <= MAX_SEED:  # as train.seed; torch's generators take 64 bits at most
        raise ConfigError(f"expected a seed in [0, {MAX_SEED}], got {args.seed}", "--seed")
    run, cfg = open_run(args.run_dir)
    tokenizer = run_tokenizer(run, cfg)
    vocab = tokenizer.vocab_size  # a model.vocab_size above the tokenizer's: never sample those
    if args.top_k is not None and args.top_k > vocab:
        raise ConfigError(
            f"expected at most {vocab:,}, the size of the run's vocabulary ({TOKENIZER_FILE}), "
            f"got {args.top_k:,} (--top-k {vocab} samples among every token)",
            "--top-k",
        )
    _check_prompt_text(args.prompt)
    try:
        prompt = tokenizer.encode_array(args.prompt)
    except DataError as exc:
        raise ConfigError(f"{shown(args.prompt)} does not encode: {exc}", "--prompt") from None
    lost = dropped_chars(tokenizer, args.prompt)
    if lost:  # the model would continue another prompt than the one given
        listed = show_chars(lost)
        raise ConfigError(
            f"{shown(args.prompt)} holds {len(lost)} character(s) the run's {TOKENIZER_FILE} has "
            f"no token for ({listed}); it would drop them silently",
            "--prompt",
        )
    if prompt.size == 0:
        raise ConfigError(
            f"{shown(args.prompt)} encodes to no tokens; expected some text", "--prompt"
        )
    device = _device(args.device, cfg)
    loaded = load_run_model(run, cfg, device)
    _say_fallbacks("sample", loaded)
    _check_vocab(tokenizer, loaded)
    idx = torch.from_numpy(prompt).to(device)[None, :]
    generator = torch.Generator(device=device).manual_seed(args.seed)

    def forward(x: Tensor) -> tuple[Tensor, None]:
        return loaded.model(x)[0][..., :vocab], None

    with _autocast(cfg, device):
        out = generate_tokens(
            forward,
            idx,
            args.tokens,
            block_size=cfg.model.block_size,
            temperature=args.temperature,
            top_k=args.top_k,
            generator=generator,
        )
    step = f" (step {loaded.step})" if loaded.step is not None else ""
    print(f"sampled from {loaded.source}{step}", file=sys.stderr)
    sys.stdout.write(tokenizer.decode(out[0].tolist()) + "\n")
    sys.stdout.flush()
    return 0


# -- slime eval ---------------------------------------------------------------------------------


def _tokens(dataset: Dataset, split: str) -> np.ndarray:
    tokens = dataset.splits[split]
    return tokens.numpy() if isinstance(tokens, Tensor) else tokens


@torch.no_grad()
def heldout_metrics(
    model: nn.Module,
    tokens: np.ndarray,
    tokenizer: Tokenizer,
    *,
    block_size: int,
    batch_size: int,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """Loss over a whole token stream in consecutive non-overlapping windows of ``block_size``.

    Returns:
        ``loss`` (mean nats per predicted token), ``perplexity``, ``bits_per_char`` (total nats /
        ln 2 / characters of the decoded text), ``tokens`` (predicted: all but the first) and
        ``chars``.
    """
    n = len(tokens)
    if n < 2:
        raise DataError(f"the held-out split has {n} tokens; expected at least 2")
    model.eval()
    windows = [(s, min(s + block_size, n - 1)) for s in range(0, n - 1, block_size)]
    full = [s for s, e in windows if e - s == block_size]
    total = torch.zeros((), dtype=torch.float64)

    def score(idx: np.ndarray, targets: np.ndarray) -> None:
        nonlocal total
        x = torch.from_numpy(idx.astype(np.int64)).to(device)
        y = torch.from_numpy(targets.astype(np.int64)).to(device)
        with autocast or contextlib.nullcontext():
            logits = model(x)[0]
        nats = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="sum"
        )
        total += nats.double().cpu()

    offsets = np.arange(block_size + 1)
    for i in range(0, len(full), batch_size):
        rows = tokens[np.asarray(full[i : i + batch_size])[:, None] + offsets]
        score(rows[:, :-1], rows[:, 1:])
    start, end = windows[-1]
    if end - start != block_size:  # the last, shorter window
        score(tokens[start:end][None, :], tokens[start + 1 : end + 1][None, :])
    predicted = n - 1
    chars = sum(
        len(tokenizer.decode(tokens[i : i + (1 << 20)].tolist())) for i in range(0, n, 1 << 20)
    )
    nats = float(total)
    return {
        "loss": nats / predicted,
        "perplexity": math.exp(min(nats / predicted, 700.0)),
        "bits_per_char": nats / math.log(2) / max(chars, 1),
        "tokens": predicted,
        "chars": chars,
    }


@torch.no_grad()
def trainer_val_loss(
    model: nn.Module, dataset: Dataset, cfg: RunConfig, device: torch.device
) -> float:
    """The trainer's ``val_loss`` for ``model``: the windows of :meth:`Trainer.evaluate`'s ``val``
    pass (``train.eval_iters`` batches of ``train.batch_size``, generator ``train.seed + 4``)."""
    model.eval()
    generator = torch.Generator().manual_seed(cfg.train.seed + 3 + 1)  # split offset 1: val
    losses = []
    for _ in range(cfg.train.eval_iters):
        idx, targets = dataset.batch("val", cfg.train.batch_size, generator)
        with _autocast(cfg, device):
            losses.append(model(idx.to(device), targets.to(device))[1])
    return torch.stack(losses).mean().item()


def _eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slime eval",
        description="Print a run's held-out loss, perplexity and bits per character.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument(
        "--data",
        help="evaluate on the held-out split of this .txt file or folder (same split rule, the "
        "run's tokenizer) or built-in corpus instead of the run's data",
    )
    parser.add_argument("--data-dir", help="folder of the built-in corpora (default: as trained)")
    parser.add_argument(
        "--batch-size",
        type=int,
        help=f"windows per forward, 1 to {MAX_BATCH_SIZE:,} (default: the run's train.batch_size)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the run's)")
    parser.add_argument("--quiet", action="store_true", help="no encoding progress")
    return parser


def _recorded_val_loss(run: Path, step: int | None) -> float | None:
    """The ``val_loss`` the run logged at ``step``; None when it logged none.

    Raises:
        CheckpointError: ``metrics.jsonl`` is damaged (naming the line).
    """
    if step is None:
        return None
    found = None
    for record in read_metrics(run / "metrics.jsonl"):
        if record["kind"] == "eval" and record["step"] == step:
            found = record.get("val_loss")
    return found if isinstance(found, float) else None


def _stand_in(file: Path) -> str | None:
    """What stands where a file of the run should be, when it is neither that regular file nor
    absent: a folder, a device or FIFO (a link to /dev/zero), a symlink to nothing or a loop."""
    if file.is_file() or (not file.is_symlink() and not file.exists()):
        return None
    if file.is_dir():
        return "a folder"
    return "a device, FIFO or socket" if file.exists() else "a symlink to nothing (or a loop)"


def _data_record(run: Path) -> Path | None:
    """The run's ``data.json``; None when there is none (a run on a synthetic task or a built-in
    corpus may have none).

    Raises:
        CheckpointError: something else stands there (a folder, a device, a dangling or looping
            symlink): the tokenizer and data checks it carries cannot be skipped silently.
    """
    file = run / DATA_FILE
    what = _stand_in(file)
    if what is None:
        return file if file.is_file() else None
    raise CheckpointError(
        f"{str(file)!r} is {what}, not the run's data record (it records the tokenizer and text "
        "the run trained on, which sample and eval check)"
    )


def _recorded(file: Path, key: str) -> Any:
    """``key`` of the run's data record ``file`` (``data.json``); CheckpointError naming the file
    when it is unreadable, not JSON or lacks the key."""
    try:
        record = json.loads(file.read_text("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8, not JSON
        raise CheckpointError(f"{str(file)!r} is damaged: {exc}") from None
    if not isinstance(record, dict):
        raise CheckpointError(
            f"{str(file)!r} is damaged: it holds {type(record).__name__}, not the JSON object the "
            "trainer writes"
        )
    if key not in record:
        raise CheckpointError(f"{str(file)!r} is damaged: it records no {key!r}")
    return record[key]


def _check_same_data(run: Path, dataset: Dataset) -> None:
    """Refuse to report the run's held-out loss on text that changed since it trained."""
    file = _data_record(run)
    source = getattr(dataset, "source", None)
    if source is None or file is None:
        return
    recorded = _recorded(file, "sha256")
    if recorded != source.sha256:
        raise DataError(
            f"{str(source.path)!r} changed since the run trained on it (sha256 {source.sha256[:12]}"
            f", recorded {str(recorded)[:12]}); pass --data {source.path} to evaluate on it anyway"
        )


def eval_command(argv: list[str]) -> int:
    """``slime eval RUN_DIR``: prints held-out loss, perplexity and bits per character."""
    args = _eval_parser().parse_args(argv)
    if args.batch_size is not None and not 1 <= args.batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(
            f"expected from 1 to {MAX_BATCH_SIZE:,}, got {shown(args.batch_size)}", "--batch-size"
        )
    run, cfg = open_run(args.run_dir)
    tokenizer = run_tokenizer(run, cfg)
    own = args.data is None
    data = cfg.data if own else dataclasses.replace(cfg.data, **data_changes(args.data))
    if data.name in ("copy", "recall"):  # only --data can get here: run_tokenizer refused the run
        raise DataError(
            f"--data {data.name!r} is a synthetic task with no text; eval scores a text run on "
            "a .txt file, a folder of them or a corpus (shakespeare, wikitext2, tinystories)"
        )
    progress = None if args.quiet else sys.stderr
    file = run / TOKENIZER_FILE if data.name == "text" else None
    dataset = build_dataset(
        data, cfg.model.block_size, args.data_dir, tokenizer=file, progress=progress
    )
    if data.name != "text" and dataset.tokenizer.identity != tokenizer.identity:
        raise DataError(
            f"the {data.name!r} corpus's characters differ from the vocabulary in the run's "
            f"{TOKENIZER_FILE}"
        )
    if own:
        _check_same_data(run, dataset)
    device = _device(args.device, cfg)
    loaded = load_run_model(run, cfg, device)
    _say_fallbacks("eval", loaded)
    _check_vocab(tokenizer, loaded)
    metrics = heldout_metrics(
        loaded.model,
        _tokens(dataset, "val"),
        tokenizer,
        block_size=cfg.model.block_size,
        batch_size=args.batch_size or cfg.train.batch_size,
        device=device,
        autocast=_autocast(cfg, device),
    )
    step = f" (step {loaded.step})" if loaded.step is not None else ""
    print(f"model: {loaded.source}{step}")
    if hasattr(dataset, "describe"):
        print(dataset.describe())
    else:
        print(f"data: {data.name}, its val split")
    print(
        f"whole held-out split, windows of {cfg.model.block_size}: {metrics['tokens']:,} tokens "
        f"predicted, {metrics['chars']:,} characters"
    )
    print(f"val loss: {metrics['loss']:.6f} nats/token")
    print(f"perplexity: {metrics['perplexity']:.4f}")
    print(f"bits per character: {metrics['bits_per_char']:.6f}")
    if own:
        estimate = trainer_val_loss(loaded.model, dataset, cfg, device)
        recorded = _recorded_val_loss(run, loaded.step)
        note = f" (logged at step {loaded.step}: {recorded:.6f})" if recorded is not None else ""
        print(
            f"trainer's val loss ({cfg.train.eval_iters} x {cfg.train.batch_size} random windows, "
            f"seed {cfg.train.seed + 4}): {estimate:.6f}{note}"
        )
    return 0
