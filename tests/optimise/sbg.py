"""The shifted-beta-geometric cohort of the calibration tests: the shipped cohort's paths
and the exact (closed-form) likelihood, its maximum and profile intervals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import scipy.optimize as sopt
from scipy.special import betaln

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "scenarios" / "subscription_cohort.yaml"
A_PATH = "segments.all.heterogeneity.active->churned.a"
B_PATH = "segments.all.heterogeneity.active->churned.b"


def survival(a: float, b: float, periods: int) -> np.ndarray:
    """S(0..periods) = B(a, b + t) / B(a, b)."""
    t = np.arange(periods + 1)
    return np.exp(betaln(a, b + t) - betaln(a, b))


def sbg_nll(a: float, b: float, active: np.ndarray) -> float:
    """Exact -log likelihood of cohort counts under sBG (binomial chain, constants dropped)."""
    s = survival(a, b, active.size - 1)
    q = s[1:] / s[:-1]
    m, k = active[:-1], active[1:]
    return float(-np.sum(k * np.log(q) + (m - k) * np.log1p(-q)))


def sbg_mle(active: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """MLE of (a, b) and each one's exact 95% profile-likelihood interval."""
    res = sopt.minimize(lambda x: sbg_nll(*np.exp(x), active), [0.0, 0.0],
                        method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
    best = float(res.fun)
    intervals = []
    for j in (0, 1):
        def profile(v: float, j: int = j) -> float:
            inner = sopt.minimize_scalar(
                lambda y: sbg_nll(*np.exp([v, y] if j == 0 else [y, v]), active),
                bounds=(-6, 6), method="bounded", options={"xatol": 1e-9})
            return float(inner.fun) - best - 3.841458820694124 / 2
        lo = sopt.brentq(profile, res.x[j] - 3, res.x[j])
        hi = sopt.brentq(profile, res.x[j], res.x[j] + 3)
        intervals.append((math.exp(lo), math.exp(hi)))
    return np.exp(res.x), intervals
