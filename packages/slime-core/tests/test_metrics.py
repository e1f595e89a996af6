"""MetricsCollector: per-forward latency, throughput, memory and counters, injected."""

import pytest
import torch
from slime.core.observability import MetricsCollector
from slime.proto import ConfigError


def test_each_timed_forward_adds_one_latency_and_its_tokens():
    metrics = MetricsCollector()
    for _ in range(3):
        with metrics.time_forward(tokens=16):
            torch.ones(8).sum()
    summary = metrics.flush()
    assert summary["forwards"] == 3
    assert summary["tokens"] == 48
    assert summary["latency_ms_p95"] >= summary["latency_ms_p50"] > 0


def test_tokens_per_second_is_tokens_over_total_time():
    metrics = MetricsCollector()
    with metrics.time_forward(tokens=1000):
        torch.randn(64, 64) @ torch.randn(64, 64)
    summary = metrics.flush()
    expected = 1000 / (summary["latency_ms_mean"] / 1e3)
    assert summary["tokens_per_s"] == pytest.approx(expected)


def test_counters_accumulate_per_name():
    metrics = MetricsCollector()
    metrics.increment("pod/0/forwards")
    metrics.increment("pod/0/forwards", 2)
    metrics.increment("pod/1/forwards")
    assert metrics.flush()["counters"] == {"pod/0/forwards": 3, "pod/1/forwards": 1}


def test_flush_reports_peak_memory_in_bytes():
    assert MetricsCollector().flush()["peak_memory_bytes"] > 0


def test_summary_before_any_forward_has_no_latency():
    summary = MetricsCollector().flush()
    assert summary["forwards"] == 0
    assert summary["latency_ms_p95"] is None and summary["tokens_per_s"] is None


def test_observations_give_one_value_per_forward():
    metrics = MetricsCollector()
    for _ in range(4):
        with metrics.time_forward(tokens=8):
            pass
    obs = metrics.observations()
    assert len(obs["latency_ms"]) == len(obs["tokens_per_s"]) == 4


def test_reset_forgets_everything():
    metrics = MetricsCollector()
    with metrics.time_forward(tokens=8):
        pass
    metrics.increment("x")
    metrics.reset()
    summary = metrics.flush()
    assert summary["forwards"] == 0 and summary["counters"] == {}


def test_max_pending_must_be_positive():
    with pytest.raises(ConfigError, match="max_pending"):
        MetricsCollector(max_pending=0)


@pytest.mark.gpu
def test_cuda_timing_defers_reading_events_until_flush():
    metrics = MetricsCollector(device="cuda")
    x = torch.randn(256, 256, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            with metrics.time_forward(tokens=256):
                x @ x
    finally:
        torch.cuda.set_sync_debug_mode(0)
    summary = metrics.flush()
    assert summary["forwards"] == 3 and summary["latency_ms_mean"] > 0


@pytest.mark.parametrize("max_pending", [1.5, "5", True, float("nan")])
def test_max_pending_must_be_an_int(max_pending):
    # a float, True and NaN were taken; a string raised TypeError
    with pytest.raises(ConfigError, match="max_pending must be an int >= 1"):
        MetricsCollector(max_pending=max_pending)


@pytest.mark.parametrize("device", ["nvidia", 5.5])
def test_a_device_torch_cannot_read_is_named(device):
    with pytest.raises(ConfigError, match="device: device .* is not a torch device"):
        MetricsCollector(device=device)  # torch's RuntimeError / TypeError before


@pytest.mark.parametrize("tokens", ["a", 1.5, -1, None])
def test_a_token_count_that_is_no_int_is_refused_and_never_poisons_the_summary(tokens):
    # "a" was recorded and every later flush raised TypeError; -1 gave a negative throughput
    metrics = MetricsCollector()
    with pytest.raises(ConfigError, match="tokens: expected an int >= 0, got"):
        with metrics.time_forward(tokens):
            pass
    with metrics.time_forward(4):
        pass
    summary = metrics.flush()
    assert summary["forwards"] == 1 and summary["tokens"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [(("births", "x"), "amount: expected an int"), (("births", 0.5), "amount"), ((5,), "counter")],
)
def test_a_counter_increment_of_no_int_or_no_name_is_refused(args, message):
    metrics = MetricsCollector()
    with pytest.raises(ConfigError, match=message):
        metrics.increment(*args)
    assert metrics.flush()["counters"] == {}
