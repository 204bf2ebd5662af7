"""The funnel and occupancy targets, and the targets of a calibration's observed files.

* funnel counts — multinomial over where the first stage's entrants stopped,
  with the simulated drop-offs: the funnel's shape (its conversions), not its
  level; or weighted least squares on the counts;
* occupancy — weighted least squares, w = 1/sd² (the ``sd`` column) or
  1/max(count, 1).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from optimise._calibrate._likelihood import (
    EPS,
    Counts,
    Link,
    Target,
    binomial_chain_nll,
    binomial_chain_pearson,
    categories,
    wls,
)
from optimise._calibrate._observed import ObservedData, read_observed
from optimise._calibrate._survival import Survival
from sim import DataError, Problem, Scenario

__all__ = ["Funnel", "Occupancy", "make_targets"]


class Funnel(Target):
    """Entries into the listed stages over a window; the file lists them in journey order.

    The multinomial likelihood counts where the entrants of the first stage
    stopped: n_k - n_(k+1) stopped at stage k, n_K reached the last one; the
    probabilities are the simulated entries' drop-offs. Equivalently, each
    stage's count is a binomial draw from the previous one with the simulated
    conversion e_(k+1) / e_k.
    """

    kind = "funnel"

    def __init__(self, data: ObservedData, scenario: Scenario, window: Any,
                 loss: str | None, weight: float, population_scale: float) -> None:
        self.data, self.weight, self.scale = data, weight, population_scale
        self.loss = loss or "multinomial"
        if self.loss == "binomial":
            raise DataError([Problem(data.source, 0, 0, "", "a funnel takes loss multinomial "
                                                            "or wls")])
        sd = scenario.time.step_days
        days = np.arange(scenario.steps + 1) * sd
        start = window.start_day if window is not None else 0.0
        end = window.end_day if window is not None and window.end_day is not None \
            else math.inf
        self.in_window = (days >= start) & (days < end) & (np.arange(days.size) > 0)
        self.groups, self.group = categories(data.labels["segment"])
        self.seg_index = [None if g is None else list(scenario.segments).index(g)
                          for g in self.groups]
        self.stage = np.array([list(scenario.stages).index(str(s))
                               for s in data.labels["stage"]])
        self.counts = data.values["count"]
        self.fit_mask = np.ones(len(data), bool)
        if self.loss == "multinomial":
            for gi in range(len(self.groups)):
                rows = np.flatnonzero(self.group == gi)
                if rows.size < 2:
                    raise DataError([Problem(data.source, int(data.lines[rows[0]]), 0, "stage",
                                             "a funnel needs at least two stages"
                                             + (f" for segment {self.groups[gi]}"
                                                if self.groups[gi] else ""))])
                for a, b in itertools.pairwise(rows):
                    if self.counts[b] > self.counts[a]:
                        raise DataError([Problem(
                            data.source, int(data.lines[b]), 0, "count",
                            f"{self.counts[b]:g} entries after {self.counts[a]:g}: a funnel "
                            f"lists its stages in journey order and its counts do not rise; "
                            f"for counts that can, set loss: wls")])

    def simulated(self, counts: Counts) -> np.ndarray:
        entries = counts.entries[self.in_window].sum(axis=0) / (counts.R * self.scale)  # [G, S]
        out = np.empty(len(self.data))
        for i in range(len(self.data)):
            g = self.seg_index[self.group[i]]
            out[i] = entries[:, self.stage[i]].sum() if g is None else entries[g, self.stage[i]]
        return out

    def _chain(self, e: np.ndarray) -> list[Link]:
        """(row, previous count, count, simulated conversion) along each funnel."""
        links = []
        for gi in range(len(self.groups)):
            rows = np.flatnonzero(self.group == gi)
            for a, b in itertools.pairwise(rows):
                q = float(np.clip(e[b] / e[a] if e[a] > 0 else 0.0, EPS, 1 - EPS))
                links.append((int(b), float(self.counts[a]), float(self.counts[b]), q))
        return links

    def nll(self, e: np.ndarray) -> float:
        if self.loss == "wls":
            return wls(self.counts, e, 1.0 / np.maximum(self.counts, 1.0))
        if np.isnan(e).any():
            return math.inf
        return binomial_chain_nll(self._chain(e))

    def pearson(self, e: np.ndarray) -> tuple[float, int]:
        if self.loss == "wls":
            return float(np.sum((self.counts - e) ** 2 / np.maximum(self.counts, 1.0))), \
                len(self.data)
        return binomial_chain_pearson(self._chain(e))

    def rows(self, e: np.ndarray) -> dict[str, list[Any]]:
        if self.loss == "wls":
            fitted = e
            half = 1.96 * np.sqrt(np.maximum(e, 1))
            low, high = np.maximum(e - half, 0), e + half
        else:
            first = {gi: int(np.flatnonzero(self.group == gi)[0]) for gi in range(len(
                self.groups))}
            n = np.array([self.counts[first[g]] for g in self.group], np.int64)
            top = np.array([e[first[g]] for g in self.group])
            reach = np.clip(np.where(top > 0, e / np.maximum(top, EPS), 0.0), 0, 1)
            fitted = n * reach
            low, high = stats.binom.ppf(0.025, n, reach), stats.binom.ppf(0.975, n, reach)
        return {"segment": [self.groups[g] for g in self.group],
                "stage": list(self.data.labels["stage"]), "x": [None] * len(e),
                "observed": self.counts.tolist(), "fitted": np.asarray(fitted).tolist(),
                "low": np.asarray(low, float).tolist(), "high": np.asarray(high, float).tolist()}

    def sizes(self, counts: Counts, e: np.ndarray) -> tuple[float, float] | None:
        # the entrants of each funnel's first stage, observed and simulated
        worst: tuple[float, float] | None = None
        for gi in range(len(self.groups)):
            first = int(np.flatnonzero(self.group == gi)[0])
            observed = max(float(self.counts[first]), 1.0)
            simulated = float(e[first]) * counts.R * self.scale
            if worst is None or simulated * worst[0] < worst[1] * observed:
                worst = (observed, simulated)
        return worst


class Occupancy(Target):
    kind = "occupancy"

    def __init__(self, data: ObservedData, scenario: Scenario, loss: str | None,
                 weight: float, population_scale: float, period_steps: int,
                 fit_periods: int | None) -> None:
        self.data, self.weight, self.scale = data, weight, population_scale
        self.loss = loss or "wls"
        if self.loss != "wls":
            raise DataError([Problem(data.source, 0, 0, "", "occupancy takes loss wls")])
        self.step = data.values["step"].astype(np.int64)
        self.stage = np.array([list(scenario.stages).index(str(s)) for s in data.labels["stage"]])
        self.seg = [None if g is None else list(scenario.segments).index(g)
                    for g in data.labels["segment"]]
        self.counts = data.values["count"]
        sd = data.values["sd"]
        self.sd = sd
        self.w = np.where(np.isfinite(sd), 1.0 / np.maximum(sd, EPS) ** 2,
                          1.0 / np.maximum(self.counts, 1.0))
        self.fit_mask = np.ones(len(data), bool) if fit_periods is None else \
            self.step <= fit_periods * period_steps

    def simulated(self, counts: Counts) -> np.ndarray:
        occ = counts.occ.mean(axis=0) / self.scale                 # [T1, G, S]
        out = np.empty(len(self.data))
        for i in range(len(self.data)):
            g = self.seg[i]
            out[i] = occ[self.step[i], :, self.stage[i]].sum() if g is None \
                else occ[self.step[i], g, self.stage[i]]
        return out

    def nll(self, c: np.ndarray) -> float:
        m = self.fit_mask
        return wls(self.counts[m], c[m], self.w[m])

    def pearson(self, c: np.ndarray) -> tuple[float, int]:
        m = self.fit_mask
        return float(np.sum(self.w[m] * (self.counts[m] - c[m]) ** 2)), int(m.sum())

    def rows(self, c: np.ndarray) -> dict[str, list[Any]]:
        half = 1.96 * np.where(np.isfinite(self.sd), self.sd, np.sqrt(np.maximum(c, 1.0)))
        return {"segment": list(self.data.labels["segment"]),
                "stage": list(self.data.labels["stage"]), "x": self.step.astype(float).tolist(),
                "observed": self.counts.tolist(), "fitted": c.tolist(),
                "low": np.maximum(c - half, 0).tolist(), "high": (c + half).tolist()}

    def sizes(self, counts: Counts, c: np.ndarray) -> tuple[float, float] | None:
        # agents counted over the fitted rows: Poisson-like counts, variance ≈ count
        m = self.fit_mask
        return (max(float(self.counts[m].sum()), 1.0),
                float(np.nansum(c[m])) * counts.R * self.scale)


def make_targets(scenario: Scenario, files: Mapping[str, tuple[Path, Any]], *,
                 period_steps: int, fit_periods: int | None, population_scale: float
                 ) -> list[Target]:
    """One target per observed file, read and checked (kind -> (file, its settings))."""
    targets: list[Target] = []
    for kind, (path, setting) in files.items():
        data = read_observed(path, scenario, kind)
        loss = setting.loss if setting is not None else None
        weight = setting.weight if setting is not None else 1.0
        if kind == "survival":
            targets.append(Survival(data, scenario, setting.cohort if setting else None, loss,
                                    weight, period_steps, fit_periods))
        elif kind == "funnel":
            targets.append(Funnel(data, scenario, setting.window if setting else None, loss,
                                  weight, population_scale))
        else:
            targets.append(Occupancy(data, scenario, loss, weight, population_scale,
                                     period_steps, fit_periods))
    return targets
