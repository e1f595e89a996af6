"""RunConfig sections validate themselves: types, ranges and cross-field rules, with key paths."""

from __future__ import annotations

import dataclasses

import pytest
from slime.proto import ConfigError
from slime.train.config import (
    MAX_LOG_INTERVAL,
    MAX_STEPS,
    LifecycleConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)


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


# Int fields with no upper bound, and why that is safe.
_UNBOUNDED = {
    # a budget: a larger one only allows more; compared, never allocated (SlimeConfig's field)
    "model.memory_budget_bytes",
}


def test_every_count_and_size_has_an_upper_bound() -> None:
    # 10**12 in train.log_interval was a TypeError traceback (the trainer allocates that many
    # steps' losses); 10**12 steps a run that never ends. Every int of every section has a bound.
    import typing

    from slime.train.config import SECTIONS

    unbounded = []
    for name, section in SECTIONS.items():
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            tp = hints[f.name]
            if tp is int or int in typing.get_args(tp):
                if f.metadata.get("range", (None, None))[1] is None:
                    unbounded.append(f"{name}.{f.name}")
    assert set(unbounded) == _UNBOUNDED


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("train", "steps"),
        ("train", "warmup_iters"),
        ("train", "eval_interval"),
        ("train", "checkpoint_interval"),
        ("train", "max_nonfinite"),
        ("train", "patience"),
        ("lifecycle", "observe_steps"),
        ("lifecycle", "maturity_steps"),
    ],
)
def test_step_counts_are_at_most_a_billion(section: str, key: str) -> None:
    RunConfig().replace(**{section: {key: MAX_STEPS}})
    with pytest.raises(
        ConfigError, match=rf"^{section}\.{key}: expected a value <= {MAX_STEPS}, got {10**12}$"
    ):
        RunConfig().replace(**{section: {key: 10**12}})


def test_lifecycle_intervals_and_phases_are_at_most_a_billion_steps() -> None:
    at_most = {"medium_interval": MAX_STEPS, "slow_interval": MAX_STEPS}
    LifecycleConfig(**at_most, warmup_steps=MAX_STEPS, gentle_steps=MAX_STEPS)
    for key in ("medium_interval", "slow_interval", "warmup_steps", "gentle_steps"):
        with pytest.raises(ConfigError, match=rf"lifecycle\.{key}: expected a value <= "):
            LifecycleConfig(**{**at_most, "gentle_steps": MAX_STEPS, key: MAX_STEPS + 1})


def test_log_interval_is_bounded_by_the_trainers_loss_buffer() -> None:
    assert TrainConfig(log_interval=MAX_LOG_INTERVAL).log_interval == MAX_LOG_INTERVAL
    with pytest.raises(ConfigError, match=r"train\.log_interval: expected a value <= 1048576"):
        TrainConfig(log_interval=10**12)


@pytest.mark.parametrize("device", ["cuda:0", "cuda:7", "cuda:127", "cuda", "cpu", "mps", "auto"])
def test_device_indices_torch_can_hold_are_accepted(device: str) -> None:
    assert TrainConfig(device=device).device == device


@pytest.mark.parametrize(
    "device",
    # torch keeps the index in 8 bits: cuda:256 was cuda:0 and cuda:255 plain cuda, silently;
    # cuda:01 and an index past 2**31 were RuntimeError tracebacks from torch.device
    ["cuda:128", "cuda:255", "cuda:256", "cuda:01", "cuda:99999999999999999999", "cuda:-1"],
)
def test_device_indices_torch_cannot_hold_are_refused(device: str) -> None:
    with pytest.raises(ConfigError, match=r"train\.device: .*\(N from 0 to 127\)"):
        TrainConfig(device=device)


def test_archive_grids_are_at_most_a_million_cells() -> None:
    # Each layer's archive allocates a row per cell: [1024, 1024, 1024] asked for 8 GiB per layer
    # and ended in a RuntimeError traceback from the allocator (or the OOM killer).
    assert ModelConfig(archive_dims=[1024, 1024]).archive_dims == (1024, 1024)
    with pytest.raises(
        ConfigError,
        match=r"model\.archive_dims: expected at most 1048576 cells in all \(the product of the "
        r"dims\), got \[1024, 1024, 2\]: 2097152 cells",
    ):
        ModelConfig(archive_dims=[1024, 1024, 2])
