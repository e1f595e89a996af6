"""Seed-level statistics of the ablation suite, checked against scipy's own formulas."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps
from slime.proto import ConfigError
from slime.train.ablations import compare, mean_ci, spearman, welch_p

pytest.importorskip("hypothesis")  # the GPU machine may lack it; these are CPU tests
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

samples = st.lists(
    st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=2, max_size=12
)


@settings(max_examples=60, deadline=None)
@given(samples)
def test_mean_ci_matches_scipy_t_interval(values: list[float]) -> None:
    ci = mean_ci(values)
    assert ci.mean == pytest.approx(sum(values) / len(values), abs=1e-9)
    sem = sps.sem(values)
    if sem == 0:
        assert ci.low == pytest.approx(ci.mean) and ci.high == pytest.approx(ci.mean)
        return
    low, high = sps.t.interval(0.95, len(values) - 1, loc=sum(values) / len(values), scale=sem)
    assert ci.low == pytest.approx(low, rel=1e-9, abs=1e-9)
    assert ci.high == pytest.approx(high, rel=1e-9, abs=1e-9)


def test_mean_ci_of_one_seed_has_no_interval() -> None:
    ci = mean_ci([2.5])
    assert (ci.mean, ci.low, ci.high, ci.n) == (2.5, None, None, 1)


@pytest.mark.parametrize("bad", [[], [1.0, math.nan], [math.inf, 1.0]])
def test_mean_ci_rejects_empty_or_non_finite_values(bad: list[float]) -> None:
    with pytest.raises(ConfigError):
        mean_ci(bad)


def test_compare_calls_the_lower_arm_better_only_when_intervals_separate() -> None:
    assert compare("val_loss", [1.0, 1.1, 0.9], [2.0, 2.1, 1.9], "lower").outcome == "better"
    assert compare("val_loss", [2.0, 2.1, 1.9], [1.0, 1.1, 0.9], "lower").outcome == "worse"
    overlap = compare("val_loss", [1.0, 1.5, 0.5], [1.2, 1.7, 0.7], "lower")
    assert overlap.outcome == "no clear difference"


def test_compare_direction_flips_for_higher_is_better_metrics() -> None:
    assert compare("tokens_per_s", [10.0, 11.0, 12.0], [1.0, 2.0, 3.0], "higher").outcome == (
        "better"
    )


def test_compare_with_a_single_seed_is_undefined() -> None:
    assert compare("val_loss", [1.0], [2.0, 2.1], "lower").outcome == "undefined"


def test_welch_p_matches_scipy_unequal_variance_test() -> None:
    a, b = [1.0, 1.2, 0.9, 1.4], [1.5, 1.9, 1.6]
    assert welch_p(a, b) == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)


def test_welch_p_is_undefined_without_variance_or_samples() -> None:
    assert welch_p([1.0, 1.0], [2.0, 2.0]) is None
    assert welch_p([1.0], [2.0, 3.0]) is None


def test_spearman_matches_scipy_and_is_none_when_undefined() -> None:
    a, b = [0.1, 0.4, 0.2, 0.9], [1.0, 3.0, 2.5, 2.0]
    assert spearman(a, b) == pytest.approx(sps.spearmanr(a, b)[0])
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    assert spearman([1.0, 2.0], [2.0, 1.0]) is None


def test_spearman_rejects_unpaired_samples() -> None:
    with pytest.raises(ConfigError):
        spearman([1.0, 2.0, 3.0], [1.0, 2.0])
