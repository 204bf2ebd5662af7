"""Search the interventions of a scenario's ``optimise:`` block with Optuna.

A trial is the scenario with the trial's parameters applied, simulated with R
replicates on the same seeds for every trial (common random numbers); its
value is the mean of the objective KPI over the replicates. Budget and
cost-per-acquisition limits go through Optuna's constraints mechanism. After
the search the best trials are re-evaluated on fresh seeds with more
replicates, beside the baseline (no interventions), and the answer is the best
re-evaluated feasible design.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pyarrow as pa
import yaml

import sim
from optimise import _workers as _w
from optimise._files import write_parquet_atomic
from optimise._workers import (
    COUNTED,
    FeasibleMedianPruner,
    WorkerSpec,
    feasible,
    make_objective,
    open_storage,
    run_trials,
    sampler_for,
    start_worker,
    violations,
)
from sim import Scenario, SimError
from sim.display import format_kpi
from sim.metrics import kpi_bounds
from sim.model import compile_scenario
from sim.results import write_file_atomic
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
    """What :func:`optimise` found."""

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


def _mean_ci(values: np.ndarray, bounds: Bounds = UNBOUNDED
             ) -> tuple[float, tuple[float, float]]:
    """Mean and 95% interval inside ``bounds`` (a KPI's range; none for a difference)."""
    mean, low, high = mean_interval(values, 0.95, bounds)
    return float(mean), (float(low), float(high))


def _baseline(scenario: Scenario) -> Scenario:
    """The scenario with every intervention switched off."""
    return scenario.apply(overrides={f"interventions.{n}.enabled": False
                                     for n in scenario.interventions})


def _trials_table(study: optuna.Study) -> pa.Table:
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


def _run_workers(study: optuna.Study, spec: WorkerSpec, workers: int,
                 report: Callable[[optuna.Study], None]) -> None:
    """Run ``workers`` worker processes on ``study`` and report progress until they end.

    Workers are new interpreters (see :func:`start_worker`), not forks: the
    parent's numba threads do not survive a fork, and the caller's main module
    is not imported again. A worker that dies leaves its trial to the others, which fail
    and requeue it; if every worker stops before the study is full, this raises.
    """
    procs = [start_worker(replace(spec, index=i)) for i in range(workers)]
    reported: set[int] = set()
    try:
        while True:
            codes = [p.poll() for p in procs]  # also reaps the ones that ended
            for i, code in enumerate(codes):
                if code not in (0, None) and i not in reported:
                    reported.add(i)
                    how = (f"was killed by signal {-code}" if code < 0
                           else f"exited with code {code}")
                    log.warning("worker %d (process %d) %s; its trial goes to the others",
                                i, procs[i].pid, how)
            report(study)
            if all(code is not None for code in codes):
                break
            time.sleep(_w.POLL_S)
    except BaseException as exc:
        if not sim.is_interrupt(exc):
            raise
        for p in procs:  # in their own process group, a terminal's Ctrl-C did not reach them
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    missing = spec.n_trials - len(study.get_trials(deepcopy=False, states=COUNTED))
    if missing > 0:
        raise SimError(f"every worker stopped with {missing} of {spec.n_trials} trial(s) "
                       f"still to run (see the messages above); rerun with the same study "
                       f"name to continue")


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
        storage: a journal file path or an RDB URL; default: a journal file under
            ``out/optimise/``.
        out: where the trials, the best scenario and the importances are written.
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
    if not isinstance(scenario, Scenario):
        scenario = sim.load_scenario(scenario)
    opt = scenario.optimise
    if opt is None:
        raise SimError(f"scenario {scenario.name!r} has no optimise: block to search")
    n_trials = trials if trials is not None else opt.trials
    reps = replicates if replicates is not None else opt.replicates
    if n_trials < 1 or reps < 1 or top_k < 1:
        raise SimError("trials, replicates and top_k must be at least 1")
    name = study_name or scenario.name
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if workers < 1:
        raise SimError(f"workers must be at least 1, not {workers}")
    store, store_label = open_storage(storage, out_dir, name, heartbeat, workers)
    kpi = opt.objective.kpi
    direction = opt.objective.direction
    base = _baseline(scenario)

    first = _w.kpis(base, seed, reps, population_scale, engine=engine)
    if np.isnan(first[kpi]).all():
        raise SimError(f"the objective {kpi!r} is undefined for {scenario.name!r} (e.g. a "
                       f"retention lag longer than the horizon, or no acquisitions)")

    second = opt.second_objective
    directions = [direction] + ([second.direction] if second is not None else [])
    study = optuna.create_study(study_name=name, storage=store, directions=directions,
                                load_if_exists=True, pruner=FeasibleMedianPruner())

    def report(study_: optuna.Study) -> None:
        if progress is not None:
            best = None
            money = scenario.economics.currency
            if second is None:
                with contextlib.suppress(ValueError):
                    best = study_.best_value
                status = "" if best is None else f"best {format_kpi(kpi, best, money)}"
            else:  # the front's size and the best value of each objective on it
                front = [t.values for t in study_.best_trials if t.values]
                status = f"front {len(front)}"
                for i, goal in enumerate((opt.objective, second)):
                    if front:
                        pick = max if goal.direction == "maximize" else min
                        value = pick(v[i] for v in front)
                        status += f", best {goal.kpi} {format_kpi(goal.kpi, value, money)}"
            progress(len(study_.get_trials(deepcopy=False, states=COUNTED)), n_trials, best,
                     status)

    if workers == 1:
        study.sampler = sampler_for(study, seed, 0)
        run_trials(study, make_objective(scenario, n_trials, reps, seed, population_scale,
                                         engine=engine),
                   n_trials, on_trial=report)
    else:
        _run_workers(study, WorkerSpec(
            scenario=scenario, storage=store_label, heartbeat=heartbeat, study_name=name,
            n_trials=n_trials, replicates=reps, seed=seed, population_scale=population_scale,
            index=0, threads=max(1, (os.cpu_count() or 1) // workers),
            verbosity=optuna.logging.get_verbosity(), engine=engine), workers, report)

    # re-evaluate the best feasible trials beside the baseline on fresh seeds
    reeval = reeval_replicates or max(2 * reps, 8)
    rseed = (seed + REEVAL_SEED_OFFSET) % 2**63
    complete = [t for t in study.get_trials(deepcopy=False,
                                            states=(optuna.trial.TrialState.COMPLETE,))
                if feasible(t)]
    sign = -1.0 if direction == "minimize" else 1.0
    complete.sort(key=lambda t: -sign * float(t.values[0] if t.values else math.nan))
    if second is not None:  # the feasible Pareto front, best primary objective first
        front = {t.number for t in study.best_trials}
        complete = [t for t in complete if t.number in front][:max(top_k, 10)]
    else:
        complete = complete[:top_k]
    base_vals = _w.kpis(base, rseed, reeval, population_scale, engine=engine)

    def evaluate(label: str, params: dict[str, Any], variant: Scenario) -> Evaluation:
        vals = base_vals if variant is base else _w.kpis(variant, rseed, reeval,
                                                       population_scale, engine=engine)
        bounds = kpi_bounds(compile_scenario(variant))
        obj, obj_ci = _mean_ci(vals[kpi], bounds[kpi])
        cost, cost_ci = _mean_ci(vals["cost"], bounds["cost"])
        uplift, uplift_ci = _mean_ci(vals[kpi] - base_vals[kpi])  # paired: same seeds
        meets_all = all(v <= 0 for v in violations(scenario, vals).values())
        sec, sec_ci = _mean_ci(vals[second.kpi], bounds[second.kpi]) if second is not None \
            else (math.nan, (math.nan, math.nan))
        return Evaluation(label, params, obj, obj_ci, cost, cost_ci, uplift, uplift_ci,
                          meets_all, reeval, sec, sec_ci)

    baseline = evaluate("baseline", {}, base)
    candidates = [evaluate(f"trial {t.number}", dict(t.params),
                           scenario.apply(overrides=dict(t.params)))
                  for t in complete]
    meets = [c for c in candidates if c.feasible]
    best = max(meets, key=lambda c: sign * c.objective) if meets else None
    best_scenario = scenario.apply(overrides=best.params) if best is not None else None

    try:
        # with two objectives, rank by the first; the evaluator reads low as good
        target = (lambda t: -sign * t.values[0]) if second is not None else None
        with warnings.catch_warnings():  # the sign is handled: low target is good
            warnings.filterwarnings("ignore", message=".*low `target` values")
            found = optuna.importance.get_param_importances(study, target=target)
        importances = {k: float(v) for k, v in found.items()}
    except (ValueError, RuntimeError) as exc:  # too few complete trials, no variation
        log.info("no parameter importances: %s", exc)
        importances = {}

    folder = out_dir / "optimise" / name
    folder.mkdir(parents=True, exist_ok=True)
    table = _trials_table(study)
    paths = []
    write_parquet_atomic(folder / "trials.parquet", table)
    paths.append(str(folder / "trials.parquet"))
    write_file_atomic(folder / "importances.json",
                  json.dumps(importances, indent=2).encode())
    paths.append(str(folder / "importances.json"))
    pareto = None
    if second is not None:
        pareto = pa.table({
            "trial": [int(c.label.split()[-1]) for c in candidates],
            "params": [json.dumps(c.params) for c in candidates],
            kpi: [c.objective for c in candidates],
            f"{kpi}_ci_low": [c.objective_ci[0] for c in candidates],
            f"{kpi}_ci_high": [c.objective_ci[1] for c in candidates],
            second.kpi if second.kpi != kpi else f"{kpi}_2": [c.second for c in candidates],
            "feasible": [c.feasible for c in candidates],
        })
        write_parquet_atomic(folder / "pareto.parquet", pareto)
        paths.append(str(folder / "pareto.parquet"))
    summary = {"objective": kpi, "direction": direction,
               "baseline": baseline.__dict__, "candidates": [c.__dict__ for c in candidates],
               "best": None if best is None else best.__dict__}
    write_file_atomic(folder / "summary.json", json.dumps(summary, indent=2, default=str).encode())
    paths.append(str(folder / "summary.json"))
    if best_scenario is not None:
        text = yaml.safe_dump(best_scenario.to_data(), sort_keys=False, allow_unicode=True)
        write_file_atomic(folder / "best_scenario.yaml", text.encode())
        paths.append(str(folder / "best_scenario.yaml"))
    ran = [t for t in study.get_trials(deepcopy=False) if "replicates_run" in t.user_attrs]
    return OptimisationResult(
        study_name=name, storage=store_label, objective=kpi, direction=direction,
        trials=table, baseline=baseline, candidates=candidates, best=best,
        best_scenario=best_scenario, importances=importances, pareto=pareto,
        replicates_run=sum(int(t.user_attrs["replicates_run"]) for t in ran),
        replicates_full=len(ran) * reps, paths=paths)
