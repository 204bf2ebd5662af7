"""Simulation noise of a calibration: the population scale chosen from the data, and the
Monte Carlo error of the fit.

The loss is a simulated likelihood: each target's simulated share (survival,
conversion) is estimated from N simulated customers where the data's rests on
n observed ones. To first order the fitted parameters depend on the observed
and the simulated shares through their difference, so the simulation's
sampling error moves the estimate as the data's does, scaled by its size: the
Monte Carlo standard deviation of a fitted value is sqrt(n / N) times its data
standard error (its profile interval's half-width / 1.96).

**The automatic scale** (:func:`choose_scale`, when neither the ``calibrate:``
block nor the caller sets ``population_scale``) asks for N >= n / RHO in every
target, RHO = 0.01: the simulation's variance at most 1% of the data's, so its
Monte Carlo error is at most 10% of the data standard error — about 5% of a 95%
interval's half-width — and widens the total error by at most 0.5%. A pilot
evaluation at scale 1 (the scenario's own values, else the middle of the
ranges) counts the simulated customers u behind each target per unit of scale,
R replicates together, so the rule reads scale = n / (RHO u), rounded up to 1, 2
or 5 times a power of ten. A time budget caps it: two more pilots time one
evaluation at that scale (the faster counts; linear from scale 1 when that
already shows it far too slow), and the calibration's evaluations
are counted from its settings (:func:`expected_evaluations`, an upper count);
when they would not fit, the scale shrinks in proportion (time is about linear
in the agents simulated) and is rounded down on the same grid, not below 1. A
rerun whose timing lands on the other side of the budget chooses another scale
and so another study; the summary says which.

**The Monte Carlo error** (:func:`monte_carlo`, :func:`averaged`): after the fit, K
other seed sets
(replicates k·R .. k·R + R - 1 of the same base seed, k = 1..K, so independent
of the fit's and of each other) each repeat the fit — the global search, with a
sampler seeded apart, and the Nelder–Mead refinement; the profiles are not
repeated. Common random numbers make the loss deterministic but not smooth (a
parameter's small change redraws some customers' churn probabilities), so the
optimiser's path is part of the estimate's noise: a refinement started from the
optimum alone would understate it. A parameter's Monte Carlo standard error is
the sample standard deviation of its K refits, and each fit-table row's (fitted
and projected values alike) that of its values at the K refits, each on its own
seed set. The reported estimate is the mean of the fit and its K refits: K + 1 fits
on independent seed sets, whose mean has sqrt(K + 1) times less Monte Carlo error
than one fit (the data's sampling error is the same for all of them); its standard
error is their spread over sqrt(K + 1). The profile intervals stay those of the
fit's seed set. Noise is *material* when it passes a quarter of the interval's
half-width (of the 95% band's, for a projected row); since it falls as
1 / sqrt(scale), scale · (se / (¼ half-width))² brings it under.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import sim
from optimise._calibrate._evaluator import Evaluator
from optimise._calibrate._fit import FittedParameter, Point, fit_at
from optimise._calibrate._likelihood import Counts, Target
from optimise._calibrate._space import Space, start_point
from sim import Scenario, SimError
from sim.display import plural

__all__ = ["MATERIAL", "RHO", "MonteCarlo", "ScaleChoice", "assess", "choose_scale",
           "expected_evaluations", "monte_carlo", "nice"]

RHO = 0.01
"""The simulation's variance as a share of the data's that the automatic scale aims at."""
MATERIAL = 0.25
"""Monte Carlo error above this share of an interval's half-width is material."""


@dataclass(frozen=True)
class ScaleChoice:
    """The population scale of a calibration, where it came from and why.

    Attributes:
        scale: simulate this many times the scenario's population.
        source: ``block`` (the ``calibrate:`` block), ``flag`` (``--population-scale``
            or ``population_scale=``) or ``automatic``.
        reason: in words.
        data_scale: what the data alone ask for (automatic only).
        expected_noise: the Monte Carlo error expected at ``scale`` as a share of the
            data standard error, sqrt(n / N) (automatic only).
    """

    scale: float
    source: str
    reason: str
    data_scale: float | None = None
    expected_noise: float | None = None


def nice(x: float, up: bool) -> float:
    """``x`` rounded up (or down) to 1, 2 or 5 times a power of ten."""
    if not x > 0 or not math.isfinite(x):
        raise ValueError(f"cannot round {x!r}")
    e = math.floor(math.log10(x))
    grid = [m * 10.0 ** k for k in (e - 1, e, e + 1) for m in (1, 2, 5)]
    x = float(f"{x:.12g}")
    if up:
        return float(f"{min(g for g in grid if g >= x * (1 - 1e-12)):.12g}")
    return float(f"{max(g for g in grid if g <= x * (1 + 1e-12)):.12g}")


