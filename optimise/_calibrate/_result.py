"""What a calibration returns, and the files it writes (:data:`sim.results.CALIBRATION_FILES`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pyarrow as pa

from optimise._calibrate._fit import FittedParameter
from optimise._calibrate._noise import MonteCarlo
from optimise._calibrate._space import Space
from sim import Scenario
from sim.results import CALIBRATION_FILES

__all__ = ["CalibrationResult", "calibrated", "files", "profiles_table", "trials_table"]


@dataclass
class CalibrationResult:
    """What :func:`calibrate` found.

    Attributes:
        parameters: fitted values with intervals (NaN for discrete ones or
            ``intervals="none"``).
        loss: the minimised negative log-likelihood (+ negative log prior).
        fit: one row per observation: observed, fitted (or projected, role
            ``holdout``), a 95% band of the fitted value at the observed scale and
            its Monte Carlo standard error ``mc_se``.
        gof: Pearson χ² over the fitted observations, its degrees of freedom and p-value.
        scenario: the calibrated scenario (without its ``calibrate`` block).
        storage: the study's storage: the journal file or the RDB URL.
        journal: the journal file (None with an RDB storage), which
            optuna-dashboard opens.
        paths: the files written under ``OUT/calibrate/<study>/``.
        population_scale: the scale simulated; ``population_scale_source`` says
            where it came from (``block``, ``flag`` or ``automatic``) and
            ``population_scale_reason`` why.
        monte_carlo: the fit's Monte Carlo error over other seed sets (None when
            ``mc_seeds`` is 0).
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
    journal: str | None = None
    population_scale: float = 1.0
    population_scale_source: str = "block"
    population_scale_reason: str = ""
    monte_carlo: MonteCarlo | None = None

    @property
    def values(self) -> dict[str, Any]:
        """Fitted value by dotted path."""
        return {p.path: p.value for p in self.parameters}


def calibrated(scenario: Scenario, values: Mapping[str, Any]) -> Scenario:
    """``scenario`` with the fitted ``values``, without its ``calibrate`` block."""
    data = scenario.apply(overrides=dict(values)).to_data()
    data.pop("calibrate", None)
    return Scenario.model_validate(data)


def trials_table(study: optuna.Study) -> pa.Table:
    """One row per trial of the global search: number, state, loss, parameters (JSON)."""
    trials = study.get_trials(deepcopy=False)
    return pa.table({
        "number": pa.array([t.number for t in trials], pa.int64()),
        "state": [t.state.name for t in trials],
        "loss": pa.array([t.value for t in trials], pa.float64()),
        "params": [json.dumps(t.params, sort_keys=True) for t in trials]})


def profiles_table(space: Space, profiles: Mapping[int, list[tuple[float, float]]],
                   best: float) -> pa.Table | None:
    """Every profile point: parameter, value, profile loss and deviance (None without)."""
    if not profiles:
        return None
    rows: dict[str, list[Any]] = {"parameter": [], "value": [], "loss": [], "deviance": []}
    for i, points in profiles.items():
        for u, fun in points:
            rows["parameter"].append(space.params[i].path)
            rows["value"].append(space.value(i, u))
            rows["loss"].append(fun)
            rows["deviance"].append(2 * (fun - best))
    return pa.table(rows)


def _parameters_table(fitted: list[FittedParameter]) -> pa.Table:
    return pa.table({
        "parameter": [p.path for p in fitted],
        "value": pa.array([float(p.value) if isinstance(p.value, (int, float))
                           and not isinstance(p.value, bool) else math.nan for p in fitted],
                          pa.float64()),
        "value_text": [json.dumps(p.value) for p in fitted],
        "low": pa.array([p.low for p in fitted], pa.float64()),
        "high": pa.array([p.high for p in fitted], pa.float64()),
        "low_at_bound": [p.at_bound[0] for p in fitted],
        "high_at_bound": [p.at_bound[1] for p in fitted],
        "mc_se": pa.array([p.mc_se for p in fitted], pa.float64())})


def _scenario_text(result: CalibrationResult, data: Mapping[str, Any]) -> bytes:
    """The calibrated scenario, headed by the study, the data and the fitted values."""
    header = (f"# {result.scenario.name}: calibrated by journey calibrate "
              f"(study {result.study_name})\n"
              f"# data: {', '.join(f'{k}={p}' for k, p in data.items())}\n"
              + "".join(f"# {p.path} = {p.value!r}"
                        + (f"  (95% CI {p.low:.6g} … {p.high:.6g})" if not math.isnan(p.low)
                           else "")
                        + (f"  (Monte Carlo s.e. {p.mc_se:.3g})" if not math.isnan(p.mc_se)
                           else "") + "\n" for p in result.parameters)
              + f"# population scale {result.population_scale:g} "
                f"({result.population_scale_source})\n")
    return (header + result.scenario.to_yaml()).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


def files(result: CalibrationResult, data: Mapping[str, Any], settings: Mapping[str, Any],
          per_target: Mapping[str, Any]) -> dict[str, pa.Table | bytes | None]:
    """The calibration's files, in the order of ``result.paths``.

    Args:
        data: the observed files by kind.
        settings: what the summary records of the fit's settings (fit periods, period
            days, seed, replicates, population scale, trials).
        per_target: each target's likelihood figures at the optimum.
    """
    mc = result.monte_carlo
    summary = {"study": result.study_name, "storage": result.storage, "loss": result.loss,
               "gof": result.gof, "targets": per_target, "holdout": result.holdout,
               **settings, "evaluations": result.evaluations,
               "parameters": [{"path": p.path, "value": p.value, "low": p.low,
                               "high": p.high, "at_bound": list(p.at_bound),
                               "mc_se": p.mc_se}
                              for p in result.parameters],
               "monte_carlo": None if mc is None else {
                   "seed_sets": mc.seeds, "se": mc.se, "holdout_se": mc.holdout_se,
                   "notes": mc.notes, "population_scale_needed": mc.scale_needed,
                   "refits": mc.refits}}
    return {CALIBRATION_FILES.parameters: _parameters_table(result.parameters),
            CALIBRATION_FILES.fit: result.fit,
            CALIBRATION_FILES.trials: result.trials,
            CALIBRATION_FILES.scenario: _scenario_text(result, data),
            CALIBRATION_FILES.summary: json.dumps(summary, indent=2, default=_json_default,
                                                  allow_nan=True).encode(),
            CALIBRATION_FILES.profiles: result.profiles}
