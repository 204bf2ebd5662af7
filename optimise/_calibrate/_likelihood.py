"""What every calibration target shares: an evaluation's counts, the target's interface
and the likelihoods they are built from.

The loss of a target is a negative log-likelihood of its observed file given the
simulated values: a chain of binomials (survival counts, funnel counts) or
weighted least squares, ½ Σ w (observed − simulated)².
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import gammaln

import sim
from optimise._calibrate._observed import ObservedData

__all__ = ["EPS", "Counts", "Link", "Target", "binomial_chain_nll", "binomial_chain_pearson",
           "categories", "wls"]

EPS = 1e-12

Link = tuple[int, float, float, float]
"""One link of a binomial chain: (row, trials, successes, probability)."""


class Counts:
    """Arrays of one evaluation's run, pooled or per replicate as the targets need.

    Read from the engine's dense counts (:class:`sim.RunCounts`): ``occ``
    float64[R, T1, G, S] (agents by replicate, step, segment and stage), ``entries``
    float64[T1, G, S] (entries into each stage, summed over replicates), ``retained``
    and ``eligible`` float64[L] (the acquired customers' retention, summed over
    replicates).
    """

    def __init__(self, counts: sim.RunCounts) -> None:
        self.R = len(counts.seeds)
        self.occ = counts.occupancy.astype(float)
        self.entries = counts.entries.sum(axis=0).astype(float)
        eligible, retained = counts.retention
        self.retained = retained.sum(axis=0).astype(float)
        self.eligible = eligible.sum(axis=0).astype(float)


class Target:
    """One observed file matched to a simulated quantity.

    Attributes:
        kind: ``survival``, ``funnel`` or ``occupancy``.
        weight: the weight of its negative log-likelihood in the loss.
        loss: ``binomial``, ``multinomial`` or ``wls``.
        data: the observed file.
        fit_mask: bool[rows]: the rows fitted (the others are projected: hold-out).
    """

    kind: str
    weight: float
    loss: str
    data: ObservedData
    fit_mask: np.ndarray

    def simulated(self, counts: Counts) -> np.ndarray:
        """The simulated value of each observed row."""
        raise NotImplementedError

    def nll(self, sim_values: np.ndarray) -> float:
        """Negative log-likelihood of the fitted rows."""
        raise NotImplementedError

    def pearson(self, sim_values: np.ndarray) -> tuple[float, int]:
        """Pearson chi-square of the fitted rows and its number of cells."""
        raise NotImplementedError

    def rows(self, sim_values: np.ndarray) -> dict[str, list[Any]]:
        """The fit table's columns of this target: segment, stage, x, observed, fitted,
        low, high (a 95% band of the fitted value at the observed scale)."""
        raise NotImplementedError

    def sizes(self, counts: Counts, sim_values: np.ndarray) -> tuple[float, float] | None:
        """(observed units, simulated units) behind the target's least-sampled series —
        the customers or entrants the data's and the simulation's shares rest on, the
        simulated ones summed over replicates — or None when the data give no size."""
        raise NotImplementedError


def categories(labels: list[Any]) -> tuple[list[Any], np.ndarray]:
    """The distinct labels in order of appearance, and each row's index among them."""
    keys = list(dict.fromkeys(labels))
    index = {k: i for i, k in enumerate(keys)}
    return keys, np.array([index[v] for v in labels], np.int64)


def wls(obs: np.ndarray, fitted: np.ndarray, w: np.ndarray) -> float:
    """Weighted least squares, ½ Σ w (obs − fitted)²."""
    return float(0.5 * np.sum(w * (obs - fitted) ** 2))


def binomial_chain_nll(links: list[Link]) -> float:
    """-log likelihood of counts k drawn as Binomial(m, q) link by link."""
    total = 0.0
    for _, m, k, q in links:
        total -= (gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1)
                  + k * math.log(q) + (m - k) * math.log1p(-q))
    return total


def binomial_chain_pearson(links: list[Link]) -> tuple[float, int]:
    """Pearson chi-square of a binomial chain and its number of cells."""
    return float(sum((k - m * q) ** 2 / max(m * q * (1 - q), EPS)
                     for _, m, k, q in links)), len(links)
