"""Means over replicates and confidence intervals that stay inside a quantity's range.

A KPI has a range: a share lies in [0, 1], a count is never negative, a
rating stays on its scale. A plain Student-t interval ``mean ± t·s/√n`` over
a few replicates can leave that range (a retention of 55% … 105% over two
replicates). :func:`mean_interval` builds the interval on a scale where the
range is the whole real line and maps it back (the delta method):

* both ends finite, ``[a, b]``: the logit of ``(x - a) / (b - a)``;
* only the lower end finite, ``[a, ∞)``: the log of ``x - a``;
* no finite end: the identity, which is the plain Student-t interval.

The interval is centred (on the transformed scale) on the mean, so it always
contains the mean; it agrees with the plain interval when the standard error
is small beside the distance to the range's ends, and it tightens toward an
end as the mean approaches it. When every replicate sits on an end (all
shares 1), the interval is that end.

With fewer than :data:`FEW_REPLICATES` replicates the Student-t quantile is
so large (12.7 for two, 4.3 for three) that an interval says little;
:func:`too_few` flags it so tables can say so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "FEW_REPLICATES",
    "UNBOUNDED",
    "Bounds",
    "mean_interval",
    "paired_or_welch",
    "t_quantile",
    "too_few",
]

Bounds = tuple[float, float]
"""A quantity's range (low, high); either end may be infinite."""

UNBOUNDED: Bounds = (-math.inf, math.inf)

FEW_REPLICATES = 4
"""Below this many replicates an interval is flagged as too wide to mean much."""


def t_quantile(n: int | np.ndarray, level: float = 0.95) -> float | np.ndarray:
    """Two-sided Student-t quantile for a mean of ``n`` values (``n - 1`` degrees of freedom)."""
    from scipy.special import stdtrit  # on first use: a run of one replicate needs no SciPy

    return stdtrit(np.maximum(np.asarray(n) - 1, 1), 0.5 + level / 2)


def too_few(n: int) -> bool:
    """Whether ``n`` replicates are too few for an interval to mean much."""
    return n < FEW_REPLICATES


def mean_interval(values: np.ndarray | Sequence[float], level: float = 0.95,
                  bounds: Bounds = UNBOUNDED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 and a confidence interval that stays inside ``bounds``.

    NaN values are left out (a KPI undefined in one replicate).

    Args:
        values: ndarray(float): replicates along axis 0 (any further axes are
            kept, e.g. replicates × days).
        level: confidence level.
        bounds: the quantity's range (low, high); ``-inf``/``inf`` for an open end.

    Returns:
        (mean, low, high), each of ``values.shape[1:]`` (0-d arrays for a 1-d
        input); the interval is NaN where fewer than two replicates have a value.

    Example:
        >>> mean, low, high = mean_interval([0.97, 1.0], bounds=(0.0, 1.0))
        >>> 0.0 <= float(low) <= float(mean) <= float(high) <= 1.0
        True
    """
    x = np.asarray(values, dtype=float)
    lo, hi = float(bounds[0]), float(bounds[1])
    n = np.sum(~np.isnan(x), axis=0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = np.where(n > 0, np.nansum(x, axis=0) / np.maximum(n, 1), np.nan)
        dev = np.where(np.isnan(x), 0.0, x - mean)
        sd = np.sqrt(np.sum(dev**2, axis=0) / np.maximum(n - 1, 1))
        # with one replicate there is no interval, and no quantile (SciPy) to look up
        half = (np.where(n > 1, t_quantile(n, level) * sd / np.sqrt(np.maximum(n, 1)), np.nan)
                if np.any(n > 1) else np.full(np.shape(n), np.nan))
        if math.isfinite(lo) and math.isfinite(hi):
            width = hi - lo
            u = (mean - lo) / width
            inside = (u > 0) & (u < 1)
            uu = np.where(inside, u, 0.5)
            centre = np.log(uu) - np.log1p(-uu)
            h = half / width / (uu * (1 - uu))
            low = np.where(inside, lo + width * _expit(centre - h), mean)
            high = np.where(inside, lo + width * _expit(centre + h), mean)
        elif math.isfinite(lo):
            d = mean - lo
            inside = d > 0
            dd = np.where(inside, d, 1.0)
            h = half / dd
            low = np.where(inside, lo + dd * np.exp(-h), mean)
            high = np.where(inside, lo + dd * np.exp(h), mean)
        elif math.isfinite(hi):
            d = hi - mean
            inside = d > 0
            dd = np.where(inside, d, 1.0)
            h = half / dd
            low = np.where(inside, hi - dd * np.exp(h), mean)
            high = np.where(inside, hi - dd * np.exp(-h), mean)
        else:
            low, high = mean - half, mean + half
        # floating-point rounding must not push an end past the mean or the range
        low = np.clip(np.minimum(low, mean), lo, hi)
        high = np.clip(np.maximum(high, mean), lo, hi)
        undefined = np.isnan(half)
        low = np.where(undefined, np.nan, low)
        high = np.where(undefined, np.nan, high)
    return mean, low, high


def _expit(z: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow for large |z|."""
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))),
                    np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def paired_or_welch(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float],
                    paired: bool, level: float = 0.95) -> tuple[float, float, float]:
    """Difference of means ``b − a`` with a Student-t confidence interval.

    Paired (on the differences) when the two sides share their replicate seeds
    (common random numbers), Welch's interval otherwise. A difference has no
    range to respect, so the interval is the plain one.

    Returns:
        (delta, low, high); the interval is NaN with fewer than two values a side.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if paired and x.size == y.size:
        mean, low, high = mean_interval(y - x, level)
        return float(mean), float(low), float(high)
    u, v = x[~np.isnan(x)], y[~np.isnan(y)]
    if u.size == 0 or v.size == 0:
        return math.nan, math.nan, math.nan
    delta = float(v.mean() - u.mean())
    if u.size < 2 or v.size < 2:
        return delta, math.nan, math.nan
    va, vb = u.var(ddof=1) / u.size, v.var(ddof=1) / v.size
    se = math.sqrt(va + vb)
    if se == 0:
        return delta, delta, delta
    dof = (va + vb) ** 2 / (va**2 / (u.size - 1) + vb**2 / (v.size - 1))
    from scipy.special import stdtrit

    half = float(stdtrit(dof, 0.5 + level / 2) * se)
    return delta, delta - half, delta + half
