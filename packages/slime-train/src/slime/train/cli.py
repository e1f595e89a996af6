"""The ``slime`` command.

``slime train``, ``slime sample`` and ``slime eval`` are built in (the last two in
:mod:`slime.train.use`). Other packages add subcommands through the entry-point group
``slime.commands`` (slime-tools adds ``visualize``, ``export`` and ``package``) without this package
importing them: an entry point named ``NAME`` resolves to a callable ``fn(argv: list[str]) -> int``
that parses its own arguments (``slime NAME ARGS...`` calls ``fn(ARGS)``) and returns an exit status.
"""

from __future__ import annotations

import sys

# ``python -m slime.train.cli``: hand over to the console script's entry point before the imports
# below (seconds: torch among them), so a Ctrl-C during them is exit status 130 and one line here
# too. It imports this file again, as slime.train.cli, and runs its main.
if __name__ == "__main__":
    from slime.train.console import main as _console

    sys.exit(_console())

import argparse
import json
import os
import re
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

import torch
from slime.proto import CheckpointError, ConfigError, DataError, SlimeError, shown
from slime.train.build import build_dataset
from slime.train.checkpoint import checkpoint_steps
from slime.train.config import DATASETS, MAX_STEPS, RunConfig
from slime.train.console import INTERRUPTED
from slime.train.datasets import Dataset
from slime.train.distributed import (
    Distributed,
    elastic_restart,
    launch,
    rank_batch,
    shutdown,
    world_size_from_env,
)
from slime.train.loader import load_config, parse_overrides, preset_names, save_config
from slime.train.rundir import RunDir
from slime.train.tokenizer import parse_tokenizer_spec
from slime.train.trainer import Trainer
from slime.train.use import DATA_FILE, TOKENIZER_FILE, data_changes, eval_command, sample_command

__all__ = ["main", "train_command"]

