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
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from optuna.storages.journal import JournalFileBackend
from scipy.special import stdtrit

import sim
from sim import Scenario, SimError

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


def _mean_ci(values: np.ndarray) -> tuple[float, tuple[float, float]]:
    values = values[~np.isnan(values)]
    n = values.size
    if n == 0:
        return math.nan, (math.nan, math.nan)
    mean = float(values.mean())
    if n < 2:
        return mean, (math.nan, math.nan)
    half = float(stdtrit(n - 1, 0.975) * values.std(ddof=1) / math.sqrt(n))
    return mean, (mean - half, mean + half)


def _suggest(trial: optuna.Trial, spec: Any) -> Any:
    if spec.choices is not None:
        return trial.suggest_categorical(spec.path, spec.choices)
    if spec.type == "int":
        return trial.suggest_int(spec.path, int(spec.low), int(spec.high))
    return trial.suggest_float(spec.path, spec.low, spec.high, log=spec.type == "log")


def _baseline(scenario: Scenario) -> Scenario:
    """The scenario with every intervention switched off."""
    return scenario.apply(overrides={f"interventions.{n}.enabled": False
                                     for n in scenario.interventions})


def _violations(scenario: Scenario, kpis: dict[str, np.ndarray]) -> dict[str, float]:
    """Constraint values by name (<= 0 is feasible), from the scenario's constraints."""
    opt = scenario.optimise
    assert opt is not None
    c = opt.constraints
    cost = float(np.mean(kpis["cost"]))
    out = {}
    if c.budget_total is not None:
        out["budget_total"] = cost - c.budget_total
    if c.budget_per_day is not None:
        out["budget_per_day"] = cost / scenario.time.horizon_days - c.budget_per_day
    if c.max_cost_per_acquired is not None:
        acquired = kpis["acquired"]
        per = np.where(acquired > 0, kpis["cost"] / np.maximum(acquired, 1), np.inf)
        out["max_cost_per_acquired"] = float(np.mean(per)) - c.max_cost_per_acquired
    return out


def _kpis(scenario: Scenario, seed: int, replicates: int, population_scale: float,
          first_replicate: int = 0) -> dict[str, np.ndarray]:
    result = sim.run(scenario, seed=seed, replicates=replicates,
                     population_scale=population_scale, first_replicate=first_replicate)
    return {name: np.asarray(result.kpis.column(name).to_numpy(zero_copy_only=False),
                             dtype=float) for name in (*sim.KPI_NAMES, "agents")}


def _feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.user_attrs.get("constraints", {}).values())


class FeasibleMedianPruner(optuna.pruners.BasePruner):
    """Stop a trial whose running mean is worse than the median, at the same step, of
    the completed *feasible* trials.

    Optuna's median rule compares with every trial; under a budget the infeasible
    designs (more spend, better KPI) would raise the median and prune the feasible
    designs at the budget's edge, where the optimum lies.
    """

    def __init__(self, n_startup_trials: int = 5) -> None:
        self.n_startup_trials = n_startup_trials

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        peers = [t.intermediate_values[step] for t in study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if step in t.intermediate_values and _feasible(t)]
        if len(peers) < self.n_startup_trials:
            return False
        median = float(np.median(peers))
        value = trial.intermediate_values[step]
        if study.direction == optuna.study.StudyDirection.MAXIMIZE:
            return value < median
        return value > median


def _storage(storage: str | None, out: Path, study_name: str) -> tuple[Any, str]:
    if storage is None:
        folder = out / "optimise"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{study_name}.journal"
        backend = JournalFileBackend(str(path))
        return optuna.storages.JournalStorage(backend), str(path)
    if "://" not in storage:
        backend = JournalFileBackend(storage)
        return optuna.storages.JournalStorage(backend), storage
    try:
        return optuna.storages.RDBStorage(storage), storage
    except ModuleNotFoundError as exc:
        raise SimError(f"storage {storage!r} needs the database driver {exc.name!r}; "
                       f"install it") from None
    except Exception as exc:  # sqlalchemy's errors: bad URL, server unreachable
        raise SimError(f"cannot open storage {storage!r}: {exc}") from None


