"""The answer of a calibration at its optimum: the fitted parameters with their intervals,
and the fit — observed beside fitted (and projected) values, goodness of fit, hold-out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from scipy import stats

from optimise._calibrate._likelihood import Target
from optimise._calibrate._profile import interval
from optimise._calibrate._space import Space

__all__ = ["Fit", "FittedParameter", "Point", "fit_at", "fitted_parameters"]


@dataclass(frozen=True)
class FittedParameter:
    """One fitted parameter: its value, 95% profile-likelihood interval and Monte Carlo
    standard error."""

    path: str
    value: Any
    low: float
    high: float
    at_bound: tuple[bool, bool] = (False, False)
    """The interval reached the search range's low / high end instead of crossing."""
    mc_se: float = math.nan
    """The Monte Carlo standard error of ``value`` (the mean of the fit and its refits
    on other seed sets; NaN when not computed)."""


@dataclass(frozen=True)
class Point:
    """A point of the parameter space with its loss.

    ``centre`` holds the continuous parameters' unit coordinates
    (:attr:`Space.continuous` order).
    """

    values: dict[str, Any]
    centre: np.ndarray
    loss: float

    @classmethod
    def at(cls, space: Space, values: dict[str, Any], loss: float) -> Point:
        """The point of ``values`` (its unit coordinates computed)."""
        centre = np.array([space.unit(i, float(values[space.params[i].path]))
                           for i in space.continuous])
        return cls(values, centre, loss)


def fitted_parameters(space: Space, point: Point,
                      profiles: Mapping[int, list[tuple[float, float]]]
                      ) -> list[FittedParameter]:
    """Each parameter's value at ``point``, with its interval where it has a profile."""
    fitted = []
    for i, p in enumerate(space.params):
        value = point.values[p.path]
        if i in profiles:
            lo, hi, at_lo, at_hi = interval(profiles[i],
                                            float(point.centre[space.continuous.index(i)]),
                                            point.loss)
            fitted.append(FittedParameter(p.path, float(value), space.value(i, lo),
                                          space.value(i, hi), (at_lo, at_hi)))
        else:
            fitted.append(FittedParameter(p.path, value, math.nan, math.nan))
    return fitted


@dataclass
class Fit:
    """The fit at the optimum.

    Attributes:
        table: one row per observation (``target``, ``segment``, ``stage``, ``x``,
            ``observed``, ``fitted``, ``low``, ``high``, ``role``).
        gof: Pearson χ² over the fitted observations, its degrees of freedom, p-value.
        per_target: each target's nll, χ², cells and loss function.
        holdout: each target's mean absolute error and share inside the band on the
            projected (hold-out) rows.
    """

    table: pa.Table
    gof: dict[str, float]
    per_target: dict[str, dict[str, Any]] = field(default_factory=dict)
    holdout: dict[str, float] = field(default_factory=dict)


_COLUMNS = ("segment", "stage", "x", "observed", "fitted", "low", "high")


def fit_at(targets: list[Target], sims: list[np.ndarray], fitted_dims: int) -> Fit:
    """The fit of ``targets`` to their simulated values ``sims`` at the optimum, whose
    ``fitted_dims`` continuous parameters the goodness of fit's degrees of freedom lose."""
    cols: dict[str, list[Any]] = {"target": [], **{c: [] for c in _COLUMNS}, "role": []}
    chi2, cells = 0.0, 0
    fit = Fit(pa.table({}), {})
    for t, s in zip(targets, sims, strict=True):
        rows = t.rows(s)
        cols["target"] += [t.kind] * len(rows["observed"])
        for c in _COLUMNS:
            cols[c] += rows[c]
        cols["role"] += ["fit" if m else "holdout" for m in t.fit_mask]
        c2, n = t.pearson(s)
        chi2, cells = chi2 + c2, cells + n
        fit.per_target[t.kind] = {"nll": t.nll(s), "chi2": c2, "cells": n, "loss": t.loss}
        if (~t.fit_mask).any():
            fit.holdout.update(_holdout(t, rows))
    df = cells - fitted_dims
    fit.gof = {"chi2": chi2, "df": float(df),
               "p_value": float(stats.chi2.sf(chi2, df)) if df > 0 else math.nan}
    text = ("target", "segment", "stage", "role")
    fit.table = pa.table({c: pa.array(v, pa.string() if c in text else pa.float64())
                          for c, v in cols.items()})
    return fit


def _holdout(t: Target, rows: dict[str, list[Any]]) -> dict[str, float]:
    """Mean absolute error and share inside the band of a target's projected rows."""
    hold = ~t.fit_mask
    obs = np.array(rows["observed"])[hold]
    fit = np.array(rows["fitted"])[hold]
    lo_b, hi_b = np.array(rows["low"])[hold], np.array(rows["high"])[hold]
    return {f"{t.kind}_mean_abs_error": float(np.mean(np.abs(obs - fit))),
            f"{t.kind}_inside_band": float(np.mean((obs >= lo_b) & (obs <= hi_b)))}