GROUP = "slime.commands"
Command = Callable[[list[str]], int | None]


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slime train",
        description="Train a Slime Mold Transformer (or the baseline GPT) and write a run directory.",
    )
    parser.add_argument(
        "--config", help=f"YAML file or preset ({', '.join(preset_names())}); default: default"
    )
    parser.add_argument(
        "--data",
        help=f"dataset: {', '.join(DATASETS)}, or a .txt file or folder of .txt files (the last "
        "data.val_fraction of its characters held out, default 0.1; overrides config)",
    )
    parser.add_argument(
        "--tokenizer",
        help="for --data PATH: char (default), bpe[:VOCAB] (byte-level BPE trained on the "
        "training split, VOCAB default 4096) or a tokenizer.json file (sets data.tokenizer)",
    )
    parser.add_argument("--data-dir", help="folder of the corpora (default: $SLIME_DATA_DIR)")
    parser.add_argument("--model", choices=("slime", "baseline"), help="overrides model.kind")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint"
    )
    parser.add_argument("--steps", type=int, help=f"overrides train.steps (1 to {MAX_STEPS:,})")
    parser.add_argument("--out", help="parent folder of new run directories (default: runs)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (overrides train.device)")
    parser.add_argument("--seed", type=int, help="overrides train.seed (0 to 2**63 - 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run the training forward through torch.compile (sets train.compile)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="compile and replay forward and backward as CUDA graphs (sets train.compile and "
        "train.cuda_graphs)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="SECTION.KEY=VALUE",
        help="config overrides, e.g. train.lr=3e-4 model.n_layer=8 (values read as YAML)",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, dict]:
    changes: dict[str, dict] = {"train": {}, "model": {}, "data": {}}
    if args.steps is not None:
        changes["train"]["steps"] = args.steps
    if args.device is not None:
        changes["train"]["device"] = args.device
    if args.seed is not None:
        changes["train"]["seed"] = args.seed
    if args.compile or args.cuda_graphs:
        changes["train"]["compile"] = True
    if args.cuda_graphs:
        changes["train"]["cuda_graphs"] = True
    if args.model is not None:
        changes["model"]["kind"] = args.model
    if args.data is not None:
        changes["data"].update(data_changes(args.data))
    if args.tokenizer is not None:
        kind, _ = parse_tokenizer_spec(args.tokenizer, "--tokenizer")
        spec = args.tokenizer
        if kind == "file":  # the run must find it from anywhere
            spec = str(Path(spec).expanduser().resolve())
        changes["data"]["tokenizer"] = spec
    overrides = parse_overrides(args.overrides)
    for section, values in overrides.items():
        for key, value in values.items():
            if key in changes.get(section, {}):
                raise ConfigError("set both by an option and by an override", f"{section}.{key}")
            if section == "data" and key == "path" and isinstance(value, str):
                value = str(Path(value).expanduser().resolve())
            if section == "data" and key == "tokenizer" and isinstance(value, str):
                if parse_tokenizer_spec(value)[0] == "file":
                    value = str(Path(value).expanduser().resolve())
            changes.setdefault(section, {})[key] = value
    return changes


# The config keys that options of `slime train` set: a refused value names the option too.
_OPTIONS = {"train.steps": "steps", "train.seed": "seed", "train.device": "device"}


def _with_options(cfg: RunConfig, changes: dict[str, dict], args: argparse.Namespace) -> RunConfig:
    """``cfg`` with the options' and overrides' ``changes``; a value an option set that the config
    refuses is named by the option as well as its key (``--steps (train.steps): ...``)."""
    try:
        return cfg.replace(**changes)
    except ConfigError as exc:
        raise _named_by_option(exc, args) from None


def _record_data(run: RunDir, dataset: Dataset) -> None:
    """Write the run's tokenizer (and, for text, where the text came from) into the run directory,
    so ``slime sample`` and ``slime eval`` decode and encode as the run did."""
    tokenizer = getattr(dataset, "tokenizer", None)
    if tokenizer is None:  # synthetic tasks: token ids, no text
        return
    tokenizer.save(run.path / TOKENIZER_FILE)
    source = getattr(dataset, "source", None)
    if source is not None:
        record = {
            "path": str(source.path),
            "files": len(source.files),
            "sha256": source.sha256,
            "chars": source.chars,
            "val_fraction": dataset.val_fraction,
            "cut": dataset.cut,
            "tokens": {split: len(tokens) for split, tokens in dataset.splits.items()},
            "tokenizer": tokenizer.identity,
        }
        (run.path / DATA_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _check_resumed_text(run: Path, dataset: Dataset) -> None:
    """DataError when the text a resumed run would train on is not the text its ``data.json``
    records (changed, or other files in its folder): the checkpoint's model and its splits
    belong to that text. A run without the record (older, or a synthetic task) is not checked;
    a damaged record is a CheckpointError."""
    source, file = getattr(dataset, "source", None), run / DATA_FILE
    if source is None or not file.is_file():
        return
    try:
        recorded = json.loads(file.read_text("utf-8"))["sha256"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{str(file)!r} is damaged: {exc}") from None
    if recorded != source.sha256:
        raise DataError(
            f"{str(source.path)!r} changed since the run trained on it (sha256 "
            f"{source.sha256[:12]}, recorded {str(recorded)[:12]}); a resumed run trains on the "
            "text it started with: restore that text, or start a new run on this one"
        )


def train_command(argv: list[str]) -> int:
    """``slime train``: returns 0 when the run completed, 1 when the non-finite policy stopped it.

    Under a launcher (``torchrun --nproc-per-node N --no-python slime train ...``) each process is
    one rank of a data-parallel run (:mod:`slime.train.distributed`): ``train.batch_size`` is the
    global batch, and rank 0 alone writes the run directory and prints. When torchrun's elastic
    agent restarts the workers (a failed worker, a lost node), the same command resumes the run
    its job made from the latest checkpoint, on however many processes the job now has.
    """
    args = _train_parser().parse_intermixed_args(argv)
    args.argv = list(argv)
    for option in ("config", "resume", "out"):  # as a path, '' would be the current folder
        if getattr(args, option) == "":
            raise ConfigError("expected a file or folder path, got ''", f"--{option}")
    out_given = args.out is not None
    if not out_given:
        args.out = "runs"
    world = world_size_from_env()
    restarted = _elastic_run(args.out, argv)
    if restarted is not None:
        # The same command, started again by torchrun's elastic agent: carry its own run on.
        args.resume = str(restarted)
        cfg = load_config(restarted / "config.yaml")
    elif args.resume is not None:
        if not (Path(args.resume) / "config.yaml").is_file():  # refuse before creating anything
            raise ConfigError(f"{args.resume} is not a run directory (no config.yaml)", "--resume")
        if args.model is not None or args.data is not None or args.seed is not None:
            raise ConfigError("a resumed run keeps its model, data and seed", "--resume")
        if args.tokenizer is not None:
            raise ConfigError("a resumed run keeps its tokenizer", "--resume")
        if args.config is not None:  # it was ignored: the run's own config.yaml is read
            raise ConfigError(
                f"a resumed run keeps its config.yaml, got --config {shown(args.config)} (change "
                "its train, lifecycle, fitness or slo settings with SECTION.KEY=VALUE overrides)",
                "--resume",
            )
        if out_given:  # it was ignored: the run is carried on where it is
            raise ConfigError(
                f"a resumed run stays in its own folder, got --out {shown(args.out)}", "--resume"
            )
        changes = _overrides(args)
        for key in ("model", "data"):
            if changes.get(key):
                raise ConfigError(f"a resumed run keeps its {key} section", key)
        if "seed" in changes["train"]:
            raise ConfigError("a resumed run keeps its seed", "train.seed")
        cfg = _with_options(load_config(Path(args.resume) / "config.yaml"), changes, args)
        done = checkpoint_steps(args.resume)
        if done and cfg.train.steps < done[-1]:  # it would stop there, saying train.steps
            raise ConfigError(
                f"expected at least {done[-1]}, the step of {args.resume}'s latest checkpoint, "
                f"got {cfg.train.steps}",
                "train.steps",
            )
    else:
        cfg = _with_options(load_config(args.config), _overrides(args), args)
    for warning in cfg.schedule_warnings("--steps" if args.steps is not None else None):
        print(f"slime train: warning: {warning}", file=sys.stderr)
    rank_batch(cfg.train.batch_size, world)  # refused before any process joins a group
    try:
        ctx, device = launch(cfg.train.device)
    except ConfigError as exc:
        raise _named_by_option(exc, args) from None
    try:
        _check_cuda_graphs(cfg, device, args)  # before the run directory is made
        return _train(args, cfg, ctx, device)
    finally:
        shutdown()


def _named_by_option(exc: ConfigError, args: argparse.Namespace) -> ConfigError:
    """``exc`` naming the option that set its key too (``--device (train.device): ...``)."""
    option = _OPTIONS.get(exc.path or "")
    if option is None or getattr(args, option, None) is None:
        return exc
    return ConfigError(str(exc).removeprefix(f"{exc.path}: "), f"--{option} ({exc.path})")


def _check_cuda_graphs(cfg: RunConfig, device: torch.device, args: argparse.Namespace) -> None:
    """ConfigError when CUDA graphs were asked for (``--cuda-graphs`` or ``train.cuda_graphs``)
    and the run's device is not a CUDA device: torch.compile would quietly compile without them,
    and the run would not be what was asked for."""
    if not cfg.train.cuda_graphs or device.type == "cuda":
        return
    found = " found no CUDA device" if cfg.train.device == "auto" else ""
    where = "--cuda-graphs (train.cuda_graphs)" if args.cuda_graphs else "train.cuda_graphs"
    instead = "leave out --cuda-graphs" if args.cuda_graphs else "set train.cuda_graphs=false"
    raise ConfigError(
        f"CUDA graphs need a CUDA device, and this run's device is {device.type} (train.device "
        f"{cfg.train.device!r}{found}): {instead} (--compile alone works on any device), or "
        "train on a machine with CUDA",
        where,
    )


# Written into a run directory made under torchrun's elastic agent: which job and command made it.
ELASTIC_FILE = "elastic.json"


def _elastic_record(argv: Sequence[str]) -> dict[str, object] | None:
    """What ties a run directory to its job: torchrun's run id and this command line."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return None if run_id is None else {"run_id": run_id, "argv": list(argv)}


def _elastic_run(out: str, argv: Sequence[str]) -> Path | None:
    """The run directory under ``out`` that this very job and command made, when torchrun's
    elastic agent restarted the workers (after a worker failed or a node was lost); None on a
    first attempt, without a launcher, or when the job died before making one."""
    if elastic_restart() is None:
        return None
    record = _elastic_record(argv)
    made = []
    for path in Path(out).glob(f"*/{ELASTIC_FILE}"):
        try:
            if json.loads(path.read_text(encoding="utf-8")) == record:
                made.append(path.parent)
        except (OSError, ValueError):
            continue  # not one of ours
    return max(made, key=lambda p: p.name) if made else None


def _in_turn(ctx: Distributed, build: Callable[[], Dataset]) -> Dataset:
    """``build()`` on rank 0 first, then on the other ranks, which find its caches (tokens, a
    trained tokenizer) instead of writing them at the same time."""
    if not ctx.is_main:
        ctx.barrier()
    dataset = build()
    if ctx.is_main:
        ctx.barrier()
    return dataset


def _train(args: argparse.Namespace, cfg: RunConfig, ctx: Distributed, device: torch.device) -> int:
    progress = None if args.quiet or not ctx.is_main else sys.stderr

    def say(text: str) -> None:
        if ctx.is_main:
            print(text)

    if args.resume is not None:
        run = RunDir(args.resume)
        restart = elastic_restart()
        if restart is not None:
            say(
                f"restart {restart[1]} of the job (torchrun): {ctx.world_size} process(es) "
                f"carry {run.path} on from its latest checkpoint"
            )
        recorded = run.path / TOKENIZER_FILE
        if cfg.data.name == "text" and not recorded.is_file():  # a new one need not give its ids
            raise CheckpointError(
                f"{str(recorded)!r} is missing: the run's checkpoint holds token ids of that "
                "tokenizer, which a tokenizer built anew need not reproduce; restore the file"
            )
        dataset = _in_turn(
            ctx,
            lambda: build_dataset(
                cfg.data,
                cfg.model.block_size,
                args.data_dir,
                tokenizer=recorded if cfg.data.name == "text" and recorded.is_file() else None,
                progress=progress,
            ),
        )
        _check_resumed_text(run.path, dataset)
        trainer = Trainer.resume(
            run, dataset, cfg, device=device, progress=progress, distributed=ctx
        )
        # Only once the resume is accepted: a refused one leaves the run's config.yaml as it was.
        ctx.barrier()  # every rank has read config.yaml before rank 0 rewrites it
        if ctx.is_main:
            save_config(cfg, run.config_path)
        if trainer.restarted:
            say(f"no committed checkpoint in {run.path}: restarting from step 0 with its config")
    else:
        dataset = _in_turn(
            ctx,
            lambda: build_dataset(cfg.data, cfg.model.block_size, args.data_dir, progress=progress),
        )
        if hasattr(dataset, "describe"):
            say(dataset.describe())
        if ctx.is_main:
            run = RunDir.create(args.out, f"{cfg.model.kind}-{cfg.data.name}")
            ctx.broadcast_object(str(run.path))
            _record_data(run, dataset)
            record = _elastic_record(args.argv)
            if record is not None:  # a restarted job finds its run by this
                (run.path / ELASTIC_FILE).write_text(json.dumps(record) + "\n", encoding="utf-8")
        else:
            run = RunDir(ctx.broadcast_object(None))
        trainer = Trainer(
            cfg, dataset, run_dir=run, device=device, progress=progress, distributed=ctx
        )
    if cfg.train.cpu_threads is not None:
        # Process-wide; set here, at the application's edge, not inside the library.
        torch.set_num_threads(cfg.train.cpu_threads)
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:
        # Checkpoints are committed atomically: the latest one is whole, whatever step the
        # interrupt cut. A step cut midway is not saved (its state may be half-updated).
        steps = checkpoint_steps(run.path)
        kept = f"its latest checkpoint is step {steps[-1]}" if steps else "it has no checkpoint yet"
        if ctx.is_main:
            print(
                f"slime train: interrupted at step {trainer.step}; {kept}: "
                f"slime train --resume {run.path} carries it on",
                file=sys.stderr,
            )
        return INTERRUPTED
    line = f"{summary['status']}: {summary['model']} on {cfg.data.name}, {summary['steps']} steps"
    if "val_loss" in summary:
        line += f", val loss {summary['val_loss']:.4f}"
    if ctx.active:
        line += f" ({ctx.world_size} processes)"
    say(line)
    written = ["config.yaml", "metrics.jsonl", "summary.json", "*.png", "checkpoints/"]
    written += [n for n in ("best/", "model/", TOKENIZER_FILE) if (run.path / n).exists()]
    say(f"results: {run.path} ({', '.join(written)})")
    plugins = {ep.name for ep in entry_points(group=GROUP)}
    if (run.path / TOKENIZER_FILE).is_file():
        say(f"next: slime sample {run.path}  |  slime eval {run.path}")
    if cfg.model.kind == "slime" and {"visualize", "export"} <= plugins:  # slime-tools installed
        say(f"next: slime visualize {run.path}  |  slime export {run.path} --format onnx")
    return 0 if summary["status"] in ("completed", "early_stopped") else 1


BUILTIN: dict[str, Command] = {
    "train": train_command,
    "sample": sample_command,
    "eval": eval_command,
}


def commands() -> dict[str, Command]:
    """Every subcommand: the built-in ``train``, ``sample`` and ``eval``, and those registered in
    the ``slime.commands`` group."""
    found: dict[str, Command] = dict(BUILTIN)
    for ep in entry_points(group=GROUP):
        if ep.name not in found:
            found[ep.name] = ep.load()
    return found


_CPU_ALLOCATION = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")


def _out_of_memory(exc: BaseException) -> str | None:
    """What could not be allocated when ``exc`` is a failed allocation (CUDA's OutOfMemoryError,
    torch's CPU allocator refusing, Python's MemoryError); None for any other error."""
    if isinstance(exc, torch.OutOfMemoryError):  # "CUDA out of memory. Tried to allocate ..."
        return ". ".join(" ".join(str(exc).split()).split(". ")[:2])[:300]
    if isinstance(exc, MemoryError):
        return str(exc)[:300] or "Python could not allocate an object"
    found = _CPU_ALLOCATION.search(str(exc)) if isinstance(exc, RuntimeError) else None
    if found is None:
        return None
    return f"could not allocate {int(found.group(1)) / 2**30:,.1f} GiB of CPU memory"


def _usage(names: Sequence[str]) -> str:
    return f"usage: slime {{{','.join(names)}}} [ARGS...]\n       slime COMMAND --help"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``slime`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    available = sorted({*BUILTIN, *(ep.name for ep in entry_points(group=GROUP))})
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(available))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in available:
        print(f"slime: unknown command {name!r}; expected one of {available}", file=sys.stderr)
        return 2
    command = BUILTIN[name] if name in BUILTIN else commands()[name]
    try:
        status = command(rest)
    except SlimeError as exc:
        print(f"slime {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback (train says how to resume)
        print(f"slime {name}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (MemoryError, RuntimeError) as exc:  # legal values whose product does not fit
        what = _out_of_memory(exc)
        if what is None:
            raise
        print(
            f"slime {name}: error: out of memory: {what} (smaller batches, windows or model fit)",
            file=sys.stderr,
        )
        return 2
    return int(status or 0)
