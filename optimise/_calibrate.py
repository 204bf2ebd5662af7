"""Calibrate a scenario to observed data: fit dotted-path parameters by likelihood.

An evaluation is the scenario with one set of parameter values, simulated with
R replicates on the same seeds for every evaluation (common random numbers),
so the loss is a deterministic function of the parameters. The loss is the
negative log-likelihood of the observed files, summed (each with its weight),
plus the negative log prior of each parameter that has one:

* survival counts — a chain of binomials: the customers active at one period
  survive to the next with the simulated conditional probability S(p_i)/S(p_i-1);
  this is the exact likelihood of a closed cohort's counts;
* funnel counts — multinomial over where the first stage's entrants stopped,
  with the simulated drop-offs: the funnel's shape (its conversions), not its
  level;
* occupancy, and survival given as shares only — weighted least squares,
  ½ Σ w (observed − simulated)², w = 1/sd² (the ``sd`` column) or, for counts,
  1/max(count, 1).

The search is Optuna's CMA-ES over continuous parameters (TPE when a parameter
is an integer or a choice, or when only one parameter is fitted), then a
bounded Nelder–Mead refinement from the best trial, then profile-likelihood
intervals: for each continuous parameter, the loss minimised over the others
along a walk outward from the optimum until it rises by χ²₁(0.95)/2.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pyarrow as pa
from scipy import optimize as sopt
from scipy import stats
from scipy.special import gammaln

import sim
from optimise._files import write_parquet_atomic
from optimise._observed import KINDS, ObservedData, _read_rows, infer_kind, read_observed
from optimise._workers import _fail_dead, _suggest, _worker_id, open_storage
from sim import DataError, Problem, Scenario, SimError
from sim.results import write_file_atomic

__all__ = ["CalibrationResult", "FittedParameter", "calibrate"]

log = logging.getLogger(__name__)

CHI2_95 = float(stats.chi2.ppf(0.95, 1))
"""Profile deviance that bounds a 95% interval (one parameter)."""
_EPS = 1e-12


@dataclass(frozen=True)
class FittedParameter:
    """One fitted parameter: its value and 95% profile-likelihood interval."""

    path: str
    value: Any
    low: float
    high: float
    at_bound: tuple[bool, bool] = (False, False)
    """The interval reached the search range's low / high end instead of crossing."""


@dataclass
class CalibrationResult:
    """What :func:`calibrate` found.

    Attributes:
        parameters: fitted values with intervals (NaN for discrete ones or
            ``intervals="none"``).
        loss: the minimised negative log-likelihood (+ negative log prior).
        fit: one row per observation: observed, fitted (or projected, role
            ``holdout``) and a 95% band of the fitted value at the observed scale.
        gof: Pearson χ² over the fitted observations, its degrees of freedom and p-value.
        scenario: the calibrated scenario (without its ``calibrate`` block).
    """

    study_name: str
    storage: str
    parameters: list[FittedParameter]
    loss: float
    fit: pa.Table
    gof: dict[str, float]
    scenario: Scenario
    trials: pa.Table
    evaluations: int
    profiles: pa.Table | None = None
    holdout: dict[str, float] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)

    @property
    def values(self) -> dict[str, Any]:
        """Fitted value by dotted path."""
        return {p.path: p.value for p in self.parameters}


# ------------------------------------------------------------------- targets


def _categories(labels: list[Any]) -> tuple[list[Any], np.ndarray]:
    keys = list(dict.fromkeys(labels))
    index = {k: i for i, k in enumerate(keys)}
    return keys, np.array([index[v] for v in labels], np.int64)


class _Tables:
    """Arrays of one evaluation's run, pooled or per replicate as the targets need."""

    def __init__(self, result: sim.RunResult, scenario: Scenario) -> None:
        self.R = len(result.seeds)
        stages, segments = list(scenario.stages), list(scenario.segments)
        s_of = {n: i for i, n in enumerate(stages)}
        g_of = {n: i for i, n in enumerate(segments)}
        occ = result.occupancy
        rep = occ.column("replicate").to_numpy()
        rep = np.searchsorted(np.unique(rep), rep)
        step = occ.column("step").to_numpy()
        seg = np.array([g_of[x] for x in occ.column("segment").to_pylist()])
        stg = np.array([s_of[x] for x in occ.column("stage").to_pylist()])
        self.occ = np.zeros((self.R, scenario.steps + 1, len(segments), len(stages)))
        np.add.at(self.occ, (rep, step, seg, stg), occ.column("count").to_numpy())
        flows = result.flows
        self.entries = np.zeros((scenario.steps + 1, len(segments), len(stages)))
        if flows.num_rows:
            np.add.at(self.entries, (
                flows.column("step").to_numpy(),
                np.array([g_of[x] for x in flows.column("segment").to_pylist()]),
                np.array([s_of[x] for x in flows.column("to_stage").to_pylist()])),
                flows.column("count").to_numpy())
        ret = result.retention
        lag = ret.column("lag_steps").to_numpy()
        self.retained = np.bincount(lag, ret.column("retained").to_numpy().astype(float),
                                    minlength=scenario.steps + 1)
        self.eligible = np.bincount(lag, ret.column("eligible").to_numpy().astype(float),
                                    minlength=scenario.steps + 1)


