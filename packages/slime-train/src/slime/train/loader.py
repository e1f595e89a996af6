"""YAML onto :class:`~slime.train.config.RunConfig`: the loader only maps; the dataclasses validate.

Keys left out take the dataclass defaults. Unknown keys, wrong types and out-of-range values raise
:class:`~slime.proto.ConfigError` naming the dotted key path, and so does a file that is not YAML.
The presets shipped with the package (``slime/train/configs/*.yaml``) load by name.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from slime.proto import ConfigError
from slime.train.config import SECTIONS, RunConfig

__all__ = ["config_from_dict", "load_config", "preset_names", "save_config"]


def preset_names() -> list[str]:
    """Names of the YAML presets shipped inside the package (``default``, ``shakespeare``, ...)."""
    folder = resources.files("slime.train") / "configs"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def config_from_dict(data: Any) -> RunConfig:
    """Build a validated RunConfig from nested plain data (``{"model": {...}, "train": {...}}``).

    Raises:
        ConfigError: unknown section or key, wrong type, out-of-range value (``path`` is the key).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of sections, got {type(data).__name__}")
    sections = {}
    for name, values in data.items():
        if not isinstance(name, str) or name not in SECTIONS:
            raise ConfigError(f"unknown section; expected one of {sorted(SECTIONS)}", str(name))
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"expected a mapping, got {values!r}", name)
        cls = SECTIONS[name]
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if not isinstance(key, str) or key not in known:
                raise ConfigError(f"unknown key; expected one of {sorted(known)}", f"{name}.{key}")
        sections[name] = cls(**values)
    return RunConfig(**sections)


def _parse(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as exc:  # PyYAML raises ValueError on dates like 2020-99-99
        raise ConfigError(f"{source} is not valid YAML: {exc}") from exc


def load_config(source: str | os.PathLike[str] | None = None) -> RunConfig:
    """Load a YAML config file, or a shipped preset by name (``"default"`` when None).

    Raises:
        ConfigError: the file is missing or invalid (message names the file and the key path).
    """
    if source is None:
        source = "default"
    if isinstance(source, str) and source in preset_names():
        text = (resources.files("slime.train") / "configs" / f"{source}.yaml").read_text("utf-8")
        return config_from_dict(_parse(text, f"preset {source!r}"))
    path = Path(source)
    if not path.is_file():
        raise ConfigError(
            f"config file {str(path)!r} does not exist and is not a preset; presets: "
            f"{preset_names()}"
        )
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc}") from exc
    return config_from_dict(_parse(text, str(path)))


def save_config(config: RunConfig, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML (atomically: temp file in the same folder, then rename)."""
    path = Path(path)
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
