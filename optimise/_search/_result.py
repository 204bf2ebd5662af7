"""What a search returns, and the files it writes (:data:`sim.results.STUDY_FILES`)."""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
import pyarrow as pa
import yaml

from sim import Scenario
from sim.results import STUDY_FILES

__all__ = ["Evaluation", "OptimisationResult", "files", "importances", "pareto_table",
           "trials_table"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """A design evaluated on the re-evaluation seeds (mean and 95% CI)."""

    label: str
    params: dict[str, Any]
    objective: float
    objective_ci: tuple[float, float]
    cost: float
    cost_ci: tuple[float, float]
    uplift: float
    uplift_ci: tuple[float, float]
    feasible: bool
    replicates: int
    second: float = math.nan
    second_ci: tuple[float, float] = (math.nan, math.nan)


@dataclass
class OptimisationResult:
    """What :func:`optimise` found.

    ``storage`` is the study's storage: the journal file or the RDB URL; ``journal``
    the journal file (None with an RDB storage), which optuna-dashboard opens;
    ``paths`` the files written under ``OUT/optimise/<study>/``.
    """

    study_name: str
    storage: str
    objective: str
    direction: str
    trials: pa.Table
    baseline: Evaluation
    candidates: list[Evaluation]
    best: Evaluation | None
    best_scenario: Scenario | None
    importances: dict[str, float]
    pareto: pa.Table | None = None
    replicates_run: int = 0
    replicates_full: int = 0
    paths: list[str] = field(default_factory=list)
    journal: str | None = None

    @property
    def pruning_saving(self) -> float:
        """Share of trial replicates that pruning did not have to simulate."""
        return 1.0 - self.replicates_run / self.replicates_full if self.replicates_full \
            else 0.0


def importances(study: optuna.Study, sign: float, two: bool) -> dict[str, float]:
    """Optuna's parameter importances (of the first objective); none when too few trials."""
    try:
        # with two objectives, rank by the first; the evaluator reads low as good
        target = (lambda t: -sign * t.values[0]) if two else None
        with warnings.catch_warnings():  # the sign is handled: low target is good
            warnings.filterwarnings("ignore", message=".*low `target` values")
            found = optuna.importance.get_param_importances(study, target=target)
        return {k: float(v) for k, v in found.items()}
    except (ValueError, RuntimeError) as exc:  # too few complete trials, no variation
        log.info("no parameter importances: %s", exc)
        return {}


def trials_table(study: optuna.Study) -> pa.Table:
    """One row per trial: state, values, cost, constraints, replicates run and parameters."""
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    cols: dict[str, list[Any]] = {"number": [], "state": [], "value": [], "value_2": [],
                                  "cost": [],
                                  "feasible": [], "constraints": [], "replicates_run": [],
                                  "error": []}
    for name in names:
        cols[f"param:{name}"] = []
    for t in trials:
        cols["number"].append(t.number)
        cols["state"].append(t.state.name)
        cols["value"].append(t.values[0] if t.values else None)
        cols["value_2"].append(t.values[1] if t.values and len(t.values) > 1 else None)
        cols["cost"].append(t.user_attrs.get("cost"))
        cons = t.user_attrs.get("constraints")
        cols["constraints"].append(json.dumps(cons) if cons is not None else None)
        cols["feasible"].append(None if cons is None else all(v <= 0 for v in cons.values()))
        cols["replicates_run"].append(t.user_attrs.get("replicates_run"))
        cols["error"].append(t.user_attrs.get("error"))
        for name in names:
            value = t.params.get(name)
            cols[f"param:{name}"].append(None if value is None else json.dumps(value))
    return pa.table(cols)


def pareto_table(kpi: str, second: str, candidates: list[Evaluation]) -> pa.Table:
    """The re-evaluated front of a two-objective study (objectives ``kpi`` and ``second``)."""
    return pa.table({
        "trial": [int(c.label.split()[-1]) for c in candidates],
        "params": [json.dumps(c.params) for c in candidates],
        kpi: [c.objective for c in candidates],
        f"{kpi}_ci_low": [c.objective_ci[0] for c in candidates],
        f"{kpi}_ci_high": [c.objective_ci[1] for c in candidates],
        second if second != kpi else f"{kpi}_2": [c.second for c in candidates],
        "feasible": [c.feasible for c in candidates],
    })


def files(result: OptimisationResult) -> dict[str, pa.Table | bytes | None]:
    """The study's files (:data:`sim.results.STUDY_FILES`), in the order they are written."""
    summary = {"objective": result.objective, "direction": result.direction,
               "baseline": result.baseline.__dict__,
               "candidates": [c.__dict__ for c in result.candidates],
               "best": None if result.best is None else result.best.__dict__}
    best = None if result.best_scenario is None else yaml.safe_dump(
        result.best_scenario.to_data(), sort_keys=False, allow_unicode=True).encode()
    return {STUDY_FILES.trials: result.trials,
            STUDY_FILES.importances: json.dumps(result.importances, indent=2).encode(),
            STUDY_FILES.pareto: result.pareto,
            STUDY_FILES.summary: json.dumps(summary, indent=2, default=str).encode(),
            STUDY_FILES.best_scenario: best}