class _Target:
    """One observed file matched to a simulated quantity."""

    kind: str
    weight: float
    loss: str
    data: ObservedData
    fit_mask: np.ndarray

    def simulated(self, tables: _Tables) -> np.ndarray:
        raise NotImplementedError

    def nll(self, sim_values: np.ndarray) -> float:
        raise NotImplementedError

    def pearson(self, sim_values: np.ndarray) -> tuple[float, int]:
        raise NotImplementedError

    def rows(self, sim_values: np.ndarray) -> dict[str, list[Any]]:
        raise NotImplementedError


def _wls(obs: np.ndarray, fitted: np.ndarray, w: np.ndarray) -> float:
    return float(0.5 * np.sum(w * (obs - fitted) ** 2))


def _binomial_chain_nll(links: list[tuple[int, float, float, float]]) -> float:
    """-log likelihood of counts k drawn as Binomial(m, q) link by link."""
    total = 0.0
    for _, m, k, q in links:
        total -= (gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1)
                  + k * math.log(q) + (m - k) * math.log1p(-q))
    return total


def _binomial_chain_pearson(links: list[tuple[int, float, float, float]]) -> tuple[float, int]:
    """Pearson chi-square of a binomial chain and its number of cells."""
    return float(sum((k - m * q) ** 2 / max(m * q * (1 - q), _EPS)
                     for _, m, k, q in links)), len(links)


class _Survival(_Target):
    kind = "survival"

    def __init__(self, data: ObservedData, scenario: Scenario, cohort: str | None,
                 loss: str | None, weight: float, period_steps: int,
                 fit_periods: int | None) -> None:
        self.data, self.weight = data, weight
        src = data.source
        closed = _closed_cohort(scenario)
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
        self.groups, self.group = _categories(seg)
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
        self.w = np.where(np.isfinite(sd), 1.0 / np.maximum(sd, _EPS) ** 2, 1.0)
        self.fit_mask = np.ones(len(data), bool) if fit_periods is None else \
            period <= fit_periods
        self.customer = np.array([s.kind == "customer" for s in scenario.stages.values()])
        self.seg_index = [None if g is None else list(scenario.segments).index(g)
                          for g in self.groups]

    def simulated(self, tables: _Tables) -> np.ndarray:
        out = np.empty(len(self.data))
        for gi, g in enumerate(self.seg_index):
            rows = self.group == gi
            if self.cohort == "acquired":
                curve = tables.retained / np.maximum(tables.eligible, 1)
                curve = np.where(tables.eligible > 0, curve, np.nan)
            else:
                occ = tables.occ.sum(axis=0)[:, :, self.customer]   # [T1, G, S_customer]
                active = occ.sum(axis=2)[:, g] if g is not None else occ.sum(axis=(1, 2))
                curve = active / active[0] if active[0] > 0 else np.full(active.shape, np.nan)
            out[rows] = curve[self.lag[rows]]
        return out

    def _chain(self, s: np.ndarray) -> list[tuple[int, float, float, float]]:
        """(row, trials, survivors, conditional probability) of each fitted link."""
        links = []
        for gi in range(len(self.groups)):
            rows = np.flatnonzero((self.group == gi) & self.fit_mask)
            prev_n, prev_s = self.n[rows[0]] if rows.size else 0.0, 1.0
            for i in rows:
                if self.lag[i] == 0:
                    continue
                q = float(np.clip(s[i] / prev_s if prev_s > 0 else 0.0, _EPS, 1 - _EPS))
                links.append((int(i), float(prev_n), float(self.counts[i]), q))
                prev_n, prev_s = self.counts[i], s[i]
        return links

    def nll(self, s: np.ndarray) -> float:
        if np.isnan(s[self.fit_mask]).any():
            return math.inf
        if self.loss == "wls":
            m = self.fit_mask
            return _wls(self.share[m], s[m], self.w[m])
        return _binomial_chain_nll(self._chain(s))

    def pearson(self, s: np.ndarray) -> tuple[float, int]:
        if self.loss == "wls":
            m = self.fit_mask & (self.lag > 0)
            return float(np.sum(self.w[m] * (self.share[m] - s[m]) ** 2)), int(m.sum())
        return _binomial_chain_pearson(self._chain(s))

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


