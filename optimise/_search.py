"""Search the interventions of a scenario's ``optimise:`` block with Optuna.

A trial is the scenario with the trial's parameters applied, simulated with R
replicates on the same seeds for every trial (common random numbers); its
value is the mean of the objective KPI over the replicates
(:mod:`optimise._objective`). Budget and cost-per-acquisition limits go
through Optuna's constraints mechanism. After the search the best trials are
re-evaluated on fresh seeds with more replicates, beside the baseline (no
interventions), and the answer is the best re-evaluated feasible design.

:func:`optimise` reads as its phases: validate, search, re-evaluate, and
write the study's files (:data:`sim.results.STUDY_FILES`) in one call at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pyarrow as pa
import yaml

import sim
from optimise._objective import FeasibleMedianPruner, feasible, make_objective, violations
from optimise._study import (
    Storage,
    counted,
    open_storage,
    open_study,
    run_trials,
    tpe_sampler,
)
from optimise._workers import WorkerSpec, run_workers
from sim import Scenario, SimError
from sim.display import format_kpi
from sim.results import STUDY_FILES, journal_file, study_folder, write_files
from sim.stats import UNBOUNDED, Bounds, mean_interval

__all__ = ["Evaluation", "FeasibleMedianPruner", "OptimisationResult", "optimise"]

log = logging.getLogger(__name__)

REEVAL_SEED_OFFSET = 0x5EED_0000
"""Re-evaluation runs on base seed + this: seeds no trial has seen."""


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

    ``storage`` is the study's storage: the journal file (which optuna-dashboard
    opens) or the RDB URL; ``paths`` the files written under
    ``OUT/optimise/<study>/``.
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

    @property
    def pruning_saving(self) -> float:
        """Share of trial replicates that pruning did not have to simulate."""
        return 1.0 - self.replicates_run / self.replicates_full if self.replicates_full \
            else 0.0


@dataclass(frozen=True)
class _Request:
    """What :func:`optimise` was asked, checked and completed with its defaults."""

    scenario: Scenario
    name: str
    trials: int
    replicates: int
    seed: int
    top_k: int
    reeval_replicates: int
    population_scale: float
    workers: int
    heartbeat: int | None
    engine: str

    @property
    def baseline(self) -> Scenario:
        """The scenario with every intervention switched off."""
        return self.scenario.apply(overrides={f"interventions.{n}.enabled": False
                                              for n in self.scenario.interventions})

    def simulate(self, variant: Scenario, seed: int, replicates: int) -> sim.RunCounts:
        return sim.simulate(variant, seed=seed, replicates=replicates,
                            population_scale=self.population_scale, engine=self.engine)


def optimise(scenario: Scenario | str | os.PathLike[str], *, trials: int | None = None,
             replicates: int | None = None, study_name: str | None = None,
             storage: str | None = None, out: str | os.PathLike[str] = "results",
             seed: int = 0, top_k: int = 3, reeval_replicates: int | None = None,
             population_scale: float = 1.0, workers: int = 1, heartbeat: int | None = None,
             progress: Callable[[int, int, float | None, str], None] | None = None,
             engine: str = "fast") -> OptimisationResult:
    """Search the scenario's ``optimise:`` block.

    Args:
        scenario: a scenario with an ``optimise:`` block (or its path / text).
        trials: trials to complete (default: the block's ``trials``); a resumed
            study runs only the ones still missing.
        replicates: replicates per trial (default: the block's ``replicates``).
        study_name: the study's name (default: the scenario's name); rerunning with
            the same name and storage resumes it.
        storage: a journal file path or an RDB URL; default: the journal file
            ``out/optimise/<study>.journal``.
        out: where the trials, the best scenario and the importances are written
            (``out/optimise/<study>/``).
        seed: seeds the sampler and the simulations.
        top_k: how many of the best trials to re-evaluate.
        reeval_replicates: replicates of the re-evaluation (default: max(2R, 8)).
        population_scale: passed to every simulation.
        workers: worker processes on this machine; with an RDB storage, workers on
            other machines may join the same study. The trial cap holds across all
            of them. SQLite is refused for more than one worker.
        heartbeat: seconds between an RDB worker's heartbeats (default 10); a trial
            silent for twice as long is failed and retried with its parameters.
        progress: called as trials end with (counted trials, trials, best value, status):
            the best value of the one objective (None with two, or before any),
            and a short status line for a progress display (``best 71.2%``, or
            with two objectives ``front 4, best retention_365 71.2%, best cost
            €12,040``).
        engine: the simulation engine of every trial: ``fast``, or ``des`` for a
            scenario with capacity-limited touchpoints (so a capacity, e.g.
            ``touchpoints.consult.capacity`` with its ``server_cost_per_day``, can be
            a search variable).

    Returns:
        The trials, the re-evaluated candidates beside the baseline, the best design.

    Raises:
        SimError: no ``optimise:`` block, an objective the baseline cannot define,
            a storage that cannot be opened, SQLite with parallel workers, workers
            that all stopped before the study had its trials.

    Example:
        >>> import optimise
        >>> res = optimise.optimise("scenarios/dental_clinic.yaml", trials=20)  # doctest: +SKIP
        >>> res.best.uplift_ci  # doctest: +SKIP
    """
    request = _validate(scenario, trials, replicates, study_name, seed, top_k,
                        reeval_replicates, population_scale, workers, heartbeat, engine)
    folder = study_folder(out, request.name)
    store = open_storage(storage, journal_file(folder), heartbeat, workers)
    study = _search(request, store, progress)
    baseline, candidates = _reevaluate(request, study)
    result = _result(request, store, study, baseline, candidates)
    result.paths = write_files(folder, _files(result))
    return result


def _validate(scenario: Scenario | str | os.PathLike[str], trials: int | None,
              replicates: int | None, study_name: str | None, seed: int, top_k: int,
              reeval_replicates: int | None, population_scale: float, workers: int,
              heartbeat: int | None, engine: str) -> _Request:
    """The request, checked: a search block, counts >= 1, an objective the baseline defines."""
    if not isinstance(scenario, Scenario):
        scenario = sim.load_scenario(scenario)
    opt = scenario.optimise
    if opt is None:
        raise SimError(f"scenario {scenario.name!r} has no optimise: block to search")
    n_trials = trials if trials is not None else opt.trials
    reps = replicates if replicates is not None else opt.replicates
    if n_trials < 1 or reps < 1 or top_k < 1:
        raise SimError("trials, replicates and top_k must be at least 1")
    if workers < 1:
        raise SimError(f"workers must be at least 1, not {workers}")
    request = _Request(scenario, study_name or scenario.name, n_trials, reps, seed, top_k,
                       reeval_replicates or max(2 * reps, 8), population_scale, workers,
                       heartbeat, engine)
    kpi = opt.objective.kpi
    if np.isnan(request.simulate(request.baseline, seed, reps).kpis[kpi]).all():
        raise SimError(f"the objective {kpi!r} is undefined for {scenario.name!r} (e.g. a "
                       f"retention lag longer than the horizon, or no acquisitions)")
    return request


def _search(request: _Request, store: Storage,
            progress: Callable[[int, int, float | None, str], None] | None) -> optuna.Study:
    """Run the study's trials: in this process, or in worker processes."""
    opt = request.scenario.optimise
    assert opt is not None
    goals = [opt.objective] + ([opt.second_objective] if opt.second_objective else [])
    study = open_study(request.name, store, [g.direction for g in goals],
                       pruner=FeasibleMedianPruner())
    report = _reporter(request, progress)
    if request.workers == 1:
        study.sampler = tpe_sampler(study, request.seed, 0)
        objective = make_objective(request.scenario, request.replicates, request.seed,
                                   request.population_scale, engine=request.engine)
        run_trials(study, store, objective, request.trials, on_trial=report)
    else:
        run_workers(study, WorkerSpec(
            scenario=request.scenario, storage=store.label, heartbeat=request.heartbeat,
            study_name=request.name, n_trials=request.trials, replicates=request.replicates,
            seed=request.seed, population_scale=request.population_scale, index=0,
            threads=max(1, (os.cpu_count() or 1) // request.workers),
            verbosity=optuna.logging.get_verbosity(), engine=request.engine),
            request.workers, report)
    return study


def _reporter(request: _Request, progress: Callable[[int, int, float | None, str], None] | None
              ) -> Callable[[optuna.Study], None]:
    """What tells ``progress`` how the study stands after each trial."""
    opt = request.scenario.optimise
    assert opt is not None
    kpi, second = opt.objective.kpi, opt.second_objective
    money = request.scenario.economics.currency

    def report(study: optuna.Study) -> None:
        if progress is None:
            return
        best = None
        if second is None:
            with contextlib.suppress(ValueError):
                best = study.best_value
            status = "" if best is None else f"best {format_kpi(kpi, best, money)}"
        else:  # the front's size and the best value of each objective on it
            front = [t.values for t in study.best_trials if t.values]
            status = f"front {len(front)}"
            for i, goal in enumerate((opt.objective, second)):
                if front:
                    pick = max if goal.direction == "maximize" else min
                    value = pick(v[i] for v in front)
                    status += f", best {goal.kpi} {format_kpi(goal.kpi, value, money)}"
        progress(counted(study), request.trials, best, status)

    return report


def _mean_ci(values: np.ndarray, bounds: Bounds = UNBOUNDED
             ) -> tuple[float, tuple[float, float]]:
    """Mean and 95% interval inside ``bounds`` (a KPI's range; none for a difference)."""
    mean, low, high = mean_interval(values, 0.95, bounds)
    return float(mean), (float(low), float(high))


def _contenders(request: _Request, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials to re-evaluate: the best feasible ones (with two objectives, of the front)."""
    opt = request.scenario.optimise
    assert opt is not None
    sign = -1.0 if opt.objective.direction == "minimize" else 1.0
    complete = [t for t in study.get_trials(deepcopy=False,
                                            states=(optuna.trial.TrialState.COMPLETE,))
                if feasible(t)]
    complete.sort(key=lambda t: -sign * float(t.values[0] if t.values else math.nan))
    if opt.second_objective is not None:  # the feasible Pareto front, best primary first
        front = {t.number for t in study.best_trials}
        return [t for t in complete if t.number in front][:max(request.top_k, 10)]
    return complete[:request.top_k]


def _reevaluate(request: _Request, study: optuna.Study) -> tuple[Evaluation, list[Evaluation]]:
    """The baseline and the best trials on fresh seeds, with more replicates (paired)."""
    rseed = (request.seed + REEVAL_SEED_OFFSET) % 2**63
    base = request.simulate(request.baseline, rseed, request.reeval_replicates)

    def evaluate(label: str, params: dict[str, Any], counts: sim.RunCounts) -> Evaluation:
        return _evaluation(request, label, params, counts, base)

    baseline = evaluate("baseline", {}, base)
    candidates = [evaluate(f"trial {t.number}", dict(t.params), request.simulate(
        request.scenario.apply(overrides=dict(t.params)), rseed, request.reeval_replicates))
        for t in _contenders(request, study)]
    return baseline, candidates


def _evaluation(request: _Request, label: str, params: dict[str, Any], counts: sim.RunCounts,
                base: sim.RunCounts) -> Evaluation:
    """One design's objective, cost and uplift over the baseline (same seeds), with CIs."""
    opt = request.scenario.optimise
    assert opt is not None
    kpi, second = opt.objective.kpi, opt.second_objective
    vals, bounds = counts.kpis, counts.bounds
    obj, obj_ci = _mean_ci(vals[kpi], bounds[kpi])
    cost, cost_ci = _mean_ci(vals["cost"], bounds["cost"])
    uplift, uplift_ci = _mean_ci(vals[kpi] - base.kpis[kpi])  # paired: same seeds
    meets_all = all(v <= 0 for v in violations(request.scenario, vals).values())
    sec, sec_ci = _mean_ci(vals[second.kpi], bounds[second.kpi]) if second is not None \
        else (math.nan, (math.nan, math.nan))
    return Evaluation(label, params, obj, obj_ci, cost, cost_ci, uplift, uplift_ci,
                      meets_all, request.reeval_replicates, sec, sec_ci)


def _result(request: _Request, store: Storage, study: optuna.Study, baseline: Evaluation,
            candidates: list[Evaluation]) -> OptimisationResult:
    """The study's answer: the best feasible re-evaluated design, tables and importances."""
    opt = request.scenario.optimise
    assert opt is not None
    kpi, direction = opt.objective.kpi, opt.objective.direction
    sign = -1.0 if direction == "minimize" else 1.0
    meets = [c for c in candidates if c.feasible]
    best = max(meets, key=lambda c: sign * c.objective) if meets else None
    ran = [t for t in study.get_trials(deepcopy=False) if "replicates_run" in t.user_attrs]
    return OptimisationResult(
        study_name=request.name, storage=store.label, objective=kpi, direction=direction,
        trials=_trials_table(study), baseline=baseline, candidates=candidates, best=best,
        best_scenario=request.scenario.apply(overrides=best.params) if best else None,
        importances=_importances(study, sign, opt.second_objective is not None),
        pareto=_pareto_table(request, candidates) if opt.second_objective else None,
        replicates_run=sum(int(t.user_attrs["replicates_run"]) for t in ran),
        replicates_full=len(ran) * request.replicates)


def _importances(study: optuna.Study, sign: float, two: bool) -> dict[str, float]:
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


def _trials_table(study: optuna.Study) -> pa.Table:
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


def _pareto_table(request: _Request, candidates: list[Evaluation]) -> pa.Table:
    """The re-evaluated front of a two-objective study."""
    opt = request.scenario.optimise
    assert opt is not None and opt.second_objective is not None
    kpi, second = opt.objective.kpi, opt.second_objective.kpi
    return pa.table({
        "trial": [int(c.label.split()[-1]) for c in candidates],
        "params": [json.dumps(c.params) for c in candidates],
        kpi: [c.objective for c in candidates],
        f"{kpi}_ci_low": [c.objective_ci[0] for c in candidates],
        f"{kpi}_ci_high": [c.objective_ci[1] for c in candidates],
        second if second != kpi else f"{kpi}_2": [c.second for c in candidates],
        "feasible": [c.feasible for c in candidates],
    })


def _files(result: OptimisationResult) -> dict[str, pa.Table | bytes | None]:
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
