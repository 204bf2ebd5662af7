""":func:`calibrate` and its phases: resolve → search → refine → intervals → fit.

* **resolve** the request: the block's settings, the observed files and their
  targets, the parameter space and the study's name;
* **search** globally with Optuna — CMA-ES over continuous parameters, TPE when a
  parameter is an integer or a choice, or when only one is fitted — through the
  study core's trial loop (:func:`optimise._study.run_trials`);
* **refine** the best trial with a bounded Nelder–Mead;
* **intervals**: profile likelihood for each continuous parameter;
* **fit** at the optimum: observed beside fitted values, goodness of fit;
* **Monte Carlo error**: the fit refitted on other seed sets; the estimate becomes
  the mean of the fit and its refits, their spread over sqrt(K + 1) its Monte Carlo
  error beside each interval; then the files are written in one call.

Resolving chooses the population scale from the data when neither the block nor
the caller sets it (:mod:`optimise._calibrate._noise`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pyarrow as pa

import sim
from optimise._calibrate._evaluator import Evaluator
from optimise._calibrate._fit import Point, fit_at, fitted_parameters
from optimise._calibrate._likelihood import Target
from optimise._calibrate._noise import (
    MonteCarlo,
    ScaleChoice,
    assess,
    averaged,
    choose_scale,
    expected_evaluations,
    monte_carlo,
)
from optimise._calibrate._observed import resolve_observed
from optimise._calibrate._profile import nelder_mead, profile
from optimise._calibrate._result import (
    CalibrationResult,
    calibrated,
    files,
    profiles_table,
    trials_table,
)
from optimise._calibrate._space import Space, start_point
from optimise._calibrate._targets import make_targets
from optimise._study import (
    Storage,
    Unusable,
    counted,
    open_storage,
    open_study,
    run_trials,
    sampler_seed,
    suggest_point,
)
from sim import Scenario, SimError
from sim.results import CALIBRATION_FILES, calibration_folder, journal_file, write_files

__all__ = ["calibrate"]

log = logging.getLogger(__name__)

Tick = Callable[[str, int, "int | None"], None]
"""Progress: (phase, done, total or None)."""


def calibrate(scenario: Scenario | str | os.PathLike[str],
              observed: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
              | Mapping[str, str | os.PathLike[str]] | None = None, *,
              fit_periods: int | None = None, trials: int | None = None,
              replicates: int | None = None, population_scale: float | None = None,
              intervals: str | None = None, seed: int = 0, study_name: str | None = None,
              storage: str | None = None, out: str | os.PathLike[str] = "results",
              mc_seeds: int = 8, time_budget: float = 300.0,
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
            survival and funnel fits use proportions, occupancy divides by it
            (default: the block's, else chosen from the data within ``time_budget``).
        intervals: ``profile`` (95% profile-likelihood intervals) or ``none``.
        seed: base seed of the simulations and the sampler.
        study_name: Optuna study (default: the scenario's name and a hash of
            everything that defines the fit, so an identical rerun resumes).
        storage: journal file or RDB URL (default: the journal file
            ``out/calibrate/<study>.journal``).
        out: output folder; results go to ``out/calibrate/<study>/``.
        mc_seeds: other seed sets the fit is refitted on for its Monte Carlo
            standard errors (0: none; else at least 2).
        time_budget: seconds of simulation the automatic population scale may
            spend on the whole calibration.
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
        setup = _resolve(scenario, observed, fit_periods=fit_periods, trials=trials,
                         replicates=replicates, population_scale=population_scale,
                         intervals=intervals, seed=seed, study_name=study_name, out=out,
                         mc_seeds=mc_seeds, time_budget=time_budget)
        return _calibrate(setup, open_storage(storage, journal_file(setup.folder)),
                          progress or (lambda phase, done, total: None))
    finally:
        optuna.logging.set_verbosity(verbosity)


def _calibrate(setup: _Setup, store: Storage, tick: Tick) -> CalibrationResult:
    """The phases, in order, from the resolved request to the written files."""
    ev = Evaluator(setup.scenario, setup.space, setup.targets, setup.seed, setup.replicates,
                   setup.scale.scale, setup.folder / CALIBRATION_FILES.evaluations)
    study = _search(setup, ev, store, tick)
    point = _refine(setup.space, ev, _best_trial(setup.space, ev, study), tick)
    point, profiles = _intervals(setup, ev, point, tick)
    best = point
    mc = _monte_carlo(setup, point, tick)
    if mc is not None:       # the mean of the fit and its refits: less Monte Carlo error
        values = averaged(setup.space, point.values, mc)
        point = Point.at(setup.space, values, ev.loss(values))
    fit = fit_at(setup.targets, ev.simulate(point.values), len(setup.space.continuous))
    # the intervals are the fit's own profiles, walked out from its optimum
    parameters = [replace(p, value=point.values[p.path])
                  for p in fitted_parameters(setup.space, best, profiles)]
    if mc is not None:
        parameters = [replace(p, mc_se=mc.se.get(p.path, math.nan)) for p in parameters]
        assess(mc, parameters, fit.table, setup.scale.scale)
    mc_se = mc.fit_se if mc is not None else np.full(fit.table.num_rows, math.nan)
    result = CalibrationResult(
        study_name=setup.name, storage=store.label, journal=store.journal,
        parameters=parameters, loss=point.loss,
        fit=fit.table.append_column("mc_se", pa.array(mc_se, pa.float64())), gof=fit.gof,
        scenario=calibrated(setup.scenario, point.values),
        trials=trials_table(study), evaluations=len(ev.cache),
        profiles=profiles_table(setup.space, profiles, best.loss), holdout=fit.holdout,
        population_scale=setup.scale.scale, population_scale_source=setup.scale.source,
        population_scale_reason=setup.scale.reason, monte_carlo=mc)
    result.paths = write_files(setup.folder, files(
        result, {k: p for k, (p, _) in setup.files.items()}, setup.settings, fit.per_target))
    return result


# ------------------------------------------------------------------ resolve


@dataclass(frozen=True)
class _Setup:
    """A calibration's request, resolved: settings, targets, space, study and folder."""

    scenario: Scenario
    files: dict[str, tuple[Path, Any]]
    targets: list[Target]
    space: Space
    name: str
    folder: Path
    seed: int
    trials: int
    replicates: int
    scale: ScaleChoice
    intervals: str
    mc_seeds: int
    settings: dict[str, Any]
    """What the summary records: fit periods, period days, seed, replicates, scale (its
    source and why), trials, Monte Carlo seed sets."""