class _Funnel(_Target):
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
        self.groups, self.group = _categories(data.labels["segment"])
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

    def simulated(self, tables: _Tables) -> np.ndarray:
        entries = tables.entries[self.in_window].sum(axis=0) / (tables.R * self.scale)  # [G, S]
        out = np.empty(len(self.data))
        for i in range(len(self.data)):
            g = self.seg_index[self.group[i]]
            out[i] = entries[:, self.stage[i]].sum() if g is None else entries[g, self.stage[i]]
        return out

    def _chain(self, e: np.ndarray) -> list[tuple[int, float, float, float]]:
        """(row, previous count, count, simulated conversion) along each funnel."""
        links = []
        for gi in range(len(self.groups)):
            rows = np.flatnonzero(self.group == gi)
            for a, b in itertools.pairwise(rows):
                q = float(np.clip(e[b] / e[a] if e[a] > 0 else 0.0, _EPS, 1 - _EPS))
                links.append((int(b), float(self.counts[a]), float(self.counts[b]), q))
        return links

    def nll(self, e: np.ndarray) -> float:
        if self.loss == "wls":
            return _wls(self.counts, e, 1.0 / np.maximum(self.counts, 1.0))
        if np.isnan(e).any():
            return math.inf
        return _binomial_chain_nll(self._chain(e))

    def pearson(self, e: np.ndarray) -> tuple[float, int]:
        if self.loss == "wls":
            return float(np.sum((self.counts - e) ** 2 / np.maximum(self.counts, 1.0))), \
                len(self.data)
        return _binomial_chain_pearson(self._chain(e))

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
            reach = np.clip(np.where(top > 0, e / np.maximum(top, _EPS), 0.0), 0, 1)
            fitted = n * reach
            low, high = stats.binom.ppf(0.025, n, reach), stats.binom.ppf(0.975, n, reach)
        return {"segment": [self.groups[g] for g in self.group],
                "stage": list(self.data.labels["stage"]), "x": [None] * len(e),
                "observed": self.counts.tolist(), "fitted": np.asarray(fitted).tolist(),
                "low": np.asarray(low, float).tolist(), "high": np.asarray(high, float).tolist()}


class _Occupancy(_Target):
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
        self.w = np.where(np.isfinite(sd), 1.0 / np.maximum(sd, _EPS) ** 2,
                          1.0 / np.maximum(self.counts, 1.0))
        self.fit_mask = np.ones(len(data), bool) if fit_periods is None else \
            self.step <= fit_periods * period_steps

    def simulated(self, tables: _Tables) -> np.ndarray:
        occ = tables.occ.mean(axis=0) / self.scale                 # [T1, G, S]
        out = np.empty(len(self.data))
        for i in range(len(self.data)):
            g = self.seg[i]
            out[i] = occ[self.step[i], :, self.stage[i]].sum() if g is None \
                else occ[self.step[i], g, self.stage[i]]
        return out

    def nll(self, c: np.ndarray) -> float:
        m = self.fit_mask
        return _wls(self.counts[m], c[m], self.w[m])

    def pearson(self, c: np.ndarray) -> tuple[float, int]:
        m = self.fit_mask
        return float(np.sum(self.w[m] * (self.counts[m] - c[m]) ** 2)), int(m.sum())

    def rows(self, c: np.ndarray) -> dict[str, list[Any]]:
        half = 1.96 * np.where(np.isfinite(self.sd), self.sd, np.sqrt(np.maximum(c, 1.0)))
        return {"segment": list(self.data.labels["segment"]),
                "stage": list(self.data.labels["stage"]), "x": self.step.astype(float).tolist(),
                "observed": self.counts.tolist(), "fitted": c.tolist(),
                "low": np.maximum(c - half, 0).tolist(), "high": (c + half).tolist()}


def _closed_cohort(s: Scenario) -> str | None:
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


