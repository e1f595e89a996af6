"""The ``slime`` command.

``slime train`` is built in. Other packages add subcommands through the entry-point group
``slime.commands`` (slime-tools adds ``visualize``, ``export`` and ``package``) without this package
importing them: an entry point named ``NAME`` resolves to a callable ``fn(argv: list[str]) -> int``
that parses its own arguments (``slime NAME ARGS...`` calls ``fn(ARGS)``) and returns an exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

import torch
from slime.proto import ConfigError, SlimeError
from slime.train.build import build_dataset, resolve_device
from slime.train.loader import load_config, preset_names, save_config
from slime.train.rundir import RunDir
from slime.train.trainer import Trainer

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
        help="dataset: shakespeare, wikitext2, tinystories, copy, recall (overrides config)",
    )
    parser.add_argument("--data-dir", help="folder of the corpora (default: $SLIME_DATA_DIR)")
    parser.add_argument("--model", choices=("slime", "baseline"), help="overrides model.kind")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint"
    )
    parser.add_argument("--steps", type=int, help="overrides train.steps")
    parser.add_argument("--out", default="runs", help="parent folder of new run directories")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (overrides train.device)")
    parser.add_argument("--seed", type=int, help="overrides train.seed")
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
        changes["data"]["name"] = args.data
    return changes


def train_command(argv: list[str]) -> int:
    """``slime train``: returns 0 when the run completed, 1 when the non-finite policy stopped it."""
    args = _train_parser().parse_args(argv)
    progress = None if args.quiet else sys.stderr
    if args.resume is not None:
        if not (Path(args.resume) / "config.yaml").is_file():  # refuse before creating anything
            raise ConfigError(f"{args.resume} is not a run directory (no config.yaml)", "--resume")
        run = RunDir(args.resume)
        cfg = load_config(run.config_path)
        if args.model is not None or args.data is not None or args.seed is not None:
            raise ConfigError("a resumed run keeps its model, data and seed", "--resume")
        cfg = cfg.replace(**_overrides(args))
        save_config(cfg, run.config_path)
        dataset = build_dataset(cfg.data, cfg.model.block_size, args.data_dir)
        trainer = Trainer.resume(
            run, dataset, cfg, device=resolve_device(cfg.train.device), progress=progress
        )
        if trainer.restarted:
            print(f"no committed checkpoint in {run.path}: restarting from step 0 with its config")
    else:
        cfg = load_config(args.config).replace(**_overrides(args))
        dataset = build_dataset(cfg.data, cfg.model.block_size, args.data_dir)
        device = resolve_device(cfg.train.device)
        run = RunDir.create(args.out, f"{cfg.model.kind}-{cfg.data.name}")
        trainer = Trainer(cfg, dataset, run_dir=run, device=device, progress=progress)
    if cfg.train.cpu_threads is not None:
        # Process-wide; set here, at the application's edge, not inside the library.
        torch.set_num_threads(cfg.train.cpu_threads)
    summary = trainer.fit()
    line = f"{summary['status']}: {summary['model']} on {cfg.data.name}, {summary['steps']} steps"
    if "val_loss" in summary:
        line += f", val loss {summary['val_loss']:.4f}"
    print(line)
    files = "config.yaml, metrics.jsonl, summary.json, *.png, checkpoints/"
    if cfg.model.kind == "slime":
        files += ", model/"
    print(f"results: {run.path} ({files})")
    plugins = {ep.name for ep in entry_points(group=GROUP)}
    if cfg.model.kind == "slime" and {"visualize", "export"} <= plugins:  # slime-tools installed
        print(f"next: slime visualize {run.path}  |  slime export {run.path} --format onnx")
    return 0 if summary["status"] == "completed" else 1


def commands() -> dict[str, Command]:
    """Every subcommand: ``train`` and those registered in the ``slime.commands`` group."""
    found: dict[str, Command] = {"train": train_command}
    for ep in entry_points(group=GROUP):
        if ep.name not in found:
            found[ep.name] = ep.load()
    return found


def _usage(names: Sequence[str]) -> str:
    return f"usage: slime {{{','.join(names)}}} [ARGS...]\n       slime COMMAND --help"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``slime`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    available = sorted({"train", *(ep.name for ep in entry_points(group=GROUP))})
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(available))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in available:
        print(f"slime: unknown command {name!r}; expected one of {available}", file=sys.stderr)
        return 2
    command = train_command if name == "train" else commands()[name]
    try:
        status = command(rest)
    except SlimeError as exc:
        print(f"slime {name}: error: {exc}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
