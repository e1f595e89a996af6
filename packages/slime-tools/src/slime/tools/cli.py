"""The ``slime visualize``, ``slime export``, ``slime package`` and ``slime inspect`` subcommands.

Each is a ``(argv) -> int`` callable registered in the ``slime.commands`` entry-point group, so
slime-train's ``slime`` command dispatches to it without importing slime.tools; ``python -m
slime.tools <name> ...`` reaches the same functions. Errors slime raises on purpose (SlimeError)
and the file system's refusals (an ``--out`` that is a file, no permission) end the command with a
one-line message on stderr and exit status 2, as argparse's usage errors and ``slime train``'s bad
config, data or checkpoint do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from slime.proto import SlimeError

__all__ = [
    "COMMANDS",
    "export_command",
    "inspect_command",
    "main",
    "package_command",
    "visualize_command",
]


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """Parsed arguments, or the exit status argparse chose (``--help`` 0, a usage error 2)."""
    try:
        return parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def _run(prog: str, action: Callable[[], None]) -> int:
    try:
        action()
    except SlimeError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused: an --out that is a file, no permission, ...
        where = f" {exc.filename!r}" if exc.filename else ""
        print(f"{prog}: error: cannot write or read{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def visualize_command(argv: Sequence[str] | None = None) -> int:
    """``slime visualize RUN_DIR [--format png|svg] [--out DIR] [--baseline RUN_DIR]``."""
    from slime.tools.visualize import FORMATS, visualize_run

    parser = argparse.ArgumentParser(
        prog="slime visualize",
        description="Plot a run: training curves, pool and lifecycle, archive coverage and QD "
        "score, one archive heatmap per layer, and the live pods' behaviour in kernel PCA.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `slime train`")
    parser.add_argument("--format", choices=FORMATS, default="png", help="image format")
    parser.add_argument("--out", metavar="DIR", help="where to write (default RUN_DIR/plots)")
    parser.add_argument("--baseline", metavar="RUN_DIR", help="a baseline run to compare with")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args

    def action() -> None:
        report = visualize_run(args.run_dir, args.out, fmt=args.format, baseline=args.baseline)
        for path in report.written:
            print(path)
        for note in report.skipped:
            print(f"skipped {note}", file=sys.stderr)
        if not report.written:
            raise SlimeError(f"nothing to plot in {args.run_dir}")

    return _run(parser.prog, action)


def export_command(argv: Sequence[str] | None = None) -> int:
    """``slime export RUN_DIR --format onnx|torch-export|torchscript [--out FILE]``."""
    from slime.tools.export import FORMATS, ONNX_ATOL, ONNX_RTOL, export_run

    parser = argparse.ArgumentParser(
        prog="slime export",
        description="Freeze the run's saved model (its live pods now, no lifecycle) and export "
        "it; the export is run and compared with PyTorch on two (batch, seq) shapes.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory holding model/")
    parser.add_argument("--format", choices=FORMATS, required=True, help="export format")
    parser.add_argument("--out", metavar="FILE", help="default RUN_DIR/export/model.<suffix>")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args

    def action() -> None:
        check = export_run(args.run_dir, args.format, args.out)
        shapes = ", ".join(f"{b}x{t}" for b, t in check.shapes)
        tolerance = f"atol {ONNX_ATOL} + rtol {ONNX_RTOL}" if check.format == "onnx" else "exact"
        print(check.path)
        print(
            f"checked {check.format} against PyTorch on (batch x seq) {shapes}: "
            f"max |logit difference| {check.max_abs_diff:.3g} ({tolerance})",
            file=sys.stderr,
        )

    return _run(parser.prog, action)


def package_command(argv: Sequence[str] | None = None) -> int:
    """``slime package [--out DIR] [--onefile] [--spec-only] [--strip-docstrings]``."""
    from slime.tools.package import build_executable, write_build_files

    parser = argparse.ArgumentParser(
        prog="slime package",
        description="Build a standalone executable of the `slime` command with PyInstaller "
        "(extra 'package'). Build on the OS you target: on Windows this gives slime.exe.",
    )
    parser.add_argument("--out", metavar="DIR", default="slime-package", help="build folder")
    parser.add_argument("--onefile", action="store_true", help="one self-extracting file")
    parser.add_argument(
        "--spec-only", action="store_true", help="write the spec and launcher, do not build"
    )
    parser.add_argument(
        "--strip-docstrings",
        action="store_true",
        help="bundle slime's sources with their module, class and function docstrings removed "
        "(written to DIR/src, checked to parse to the same code)",
    )
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args

    def action() -> None:
        strip = args.strip_docstrings
        if args.spec_only:
            print(write_build_files(args.out, onefile=args.onefile, strip_docstrings=strip).spec)
        else:
            print(build_executable(args.out, onefile=args.onefile, strip_docstrings=strip))

    return _run(parser.prog, action)


def inspect_command(argv: Sequence[str] | None = None) -> int:
    """``slime inspect RUN_DIR [--where "name<x,name>=y,..."]``."""
    from slime.core import DESCRIPTOR_NAMES
    from slime.tools.query import format_report, inspect_run, parse_conditions

    parser = argparse.ArgumentParser(
        prog="slime inspect",
        description="List the live pods (layer, slot, descriptors, fitness) and the archive "
        "elites (layer, cell, descriptors, objective) of a run's saved model whose behaviour "
        "satisfies every condition. The archives index only the first k descriptors; a "
        "condition on another one filters the live pods only.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory holding model/")
    parser.add_argument(
        "--where",
        metavar="CONDITIONS",
        help="comma-separated name<x, name<=x, name>x or name>=x with name one of "
        f"{', '.join(DESCRIPTOR_NAMES)}, e.g. 'attention_distance<0.3,activation_sparsity<0.4' "
        "(default: everything)",
    )
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args

    def action() -> None:
        conditions = parse_conditions(args.where) if args.where is not None else ()
        print(format_report(inspect_run(args.run_dir, conditions)))

    return _run(parser.prog, action)


COMMANDS: dict[str, Callable[[Sequence[str] | None], int]] = {
    "visualize": visualize_command,
    "export": export_command,
    "package": package_command,
    "inspect": inspect_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m slime.tools <command> ...``: dispatch to one of :data:`COMMANDS`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        if argv and argv[0] in ("-h", "--help"):
            print(f"usage: python -m slime.tools {{{names}}} ...")
            return 0
        print(f"usage: python -m slime.tools {{{names}}} ...", file=sys.stderr)
        got = repr(argv[0]) if argv else "nothing"
        print(
            f"python -m slime.tools: error: expected a command ({names}), got {got}",
            file=sys.stderr,
        )
        return 2
    return COMMANDS[argv[0]](argv[1:])
