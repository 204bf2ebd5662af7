"""The local refinement and the profile-likelihood intervals of a calibration.

The refinement is a bounded Nelder–Mead from the best trial over the continuous
parameters' unit coordinates. A parameter's profile is the loss minimised over
the others along a walk outward from the optimum, in steps that double, until
it rises by χ²₁(0.95)/2; four bisections then place the crossing, and the 95%
interval's ends are where the profile deviance crosses χ²₁(0.95).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import optimize as sopt
from scipy import stats

from optimise._calibrate._evaluator import Evaluator
from optimise._calibrate._space import Space

__all__ = ["CHI2_95", "interval", "nelder_mead", "profile"]

CHI2_95 = float(stats.chi2.ppf(0.95, 1))
"""Profile deviance that bounds a 95% interval (one parameter)."""


def nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, maxfev: int
                ) -> tuple[np.ndarray, float]:
    """Minimise ``f`` over the unit cube from ``x0`` (simplex steps of 0.05): (x, f(x))."""
    d = x0.size
    simplex = [x0.copy()]
    for j in range(d):
        x = x0.copy()
        x[j] = x[j] + 0.05 if x[j] + 0.05 <= 1 else x[j] - 0.05
        simplex.append(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sopt.minimize(f, x0, method="Nelder-Mead", bounds=[(0.0, 1.0)] * d,
                            options={"initial_simplex": np.array(simplex), "xatol": 2e-3,
                                     "fatol": 1e-3, "maxfev": maxfev})
    return np.asarray(res.x, float), float(res.fun)


def profile(ev: Evaluator, space: Space, base: dict[str, Any], j: int,
            centre: np.ndarray, best: float, tick: Callable[[], None]
            ) -> list[tuple[float, float]]:
    """(unit coordinate, profile loss) points of parameter ``j`` walking out from ``centre``."""
    cont = space.continuous
    pos = cont.index(j)
    others = [i for i in cont if i != j]
    points = [(float(centre[pos]), best)]

    def profile_at(u: float, warm: np.ndarray) -> tuple[float, np.ndarray]:
        fixed = space.with_units(base, [u], [j])
        if not others:
            return ev.loss(fixed), warm
        x, fun = nelder_mead(lambda x: ev.loss(space.with_units(fixed, x, others)),
                              warm, maxfev=25 * len(others))
        return fun, x

    half = CHI2_95 / 2
    for direction in (-1.0, 1.0):
        u0 = float(centre[pos])
        inside_u, warm = u0, np.delete(centre, pos)
        h = 0.02
        while True:
            u = min(1.0, max(0.0, u0 + direction * h))
            if u == inside_u:
                break
            fun, x = profile_at(u, warm)
            tick()
            points.append((u, fun))
            if fun - best >= half:
                lo_u, hi_u = inside_u, u
                for _ in range(4):
                    mid = (lo_u + hi_u) / 2
                    fm, xm = profile_at(mid, warm)
                    tick()
                    points.append((mid, fm))
                    if fm - best >= half:
                        hi_u = mid
                    else:
                        lo_u, warm = mid, xm
                break
            inside_u, warm = u, x
            if u in (0.0, 1.0):
                break
            h *= 2
    return sorted(points)


def interval(points: list[tuple[float, float]], centre: float, best: float
              ) -> tuple[float, float, bool, bool]:
    """Unit-coordinate ends where the profile deviance crosses χ²₁(0.95)."""
    half = CHI2_95 / 2
    ends: list[float] = []
    bounded: list[bool] = []
    for side in (-1, 1):
        path = sorted([p for p in points if (p[0] - centre) * side >= 0],
                      key=lambda p: abs(p[0] - centre))
        end, hit = path[-1][0], True
        for a, b in itertools.pairwise(path):
            if b[1] - best >= half > a[1] - best:
                t = (best + half - a[1]) / (b[1] - a[1])
                end, hit = a[0] + t * (b[0] - a[0]), False
                break
        ends.append(end)
        bounded.append(hit)
    return ends[0], ends[1], bounded[0], bounded[1]
