"""The one error slime.tools adds to slime.proto's hierarchy."""

from __future__ import annotations

import importlib.util

from slime.proto import SlimeError

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(SlimeError, ImportError):
    """An optional dependency of slime-tools is not installed; the message names the extra."""


def require(module: str, extra: str, purpose: str) -> None:
    """Raise MissingExtraError unless ``module`` is importable.

    Args:
        module: the import name to look for (``"onnxruntime"``).
        extra: the slime-tools extra that installs it (``"onnx"``).
        purpose: what needs it, for the message (``"ONNX export"``).
    """
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(
            f"{purpose} needs the '{module}' package, which is not installed; install the "
            f"'{extra}' extra: pip install 'slime-tools[{extra}]'"
        )