def _retry_failed(study: optuna.Study) -> int:
    """Queue each failed trial's parameters once more (an interrupted trial is not lost)."""
    retried = set(study.user_attrs.get("retried", []))
    failed = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
              if t.number not in retried]
    for t in failed:
        study.enqueue_trial(t.params, skip_if_exists=False)
        retried.add(t.number)
    if failed:
        study.set_user_attr("retried", sorted(retried))
    return len(failed)


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


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def optimise(scenario: Scenario | str | os.PathLike[str], *, trials: int | None = None,
             replicates: int | None = None, study_name: str | None = None,
             storage: str | None = None, out: str | os.PathLike[str] = "results",
             seed: int = 0, top_k: int = 3, reeval_replicates: int | None = None,
             population_scale: float = 1.0,
             progress: Callable[[int, int, float | None], None] | None = None
             ) -> OptimisationResult:
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
        progress: called after each trial with (complete trials, trials, best value).

    Returns:
        The trials, the re-evaluated candidates beside the baseline, the best design.

    Raises:
        SimError: no ``optimise:`` block, an objective the baseline cannot define,
            a storage that cannot be opened.

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
    store, store_label = _storage(storage, out_dir, name)
    kpi = opt.objective.kpi
    direction = opt.objective.direction
    base = _baseline(scenario)

    first = _kpis(base, seed, reps, population_scale)
    if np.isnan(first[kpi]).all():
        raise SimError(f"the objective {kpi!r} is undefined for {scenario.name!r} (e.g. a "
                       f"retention lag longer than the horizon, or no acquisitions)")

    second = opt.second_objective
    directions = [direction] + ([second.direction] if second is not None else [])
    study = optuna.create_study(study_name=name, storage=store, directions=directions,
                                load_if_exists=True, pruner=FeasibleMedianPruner())
    # a resumed study must not replay the sampler's first draws: its seed depends on
    # the trials already stored (deterministic, and the plain seed for a new study)
    history = len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=(seed + 1_000_003 * history) % 2**32)
    _retry_failed(study)

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        params = {spec.path: _suggest(trial, spec) for spec in opt.search}
        try:
            variant = scenario.apply(overrides=params)
        except sim.ScenarioError as exc:
            trial.set_user_attr("error", str(exc))
            raise optuna.TrialPruned(f"invalid combination: {exc}") from None
        # two fidelities: the first half of the replicates, then (if not pruned) the rest
        half = max(1, reps // 2) if second is None else reps  # Optuna prunes one objective
        values = _kpis(variant, seed, half, population_scale)
        trial.set_user_attr("replicates_run", half)
        if half < reps:
            running = values[kpi]
            trial.report(float(np.nanmean(running)) if not np.isnan(running).all()
                         else math.nan, step=half)
            if trial.should_prune():
                raise optuna.TrialPruned(f"running mean after {half} of {reps} replicates "
                                         f"is below the feasible median")
            rest = _kpis(variant, seed, reps - half, population_scale, first_replicate=half)
            values = {k: np.concatenate([values[k], rest[k]]) for k in values}
            trial.set_user_attr("replicates_run", reps)
        mean = float(np.nanmean(values[kpi])) if not np.isnan(values[kpi]).all() else math.nan
        trial.set_user_attr("cost", float(np.mean(values["cost"])))
        violations = _violations(scenario, values)
        trial.set_user_attr("constraints", violations)
        for key, value in violations.items():
            trial.set_constraint(key, value)  # Optuna's constraints: <= 0 is feasible
        if math.isnan(mean):
            trial.set_user_attr("error", f"{kpi} undefined for this design")
            raise optuna.TrialPruned(f"{kpi} undefined")
        if second is not None:
            return mean, float(np.nanmean(values[second.kpi]))
        return mean

    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    def done() -> int:
        return len(study.get_trials(deepcopy=False, states=counted))

    def report(study_: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        if progress is not None:
            best = None
            if second is None:
                with contextlib.suppress(ValueError):
                    best = study_.best_value
            progress(done(), n_trials, best)

    remaining = n_trials - done()
    mine: list[int] = []

    def tracked(trial: optuna.Trial) -> float | tuple[float, float]:
        mine.append(trial.number)
        return objective(trial)

    if remaining > 0:
        try:
            study.optimize(
                tracked, n_trials=remaining,
                callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=counted), report],
                catch=())
        except KeyboardInterrupt:
            # the trial under way is failed now, and retried with its parameters on resume
            for number in mine:
                frozen = study.get_trials(deepcopy=False)[number]
                if frozen.state == optuna.trial.TrialState.RUNNING:
                    study.tell(number, state=optuna.trial.TrialState.FAIL)
            raise

    # re-evaluate the best feasible trials beside the baseline on fresh seeds
    reeval = reeval_replicates or max(2 * reps, 8)
    rseed = (seed + REEVAL_SEED_OFFSET) % 2**63
    complete = [t for t in study.get_trials(deepcopy=False,
                                            states=(optuna.trial.TrialState.COMPLETE,))
                if all(v <= 0 for v in t.user_attrs.get("constraints", {}).values())]
    sign = -1.0 if direction == "minimize" else 1.0
    complete.sort(key=lambda t: -sign * float(t.values[0] if t.values else math.nan))
    if second is not None:  # the feasible Pareto front, best primary objective first
        front = {t.number for t in study.best_trials}
        complete = [t for t in complete if t.number in front][:max(top_k, 10)]
    else:
        complete = complete[:top_k]
    base_vals = _kpis(base, rseed, reeval, population_scale)

    def evaluate(label: str, params: dict[str, Any], variant: Scenario) -> Evaluation:
        vals = base_vals if variant is base else _kpis(variant, rseed, reeval,
                                                       population_scale)
        obj, obj_ci = _mean_ci(vals[kpi])
        cost, cost_ci = _mean_ci(vals["cost"])
        uplift, uplift_ci = _mean_ci(vals[kpi] - base_vals[kpi])  # paired: same seeds
        feasible = all(v <= 0 for v in _violations(scenario, vals).values())
        sec, sec_ci = _mean_ci(vals[second.kpi]) if second is not None else (
            math.nan, (math.nan, math.nan))
        return Evaluation(label, params, obj, obj_ci, cost, cost_ci, uplift, uplift_ci,
                          feasible, reeval, sec, sec_ci)

    baseline = evaluate("baseline", {}, base)
    candidates = [evaluate(f"trial {t.number}", dict(t.params),
                           scenario.apply(overrides=dict(t.params)))
                  for t in complete]
    feasible = [c for c in candidates if c.feasible]
    best = max(feasible, key=lambda c: sign * c.objective) if feasible else None
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
    tmp = folder / ".trials.parquet.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, folder / "trials.parquet")
    paths.append(str(folder / "trials.parquet"))
    _write_atomic(folder / "importances.json",
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
        pq.write_table(pareto, folder / ".pareto.parquet.tmp")
        os.replace(folder / ".pareto.parquet.tmp", folder / "pareto.parquet")
        paths.append(str(folder / "pareto.parquet"))
    summary = {"objective": kpi, "direction": direction,
               "baseline": baseline.__dict__, "candidates": [c.__dict__ for c in candidates],
               "best": None if best is None else best.__dict__}
    _write_atomic(folder / "summary.json", json.dumps(summary, indent=2, default=str).encode())
    paths.append(str(folder / "summary.json"))
    if best_scenario is not None:
        text = yaml.safe_dump(best_scenario.to_data(), sort_keys=False, allow_unicode=True)
        _write_atomic(folder / "best_scenario.yaml", text.encode())
        paths.append(str(folder / "best_scenario.yaml"))
    ran = [t for t in study.get_trials(deepcopy=False) if "replicates_run" in t.user_attrs]
    return OptimisationResult(
        study_name=name, storage=store_label, objective=kpi, direction=direction,
        trials=table, baseline=baseline, candidates=candidates, best=best,
        best_scenario=best_scenario, importances=importances, pareto=pareto,
        replicates_run=sum(int(t.user_attrs["replicates_run"]) for t in ran),
        replicates_full=len(ran) * reps, paths=paths)