def _resolve(scenario: Scenario | str | os.PathLike[str], observed: Any, *,
             fit_periods: int | None, trials: int | None, replicates: int | None,
             population_scale: float | None, intervals: str | None, seed: int,
             study_name: str | None, out: str | os.PathLike[str], mc_seeds: int,
             time_budget: float) -> _Setup:
    """The block's settings (arguments first), checked; the observed files; the population
    scale (chosen from them when unset) and their targets at it; the parameter space; the
    study's name (by default a hash of all of it)."""
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
    intervals = block.intervals if intervals is None else intervals
    for name, value in (("trials", trials), ("replicates", replicates)):
        if not isinstance(value, int) or value < 1:
            raise SimError(f"{name} must be a whole number >= 1, not {value!r}")
    if fit_periods is not None and (not isinstance(fit_periods, int) or fit_periods < 1):
        raise SimError(f"fit_periods must be a whole number >= 1, not {fit_periods!r}")
    if intervals not in ("profile", "none"):
        raise SimError(f"intervals must be 'profile' or 'none', not {intervals!r}")
    if isinstance(mc_seeds, bool) or not isinstance(mc_seeds, int) or mc_seeds < 0 \
            or mc_seeds == 1:
        raise SimError(f"mc_seeds must be 0 (none) or a whole number >= 2, not {mc_seeds!r}")
    if not (isinstance(time_budget, (int, float)) and math.isfinite(time_budget)
            and time_budget > 0):
        raise SimError(f"time_budget must be a number of seconds > 0, not {time_budget!r}")
    period_days = block.period_days or scenario.time.step_days
    files_ = resolve_observed(scenario, observed, base_dir)
    space = Space(block.parameters)

    def targets_at(scale: float) -> list[Target]:
        return make_targets(scenario, files_, fit_periods=fit_periods, population_scale=scale,
                            period_steps=round(period_days / scenario.time.step_days))

    if population_scale is not None:
        if isinstance(population_scale, bool) or not isinstance(population_scale, (int, float)) \
                or not math.isfinite(population_scale) or population_scale <= 0:
            raise SimError(f"population_scale must be a finite number > 0, not "
                           f"{population_scale!r}")
        choice = ScaleChoice(population_scale, "flag", "given by --population-scale "
                                                       "(population_scale=)")
    elif block.population_scale is not None:
        choice = ScaleChoice(block.population_scale, "block", "set by the calibrate: block")
    else:
        targets_at(1.0)                        # the files' own errors before any simulation
        choice = choose_scale(scenario, space, targets_at, seed=seed, replicates=replicates,
                              time_budget=time_budget, evaluations=expected_evaluations(
                                  len(space.continuous), trials, mc_seeds,
                                  intervals == "profile"))
        log.info("population scale %g, %s", choice.scale, choice.reason)
    scale = choice.scale
    targets = targets_at(scale)
    if fit_periods is not None and not any(t.fit_mask.any() and (~t.fit_mask).any()
                                           for t in targets):
        log.info("fit_periods=%d leaves no period to project", fit_periods)
    if not any(t.fit_mask.any() for t in targets):
        raise SimError(f"fit_periods={fit_periods} leaves no observation to fit")
    digest = _fingerprint(scenario, files_, seed=seed, replicates=replicates, scale=scale,
                          fit_periods=fit_periods)
    name = study_name or f"{scenario.name}-calibrate-{digest[:10]}"
    return _Setup(scenario, files_, targets, space, name,
                  calibration_folder(out, name), seed, trials, replicates, choice, intervals,
                  mc_seeds,
                  {"fit_periods": fit_periods, "period_days": period_days, "seed": seed,
                   "replicates": replicates, "population_scale": scale,
                   "population_scale_source": choice.source,
                   "population_scale_reason": choice.reason,
                   **({"time_budget": time_budget, "population_scale_for_data":
                       choice.data_scale, "expected_mc_share_of_data_se":
                       choice.expected_noise} if choice.source == "automatic" else {}),
                   "trials": trials, "mc_seeds": mc_seeds})


