"""The survival target: the share of a cohort still customers, period by period.

Counts are a chain of binomials: the customers active at one period survive to
the next with the simulated conditional probability S(p_i)/S(p_i-1); this is
the exact likelihood of a closed cohort's counts. Survival given as shares
only is fitted by weighted least squares.

The cohort is the customers placed at step 0 (``initial``: a closed cohort) or
those acquired during the run (``acquired``: the retention curve of every
acquisition).
"""

from __future__ import annotations

import math
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
from optimise._calibrate._observed import ObservedData
from sim import DataError, Problem, Scenario

__all__ = ["Survival", "closed_cohort"]


class Survival(Target):
    kind = "survival"

    def __init__(self, data: ObservedData, scenario: Scenario, cohort: str | None,
                 loss: str | None, weight: float, period_steps: int,
                 fit_periods: int | None) -> None:
        self.data, self.weight = data, weight
        src = data.source
        closed = closed_cohort(scenario)
        self.cohort = cohort or ("initial" if closed is None else "acquired")
        if self.cohort == "initial" and closed is not None:
            raise DataError([Problem(src, 0, 0, "", f"survival of the initial cohort needs a "
                                                    f"closed cohort, but {closed}; set "
                                                    f"calibrate.observed.survival.cohort: "
                                                    f"acquired")])
        seg = data.labels["segment"]
        if self.cohort == "acquired" and any(g is not None for g in seg):
            raise DataError([Problem(src, int(data.lines[0]), 0, "segment",
                                     "the retention of acquired customers is simulated for "
                                     "all segments together: leave out the segment column")])
        self.groups, self.group = categories(seg)
        period = data.values["period"]
        self.lag = (period * period_steps).astype(np.int64)
        for row in np.flatnonzero(self.lag > scenario.steps):
            i = int(row)
            raise DataError([Problem(src, int(data.lines[i]), 0, "period",
                                     f"period {period[i]:g} lies past the horizon "
                                     f"({scenario.steps // period_steps} periods of "
                                     f"{period_steps * scenario.time.step_days:g} days)")])
        active, share = data.values["active"], data.values["share"]
        size = data.values["cohort_size"]
        n = np.full(len(data), np.nan)
        for gi in range(len(self.groups)):
            rows = np.flatnonzero(self.group == gi)
            sizes = size[rows][np.isfinite(size[rows])]
            if sizes.size:
                n[rows] = sizes[0]
            elif period[rows[0]] == 0 and np.isfinite(active[rows[0]]):
                n[rows] = active[rows[0]]
        self.n = n
        counts = np.where(np.isfinite(active), active, np.round(share * n))
        self.counts = counts
        self.share = np.where(np.isfinite(share), share, active / n)
        has_counts = bool(np.isfinite(counts).all())
        self.loss = loss or ("binomial" if has_counts else "wls")
        if self.loss == "multinomial":
            raise DataError([Problem(src, 0, 0, "", "survival takes loss binomial or wls")])
        if self.loss == "binomial":
            for i in range(len(data)):
                if not np.isfinite(counts[i]):
                    raise DataError([Problem(src, int(data.lines[i]), 0, "cohort_size",
                                             "the binomial likelihood needs counts: give "
                                             "cohort_size (or a period-0 active count), or "
                                             "set loss: wls")])
            for gi in range(len(self.groups)):
                rows = np.flatnonzero(self.group == gi)
                prev = n[rows[0]]
                for row in rows:
                    i = int(row)
                    if counts[i] > prev:
                        raise DataError([Problem(
                            src, int(data.lines[i]), 0, "active",
                            f"{counts[i]:g} active after {prev:g}: survival counts of a "
                            f"cohort cannot rise; for counts that can (win-back), set "
                            f"loss: wls")])
                    prev = counts[i]
        sd = data.values["sd"]
        self.w = np.where(np.isfinite(sd), 1.0 / np.maximum(sd, EPS) ** 2, 1.0)
        self.fit_mask = np.ones(len(data), bool) if fit_periods is None else \
            period <= fit_periods
        self.customer = np.array([s.kind == "customer" for s in scenario.stages.values()])
        self.seg_index = [None if g is None else list(scenario.segments).index(g)
                          for g in self.groups]

    def simulated(self, counts: Counts) -> np.ndarray:
        out = np.empty(len(self.data))
        for gi, g in enumerate(self.seg_index):
            rows = self.group == gi
            if self.cohort == "acquired":
                curve = counts.retained / np.maximum(counts.eligible, 1)
                curve = np.where(counts.eligible > 0, curve, np.nan)
            else:
                occ = counts.occ.sum(axis=0)[:, :, self.customer]   # [T1, G, S_customer]
                active = occ.sum(axis=2)[:, g] if g is not None else occ.sum(axis=(1, 2))
                curve = active / active[0] if active[0] > 0 else np.full(active.shape, np.nan)
            out[rows] = curve[self.lag[rows]]
        return out

    def _chain(self, s: np.ndarray) -> list[Link]:
        """(row, trials, survivors, conditional probability) of each fitted link."""
        links = []
        for gi in range(len(self.groups)):
            rows = np.flatnonzero((self.group == gi) & self.fit_mask)
            prev_n, prev_s = self.n[rows[0]] if rows.size else 0.0, 1.0
            for i in rows:
                if self.lag[i] == 0:
                    continue
                q = float(np.clip(s[i] / prev_s if prev_s > 0 else 0.0, EPS, 1 - EPS))
                links.append((int(i), float(prev_n), float(self.counts[i]), q))
                prev_n, prev_s = self.counts[i], s[i]
        return links

    def nll(self, s: np.ndarray) -> float:
        if np.isnan(s[self.fit_mask]).any():
            return math.inf
        if self.loss == "wls":
            m = self.fit_mask
            return wls(self.share[m], s[m], self.w[m])
        return binomial_chain_nll(self._chain(s))

    def pearson(self, s: np.ndarray) -> tuple[float, int]:
        if self.loss == "wls":
            m = self.fit_mask & (self.lag > 0)
            return float(np.sum(self.w[m] * (self.share[m] - s[m]) ** 2)), int(m.sum())
        return binomial_chain_pearson(self._chain(s))

    def rows(self, s: np.ndarray) -> dict[str, list[Any]]:
        counts = np.isfinite(self.n)
        obs = np.where(counts, self.counts, self.share)
        fitted = np.where(counts, self.n * s, s)
        if self.loss == "wls" and not counts.all():
            half = 1.96 / np.sqrt(self.w)
            low, high = np.clip(s - half, 0, 1), np.clip(s + half, 0, 1)
        else:
            n = np.where(counts, self.n, 0).astype(np.int64)
            p = np.clip(np.nan_to_num(s), 0, 1)
            low = stats.binom.ppf(0.025, n, p)
            high = stats.binom.ppf(0.975, n, p)
        return {"segment": [self.groups[g] for g in self.group], "stage": [None] * len(s),
                "x": self.data.values["period"].tolist(), "observed": obs.tolist(),
                "fitted": fitted.tolist(), "low": np.asarray(low, float).tolist(),
                "high": np.asarray(high, float).tolist()}

    def sizes(self, counts: Counts, s: np.ndarray) -> tuple[float, float] | None:
        worst: tuple[float, float] | None = None
        for gi, g in enumerate(self.seg_index):
            rows = np.flatnonzero(self.group == gi)
            observed = float(self.n[rows[0]])
            if not np.isfinite(observed):
                sd = self.data.values["sd"][rows]
                if not np.isfinite(sd).any():
                    return None
                observed = 0.25 / float(np.nanmin(sd)) ** 2   # n whose share has this sd at ½
            if self.cohort == "acquired":
                simulated = float(counts.eligible[int(self.lag[rows].max())])
            else:
                occ = counts.occ.sum(axis=0)[0, :, self.customer]   # [G, S_customer]
                simulated = float(occ[g].sum() if g is not None else occ.sum())
            if worst is None or simulated * worst[0] < worst[1] * observed:
                worst = (observed, simulated)
        return worst


def closed_cohort(s: Scenario) -> str | None:
    """Why ``s`` is not a closed cohort of customers placed at step 0, or None."""
    variants = [s, s.materialise([n for n in s.interventions])] if s.interventions else [s]
    for v in variants:
        if v.population.arrivals.per_day > 0 or any((g.arrivals_per_day or 0) > 0
                                                    for g in v.segments.values()):
            return "the scenario has arrivals"
        if v.word_of_mouth.referrals is not None and v.word_of_mouth.referrals.per_day > 0:
            return "the scenario has referrals"
    prospects = [p.stage for p in s.population.initial
                 if p.count > 0 and s.stages[p.stage].kind == "prospect"]
    if prospects:
        return f"prospects are placed in {prospects[0]} and may become customers"
    if not any(p.count > 0 and s.stages[p.stage].kind == "customer"
               for p in s.population.initial):
        return "no customers are placed at step 0"
    return None

