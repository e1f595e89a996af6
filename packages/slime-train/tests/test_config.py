"""RunConfig sections validate themselves: types, ranges and cross-field rules, with key paths."""

from __future__ import annotations

import pytest
from slime.proto import ConfigError
from slime.train.config import LifecycleConfig, ModelConfig, RunConfig, TrainConfig


def test_defaults_are_valid_and_follow_the_blueprint() -> None:
    cfg = RunConfig()
    assert cfg.lifecycle.medium_interval == 100
    assert cfg.lifecycle.slow_interval == 1000
    assert (cfg.lifecycle.warmup_steps, cfg.lifecycle.gentle_steps) == (1000, 5000)
    assert cfg.lifecycle.loss_gate_ratio == 10.0
    assert (cfg.lifecycle.max_pool_size, cfg.lifecycle.max_archive_size) == (64, 1000)
    assert (cfg.fitness.w_task, cfg.fitness.w_eff, cfg.fitness.w_grad) == (0.7, 0.2, 0.1)


def test_wrong_type_names_the_key_path_and_expected_type() -> None:
    with pytest.raises(ConfigError, match=r"model\.n_layer: expected int, got '2'") as info:
        ModelConfig(n_layer="2")
    assert info.value.path == "model.n_layer"


def test_bool_is_not_accepted_as_int() -> None:
    with pytest.raises(ConfigError, match=r"train\.steps"):
        TrainConfig(steps=True)


def test_int_is_widened_to_float() -> None:
    assert TrainConfig(lr=1).lr == 1.0
    assert isinstance(TrainConfig(lr=1).lr, float)


def test_out_of_range_value_names_the_bound() -> None:
    with pytest.raises(ConfigError, match=r"train\.lr: expected a value > 0.0, got 0.0"):
        TrainConfig(lr=0.0)


def test_pool_size_above_hard_limit_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"lifecycle\.max_pool_size: expected a value <= 64"):
        LifecycleConfig(max_pool_size=65)


def test_literal_field_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"train\.nonfinite: expected one of 'skip' \| 'stop'"):
        TrainConfig(nonfinite="ignore")


def test_gentle_phase_cannot_end_before_warmup() -> None:
    with pytest.raises(ConfigError, match=r"lifecycle\.gentle_steps"):
        LifecycleConfig(warmup_steps=100, gentle_steps=50)


def test_more_live_pods_than_capacity_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"model\.n_pods"):
        ModelConfig(n_pods=9, pod_capacity=8)


def test_bad_device_string_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"train\.device"):
        TrainConfig(device="gpu0")


def test_betas_list_becomes_a_tuple_of_two_floats() -> None:
    assert TrainConfig(betas=[0.8, 0.95]).betas == (0.8, 0.95)
    with pytest.raises(ConfigError, match=r"train\.betas"):
        TrainConfig(betas=[0.9])


def test_replace_changes_fields_and_validates() -> None:
    cfg = RunConfig().replace(train={"steps": 5})
    assert cfg.train.steps == 5
    with pytest.raises(ConfigError, match=r"train\.stepz: unknown key"):
        RunConfig().replace(train={"stepz": 5})
    with pytest.raises(ConfigError, match=r"train\.steps"):
        RunConfig().replace(train={"steps": 0})


def test_compile_is_off_by_default_and_must_be_a_bool() -> None:
    assert TrainConfig().compile is False
    with pytest.raises(ConfigError, match=r"train\.compile: expected bool"):
        TrainConfig(compile="yes")


def test_cuda_graphs_need_compile() -> None:
    assert TrainConfig().cuda_graphs is False
    assert TrainConfig(compile=True, cuda_graphs=True).cuda_graphs is True
    with pytest.raises(ConfigError, match=r"train\.cuda_graphs"):
        TrainConfig(cuda_graphs=True)


def test_absurd_sizes_and_infinite_weight_sums_are_config_errors() -> None:
    from slime.train.config import FitnessConfig

    with pytest.raises(ConfigError, match=r"train\.batch_size: expected a value <="):
        TrainConfig(batch_size=10**30)
    with pytest.raises(ConfigError, match=r"lifecycle\.probe_batch_size"):
        LifecycleConfig(probe_batch_size=10**30)
    with pytest.raises(ConfigError, match=r"model\.vocab_size"):
        ModelConfig(vocab_size=10**30)
    with pytest.raises(ConfigError, match="finite sum"):
        FitnessConfig(w_task=1e308, w_eff=1e308, w_grad=1e308)