def _fingerprint(scenario: Scenario, files: Mapping[str, tuple[Path, Any]], **settings: Any
                 ) -> str:
    """A hash of everything that defines a fit: scenario, data, settings."""
    h = hashlib.sha256(scenario.content_hash.encode())
    for kind in sorted(files):
        h.update(kind.encode())
        h.update(files[kind][0].read_bytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


# ------------------------------------------------------------------ search, refine, intervals


def _search(setup: _Setup, ev: Evaluator, store: Storage, tick: Tick) -> optuna.Study:
    """The global search: ``setup.trials`` counted trials, starting from the scenario's
    own values when they lie in the ranges."""
    space = setup.space
    study = open_study(setup.name, store, ["minimize"], sampler=_sampler(space, setup.seed))
    if not study.get_trials(deepcopy=False):
        _start_at_the_scenario(setup, study)
    tick("search", counted(study), setup.trials)
    run_trials(study, store, _objective(space, ev, Unusable), setup.trials,
               on_trial=lambda s: tick("search", counted(s), setup.trials))
    return study


def _start_at_the_scenario(setup: _Setup, study: optuna.Study) -> None:
    """The first trial: the scenario's own values, when they lie in the ranges."""
    start = start_point(setup.scenario, setup.space)
    if start is not None:
        study.enqueue_trial(start)


def _objective(space: Space, ev: Evaluator, unusable: type[Exception]
               ) -> Callable[[optuna.Trial], float]:
    """A trial's loss; a point without a finite loss raises ``unusable`` (the study
    core's :class:`Unusable` in a stored study, Optuna's pruning in memory)."""
    def objective(trial: optuna.Trial) -> float:
        loss = ev.loss(suggest_point(trial, space.params))
        if not math.isfinite(loss):
            raise unusable("no finite loss at these values")
        return loss

    return objective


def _sampler(space: Space, seed: int) -> optuna.samplers.BaseSampler:
    """CMA-ES over two or more parameters, all continuous; else multivariate TPE."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if len(space.continuous) == len(space.params) and len(space.params) >= 2:
            return optuna.samplers.CmaEsSampler(seed=sampler_seed(seed),
                                                warn_independent_sampling=False)
        return optuna.samplers.TPESampler(seed=sampler_seed(seed), multivariate=True)


def _best_trial(space: Space, ev: Evaluator, study: optuna.Study) -> Point:
    """The best complete trial of the search."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise SimError("no trial gave a finite loss: check the ranges against the data")
    best = min(complete, key=lambda t: t.value if t.value is not None else math.inf)
    values = {p.path: best.params[p.path] for p in space.params}
    return Point.at(space, values, ev.loss(values))


def _refine(space: Space, ev: Evaluator, point: Point, tick: Tick) -> Point:
    """A bounded Nelder–Mead over the continuous parameters from ``point``."""
    if not space.continuous:
        return point
    count = [0]

    def f(x: np.ndarray) -> float:
        count[0] += 1
        tick("refine", count[0], None)
        return ev.loss(space.with_units(point.values, x))

    x, fun = nelder_mead(f, point.centre, maxfev=60 * len(space.continuous))
    if fun < point.loss:
        return Point(space.with_units(point.values, x), x, fun)
    return point


def _intervals(setup: _Setup, ev: Evaluator, point: Point, tick: Tick
               ) -> tuple[Point, dict[int, list[tuple[float, float]]]]:
    """Each continuous parameter's likelihood profile; the point moves where a profile
    found a lower loss."""
    space = setup.space
    profiles: dict[int, list[tuple[float, float]]] = {}
    if setup.intervals != "profile" or not space.continuous:
        return point, profiles
    n_points = [0]

    def ptick() -> None:
        n_points[0] += 1
        tick("intervals", n_points[0], None)

    for j in space.continuous:
        profiles[j] = profile(ev, space, point.values, j, point.centre, point.loss, ptick)
    if ev.best[0] < point.loss - 1e-9:
        log.info("the profiles found a better point (loss %.4f < %.4f); moving there",
                 ev.best[0], point.loss)
        point = Point.at(space, ev.best[1], ev.best[0])
    return point, profiles


def _monte_carlo(setup: _Setup, point: Point, tick: Tick) -> MonteCarlo | None:
    """The fit's Monte Carlo error over ``setup.mc_seeds`` other seed sets (None with
    none, or without a continuous parameter to refit)."""
    if setup.mc_seeds < 2 or not setup.space.continuous:
        return None
    tick("monte carlo", 0, setup.mc_seeds)
    return monte_carlo(setup.scenario, setup.space, setup.targets,
                       lambda ev, k: _refit(setup, ev, k), seed=setup.seed,
                       replicates=setup.replicates, scale=setup.scale.scale,
                       mc_seeds=setup.mc_seeds,
                       cache=setup.folder / CALIBRATION_FILES.mc_evaluations,
                       tick=lambda k: tick("monte carlo", k, setup.mc_seeds))


def _refit(setup: _Setup, ev: Evaluator, k: int) -> Point:
    """The search and the refinement again, on ``ev``'s seed set: a study in memory whose
    sampler is seeded apart (as worker ``k``), starting from the scenario's own values."""
    space = setup.space
    study = optuna.create_study(direction="minimize",
                                sampler=_sampler(space, sampler_seed(setup.seed, worker=k)))
    _start_at_the_scenario(setup, study)
    study.optimize(_objective(space, ev, optuna.TrialPruned), n_trials=setup.trials)
    return _refine(space, ev, _best_trial(space, ev, study), lambda *_: None)