def expected_evaluations(dims: int, trials: int, mc_seeds: int, profile: bool) -> int:
    """An upper count of a calibration's evaluations: the search's trials, the refinement
    (60 per continuous parameter), the profiles (about nine points a side, each a
    Nelder–Mead of 25 per other parameter) and the Monte Carlo refits (search and
    refinement again)."""
    profiles = 2 * dims * 9 * max(1, 25 * (dims - 1)) if profile else 0
    return trials + 60 * dims + profiles + mc_seeds * (trials + 60 * dims + 1)


def _pilot_values(scenario: Scenario, space: Space) -> dict[str, Any]:
    """The scenario's own values when they lie in the ranges, else the ranges' middles."""
    start = start_point(scenario, space)
    if start is not None:
        return start
    values: dict[str, Any] = {}
    for i, p in enumerate(space.params):
        if p.choices is not None:
            values[p.path] = p.choices[0]
        elif i in space.continuous:
            values[p.path] = space.value(i, 0.5)
        else:
            values[p.path] = round((p.low + p.high) / 2)
    return values


def choose_scale(scenario: Scenario, space: Space,
                 make_targets: Callable[[float], list[Target]], *, seed: int,
                 replicates: int, time_budget: float, evaluations: int) -> ScaleChoice:
    """The population scale that keeps the simulation's noise small beside the data's
    (module docstring), capped by ``time_budget`` seconds for ``evaluations`` evaluations.

    Args:
        make_targets: the calibration's targets at a given scale.
    """
    variant = scenario.apply(overrides=_pilot_values(scenario, space))
    targets = make_targets(1.0)

    def pilot(scale: float) -> tuple[sim.RunCounts, float]:
        t0 = time.perf_counter()
        counts = sim.simulate(variant, seed=seed, replicates=replicates,
                              population_scale=scale)
        return counts, time.perf_counter() - t0

    try:
        counts, _ = pilot(1.0)                       # compiles the engine: not timed
        t1 = pilot(1.0)[1]
    except SimError as exc:
        return ScaleChoice(1.0, "automatic", f"the pilot evaluation failed ({exc})")
    pooled = Counts(counts)
    worst: tuple[str, float, float] | None = None
    for t in targets:
        found = t.sizes(pooled, t.simulated(pooled))
        if found is None:
            continue
        n, u = found
        if worst is None or u * worst[1] < worst[2] * n:
            worst = (t.kind, n, u)
    if worst is None:
        return ScaleChoice(1.0, "automatic", "the observed files give no counts to size the "
                                             "simulation by")
    kind, n, u = worst
    if u <= 0:
        return ScaleChoice(1.0, "automatic", f"the pilot evaluation simulated no {kind} "
                                             f"customers to compare with the data")
    need = nice(n / (RHO * u), up=True)
    per_eval = time_budget / max(evaluations, 1)
    # time one evaluation at that scale, unless scale 1 already says it is far too slow
    took = t1 * need if t1 * need > 10 * per_eval else min(pilot(need)[1] for _ in range(2))
    cap = need * per_eval / max(took, 1e-9)
    scale = need
    why = (f"the {kind} data rest on {n:,.0f} customers; {u:,.0f} simulated per unit of "
           f"scale ({plural(replicates, 'replicate')}), so scale {need:g} simulates "
           f"{need * u / n:,.0f}x the observed (Monte Carlo error about "
           f"{math.sqrt(n / (need * u)):.0%} of the data's standard error)")
    if cap < need:
        scale = max(nice(cap, up=False) if cap > 0 else 1.0, min(need, 1.0))
        why += (f"; capped at {scale:g} by the time budget of {time_budget:g} s for about "
                f"{evaluations:,} evaluations (one takes about {took:.2g} s at scale "
                f"{need:g}), where the error is about {math.sqrt(n / (scale * u)):.0%} of "
                f"the data's")
    return ScaleChoice(scale, "automatic", f"chosen from the data: {why}",
                       data_scale=need, expected_noise=math.sqrt(n / (scale * u)))


@dataclass
class MonteCarlo:
    """The Monte Carlo error of a fit, from K refits on other seed sets.

    Attributes:
        seeds: K.
        refits: each seed set's refitted values.
        se: Monte Carlo standard error of the reported estimate by parameter path
            (continuous ones): the estimate is the mean of the fit and its K refits
            (:func:`averaged`), so this is their spread over sqrt(K + 1).
        single_se: the Monte Carlo standard error of one fit on one seed set (the
            spread of the K refits).
        fit_se: float[rows]: each fit-table row's on one seed set, in the table's
            order (an upper bound at the averaged estimate).
        holdout_se: the hold-out figures' (mean absolute error, share inside the band).
        notes: plain sentences: where the noise is material, or that it is small.
        scale_needed: the population scale that brings every material error under a
            quarter of its half-width (None when none is material).
    """

    seeds: int
    refits: list[dict[str, Any]]
    se: dict[str, float]
    fit_se: np.ndarray
    holdout_se: dict[str, float] = field(default_factory=dict)
    single_se: dict[str, float] = field(default_factory=dict)
    first: dict[str, Any] = field(default_factory=dict)
    """The fit on the calibration's own seed set, before the mean (:func:`averaged`)."""
    notes: list[str] = field(default_factory=list)
    scale_needed: float | None = None


