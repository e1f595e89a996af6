"""Behavioural-space analysis: are these descriptor dimensions meaningful, and are they stable?

Slow-timescale statistics over a sample of descriptors ``(n, k)`` (one row per component or per
observation). They run on the host in float64; the inputs may live on any device.

- :func:`kmo`: Kaiser-Meyer-Olkin sampling adequacy. Near 1 when the dimensions share structure
  (their correlations are not explained away pairwise), near or below 0.5 when they are unrelated.
- :func:`bartlett_sphericity`: tests whether the correlation matrix is the identity. A small p-value
  says the dimensions are correlated, i.e. worth a joint (reduced) description.
- :func:`kernel_pca`: non-linear principal components of the descriptor cloud.
- :func:`descriptor_variance`, :func:`descriptor_stability`: spread across components, drift of one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import chi2
from sklearn.decomposition import KernelPCA
from sklearn.metrics.pairwise import pairwise_kernels
from slime.proto import ArchiveError, shown

__all__ = [
    "KMOResult",
    "KernelPCAResult",
    "StabilityResult",
    "bartlett_sphericity",
    "descriptor_stability",
    "descriptor_variance",
    "kernel_pca",
    "kmo",
]

_KERNELS = ("linear", "poly", "rbf", "sigmoid", "cosine")
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


@dataclass(frozen=True)
class KMOResult:
    """``overall`` KMO in ``[0, 1]`` and ``per_variable`` ``(k,)`` measures of sampling adequacy."""

    overall: float
    per_variable: torch.Tensor


@dataclass(frozen=True)
class KernelPCAResult:
    """``embedding`` ``(n, c)``, ``eigenvalues`` ``(c,)`` and the share of the centred kernel's
    total variance each component explains, ``explained_ratio`` ``(c,)``."""

    embedding: torch.Tensor
    eigenvalues: torch.Tensor
    explained_ratio: torch.Tensor


@dataclass(frozen=True)
class StabilityResult:
    """How one component's descriptor moves over ``t`` observations.

    ``mean_step``: mean Euclidean distance between consecutive descriptors. ``drift``: distance
    from the first to the last. ``spread`` ``(k,)``: standard deviation of each dimension over time.
    """

    mean_step: float
    drift: float
    spread: torch.Tensor


def _matrix(samples: torch.Tensor | np.ndarray, name: str, min_rows: int) -> np.ndarray:
    if isinstance(samples, torch.Tensor):
        if not (samples.is_floating_point() or samples.dtype in _INTEGER_DTYPES):
            # complex would lose its imaginary part, bool become 0 and 1
            raise ArchiveError(f"{name} must hold real numbers, got dtype {samples.dtype}")
        if samples.is_meta:
            raise ArchiveError(f"{name} is on the meta device (no data)")
        array = samples.detach().to(device="cpu", dtype=torch.float64).numpy()
    elif isinstance(samples, np.ndarray):
        if samples.dtype.kind not in "iuf":  # complex, strings ("1.5"), objects, bools
            raise ArchiveError(f"{name} must hold real numbers, got dtype {samples.dtype}")
        array = samples.astype(np.float64)
    else:
        raise ArchiveError(f"{name} must be a tensor or array, got {type(samples).__name__}")
    if array.ndim != 2 or array.shape[0] < min_rows or array.shape[1] < 1:
        raise ArchiveError(f"{name} has shape {array.shape}, expected (n >= {min_rows}, k >= 1)")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise ArchiveError(f"{name}[{int(np.argmax(bad))}] is not finite (NaN or Inf)")
    return array


def _correlation(array: np.ndarray, name: str) -> np.ndarray:
    if array.shape[1] < 2:
        raise ArchiveError(f"{name} has {array.shape[1]} dimension; correlation needs >= 2")
    # Correlation does not change when a column is scaled: dividing each by its largest
    # magnitude first keeps sums of finite values near 1e308 from overflowing (NaN results).
    largest = np.abs(array).max(axis=0)
    array = array / np.where(largest > 0, largest, 1.0)
    std = array.std(axis=0)
    flat = np.flatnonzero(std == 0)
    if flat.size:
        raise ArchiveError(f"{name} dimension {int(flat[0])} is constant; it has no correlation")
    return np.corrcoef(array, rowvar=False)


def kmo(samples: torch.Tensor | np.ndarray) -> KMOResult:
    """Kaiser-Meyer-Olkin measure of ``samples`` ``(n, k)``, k >= 2.

    Compares squared correlations with squared partial correlations (from the inverse correlation
    matrix). Raises ArchiveError for a constant or linearly dependent dimension, or for no
    more samples than dimensions (``n <= k``: the correlation matrix is singular).
    """
    array = _matrix(samples, "samples", min_rows=3)
    n, k = array.shape
    if n <= k:  # the correlation matrix has rank at most n - 1 < k: singular
        raise ArchiveError(f"samples has shape {array.shape}; KMO needs n > k")
    corr = _correlation(array, "samples")
    dependent = "samples have linearly dependent dimensions; KMO is undefined"
    try:
        inverse = np.linalg.inv(corr)
    except np.linalg.LinAlgError as e:
        raise ArchiveError(dependent) from e
    # A numerically singular matrix can still invert, into non-positive or non-finite partial
    # variances (NaN from their square roots).
    diagonal = np.diag(inverse)
    if not (np.isfinite(inverse).all() and (diagonal > 0).all()):
        raise ArchiveError(dependent)
    scale = np.sqrt(np.outer(diagonal, diagonal))
    partial = -inverse / scale
    off = ~np.eye(corr.shape[0], dtype=bool)
    r2 = np.where(off, corr**2, 0.0)
    p2 = np.where(off, partial**2, 0.0)
    per_variable = r2.sum(axis=0) / (r2.sum(axis=0) + p2.sum(axis=0))
    overall = r2.sum() / (r2.sum() + p2.sum())
    return KMOResult(overall=float(overall), per_variable=torch.from_numpy(per_variable))


def bartlett_sphericity(samples: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """Bartlett's test that the correlation matrix of ``samples`` ``(n, k)`` is the identity.

    Returns:
        ``(statistic, p_value)``: chi-square with ``k (k - 1) / 2`` degrees of freedom.
    """
    array = _matrix(samples, "samples", min_rows=3)
    n, k = array.shape
    if n <= k:
        raise ArchiveError(f"samples has shape {array.shape}; Bartlett's test needs n > k")
    sign, logdet = np.linalg.slogdet(_correlation(array, "samples"))
    if sign <= 0:
        raise ArchiveError("samples have linearly dependent dimensions; Bartlett's test undefined")
    statistic = -(n - 1 - (2 * k + 5) / 6) * logdet
    return float(statistic), float(chi2.sf(statistic, k * (k - 1) / 2))


def kernel_pca(
    samples: torch.Tensor | np.ndarray,
    n_components: int = 2,
    kernel: str = "rbf",
    *,
    gamma: float | None = None,
    seed: int = 0,
) -> KernelPCAResult:
    """Kernel PCA (scikit-learn) of ``samples`` ``(n, k)``.

    Args:
        n_components: components kept, 1..n.
        kernel: one of linear, poly, rbf, sigmoid, cosine.
        gamma: kernel coefficient, a finite number > 0; None means ``1 / k`` (scikit-learn's
            default).
        seed: an int in ``[0, 2**32)``, for the randomised eigensolver scikit-learn may pick
            on large inputs.

    Raises:
        ArchiveError: bad samples, or an argument of the wrong type or range (naming it).
    """
    array = _matrix(samples, "samples", min_rows=2)
    if not isinstance(kernel, str) or kernel not in _KERNELS:
        raise ArchiveError(f"kernel {shown(kernel)} is not one of {_KERNELS}")
    if gamma is not None:
        number = math.nan
        if not isinstance(gamma, bool) and isinstance(gamma, int | float):
            number = float(gamma) if abs(gamma) < 2**1024 else math.inf  # 10**400 overflows
        if not 0 < number < math.inf:  # also refuses NaN
            raise ArchiveError(f"gamma must be None or a finite number > 0, got {shown(gamma)}")
        gamma = number
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ArchiveError(f"seed must be an int in [0, 2**32), got {shown(seed)}")
    n = array.shape[0]
    if isinstance(n_components, bool) or not isinstance(n_components, int):
        raise ArchiveError(f"n_components must be an int, got {n_components!r}")
    if not 1 <= n_components <= n:
        raise ArchiveError(f"n_components must be in 1..{n} (the sample count), got {n_components}")
    if (array == array[0]).all():
        raise ArchiveError("samples are all identical; kernel PCA has no variance to explain")
    model = KernelPCA(n_components=n_components, kernel=kernel, gamma=gamma, random_state=seed)
    # Finite samples can still give a kernel matrix beyond float64 (squared distances or dot
    # products of values near 1e300): scikit-learn then meets NaN/inf in its own input checks.
    overflow = _beyond_float64("samples", f"{kernel} kernel matrix", float(np.abs(array).max()))
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            embedding = model.fit_transform(array)
            gram = pairwise_kernels(
                array,
                metric=kernel,
                filter_params=True,
                gamma=model.gamma_,
                degree=model.degree,
                coef0=model.coef0,
            )
            total = np.trace(gram) - gram.sum() / n  # trace of the centred kernel matrix
    except ValueError as e:
        if "NaN" in str(e) or "infinity" in str(e):
            raise overflow from e
        raise
    eigenvalues = np.ascontiguousarray(model.eigenvalues_)
    if not (np.isfinite(embedding).all() and np.isfinite(eigenvalues).all() and np.isfinite(total)):
        raise overflow
    if not total > 0:  # the ratios would be inf or NaN
        raise ArchiveError(
            f"samples have no variance under the {kernel} kernel (the centred kernel matrix has "
            f"trace {total!r}): e.g. collinear samples under cosine, or samples so close that "
            "rbf sees them as one; kernel PCA has nothing to explain"
        )
    return KernelPCAResult(
        embedding=torch.from_numpy(np.ascontiguousarray(embedding)),
        eigenvalues=torch.from_numpy(eigenvalues),
        explained_ratio=torch.from_numpy(eigenvalues / total),
    )


def _power_of_two_scale(largest: np.ndarray) -> np.ndarray:
    """For each largest magnitude, a power of two at most it (1 for 0): dividing by it is
    exact and leaves magnitudes below 2, so squares and sums of squares cannot overflow."""
    exponent = np.frexp(largest)[1] - 1
    return np.where(largest > 0, np.ldexp(1.0, exponent), 1.0)


def _row_norms(rows: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row of finite ``rows`` ``(m, k)``, each computed on the row
    divided by a power of two near its largest entry (``np.linalg.norm`` squares the entries:
    inf from about 1.3e154, 0 below about 1e-162). A norm beyond float64 is inf."""
    scale = _power_of_two_scale(np.abs(rows).max(axis=1))
    unit = rows / scale[:, None]
    with np.errstate(over="ignore"):
        return np.sqrt(np.einsum("ij,ij->i", unit, unit)) * scale