# --------------------------------------------------------------- parameters


class _Space:
    """Parameters ↔ points: continuous ones on unit coordinates, discrete ones fixed."""

    def __init__(self, params: Sequence[Any]) -> None:
        self.params = list(params)
        self.continuous = [i for i, p in enumerate(self.params)
                           if p.choices is None and p.type in ("float", "log")]

    def value(self, i: int, u: float) -> float:
        p = self.params[i]
        u = min(1.0, max(0.0, float(u)))
        if p.type == "log":
            return float(math.exp(math.log(p.low) + u * (math.log(p.high) - math.log(p.low))))
        return float(p.low + u * (p.high - p.low))

    def unit(self, i: int, value: float) -> float:
        p = self.params[i]
        if p.type == "log":
            return (math.log(value) - math.log(p.low)) / (math.log(p.high) - math.log(p.low))
        return (value - p.low) / (p.high - p.low)

    def with_units(self, base: dict[str, Any], units: Sequence[float] | np.ndarray,
                   which: Sequence[int] | None = None) -> dict[str, Any]:
        out = dict(base)
        for i, u in zip(self.continuous if which is None else which, units, strict=True):
            out[self.params[i].path] = self.value(i, u)
        return out

    def prior_nll(self, values: Mapping[str, Any]) -> float:
        total = 0.0
        for p in self.params:
            if p.prior is None:
                continue
            x = float(values[p.path])
            pr = p.prior
            if pr.distribution == "normal":
                lp = stats.norm.logpdf(x, pr.mean, pr.sd)
            elif pr.distribution == "lognormal":
                lp = stats.lognorm.logpdf(x, pr.sigma, scale=math.exp(pr.mu)) if x > 0 \
                    else -math.inf
            else:
                lp = stats.beta.logpdf(x, pr.a, pr.b)
            total -= float(lp)
        return total


# --------------------------------------------------------------- evaluations


