"""Arrays from long tables, and means with Student-t intervals over replicates."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import stdtrit

__all__ = ["cube", "paired_or_welch", "t_interval"]


def cube(table: pa.Table, dims: Sequence[tuple[str, Sequence[object]]], value: str,
         replicates: Sequence[int]) -> np.ndarray:
    """Sum a long table's ``value`` into an array indexed by replicate and ``dims``.

    Args:
        table: rows with a ``replicate`` column, each of ``dims``' columns and ``value``.
        dims: (column, labels) pairs; rows whose label is not listed are dropped.
        value: the column to add up.
        replicates: replicate numbers, in the order of the first axis.

    Returns:
        ndarray(float, ndim=1 + len(dims)): zeros where no row falls.
    """
    shape = (len(replicates), *(len(labels) for _, labels in dims))
    out = np.zeros(shape, dtype=float)
    if table.num_rows == 0:
        return out
    idx = [_positions(table.column("replicate"), list(replicates))]
    idx.extend(_positions(table.column(col), list(labels)) for col, labels in dims)
    keep = np.all([i >= 0 for i in idx], axis=0)
    values = np.asarray(table.column(value).to_numpy(zero_copy_only=False), dtype=float)
    np.add.at(out, tuple(i[keep] for i in idx), values[keep])
    return out


def _positions(column: pa.ChunkedArray, labels: list[object]) -> np.ndarray:
    """Index of each value in ``labels`` (-1 where it is not one of them)."""
    value_set = pa.array(labels).cast(column.type)
    found = pc.index_in(column, value_set=value_set)
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def t_interval(values: np.ndarray, level: float = 0.95
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 and its Student-t interval, ignoring NaN (as ``sim.metrics.summarise``).

    Args:
        values: ndarray(float): replicates along axis 0.
        level: confidence level.

    Returns:
        (mean, low, high), each of ``values.shape[1:]``; the interval is NaN
        where fewer than two replicates have a value.
    """
    values = np.asarray(values, dtype=float)
    n = np.sum(~np.isnan(values), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.nansum(values, axis=0)
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        dev = np.where(np.isnan(values), 0.0, values - mean)
        sd = np.sqrt(np.sum(dev**2, axis=0) / np.maximum(n - 1, 1))
        q = stdtrit(np.maximum(n - 1, 1), 0.5 + level / 2)
        half = np.where(n > 1, q * sd / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, mean - half, mean + half


def paired_or_welch(a: np.ndarray, b: np.ndarray, paired: bool, level: float = 0.95
                    ) -> tuple[float, float, float]:
    """Difference of means b − a with a confidence interval.

    Paired (on the differences) when the two runs share their replicate
    seeds (common random numbers), Welch's interval otherwise.

    Returns:
        (delta, low, high); the interval is NaN with fewer than two values a side.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if paired and a.size == b.size:
        d = b - a
        d = d[~np.isnan(d)]
        if d.size == 0:
            return math.nan, math.nan, math.nan
        mean = float(d.mean())
        if d.size < 2:
            return mean, math.nan, math.nan
        half = float(stdtrit(d.size - 1, 0.5 + level / 2) * d.std(ddof=1) / math.sqrt(d.size))
        return mean, mean - half, mean + half
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan, math.nan
    delta = float(b.mean() - a.mean())
    if a.size < 2 or b.size < 2:
        return delta, math.nan, math.nan
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return delta, delta, delta
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(stdtrit(dof, 0.5 + level / 2) * se)
    return delta, delta - half, delta + half