def _beyond_float64(name: str, what: str, largest: float) -> ArchiveError:
    return ArchiveError(
        f"{name}: the {what} is beyond the float64 range (values up to {shown(largest)}); "
        "rescale the descriptors"
    )


def descriptor_variance(samples: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Unbiased variance of each dimension across ``samples`` ``(n >= 2, k)``: ``(k,)`` float64.

    Each dimension is computed divided by a power of two near its largest magnitude (exact),
    so finite samples near 1e308 give finite results whenever the variance itself is one.

    Raises:
        ArchiveError: samples that are not a finite real ``(n >= 2, k)`` matrix, or a variance
            beyond the float64 range (above about 1.8e308, for values of spread near 1e154 or
            more), naming the dimension.
    """
    array = _matrix(samples, "samples", min_rows=2)
    scale = _power_of_two_scale(np.abs(array).max(axis=0))
    with np.errstate(over="ignore"):
        variance = (array / scale).var(axis=0, ddof=1) * scale * scale
    huge = np.flatnonzero(~np.isfinite(variance))
    if huge.size:
        j = int(huge[0])
        largest = float(np.abs(array[:, j]).max())
        raise _beyond_float64("samples", f"variance of dimension {j}", largest)
    return torch.from_numpy(variance)


def descriptor_stability(series: torch.Tensor | np.ndarray) -> StabilityResult:
    """Movement of one component's descriptor over time, ``series`` ``(t >= 2, k)``.

    Distances and spreads are computed on scaled values (as in :func:`descriptor_variance`), so
    finite series near 1e308 give finite results whenever the results themselves are.

    Raises:
        ArchiveError: a series that is not a finite real ``(t >= 2, k)`` matrix, or a step or
            the drift beyond the float64 range (two observations about 1.8e308 apart).
    """
    array = _matrix(series, "series", min_rows=2)
    largest = float(np.abs(array).max())
    with np.errstate(over="ignore"):
        steps = _distances(np.diff(array, axis=0), "a step", largest)
        drift = float(_distances((array[-1] - array[0])[None], "the drift", largest)[0])
        # A mean of finite steps is at most the largest step, and a standard deviation at
        # most the largest magnitude: computed scaled, both stay finite.
        step_scale = float(_power_of_two_scale(steps.max(keepdims=True))[0])
        mean_step = float((steps / step_scale).mean() * step_scale)
        spread_scale = _power_of_two_scale(np.abs(array).max(axis=0))
        spread = (array / spread_scale).std(axis=0) * spread_scale
    if not (math.isfinite(mean_step) and np.isfinite(spread).all()):  # rounding at the edge
        raise _beyond_float64("series", "mean step or spread", largest)
    return StabilityResult(mean_step=mean_step, drift=drift, spread=torch.from_numpy(spread))


def _distances(moves: np.ndarray, what: str, largest: float) -> np.ndarray:
    """Norms of the rows of ``moves`` (differences of a series' observations), or
    ArchiveError when one is beyond float64 (the difference itself may already be inf)."""
    distance = _row_norms(moves) if np.isfinite(moves).all() else np.array([np.inf])
    if not np.isfinite(distance).all():
        raise _beyond_float64("series", f"length of {what} between observations", largest)
    return distance
