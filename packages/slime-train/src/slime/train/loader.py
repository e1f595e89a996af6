"""YAML onto :class:`~slime.train.config.RunConfig`: the loader only maps; the dataclasses validate.

Keys left out take the dataclass defaults. Unknown keys, wrong types and out-of-range values raise
:class:`~slime.proto.ConfigError` naming the dotted key path, and so does a file that is not YAML.
The presets shipped with the package (``slime/train/configs/*.yaml``) load by name.

Configs are read with YAML 1.2's number and boolean rules (``1e-3`` is a float, ``010`` is ten,
``yes`` is a string), a key given twice in one mapping is refused by name rather than silently
replaced, and anchors/aliases (``&a`` / ``*a``) are refused: a config never needs them, and their
expansion is how a few hundred bytes of YAML become gigabytes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from slime.proto import ConfigError, shown
from slime.train.config import SECTIONS, RunConfig

__all__ = [
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "parse_overrides",
    "preset_names",
    "save_config",
]


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


_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT_TAG, _FLOAT_TAG, _BOOL_TAG = (f"tag:yaml.org,2002:{t}" for t in ("int", "float", "bool"))


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema scalars, no duplicate keys, no aliases."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"aliases are not allowed in a config (*{event.anchor} at line "
                f"{event.start_mark.line + 1}); write the value out"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN201
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) and key in seen:
                raise ConfigError(
                    f"key {shown(key)} appears twice in one mapping (lines {seen[key]} and {line})"
                )
            if isinstance(key, str | int | float | bool):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    base = {"0o": 8, "0x": 16}.get(text[:2], 10)
    return int(text[2:] if base != 10 else text, base)


def _yaml_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = loader.construct_scalar(node).lower().replace(".inf", "inf").replace(".nan", "nan")
    return float(text)


def _yaml_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return loader.construct_scalar(node).lower() == "true"


# YAML 1.1's implicit int/float/bool rules (octal 010, sexagesimal 1:30, yes/no/on/off, floats that
# need a dot) are replaced by YAML 1.2's core schema.
_ConfigLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp) for tag, regexp in resolvers if tag not in (_INT_TAG, _FLOAT_TAG, _BOOL_TAG)
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(_BOOL_TAG, _BOOL, list("tTfF"))
_ConfigLoader.add_implicit_resolver(_INT_TAG, _INT, list("-+0123456789"))
_ConfigLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+0123456789."))
_ConfigLoader.add_constructor(_INT_TAG, _yaml_int)
_ConfigLoader.add_constructor(_FLOAT_TAG, _yaml_float)
_ConfigLoader.add_constructor(_BOOL_TAG, _yaml_bool)


def _parse(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source} is nested too deeply to be a config") from None
    except (yaml.YAMLError, ValueError) as exc:  # PyYAML raises ValueError on dates like 2020-99-99
        # PyYAML's messages span lines (the mark, a caret under the column): one line at the CLI.
        raise ConfigError(f"{source} is not valid YAML: {' '.join(str(exc).split())}") from exc


def load_config(
    source: str | os.PathLike[str] | None = None, *, required: Sequence[str] = ()
) -> RunConfig:
    """Load a YAML config file, or a shipped preset by name (``"default"`` when None).

    ``required``: sections a file must hold (a run's ``config.yaml``, which the trainer writes
    whole: without them the defaults would stand in for the run's values silently).

    Raises:
        ConfigError: the file is missing or invalid, or lacks a ``required`` section (message
            names the file and the key path).
    """
    if source is None:
        source = "default"
    if isinstance(source, str) and source in preset_names():
        text = (resources.files("slime.train") / "configs" / f"{source}.yaml").read_text("utf-8")
        return config_from_dict(_parse(text, f"preset {source!r}"))
    path = Path(source)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise ConfigError(
            f"config file {str(path)!r} {what} and is not a preset; presets: {preset_names()}"
        )
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:  # no permission, a file vanishing between the check and the read
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from exc
    document = _parse(text, str(path))
    config = config_from_dict(document)
    missing = [name for name in required if name not in (document or {})]
    if missing:
        raise ConfigError(
            f"{path}: it has no {', '.join(missing)} section (the trainer writes every section; "
            "was it emptied or cut short?)"
        )
    return config


def save_config(config: RunConfig, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML (atomically: temp file in the same folder, then rename)."""
    path = Path(path)
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Dotted overrides -> changes: ``["train.lr=3e-4", "model.n_layer=8"]`` gives
    ``{"train": {"lr": 0.0003}, "model": {"n_layer": 8}}``.

    Each value is read as a YAML 1.2 scalar (or flow list) by the config loader's rules (``1e-3`` is a
    float, ``yes`` a string, an empty value null); types and ranges are checked when the changes are
    applied (:func:`apply_overrides`).

    Raises:
        ConfigError: not ``SECTION.KEY=VALUE``, an unknown section or key (named), a key given twice,
            or a value that is not YAML.
    """
    changes: dict[str, dict[str, Any]] = {}
    for item in items:
        key, equals, text = item.partition("=")
        section, dot, name = key.partition(".")
        if not equals or not dot or not section or not name:
            raise ConfigError(f"expected an override SECTION.KEY=VALUE, got {shown(item)}")
        if section not in SECTIONS:
            raise ConfigError(f"unknown section; expected one of {sorted(SECTIONS)}", section)
        known = {f.name for f in dataclasses.fields(SECTIONS[section])}
        if name not in known:
            raise ConfigError(f"unknown key; expected one of {sorted(known)}", key)
        if name in changes.get(section, {}):
            raise ConfigError("given twice; expected one value per key", key)
        value = _parse(text, f"override {key}={shown(text)}")
        changes.setdefault(section, {})[name] = value
    return changes


def apply_overrides(config: RunConfig, items: Sequence[str]) -> RunConfig:
    """``config`` with the dotted overrides ``items`` (see :func:`parse_overrides`) applied and
    validated as a YAML file's values are.

    Raises:
        ConfigError: see :func:`parse_overrides`; a value of the wrong type or out of range.
    """
    return config.replace(**parse_overrides(items))
