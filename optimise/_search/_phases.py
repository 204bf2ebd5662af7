""":func:`optimise` and its phases: validate → search → re-evaluate → write.

* **validate** the request: an ``optimise:`` block, counts, an objective the
  baseline defines;
* **search**: the study's trials, in this process or in worker processes, through
  the study core's trial loop (:func:`optimise._study.run_trials`);
* **re-evaluate** the best feasible trials beside the baseline on fresh seeds;
* **write** the study's files (:data:`sim.results.STUDY_FILES`) in one call.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

import sim
from optimise._search._objective import (
    FeasibleMedianPruner,
    feasible,
    make_objective,
    violations,
)
from optimise._search._result import (
    Evaluation,
    OptimisationResult,
    files,
    importances,
    pareto_table,
    trials_table,
)
from optimise._search._workers import WorkerSpec, run_workers
from optimise._study import (
    Storage,
    counted,
    open_storage,
    open_study,
    run_trials,
    tpe_sampler,
)
from sim import Scenario, SimError
from sim.display import format_kpi
from sim.results import journal_file, study_folder, write_files
from sim.stats import UNBOUNDED, Bounds, mean_interval

__all__ = ["optimise"]

log = logging.getLogger(__name__)

REEVAL_SEED_OFFSET = 0x5EED_0000
"""Re-evaluation runs on base seed + this: seeds no trial has seen."""


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
    result.paths = write_files(folder, files(result))
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
        study_name=request.name, storage=store.label, journal=store.journal,
        objective=kpi, direction=direction,
        trials=trials_table(study), baseline=baseline, candidates=candidates, best=best,
        best_scenario=request.scenario.apply(overrides=best.params) if best is not None
        else None,
        importances=importances(study, sign, opt.second_objective is not None),
        pareto=pareto_table(kpi, opt.second_objective.kpi, candidates)
        if opt.second_objective else None,
        replicates_run=sum(int(t.user_attrs["replicates_run"]) for t in ran),
        replicates_full=len(ran) * request.replicates)


