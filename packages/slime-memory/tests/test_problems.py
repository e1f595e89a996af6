"""The standard QD test problems: optimum, normalisation, measures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from slime.memory.problems import measure_ranges, rastrigin, sphere
from slime.proto import ArchiveError, ConfigError


@pytest.mark.parametrize("problem", [sphere, rastrigin])
def test_the_optimum_scores_100_and_the_corner_0(problem) -> None:
    dim = 10
    best, _ = problem(torch.full((1, dim), 5.12 * 0.4, dtype=torch.float64))
    corner, _ = problem(torch.full((1, dim), -5.12, dtype=torch.float64))
    torch.testing.assert_close(best, torch.tensor([100.0], dtype=torch.float64))
    torch.testing.assert_close(corner, torch.tensor([0.0], dtype=torch.float64), atol=1e-9, rtol=0)


def test_sphere_matches_its_definition_in_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(scale=4.0, size=(50, 7))
    shift = 5.12 * 0.4
    raw = ((x - shift) ** 2).sum(axis=1)
    worst = (-5.12 - shift) ** 2 * 7
    expected = (raw - worst) / (0 - worst) * 100
    clipped = np.where(np.abs(x) > 5.12, 5.12 / x, x)
    measures = np.stack([clipped[:, :3].sum(axis=1), clipped[:, 3:].sum(axis=1)], axis=1)
    objectives, got = sphere(torch.from_numpy(x))
    np.testing.assert_allclose(objectives.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(got.numpy(), measures, rtol=1e-12)


def test_rastrigin_matches_its_definition() -> None:
    x = torch.tensor([[0.0, 1.0, -3.0]], dtype=torch.float64)
    s = x - 2.048
    raw = 30 + (s**2 - 10 * torch.cos(2 * math.pi * s)).sum()
    c = -5.12 - 2.048
    worst = 3 * (10 + c**2 - 10 * math.cos(2 * math.pi * c))
    objective, measures = rastrigin(x)
    torch.testing.assert_close(objective, ((raw - worst) / -worst * 100).reshape(1))
    torch.testing.assert_close(measures, torch.tensor([[0.0, -2.0]], dtype=torch.float64))


def test_measures_of_any_solution_lie_within_the_ranges() -> None:
    x = torch.randn(500, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 50
    x[0] = 5.12  # the edges themselves
    x[1] = -5.12
    _, measures = sphere(x)
    (low, high), _ = measure_ranges(20)
    assert low == -51.2 and high == 51.2
    assert torch.all((measures >= low) & (measures <= high))
    assert measures[0].tolist() == [51.2, 51.2]


@pytest.mark.parametrize("problem", [sphere, rastrigin])
@pytest.mark.parametrize(
    ("solutions", "says"),
    [
        (torch.zeros(3), r"solutions has shape \(3,\), expected \(n, d\) with d >= 1"),
        (torch.zeros(3, 0), r"solutions has shape \(3, 0\)"),
        (torch.zeros(3, 2, 2), r"solutions has shape \(3, 2, 2\)"),
        (np.zeros((3, 2)), "solutions must be a torch.Tensor of shape"),
        ([[0.0, 0.0]], "solutions must be a torch.Tensor of shape"),
        (torch.zeros(3, 2, dtype=torch.complex64), "solutions must be real numbers"),
    ],
    ids=["1-d", "d=0", "3-d", "ndarray", "list", "complex"],
)
def test_solutions_that_are_no_real_n_by_d_tensor_raise_archive_error(
    problem, solutions, says
) -> None:
    # A 1-d batch raised IndexError inside the function, an ndarray or list AttributeError,
    # d = 0 gave NaN objectives, a 3-d batch objectives of shape (n, 2), and complex input lost
    # its imaginary part with only a warning.
    with pytest.raises(ArchiveError, match=f"{problem.__name__}: {says}"):
        problem(solutions)


@pytest.mark.parametrize("dim", [0, -1, 2.5, "4", True], ids=["0", "neg", "float", "str", "bool"])
def test_measure_ranges_of_a_dimension_that_is_no_positive_int_raises_config_error(dim) -> None:
    # 0 gave ranges of width 0, -1 ranges with low > high, 2.5 and True were used as numbers,
    # and "4" raised TypeError.
    with pytest.raises(ConfigError, match="measure_ranges.dim: dim must be an int >= 1"):
        measure_ranges(dim)