class _Evaluator:
    """The loss of a parameter point, on common random numbers, cached on disk."""

    def __init__(self, scenario: Scenario, space: _Space, targets: list[_Target], seed: int,
                 replicates: int, population_scale: float, cache: Path | None) -> None:
        self.scenario, self.space, self.targets = scenario, space, targets
        self.seed, self.replicates, self.scale = seed, replicates, population_scale
        self.cache_path = cache
        self.cache: dict[str, float] = {}
        self.runs = 0
        if cache is not None and cache.exists():
            for line in cache.read_text().splitlines():
                try:
                    row = json.loads(line)
                    self.cache[row["key"]] = float(row["loss"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by an interruption
        self.best: tuple[float, dict[str, Any]] = (math.inf, {})

    @staticmethod
    def key(values: Mapping[str, Any]) -> str:
        return json.dumps({k: (round(v, 12) if isinstance(v, float) else v)
                           for k, v in sorted(values.items())}, sort_keys=True)

    def simulate(self, values: Mapping[str, Any]) -> list[np.ndarray]:
        """Each target's simulated values at ``values``."""
        variant = self.scenario.apply(overrides=dict(values))
        result = sim.run(variant, seed=self.seed, replicates=self.replicates,
                         population_scale=self.scale)
        self.runs += 1
        tables = _Tables(result, variant)
        return [t.simulated(tables) for t in self.targets]

    def loss(self, values: Mapping[str, Any]) -> float:
        k = self.key(values)
        if k in self.cache:
            value = self.cache[k]
        else:
            try:
                sims = self.simulate(values)
            except SimError as exc:  # a combination of values that breaks a scenario rule
                log.debug("no evaluation at %s: %s", k, exc)
                value = math.inf
            else:
                value = sum(t.weight * t.nll(s) for t, s in zip(self.targets, sims,
                                                                 strict=True))
                value += self.space.prior_nll(values)
            self.cache[k] = value
            if self.cache_path is not None:
                with open(self.cache_path, "a") as fh:
                    fh.write(json.dumps({"key": k, "loss": value if math.isfinite(value)
                                         else None}) + "\n")
        if value < self.best[0]:
            self.best = (value, dict(values))
        return value if math.isfinite(value) else math.inf


# ----------------------------------------------------------------- phases


def _nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, maxfev: int
                 ) -> tuple[np.ndarray, float]:
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


def _profile(ev: _Evaluator, space: _Space, base: dict[str, Any], j: int,
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
        x, fun = _nelder_mead(lambda x: ev.loss(space.with_units(fixed, x, others)),
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


def _interval(points: list[tuple[float, float]], centre: float, best: float
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


# ------------------------------------------------------------------ the API


def _resolve_observed(scenario: Scenario, observed: Any, base_dir: Path
                      ) -> dict[str, tuple[Path, Any]]:
    """Kind -> (file, target settings) from the block and the ``observed`` argument."""
    block = scenario.calibrate
    assert block is not None
    settings = {k: getattr(block.observed, k) for k in KINDS}
    files: dict[str, Path] = {}
    for kind, target in settings.items():
        if target is not None and target.file is not None:
            files[kind] = Path(target.file) if Path(target.file).is_absolute() \
                else base_dir / target.file
    given: list[tuple[str | None, Path]] = []
    if isinstance(observed, Mapping):
        given = [(str(k), Path(v)) for k, v in observed.items()]
    elif isinstance(observed, (str, os.PathLike)):
        given = [(None, Path(observed))]
    elif observed is not None:
        given = [(None, Path(v)) for v in observed]
    if given:
        files = {}
        for given_kind, path in given:
            if given_kind is None:
                header, _ = _read_rows(path)
                given_kind = infer_kind(header)
                if given_kind is None:
                    raise DataError([Problem(str(path), 1, 0, "",
                                             "cannot tell what the file holds: survival files "
                                             "have a period column, occupancy files a step "
                                             "column, funnel files stage and count")])
            if given_kind not in KINDS:
                raise SimError(f"unknown observed kind {given_kind!r}: use {', '.join(KINDS)}")
            if given_kind in files:
                raise SimError(f"two observed {given_kind} files: {files[given_kind]} and "
                               f"{path}")
            files[given_kind] = path
    if not files:
        raise SimError("no observed data: give --observed FILE or calibrate.observed.<kind>.file")
    return {k: (p, settings[k]) for k, p in files.items()}


def _fingerprint(scenario: Scenario, files: Mapping[str, tuple[Path, Any]], **settings: Any
                 ) -> str:
    h = hashlib.sha256(scenario.content_hash.encode())
    for kind in sorted(files):
        h.update(kind.encode())
        h.update(files[kind][0].read_bytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def calibrate(scenario: Scenario | str | os.PathLike[str],
              observed: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
              | Mapping[str, str | os.PathLike[str]] | None = None, *,
              fit_periods: int | None = None, trials: int | None = None,
              replicates: int | None = None, population_scale: float | None = None,
              intervals: str | None = None, seed: int = 0, study_name: str | None = None,
              storage: str | None = None, out: str | os.PathLike[str] = "results",
              progress: Callable[[str, int, int | None], None] | None = None
              ) -> CalibrationResult:
    """Fit the parameters of a scenario's ``calibrate:`` block to observed data.

    Args:
        scenario: a scenario with a ``calibrate:`` block, or its file (observed
            files named in the block are relative to it).
        observed: observed file(s) replacing the block's: a path (its kind is
            read from its columns), a list of paths, or ``{kind: path}``.
        fit_periods: fit on periods 1..K only and project the rest (default:
            the block's, else every period).
        trials: Optuna trials of the global search (default: the block's).
        replicates: replicates per evaluation, on common random numbers.
        population_scale: simulate this many times the scenario's population;
            survival and funnel fits use proportions, occupancy divides by it.
        intervals: ``profile`` (95% profile-likelihood intervals) or ``none``.
        seed: base seed of the simulations and the sampler.
        study_name: Optuna study (default: the scenario's name and a hash of
            everything that defines the fit, so an identical rerun resumes).
        storage: journal file or RDB URL (default: a journal file under ``out/calibrate``).
        out: output folder; results go to ``out/calibrate/<study>/``.
        progress: called with (phase, done, total) as the work advances.

    Returns:
        Fitted values with intervals, the fit table, goodness of fit and the
        calibrated scenario.

    Raises:
        SimError: no ``calibrate:`` block, no observed data, bad arguments.
        DataError: an observed file that breaks its format's rules.
    """
    verbosity = optuna.logging.get_verbosity()
    if not log.isEnabledFor(logging.DEBUG):  # quieter, never louder than the caller set it
        optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    try:
        return _calibrate(scenario, observed, fit_periods=fit_periods, trials=trials,
                          replicates=replicates, population_scale=population_scale,
                          intervals=intervals, seed=seed, study_name=study_name,
                          storage=storage, out=out, progress=progress)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _calibrate(scenario: Scenario | str | os.PathLike[str], observed: Any, *,
               fit_periods: int | None, trials: int | None, replicates: int | None,
               population_scale: float | None, intervals: str | None, seed: int,
               study_name: str | None, storage: str | None, out: str | os.PathLike[str],
               progress: Callable[[str, int, int | None], None] | None
               ) -> CalibrationResult:
    base_dir = Path.cwd()
    if not isinstance(scenario, Scenario):
        if Path(scenario).is_file():
            base_dir = Path(scenario).resolve().parent
        scenario = sim.load_scenario(scenario)
    block = scenario.calibrate
    if block is None:
        raise SimError(f"scenario {scenario.name!r} has no calibrate: block; it names the "
                       f"parameters to fit and their ranges")
    fit_periods = block.fit_periods if fit_periods is None else fit_periods
    trials = block.trials if trials is None else trials
    replicates = block.replicates if replicates is None else replicates
    scale = block.population_scale if population_scale is None else population_scale
    intervals = block.intervals if intervals is None else intervals
    for name, value in (("trials", trials), ("replicates", replicates)):
        if not isinstance(value, int) or value < 1:
            raise SimError(f"{name} must be a whole number >= 1, not {value!r}")
    if fit_periods is not None and (not isinstance(fit_periods, int) or fit_periods < 1):
        raise SimError(f"fit_periods must be a whole number >= 1, not {fit_periods!r}")
    if intervals not in ("profile", "none"):
        raise SimError(f"intervals must be 'profile' or 'none', not {intervals!r}")
    period_days = block.period_days or scenario.time.step_days
    period_steps = round(period_days / scenario.time.step_days)

    files = _resolve_observed(scenario, observed, base_dir)
    targets: list[_Target] = []
    for kind, (path, setting) in files.items():
        data = read_observed(path, scenario, kind)
        loss = setting.loss if setting is not None else None
        weight = setting.weight if setting is not None else 1.0
        if kind == "survival":
            targets.append(_Survival(data, scenario, setting.cohort if setting else None, loss,
                                     weight, period_steps, fit_periods))
        elif kind == "funnel":
            targets.append(_Funnel(data, scenario, setting.window if setting else None, loss,
                                   weight, scale))
        else:
            targets.append(_Occupancy(data, scenario, loss, weight, scale, period_steps,
                                      fit_periods))
    if fit_periods is not None and not any(t.fit_mask.any() and (~t.fit_mask).any()
                                           for t in targets):
        log.info("fit_periods=%d leaves no period to project", fit_periods)
    if not any(t.fit_mask.any() for t in targets):
        raise SimError(f"fit_periods={fit_periods} leaves no observation to fit")

    space = _Space(block.parameters)
    digest = _fingerprint(scenario, files, seed=seed, replicates=replicates, scale=scale,
                          fit_periods=fit_periods)
    name = study_name or f"{scenario.name}-calibrate-{digest[:10]}"
    folder = Path(out) / "calibrate" / name
    folder.mkdir(parents=True, exist_ok=True)
    ev = _Evaluator(scenario, space, targets, seed, replicates, scale,
                    folder / "evaluations.jsonl")
    tick = (lambda phase, done, total: progress(phase, done, total)) if progress \
        else (lambda phase, done, total: None)

    # --- global search ---------------------------------------------------
    store, store_label = open_storage(storage, Path(out), name, folder="calibrate")
    continuous_only = len(space.continuous) == len(space.params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler: optuna.samplers.BaseSampler = (
            optuna.samplers.CmaEsSampler(seed=seed % 2**32, warn_independent_sampling=False)
            if continuous_only and len(space.params) >= 2
            else optuna.samplers.TPESampler(seed=seed % 2**32, multivariate=True))
        study = optuna.create_study(study_name=name, storage=store, direction="minimize",
                                    sampler=sampler, load_if_exists=True)
    _fail_dead(study, study.get_trials(deepcopy=False))  # a killed run's trial is retried
    if not study.get_trials(deepcopy=False):
        start = {}
        for p in space.params:
            current = _current(scenario, p.path)
            ok = current is not None and (
                current in p.choices if p.choices is not None
                else p.low <= current <= p.high)
            if ok:
                start[p.path] = current
        if len(start) == len(space.params):
            study.enqueue_trial(start)
    counted = _counted(study)
    tick("search", counted, trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        while counted < trials:
            trial = study.ask()
            try:
                trial.set_user_attr("worker", _worker_id())
                values = {p.path: _suggest(trial, p) for p in space.params}
                trial_loss = ev.loss(values)
            except BaseException:
                # interrupted: not counted, and its parameters are tried again on resume
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                if trial.params:
                    study.enqueue_trial(trial.params)
                raise
            if math.isfinite(trial_loss):
                study.tell(trial, trial_loss)
            else:
                trial.set_user_attr("error", "no finite loss at these values")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            counted += 1
            tick("search", counted, trials)
    complete = [t for t in study.get_trials(deepcopy=False,
                                            states=(optuna.trial.TrialState.COMPLETE,))]
    if not complete:
        raise SimError("no trial gave a finite loss: check the ranges against the data")
    best_trial = min(complete, key=lambda t: t.value if t.value is not None else math.inf)
    base = {p.path: best_trial.params[p.path] for p in space.params}
    best_loss = ev.loss(base)

    # --- local refinement -------------------------------------------------
    cont = space.continuous
    centre = np.array([space.unit(i, float(base[space.params[i].path])) for i in cont])
    if cont:
        count = [0]

        def f(x: np.ndarray) -> float:
            count[0] += 1
            tick("refine", count[0], None)
            return ev.loss(space.with_units(base, x))

        x, fun = _nelder_mead(f, centre, maxfev=60 * len(cont))
        if fun < best_loss:
            centre, best_loss = x, fun
            base = space.with_units(base, x)

    # --- profile intervals -------------------------------------------------
    profiles: dict[int, list[tuple[float, float]]] = {}
    if intervals == "profile" and cont:
        n_points = [0]

        def ptick() -> None:
            n_points[0] += 1
            tick("intervals", n_points[0], None)

        for j in cont:
            profiles[j] = _profile(ev, space, base, j, centre, best_loss, ptick)
        if ev.best[0] < best_loss - 1e-9:
            log.info("the profiles found a better point (loss %.4f < %.4f); moving there",
                     ev.best[0], best_loss)
            best_loss, base = ev.best
            centre = np.array([space.unit(i, float(base[space.params[i].path])) for i in cont])
    fitted: list[FittedParameter] = []
    for i, p in enumerate(space.params):
        value = base[p.path]
        if i in profiles:
            lo, hi, at_lo, at_hi = _interval(profiles[i], float(centre[cont.index(i)]),
                                             best_loss)
            fitted.append(FittedParameter(p.path, float(value), space.value(i, lo),
                                          space.value(i, hi), (at_lo, at_hi)))
        else:
            fitted.append(FittedParameter(p.path, value, math.nan, math.nan))

    # --- the fit at the optimum ---------------------------------------------
    sims = ev.simulate(base)
    cols: dict[str, list[Any]] = {"target": [], "segment": [], "stage": [], "x": [],
                                  "observed": [], "fitted": [], "low": [], "high": [],
                                  "role": []}
    chi2, cells = 0.0, 0
    per_target: dict[str, dict[str, Any]] = {}
    holdout: dict[str, float] = {}
    for t, s in zip(targets, sims, strict=True):
        rows = t.rows(s)
        k = len(rows["observed"])
        cols["target"] += [t.kind] * k
        for c in ("segment", "stage", "x", "observed", "fitted", "low", "high"):
            cols[c] += rows[c]
        cols["role"] += ["fit" if m else "holdout" for m in t.fit_mask]
        c2, n = t.pearson(s)
        chi2, cells = chi2 + c2, cells + n
        per_target[t.kind] = {"nll": t.nll(s), "chi2": c2, "cells": n, "loss": t.loss}
        if (~t.fit_mask).any():
            hold = ~t.fit_mask
            obs = np.array(rows["observed"])[hold]
            fit = np.array(rows["fitted"])[hold]
            lo_b, hi_b = np.array(rows["low"])[hold], np.array(rows["high"])[hold]
            holdout[f"{t.kind}_mean_abs_error"] = float(np.mean(np.abs(obs - fit)))
            holdout[f"{t.kind}_inside_band"] = float(np.mean((obs >= lo_b) & (obs <= hi_b)))
    df = cells - len(cont)
    gof = {"chi2": chi2, "df": float(df),
           "p_value": float(stats.chi2.sf(chi2, df)) if df > 0 else math.nan}
    fit_table = pa.table({
        "target": pa.array(cols["target"], pa.string()),
        "segment": pa.array(cols["segment"], pa.string()),
        "stage": pa.array(cols["stage"], pa.string()),
        "x": pa.array(cols["x"], pa.float64()),
        "observed": pa.array(cols["observed"], pa.float64()),
        "fitted": pa.array(cols["fitted"], pa.float64()),
        "low": pa.array(cols["low"], pa.float64()),
        "high": pa.array(cols["high"], pa.float64()),
        "role": pa.array(cols["role"], pa.string())})
    calibrated = _calibrated(scenario, base)
    trials_table = _trials(study)
    profile_table = None
    if profiles:
        prow: dict[str, list[Any]] = {"parameter": [], "value": [], "loss": [], "deviance": []}
        for i, pts in profiles.items():
            for u, fun in pts:
                prow["parameter"].append(space.params[i].path)
                prow["value"].append(space.value(i, u))
                prow["loss"].append(fun)
                prow["deviance"].append(2 * (fun - best_loss))
        profile_table = pa.table(prow)

    result = CalibrationResult(
        study_name=name, storage=store_label, parameters=fitted, loss=best_loss,
        fit=fit_table, gof=gof, scenario=calibrated, trials=trials_table,
        evaluations=len(ev.cache), profiles=profile_table, holdout=holdout)
    params_table = pa.table({
        "parameter": [p.path for p in fitted],
        "value": pa.array([float(p.value) if isinstance(p.value, (int, float))
                           and not isinstance(p.value, bool) else math.nan for p in fitted],
                          pa.float64()),
        "value_text": [json.dumps(p.value) for p in fitted],
        "low": pa.array([p.low for p in fitted], pa.float64()),
        "high": pa.array([p.high for p in fitted], pa.float64()),
        "low_at_bound": [p.at_bound[0] for p in fitted],
        "high_at_bound": [p.at_bound[1] for p in fitted]})
    paths = [folder / "parameters.parquet", folder / "fit.parquet", folder / "trials.parquet",
             folder / "calibrated_scenario.yaml", folder / "summary.json"]
    write_parquet_atomic(paths[0], params_table)
    write_parquet_atomic(paths[1], fit_table)
    write_parquet_atomic(paths[2], trials_table)
    if profile_table is not None:
        paths.append(folder / "profiles.parquet")
        write_parquet_atomic(paths[-1], profile_table)
    header = (f"# {calibrated.name}: calibrated by journey calibrate (study {name})\n"
              f"# data: {', '.join(f'{k}={p}' for k, (p, _) in files.items())}\n"
              + "".join(f"# {p.path} = {p.value!r}"
                        + (f"  (95% CI {p.low:.6g} … {p.high:.6g})" if not math.isnan(p.low)
                           else "") + "\n" for p in fitted))
    write_file_atomic(paths[3], (header + calibrated.to_yaml()).encode())
    summary = {"study": name, "storage": store_label, "loss": best_loss, "gof": gof,
               "targets": per_target, "holdout": holdout, "fit_periods": fit_periods,
               "period_days": period_days, "seed": seed, "replicates": replicates,
               "population_scale": scale, "trials": trials, "evaluations": len(ev.cache),
               "parameters": [{"path": p.path, "value": p.value, "low": p.low,
                               "high": p.high, "at_bound": list(p.at_bound)} for p in fitted]}
    write_file_atomic(paths[4], json.dumps(summary, indent=2, default=_json_default,
                                       allow_nan=True).encode())
    result.paths = [str(p) for p in paths]
    return result


def _counted(study: optuna.Study) -> int:
    """Trials that count towards the requested number: complete, or failed for their values.

    A trial failed by an interruption or a dead process is retried, not counted.
    """
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state == optuna.trial.TrialState.COMPLETE
               or (t.state == optuna.trial.TrialState.FAIL and "error" in t.user_attrs))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


def _current(scenario: Scenario, path: str) -> Any:
    """The scenario's value at a dotted path, or None when it is not set."""
    node: Any = scenario.to_data()
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node if isinstance(node, (int, float, str, bool)) else None


def _calibrated(scenario: Scenario, values: Mapping[str, Any]) -> Scenario:
    data = scenario.apply(overrides=dict(values)).to_data()
    data.pop("calibrate", None)
    return Scenario.model_validate(data)


def _trials(study: optuna.Study) -> pa.Table:
    trials = study.get_trials(deepcopy=False)
    return pa.table({
        "number": pa.array([t.number for t in trials], pa.int64()),
        "state": [t.state.name for t in trials],
        "loss": pa.array([t.value for t in trials], pa.float64()),
        "params": [json.dumps(t.params, sort_keys=True) for t in trials]})

