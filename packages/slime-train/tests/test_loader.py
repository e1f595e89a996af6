"""The YAML loader maps onto RunConfig and raises only ConfigError, whatever the input."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from slime.proto import ConfigError
from slime.train.config import SECTIONS, RunConfig
from slime.train.loader import config_from_dict, load_config, preset_names, save_config


def test_every_shipped_preset_loads() -> None:
    assert {"default", "shakespeare"} <= set(preset_names())
    for name in preset_names():
        assert isinstance(load_config(name), RunConfig)


def test_missing_keys_take_dataclass_defaults() -> None:
    cfg = config_from_dict({"train": {"steps": 7}})
    assert cfg.train.steps == 7
    assert cfg.model == RunConfig().model


def test_unknown_section_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^optim: unknown section"):
        config_from_dict({"optim": {}})


def test_unknown_key_is_named_with_its_section() -> None:
    with pytest.raises(ConfigError, match=r"^model\.n_layers: unknown key") as info:
        config_from_dict({"model": {"n_layers": 3}})
    assert info.value.path == "model.n_layers"


def test_nested_type_error_carries_the_full_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  betas: [0.9, fast]\n")
    with pytest.raises(ConfigError, match=r"train\.betas\[1\]: expected float, got 'fast'"):
        load_config(path)


def test_non_yaml_file_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_a_yaml_syntax_error_is_one_line_naming_the_file(tmp_path: Path) -> None:
    # PyYAML's own message spans lines (mark, source line, caret); the CLI prints one.
    path = tmp_path / "c.yaml"
    path.write_text("train: {steps: 10}\nx: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"{path} is not valid YAML: ")
    path.write_text("model:\n  n_layer: 2\n\x00")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_a_config_path_that_is_a_folder_is_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a regular file and is not a preset"):
        load_config(tmp_path)


def test_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_saved_config_loads_back_equal(tmp_path: Path) -> None:
    cfg = load_config("shakespeare").replace(train={"steps": 11})
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_keys = {
    name: [f.name for f in cls.__dataclass_fields__.values()] for name, cls in SECTIONS.items()
}
_section_dicts = st.sampled_from(sorted(_keys)).flatmap(
    lambda name: st.tuples(
        st.just(name),
        st.dictionaries(st.sampled_from(_keys[name]) | st.text(max_size=6), _values, max_size=4),
    )
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_section_dicts, max_size=4).map(dict) | _values)
def test_fuzzed_mappings_raise_only_config_error(data: object) -> None:
    try:
        config_from_dict(data)
    except ConfigError:
        pass


_yaml_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60) | st.lists(
    _section_dicts, max_size=3
).map(lambda items: yaml.safe_dump(dict(items)))


@settings(max_examples=200, deadline=None)
@given(_yaml_text)
def test_fuzzed_yaml_files_raise_only_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path)
        except ConfigError:
            pass


def _load_text(tmp_path: Path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path)


def test_numbers_follow_yaml_1_2(tmp_path: Path) -> None:
    cfg = _load_text(tmp_path, "train:\n  lr: 1e-3\n  min_lr: 1e-4\n  steps: 010\n")
    assert cfg.train.lr == 0.001 and cfg.train.min_lr == 0.0001
    assert cfg.train.steps == 10  # YAML 1.1 read 010 as octal 8
    with pytest.raises(ConfigError, match=r"train\.amp: expected bool, got 'yes'"):
        _load_text(tmp_path, "train:\n  amp: yes\n")


@pytest.mark.parametrize(
    "text",
    ["train:\n  steps: 1\ntrain:\n  steps: 2\n", "model:\n  n_layer: 2\n  n_layer: 3\n"],
)
def test_a_key_given_twice_is_refused_by_name(tmp_path: Path, text: str) -> None:
    key = text.splitlines()[-2 if text.startswith("train") else -1].split(":")[0].strip()
    with pytest.raises(ConfigError, match=f"key '{key}' appears twice"):
        _load_text(tmp_path, text)


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for name, prev in zip("bcdefghi", "abcdefgh"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("model:\n  kind: *i")
    with pytest.raises(ConfigError, match="aliases are not allowed"):
        _load_text(tmp_path, "\n".join(lines) + "\n")


def test_deep_nesting_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        _load_text(tmp_path, "model: " + "[" * 10_000 + "]" * 10_000 + "\n")


def test_a_huge_value_is_shown_truncated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load_text(tmp_path, "model:\n  kind: " + "x" * 100_000 + "\n")
    assert len(str(info.value)) < 300
