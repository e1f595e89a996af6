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
