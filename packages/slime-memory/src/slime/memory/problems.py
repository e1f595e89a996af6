"""Standard quality-diversity test problems: sphere and Rastrigin with linear-projection measures.

As in pyribs' ``examples/sphere.py`` (after Fontaine et al. 2020, "Covariance Matrix Adaptation
for the Rapid Illumination of Behavior Space", section 4):

- the optimum is moved from 0 to ``5.12 * 0.4 = 2.048`` in every coordinate;
- objectives are normalised to ``[0, 100]``: 100 at the optimum, 0 at the corner
  ``x = -5.12`` (a solution further out scores below 0);
- the two measures are the sums of the first and the second half of the solution, after each
  coordinate outside ``[-5.12, 5.12]`` is replaced by ``5.12 / x`` (so the measures stay within
  ``(d / 2) * 5.12`` of zero: :func:`measure_ranges`).

Rastrigin (``10 d + sum((x - s)^2 - 10 cos(2 pi (x - s)))``) is normalised the same way, by its
value at the same corner; pyribs ships no Rastrigin example, so this normalisation is ours. Every
function takes ``(n, d)`` solutions on any device and returns ``(n,)`` objectives and ``(n, 2)``
measures in float64 on the same device.
"""

from __future__ import annotations

import math

import torch
from slime.proto import ArchiveError, ConfigError, shown

__all__ = ["PROBLEMS", "measure_ranges", "rastrigin", "sphere"]

BOUND = 5.12
SHIFT = BOUND * 0.4


def measure_ranges(dim: int) -> list[tuple[float, float]]:
    """The two measures' ranges for solutions of dimension ``dim`` (pyribs' archive bounds).

    Raises:
        ConfigError: ``dim`` is not an int >= 1 (0 gives ranges of width 0, a negative one
            ranges with low > high).
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"dim must be an int >= 1, got {shown(dim)}", "measure_ranges.dim")
    extent = dim / 2 * BOUND
    return [(-extent, extent), (-extent, extent)]


def linear_projection(solutions: torch.Tensor) -> torch.Tensor:
    """``(n, d)`` -> ``(n, 2)``: sums of the clipped first and second halves."""
    x = _as_solutions(solutions, "linear_projection")
    outside = x.abs() > BOUND
    clipped = torch.where(outside, BOUND / torch.where(outside, x, 1.0), x)
    half = x.shape[1] // 2
    return torch.stack([clipped[:, :half].sum(dim=1), clipped[:, half:].sum(dim=1)], dim=1)


def sphere(solutions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted sphere: objectives ``(n,)`` in ``[0, 100]`` at most, measures ``(n, 2)``."""
    x = _as_solutions(solutions, "sphere")
    raw = (x - SHIFT).square().sum(dim=1)
    worst = (-BOUND - SHIFT) ** 2 * x.shape[1]
    return _normalise(raw, worst), linear_projection(x)


def rastrigin(solutions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted Rastrigin: objectives ``(n,)`` (100 at the optimum), measures ``(n, 2)``."""
    x = _as_solutions(solutions, "rastrigin")
    d = x.shape[1]
    shifted = x - SHIFT
    raw = 10 * d + (shifted.square() - 10 * torch.cos(2 * math.pi * shifted)).sum(dim=1)
    corner = -BOUND - SHIFT
    worst = d * (10 + corner**2 - 10 * math.cos(2 * math.pi * corner))
    return _normalise(raw, worst), linear_projection(x)


def _as_solutions(solutions: torch.Tensor, name: str) -> torch.Tensor:
    """``solutions`` as float64, or ArchiveError naming ``name``: not a tensor, not ``(n, d)``
    with ``d >= 1`` (a 1-d batch failed inside torch, ``d = 0`` gave NaN objectives, a 3-d
    one objectives of the wrong shape), complex (the cast drops the imaginary part) or bool."""
    if not isinstance(solutions, torch.Tensor):
        raise ArchiveError(
            f"{name}: solutions must be a torch.Tensor of shape (n, d), got "
            f"{type(solutions).__name__} {shown(solutions)}"
        )
    if solutions.dim() != 2 or solutions.shape[1] < 1:
        raise ArchiveError(
            f"{name}: solutions has shape {tuple(solutions.shape)}, expected (n, d) with d >= 1"
        )
    if solutions.is_complex() or solutions.dtype == torch.bool:
        raise ArchiveError(f"{name}: solutions must be real numbers, got dtype {solutions.dtype}")
    return solutions.to(torch.float64)


def _normalise(raw: torch.Tensor, worst: float) -> torch.Tensor:
    """Raw minimisation values -> 100 at 0, 0 at ``worst``."""
    return (raw - worst) / (0.0 - worst) * 100


PROBLEMS = {"sphere": sphere, "rastrigin": rastrigin}