def monte_carlo(scenario: Scenario, space: Space, targets: list[Target],
                refit: Callable[[Evaluator, int], Point], *, seed: int, replicates: int,
                scale: float, mc_seeds: int, cache: Path | None,
                tick: Callable[[int], None]) -> MonteCarlo:
    """Refit on ``mc_seeds`` other seed sets (module docstring): ``refit(evaluator, k)``
    is the fit on seed set k; its evaluations are cached in ``cache`` for a resume."""
    dims = len(space.continuous)
    refits: list[dict[str, Any]] = []
    fitted: list[np.ndarray] = []
    holdouts: list[dict[str, float]] = []
    for k in range(1, mc_seeds + 1):
        ev = Evaluator(scenario, space, targets, seed, replicates, scale, cache,
                       first_replicate=k * replicates)
        values = refit(ev, k).values
        fit = fit_at(targets, ev.simulate(values), dims)
        refits.append(values)
        fitted.append(np.asarray(fit.table.column("fitted").to_numpy(zero_copy_only=False),
                                 float))
        holdouts.append(fit.holdout)
        tick(k)
    se = {space.params[i].path: float(np.std([float(v[space.params[i].path])
                                              for v in refits], ddof=1))
          for i in space.continuous}
    fit_se = np.std(np.vstack(fitted), axis=0, ddof=1)
    holdout_se = {key: float(np.std([h[key] for h in holdouts], ddof=1))
                  for key in holdouts[0]} if holdouts and holdouts[0] else {}
    return MonteCarlo(mc_seeds, refits, se, fit_se, holdout_se, single_se=dict(se))


def averaged(space: Space, fitted: dict[str, Any], mc: MonteCarlo) -> dict[str, Any]:
    """The estimate reported after the refits: each continuous parameter's mean over the
    fit and its K refits (K + 1 fits on independent seed sets, so its Monte Carlo error
    is sqrt(K + 1) times smaller than one fit's); :attr:`MonteCarlo.se` becomes that
    mean's standard error. Other parameters keep the fit's value."""
    values = dict(fitted)
    mc.first = dict(fitted)
    for i in space.continuous:
        path = space.params[i].path
        every = np.array([float(fitted[path]), *(float(v[path]) for v in mc.refits)])
        values[path] = float(every.mean())
        mc.se[path] = float(every.std(ddof=1) / math.sqrt(every.size))
    return values


def assess(mc: MonteCarlo, parameters: Sequence[FittedParameter], fit: pa.Table,
           scale: float) -> None:
    """Fill ``mc.notes`` and ``mc.scale_needed``: where the noise passes a quarter of an
    interval's half-width, and the scale that brings it under (noise ∝ 1/sqrt(scale))."""
    notes: list[str] = []
    need = 0.0
    worst = -1.0
    for p in parameters:
        se = mc.se.get(p.path, math.nan)
        half = (p.high - p.low) / 2
        if not (math.isfinite(se) and math.isfinite(half) and half > 0):
            continue
        share = se / half
        worst = max(worst, share)
        if share > MATERIAL:
            s = nice(scale * (share / MATERIAL) ** 2, up=True)
            need = max(need, s)
            notes.append(f"simulation noise is a material share of {p.path}'s interval: "
                         f"its Monte Carlo standard error {se:.3g} is {share:.0%} of the "
                         f"interval's half-width; population_scale {s:g} would bring it "
                         f"under {MATERIAL:.0%}")
    role = fit.column("role").to_pylist()
    low = np.asarray(fit.column("low").to_numpy(zero_copy_only=False), float)
    high = np.asarray(fit.column("high").to_numpy(zero_copy_only=False), float)
    hold = np.array([r == "holdout" for r in role])
    if hold.any():
        half_band = (high - low)[hold] / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            shares = np.where(half_band > 0, mc.fit_se[hold] / half_band, np.nan)
        if np.isfinite(shares).any():
            top = float(np.nanmax(shares))
            worst = max(worst, top)
            if top > MATERIAL:
                s = nice(scale * (top / MATERIAL) ** 2, up=True)
                need = max(need, s)
                notes.append(f"simulation noise is a material share of the projections' 95% "
                             f"bands in {int(np.sum(shares > MATERIAL))} of {int(hold.sum())} "
                             f"projected rows (up to {top:.0%} of the half-width); "
                             f"population_scale {s:g} would bring it under {MATERIAL:.0%}")
    if not notes and worst < 0:
        notes.append(f"Monte Carlo standard errors from {mc.seeds} other seed sets; no "
                     f"interval to compare them with")
    elif not notes:
        notes.append(f"simulation noise is small beside the data's: the Monte Carlo error is "
                     f"at most {worst:.0%} of an interval's half-width")
    mc.notes, mc.scale_needed = notes, (need or None)
