"""SlimeConfig: validated in one place, plain-data round trip."""

import pytest
from slime.core import SlimeConfig
from slime.proto import ConfigError

pytest.importorskip("hypothesis")  # CPU-only property tests; the GPU machine may lack it
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def test_head_dim_defaults_to_width_over_pods():
    assert SlimeConfig(vocab_size=10, n_embd=48, n_pods=6, pod_capacity=8).head_dim == 8


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"n_layer": 1.5}, "n_layer"),
        ({"n_pods": 9, "pod_capacity": 8}, "n_pods"),
        ({"block_size": 65537}, "block_size"),
        ({"tube_capacity": -1}, "tube_capacity"),
        ({"pod_capacity": 65, "n_pods": 4}, "pod_capacity"),
        ({"n_embd": 30, "n_pods": 4}, "head_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"mlp_ratio": 0}, "mlp_ratio"),
        ({"archive_dims": (8, 8, 8, 8)}, "archive_dims"),
        ({"archive_dims": ()}, "archive_dims"),
        ({"archive_dims": (8, 0)}, "archive_dims"),
        ({"archive_device": "cuda"}, "archive_device"),
        ({"tube_decay": 0.0}, "tube_decay"),
        ({"tube_decay": True}, "tube_decay"),  # a bool is no decay rate (it read as 1.0)
        ({"dropout": False}, "dropout"),
        ({"tube_decay": float("nan")}, "tube_decay"),
        ({"kernel_backend": "cuda"}, "kernel_backend"),
        ({"bias": 1}, "bias"),
        ({"memory_budget_bytes": 0}, "memory_budget_bytes"),
    ],
)
def test_invalid_fields_raise_config_error_naming_them(kw, field):
    with pytest.raises(ConfigError) as info:
        SlimeConfig(**{"vocab_size": 10, **kw})
    assert info.value.path == field


def test_unknown_keys_in_from_dict_are_rejected():
    with pytest.raises(ConfigError, match="n_head"):
        SlimeConfig.from_dict({"vocab_size": 10, "n_head": 4})


@given(
    st.integers(1, 100),
    st.integers(1, 8),
    st.sampled_from([(8,), (8, 8), (4, 5, 6)]),
    st.booleans(),
)
def test_to_dict_from_dict_round_trips(vocab, pods, dims, bias):
    cfg = SlimeConfig(
        vocab_size=vocab, n_pods=pods, pod_capacity=8, head_dim=4, archive_dims=dims, bias=bias
    )
    assert SlimeConfig.from_dict(cfg.to_dict()) == cfg


def test_descriptor_names_follow_archive_dims():
    cfg = SlimeConfig(vocab_size=10, archive_dims=(4, 4, 4))
    assert cfg.descriptor_names == ("attention_distance", "activation_sparsity", "weight_spread")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "vocab_size: missing keys"),
        ([], "config: expected a dict"),
        ({1: 2, "a": 3}, "unknown"),
    ],
)
def test_from_dict_names_missing_keys_and_data_that_is_no_dict(data, message):
    with pytest.raises(ConfigError, match=message):  # TypeError before
        SlimeConfig.from_dict(data)
