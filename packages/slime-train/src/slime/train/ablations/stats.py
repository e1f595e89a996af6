"""Statistics for seed-level comparisons: Student-t confidence intervals, Welch's test, Spearman.

Every function takes plain sequences of per-seed numbers (one value per independent run) and returns
plain floats, so results can go straight into ``results.json``. Values that are not defined (fewer
than two samples, zero variance on both sides, a constant input to a rank correlation) come back as
``None`` rather than as a made-up number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from scipy import stats as sps
from slime.proto import ConfigError

__all__ = [
    "Comparison",
    "Interval",
    "compare",
    "mean_ci",
    "spearman",
    "welch_p",
]

Better = Literal["lower", "higher"]


def _finite(values: Sequence[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ConfigError(f"expected finite values, got {bad[:3]}", name)
    return out


@dataclass(frozen=True)
class Interval:
    """``mean`` with a two-sided ``level`` Student-t interval ``[low, high]`` over ``n`` seeds.

    With ``n == 1`` the interval is undefined (``low``/``high`` None).
    """

    mean: float
    low: float | None
    high: float | None
    std: float | None
    n: int
    level: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_ci(values: Sequence[float], level: float = 0.95, name: str = "values") -> Interval:
    """Mean and Student-t confidence interval of independent samples ``values``.

    Raises:
        ConfigError: no values, a non-finite value, or ``level`` outside (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise ConfigError(f"expected a level in (0, 1), got {level!r}", "level")
    xs = _finite(values, name)
    if not xs:
        raise ConfigError("expected at least one value, got none", name)
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return Interval(mean, None, None, None, 1, level)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, std, n, level)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's unequal-variance t-test; None when undefined."""
    xs, ys = _finite(a, "a"), _finite(b, "b")
    if len(xs) < 2 or len(ys) < 2:
        return None
    if max(xs) == min(xs) and max(ys) == min(ys):
        return None  # no variance on either side: the t statistic is 0/0
    p = float(sps.ttest_ind(xs, ys, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation of paired samples; None for fewer than 3 pairs or a constant side.

    Raises:
        ConfigError: the sequences differ in length or hold a non-finite value.
    """
    xs, ys = _finite(a, "a"), _finite(b, "b")
    if len(xs) != len(ys):
        raise ConfigError(f"expected paired samples, got lengths {len(xs)} and {len(ys)}", "b")
    if len(xs) < 3 or max(xs) == min(xs) or max(ys) == min(ys):
        return None
    rho, _ = sps.spearmanr(xs, ys)  # unpacking works on every scipy version
    rho = float(rho)
    return rho if math.isfinite(rho) else None


@dataclass(frozen=True)
class Comparison:
    """Arm ``a`` against arm ``b`` on one metric, decided by the rule stated before the runs.

    ``outcome``: ``"better"`` when ``a``'s interval lies entirely on the better side of ``b``'s,
    ``"worse"`` when entirely on the worse side, ``"no clear difference"`` when they overlap, and
    ``"undefined"`` when either interval is (one seed).
    """

    metric: str
    better: Better
    a: Interval
    b: Interval
    p_value: float | None
    outcome: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "a": self.a.to_dict(), "b": self.b.to_dict()}


def compare(
    metric: str, a: Sequence[float], b: Sequence[float], better: Better, level: float = 0.95
) -> Comparison:
    """Compare per-seed values of arm ``a`` with arm ``b`` by confidence-interval separation."""
    if better not in ("lower", "higher"):
        raise ConfigError(f"expected 'lower' or 'higher', got {better!r}", "better")
    ia, ib = mean_ci(a, level, f"{metric}.a"), mean_ci(b, level, f"{metric}.b")
    if None in (ia.low, ia.high, ib.low, ib.high):
        outcome = "undefined"
    elif ia.high < ib.low:
        outcome = "better" if better == "lower" else "worse"
    elif ia.low > ib.high:
        outcome = "better" if better == "higher" else "worse"
    else:
        outcome = "no clear difference"
    return Comparison(metric, better, ia, ib, welch_p(a, b), outcome)
