"""Files a slime-tools command may replace: only those it wrote itself, as their mark says."""

from __future__ import annotations

from pathlib import Path

from slime.proto import ConfigError

__all__ = ["check_ours"]


def check_ours(path: Path, written_by: str) -> None:
    """ConfigError unless ``path`` is absent or a regular file whose first 4 KiB hold
    ``written_by`` (a command's mark, e.g. "written by `slime package`")."""
    if not path.exists() and not path.is_symlink():
        return
    ours = False
    if path.is_file() and not path.is_symlink():
        with open(path, "rb") as handle:
            ours = written_by.encode() in handle.read(4096)
    if not ours:
        raise ConfigError(
            f"{path} exists and was not {written_by}; refusing to replace it "
            "(move it away or choose another --out)",
            "out",
        )
