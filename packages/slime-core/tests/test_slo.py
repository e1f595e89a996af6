"""SLOs with error budgets: loaded from plain data, validated, reporting budget burn."""

import pytest
from slime.core.observability import SLO, SLOSet
from slime.proto import ConfigError

pytest.importorskip("hypothesis")  # CPU-only property tests; the GPU machine may lack it
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SPEC = {
    "latency_p95": {"metric": "latency_ms", "max": 10.0, "target": 0.95},
    "throughput": {"metric": "tokens_per_s", "min": 1000.0, "target": 0.9},
}


def test_from_mapping_builds_one_slo_per_entry():
    slos = SLOSet.from_mapping(SPEC).slos
    assert [s.name for s in slos] == ["latency_p95", "throughput"]
    assert slos[0].direction == "max" and slos[1].direction == "min"


def test_budget_burn_is_bad_fraction_over_error_budget():
    report = SLOSet.from_mapping(SPEC).evaluate({"latency_ms": [1.0] * 18 + [20.0] * 2})[0]
    assert report.bad == 2 and report.total == 20
    assert report.budget_burned == pytest.approx(0.1 / 0.05)
    assert not report.met


def test_slo_within_budget_is_met():
    report = SLOSet.from_mapping(SPEC).evaluate({"tokens_per_s": [2000.0] * 10})[1]
    assert report.met and report.budget_burned == 0.0


def test_slo_without_events_burns_nothing():
    report = SLOSet.from_mapping(SPEC).evaluate({})[0]
    assert report.total == 0 and report.budget_burned == 0.0


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"a": {"metric": "nope", "max": 1, "target": 0.9}}, "slo.a.metric"),
        ({"a": {"metric": "latency_ms", "max": 1, "target": 1.5}}, "slo.a.target"),
        ({"a": {"metric": "latency_ms", "max": 1, "min": 0, "target": 0.9}}, "slo.a"),
        ({"a": {"metric": "latency_ms", "target": 0.9}}, "slo.a"),
        ({"a": {"metric": "latency_ms", "max": 1}}, "slo.a"),
        ({"a": {"metric": "latency_ms", "max": 1, "target": 0.9, "extra": 1}}, "slo.a"),
        ({"a": {"metric": "latency_ms", "max": float("nan"), "target": 0.9}}, "slo.a"),
    ],
)
def test_invalid_specs_raise_config_error_naming_the_slo(spec, path):
    with pytest.raises(ConfigError) as info:
        SLOSet.from_mapping(spec)
    assert info.value.path == path


def test_duplicate_names_are_rejected():
    slo = SLO("x", "latency_ms", 1.0, "max", 0.9)
    with pytest.raises(ConfigError, match="duplicate"):
        SLOSet([slo, slo])


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=50))
def test_budget_burn_never_exceeds_one_over_error_budget(values):
    report = SLOSet.from_mapping(SPEC).evaluate({"latency_ms": values})[0]
    assert 0.0 <= report.budget_burned <= 1.0 / 0.05 + 1e-9
    assert report.met == (report.bad / report.total <= 0.05 + 1e-12)
