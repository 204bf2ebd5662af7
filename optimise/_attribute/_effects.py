"""Removal effects and Shapley values from the coalitions' paired values.

All numbers are computed per replicate first (every coalition ran the same
replicates on the same seeds) and summarised over replicates afterwards, so the
noise the coalitions share cancels.

Shapley values of the game ``v(S)`` = the KPI with only the players in ``S`` switched
on (every other touchpoint as in the scenario):

* *exact*: ``phi_i = sum over S without i of |S|! (n - |S| - 1)! / n! (v(S + i) - v(S))``,
  every subset simulated; per replicate the values add up to ``v(all) - v(none)``;
* *sampled*: the average marginal contribution of ``i`` over random orders of the
  players, in antithetic pairs (an order and its reverse); every order's
  contributions add up to ``v(all) - v(none)`` too, so the sampled values do. Their
  standard error combines the spread over replicates and over order pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sim.stats import UNBOUNDED, Bounds, mean_interval, t_quantile

__all__ = ["difference_bounds", "exact_shapley", "sampled_orders", "sampled_shapley",
           "summarise_effect"]


def difference_bounds(bounds: Bounds) -> Bounds:
    """The range of a difference of two values of a quantity in ``bounds``."""
    lo, hi = bounds
    if math.isfinite(lo) and math.isfinite(hi):
        return (lo - hi, hi - lo)
    return UNBOUNDED


def summarise_effect(per_replicate: np.ndarray, bounds: Bounds = UNBOUNDED,
                     level: float = 0.95) -> tuple[float, float, float]:
    """Mean and confidence interval of a paired effect over replicates."""
    mean, low, high = mean_interval(per_replicate, level, bounds)
    return float(mean), float(low), float(high)


def exact_shapley(values: np.ndarray) -> np.ndarray:
    """Exact Shapley values from the value of every coalition.

    Args:
        values: float64[2**n, R]: row ``mask`` holds v(players in mask), per replicate.

    Returns:
        float64[n, R]: each player's Shapley value per replicate.
    """
    size = values.shape[0]
    n = size.bit_length() - 1
    masks = np.arange(size)
    ones = np.array([bin(m).count("1") for m in range(size)])
    weight = np.array([math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
                       if k < n else 0.0 for k in range(n + 1)])
    out = np.zeros((n, values.shape[1]))
    for i in range(n):
        without = masks[(masks >> i) & 1 == 0]
        w = weight[ones[without]]
        out[i] = (w[:, None] * (values[without | (1 << i)] - values[without])).sum(axis=0)
    return out


def sampled_orders(n: int, pairs: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``pairs`` random orders of ``n`` players, each followed by its reverse."""
    orders: list[np.ndarray] = []
    for _ in range(pairs):
        order = rng.permutation(n)
        orders.extend([order, order[::-1].copy()])
    return orders


def prefix_masks(order: np.ndarray) -> list[int]:
    """The coalitions an order passes through: none, its first player, its first two…"""
    masks = [0]
    for player in order.tolist():
        masks.append(masks[-1] | (1 << player))
    return masks


def sampled_shapley(value_of: dict[int, np.ndarray], orders: Sequence[np.ndarray],
                    level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shapley values sampled over ``orders`` (antithetic pairs, as
    :func:`sampled_orders` gives them).

    Args:
        value_of: mask -> float64[R], for every prefix of every order.
        orders: the orders of the players.

    Returns:
        (mean float64[n], half-width of the confidence interval float64[n],
        per-replicate means float64[n, R]).
    """
    n = len(orders[0])
    reps = next(iter(value_of.values())).shape[0]
    marginal = np.zeros((len(orders), n, reps))
    for k, order in enumerate(orders):
        masks = prefix_masks(order)
        for j, player in enumerate(order.tolist()):
            marginal[k, player] = value_of[masks[j + 1]] - value_of[masks[j]]
    per_rep = marginal.mean(axis=0)                         # [n, R]
    mean = per_rep.mean(axis=1)
    pairs = marginal.reshape(len(orders) // 2, 2, n, reps).mean(axis=(1, 3))   # [P, n]
    p = pairs.shape[0]
    var_orders = pairs.var(axis=0, ddof=1) / p if p > 1 else np.full(n, np.nan)
    var_reps = per_rep.var(axis=1, ddof=1) / reps if reps > 1 else np.zeros(n)
    dof = max(min(p, reps if reps > 1 else p), 2)
    half = float(t_quantile(dof, level)) * np.sqrt(var_orders + var_reps)
    return mean, half, per_rep
