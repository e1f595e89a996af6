"""The ``slime`` console script's entry point.

:func:`main` imports :mod:`slime.train.cli` (and with it torch: seconds of imports) only once it is
running, so a Ctrl-C at any moment, the imports included, ends the command with exit status 130
and one line on stderr, never a ``KeyboardInterrupt`` traceback. This module imports only the
standard library's ``os`` and ``sys`` at the top, and ``slime.train`` itself imports none of its
modules, so the console script reaches :func:`main` at once. ``python -m slime.train`` and
``python -m slime.train.cli`` run :func:`main` too.

During the imports a Ctrl-C ends the process at once (:func:`os._exit`, nothing has been written
yet) instead of raising ``KeyboardInterrupt``: torch runs Python code from C++ while it loads, and
an exception raised there can end the process in ``std::terminate`` (abort, exit status 134, a C++
message) rather than reach Python's handlers. Once imported, a command answers Ctrl-C itself
(:func:`slime.train.cli.main`: ``slime NAME: interrupted``, ``slime train`` saying how to resume).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

__all__ = ["INTERRUPTED", "main"]

INTERRUPTED = 130  # the exit status of a command stopped by SIGINT (128 + 2), as shells report


def _name(argv: Sequence[str]) -> str:
    """``slime COMMAND`` for the message, or ``slime`` when no command was named."""
    if argv and not argv[0].startswith("-") and argv[0].isidentifier():
        return f"slime {argv[0]}"
    return "slime"


def _say_interrupted(name: str) -> None:
    try:
        sys.stderr.write(f"{name}: interrupted\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed or gone: the exit status still says it
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slime ARGS...`` (:func:`slime.train.cli.main`); 130 on Ctrl-C, whenever it comes."""
    args = list(sys.argv[1:] if argv is None else argv)
    name = _name(args)
    try:
        import signal

        def interrupted(signum: int, frame: FrameType | None) -> None:
            _say_interrupted(name)
            os._exit(INTERRUPTED)

        default = signal.getsignal(signal.SIGINT) is signal.default_int_handler
        if default:  # not when SIGINT is ignored (nohup, a background job) or handled already
            try:
                signal.signal(signal.SIGINT, interrupted)
            except ValueError:  # not the main thread: keep KeyboardInterrupt
                default = False
        try:
            from slime.train.cli import main as run
        finally:
            if default:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        return run(args)
    except KeyboardInterrupt:  # before the handler above was set, or from a command not handling it
        _say_interrupted(name)
        return INTERRUPTED
