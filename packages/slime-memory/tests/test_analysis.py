"""Behavioural-space analysis on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from slime.memory import (
    bartlett_sphericity,
    descriptor_stability,
    descriptor_variance,
    kernel_pca,
    kmo,
)
from slime.proto import ArchiveError


def independent(n: int = 400, k: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def one_factor(n: int = 400, k: int = 4, noise: float = 0.3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    factor = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return factor + noise * torch.randn(n, k, generator=g, dtype=torch.float64)


def test_bartlett_does_not_reject_independent_dimensions() -> None:
    _, p_value = bartlett_sphericity(independent())
    assert p_value > 0.05


def test_bartlett_rejects_strongly_correlated_dimensions() -> None:
    statistic, p_value = bartlett_sphericity(one_factor())
    assert p_value < 1e-10 and statistic > 100


def test_bartlett_statistic_matches_the_formula_with_scipy_chi2() -> None:
    x = one_factor(n=50, k=3, noise=1.0).numpy()
    n, k = x.shape
    expected = -(n - 1 - (2 * k + 5) / 6) * np.log(np.linalg.det(np.corrcoef(x.T)))
    statistic, p_value = bartlett_sphericity(x)
    assert statistic == pytest.approx(expected)
    from scipy.stats import chi2

    assert p_value == pytest.approx(chi2.sf(expected, 3))


def test_kmo_is_low_for_independent_dimensions() -> None:
    assert kmo(independent()).overall < 0.6


def test_kmo_is_high_for_a_shared_factor() -> None:
    result = kmo(one_factor())
    assert result.overall > 0.85
    assert bool((result.per_variable > 0.8).all())


def test_kmo_of_a_two_variable_sample_is_one_half() -> None:
    # With two variables the partial correlation equals the correlation.
    assert kmo(one_factor(k=2)).overall == pytest.approx(0.5)


def test_kmo_rejects_a_constant_dimension_by_index() -> None:
    x = independent()
    x[:, 2] = 1.0
    with pytest.raises(ArchiveError, match="dimension 2 is constant"):
        kmo(x)


def test_non_finite_sample_raises_naming_the_row() -> None:
    x = independent()
    x[7, 1] = float("nan")
    with pytest.raises(ArchiveError, match=r"samples\[7\]"):
        bartlett_sphericity(x)


def test_linear_kernel_pca_matches_covariance_eigenvalues() -> None:
    x = one_factor(n=200)
    result = kernel_pca(x, n_components=2, kernel="linear")
    centred = x - x.mean(dim=0)
    eigenvalues = torch.linalg.eigvalsh(centred.T @ centred).flip(0)
    torch.testing.assert_close(result.eigenvalues, eigenvalues[:2])
    torch.testing.assert_close(result.explained_ratio, eigenvalues[:2] / eigenvalues.sum())


def test_rbf_kernel_pca_embeds_every_sample() -> None:
    result = kernel_pca(one_factor(n=100), n_components=3)
    assert result.embedding.shape == (100, 3)
    assert bool((result.explained_ratio > 0).all()) and float(result.explained_ratio.sum()) <= 1


def test_kernel_pca_rejects_unknown_kernel() -> None:
    with pytest.raises(ArchiveError, match="kernel 'gauss'"):
        kernel_pca(independent(), kernel="gauss")


def test_descriptor_variance_is_the_unbiased_variance() -> None:
    x = independent(n=50)
    torch.testing.assert_close(descriptor_variance(x), x.var(dim=0))


def test_a_still_descriptor_is_perfectly_stable() -> None:
    result = descriptor_stability(torch.ones(10, 3))
    assert (result.mean_step, result.drift) == (0.0, 0.0)
    assert result.spread.tolist() == [0.0, 0.0, 0.0]


def test_a_drifting_descriptor_reports_its_steps_and_drift() -> None:
    series = torch.stack([torch.tensor([float(t), 0.0]) for t in range(5)])
    result = descriptor_stability(series)
    assert (result.mean_step, result.drift) == (1.0, 4.0)


def test_stability_needs_two_observations() -> None:
    with pytest.raises(ArchiveError, match=r"n >= 2"):
        descriptor_stability(torch.ones(1, 2))


@pytest.mark.parametrize(
    "samples",
    [
        np.ones((5, 2), dtype=np.complex128),
        np.array([["1.5", "2"], ["3", "4"], ["5", "7"]]),
        np.ones((5, 2), dtype=bool),
        torch.ones(5, 2, dtype=torch.complex64),
        torch.ones(5, 2, dtype=torch.bool),
    ],
    ids=["numpy-complex", "numpy-str", "numpy-bool", "torch-complex", "torch-bool"],
)
@pytest.mark.parametrize("function", [kmo, bartlett_sphericity, kernel_pca, descriptor_variance])
def test_samples_that_are_not_real_numbers_are_refused(function, samples) -> None:
    # They were cast to float64: the imaginary part dropped, "1.5" parsed, bools 0 and 1.
    with pytest.raises(ArchiveError, match="samples must hold real numbers, got dtype"):
        function(samples)


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"gamma": "a"}, "gamma must be None or a finite number > 0, got 'a'"),
        ({"gamma": -1.0}, "gamma must be .* got -1.0"),
        ({"gamma": float("nan")}, "gamma must be .* got nan"),
        ({"gamma": 10**400}, "gamma must be .* got 1000"),
        ({"seed": -1}, r"seed must be an int in \[0, 2\*\*32\), got -1"),
        ({"seed": "a"}, "seed must be .* got 'a'"),
        ({"seed": 1.5}, "seed must be .* got 1.5"),
        ({"kernel": "precomputed"}, "kernel 'precomputed' is not one of"),
        ({"kernel": ["rbf"]}, r"kernel \['rbf'\] is not one of"),
    ],
    ids=[
        "gamma-str",
        "gamma-negative",
        "gamma-nan",
        "gamma-huge",
        "seed-negative",
        "seed-str",
        "seed-float",
        "kernel-precomputed",
        "kernel-list",
    ],
)
def test_kernel_pca_arguments_are_checked_before_scikit_learn(arguments, says) -> None:
    # scikit-learn raised its own InvalidParameterError / ValueError.
    samples = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ArchiveError, match=says):
        kernel_pca(samples, **arguments)


def test_kmo_and_bartlett_of_huge_finite_samples_are_finite_and_scale_free() -> None:
    # corrcoef overflowed on values near 1e308: NaN results for finite input.
    samples = np.random.default_rng(0).normal(size=(40, 3))
    samples[:, 1] += samples[:, 0]
    huge = samples * 1e307
    assert np.isfinite(kmo(huge).overall)
    assert kmo(huge).overall == pytest.approx(kmo(samples).overall, rel=1e-12)
    statistic, p_value = bartlett_sphericity(huge)
    assert statistic == pytest.approx(bartlett_sphericity(samples)[0], rel=1e-12)
    assert np.isfinite(p_value)


def test_descriptor_variance_of_huge_finite_samples_is_finite_and_exact() -> None:
    # The mean's sum overflowed near 1e308: a constant column came out NaN, not 0.
    huge = 1.5 * 2.0**1023  # 1.35e308: in units of 2**1023 every step below is exact
    samples = np.array([[huge, 1.0], [huge, 2.0], [huge, 4.0], [huge, 5.0]])
    assert descriptor_variance(samples).tolist() == [0.0, np.var([1.0, 2.0, 4.0, 5.0], ddof=1)]
    # Dividing by a power of two is exact: ordinary samples give numpy's result bit for bit.
    ordinary = np.random.default_rng(0).normal(size=(20, 3)) * np.array([1e150, 1.0, 1e-150])
    assert descriptor_variance(ordinary).tolist() == ordinary.var(axis=0, ddof=1).tolist()


def test_a_variance_beyond_float64_raises_naming_the_dimension() -> None:
    samples = np.array([[0.0, 1e200], [1.0, -1e200]])  # a variance of 2e400
    with pytest.raises(ArchiveError, match=r"variance of dimension 1 is beyond the float64"):
        descriptor_variance(samples)


def test_descriptor_stability_of_huge_finite_series_is_finite() -> None:
    # np.linalg.norm squared the steps (inf from about 1.3e154) and the spread's variance
    # overflowed: inf or NaN for finite series whose answers are finite.
    huge = 1.5 * 2.0**1023
    series = torch.tensor([[0.0, huge], [1e200, huge], [3e200, huge]], dtype=torch.float64)
    result = descriptor_stability(series)
    assert result.mean_step == pytest.approx(1.5e200, rel=1e-15)
    assert result.drift == pytest.approx(3e200, rel=1e-15)
    expected = np.std([0.0, 1.0, 3.0]) * 1e200
    assert result.spread[0].item() == pytest.approx(expected, rel=1e-15)
    assert result.spread[1].item() == 0.0
    # Steps of 1.41e308 are finite, and so is the spread of 1e308 and 0.
    corners = descriptor_stability(np.array([[1e308, 1e308], [0.0, 0.0], [1e308, 1e308]]))
    assert corners.mean_step == pytest.approx(2**0.5 * 1e308, rel=1e-15)
    assert corners.drift == 0.0
    assert descriptor_stability(np.array([[1e308], [0.0]])).spread.item() == 5e307


@pytest.mark.parametrize(
    ("series", "says"),
    [
        ([[1e308, 0.0], [-1e308, 0.0]], "length of a step"),  # the difference overflows
        ([[1.5e308, 1.5e308], [0.0, 0.0]], "length of a step"),  # the norm does
        ([[-1e308, -1e308], [0.0, 0.0], [1e308, 1e308]], "length of the drift"),
    ],
)
def test_a_step_or_drift_beyond_float64_raises(series, says) -> None:
    with pytest.raises(ArchiveError, match=f"{says} between observations is beyond the float64"):
        descriptor_stability(np.array(series))


@pytest.mark.parametrize("kernel", ["rbf", "linear", "poly"])
def test_a_kernel_matrix_beyond_float64_raises_archive_error(kernel) -> None:
    # Finite samples near 1e300 overflow the squared distances / dot products: scikit-learn
    # raised its own ValueError ("Input X contains NaN ..." or "... infinity or a value too
    # large for dtype('float64')").
    samples = torch.tensor([[1e300, -2e300], [3e299, 1e300], [-1e300, 5e299]], dtype=torch.float64)
    with pytest.raises(ArchiveError, match=f"the {kernel} kernel matrix is beyond the float64"):
        kernel_pca(samples, n_components=1, kernel=kernel)


@pytest.mark.parametrize("shape", [(3, 5), (4, 4)], ids=["n<k", "n=k"])
def test_kmo_of_no_more_samples_than_dimensions_raises_instead_of_nan(shape) -> None:
    # The correlation matrix of n <= k samples is singular, but np.linalg.inv inverted it
    # numerically: KMO came back NaN for (3, 5) with only RuntimeWarnings, and 0.289 (a
    # number from rounding noise) for (4, 4).
    samples = np.random.default_rng(0).normal(size=shape)
    with pytest.raises(
        ArchiveError, match=rf"samples has shape \({shape[0]}, {shape[1]}\); KMO needs n > k"
    ):
        kmo(samples)


@pytest.mark.parametrize(
    ("samples", "kernel"),
    [
        (np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]), "cosine"),
        (np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 1.0]]) * 1e-300, "rbf"),
    ],
    ids=["cosine-collinear", "rbf-tiny"],
)
def test_kernel_pca_of_samples_without_kernel_variance_raises_instead_of_inf(
    samples, kernel
) -> None:
    # Distinct samples whose kernel matrix is constant (every cosine 1; every rbf value 1)
    # have a centred kernel of trace 0: explained_ratio came back [inf] or [nan].
    with pytest.raises(ArchiveError, match=f"samples have no variance under the {kernel} kernel"):
        kernel_pca(samples, n_components=1, kernel=kernel)
