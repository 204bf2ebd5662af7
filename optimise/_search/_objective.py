"""The objective of a search: a trial's design simulated, its KPI reported, its constraints
checked.

Every trial runs on the same seeds (common random numbers). With one objective
it runs half the replicates, reports their mean to the pruner
(:class:`FeasibleMedianPruner`), and only if not pruned runs the rest; on a small
population the first stage fills the idle numba threads with the next replicates
(:func:`first_batch`), the same numbers sooner.
Constraints (budgets, cost per acquisition) go to Optuna's constraints
mechanism. A trial reads the engine's dense counts (:func:`sim.simulate`):
no table is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numba
import numpy as np
import optuna

import sim
from optimise._study import suggest_point
from sim import Scenario

__all__ = ["FeasibleMedianPruner", "feasible", "first_batch", "kpis", "make_objective",
           "violations"]


def kpis(scenario: Scenario, seed: int, replicates: int, population_scale: float,
         first_replicate: int = 0, threads: int | None = None,
         engine: str = "fast") -> dict[str, np.ndarray]:
    """Every KPI (and the agent count) of each replicate, as float arrays."""
    return sim.simulate(scenario, seed=seed, replicates=replicates,
                        population_scale=population_scale, first_replicate=first_replicate,
                        threads=threads, engine=engine).kpis


def first_batch(variant: Scenario, half: int, replicates: int, population_scale: float,
                threads: int | None = None, engine: str = "fast") -> int:
    """How many replicates a trial runs before the pruner looks at the first ``half``.

    ``half`` (the pruner's fidelity), unless that leaves numba threads idle: when one
    replicate of the design keeps a single thread busy (a population below
    ``PARALLEL_MIN_AGENTS``: :func:`sim.replicate_threads`) and ``half`` is below the
    thread count, the idle threads run the next replicates at the same time, side by
    side. The pruner still sees the first ``half`` only, so every number is the one
    the staged run gives; a pruned trial's extra replicates ran on threads that would
    have waited, and an unpruned one is done a batch sooner (two replicates on two
    threads: one replicate's time instead of two).
    """
    if half >= replicates or engine != "fast":
        return min(half, replicates)
    lanes = numba.get_num_threads() if threads is None else threads
    if half >= lanes or sim.replicate_threads(variant, population_scale=population_scale,
                                              threads=lanes) > 1:
        return half
    return min(lanes, replicates)


def violations(scenario: Scenario, values: dict[str, np.ndarray]) -> dict[str, float]:
    """Constraint values by name (<= 0 is feasible), from the scenario's constraints: the
    budgets, the cost per acquired customer, and each KPI limit of ``constraints.kpis``
    (on the KPI's mean over the replicates)."""
    opt = scenario.optimise
    assert opt is not None
    c = opt.constraints
    cost = float(np.mean(values["cost"]))
    out = {}
    if c.budget_total is not None:
        out["budget_total"] = cost - c.budget_total
    if c.budget_per_day is not None:
        out["budget_per_day"] = cost / scenario.time.horizon_days - c.budget_per_day
    if c.max_cost_per_acquired is not None:
        acquired = values["acquired"]
        per = np.where(acquired > 0, values["cost"] / np.maximum(acquired, 1), np.inf)
        out["max_cost_per_acquired"] = float(np.mean(per)) - c.max_cost_per_acquired
    for name, limit in c.kpis.items():
        # an undefined KPI (NaN in every replicate) meets no limit
        mean = _nanmean(values[name]) if name in values else math.nan
        if limit.min is not None:
            out[f"{name} >= {limit.min:g}"] = math.inf if math.isnan(mean) else limit.min - mean
        if limit.max is not None:
            out[f"{name} <= {limit.max:g}"] = math.inf if math.isnan(mean) else mean - limit.max
    return out


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial met every constraint (a trial without constraints does)."""
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
            if step in t.intermediate_values and feasible(t)]
        if len(peers) < self.n_startup_trials:
            return False
        median = float(np.median(peers))
        value = trial.intermediate_values[step]
        if study.direction == optuna.study.StudyDirection.MAXIMIZE:
            return value < median
        return value > median


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if not np.isnan(values).all() else math.nan


def make_objective(scenario: Scenario, replicates: int, seed: int, population_scale: float,
                   threads: int | None = None, engine: str = "fast"
                   ) -> Callable[[optuna.Trial], float | tuple[float, float]]:
    """The objective of a study: apply the trial's parameters, simulate, report.

    Raises (inside a trial):
        optuna.TrialPruned: a combination of values that breaks a scenario rule, an
            objective the design leaves undefined, or a running mean the pruner stops.
    """
    opt = scenario.optimise
    assert opt is not None
    kpi = opt.objective.kpi
    second = opt.second_objective
    # a trial's variant simulates the same without the search block; checking its paths
    # again on every trial cost more than the rest of the variant's validation
    designs = scenario.apply(overrides={"optimise": None})

    def simulate(variant: Scenario, count: int, first: int = 0) -> dict[str, np.ndarray]:
        return kpis(variant, seed, count, population_scale, first_replicate=first,
                    threads=threads, engine=engine)

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        params = suggest_point(trial, opt.search)
        try:
            variant = designs.apply(overrides=params)
        except sim.ScenarioError as exc:
            trial.set_user_attr("error", str(exc))
            raise optuna.TrialPruned(f"invalid combination: {exc}") from None
        # two fidelities: the first half of the replicates, then (if not pruned) the rest
        half = max(1, replicates // 2) if second is None else replicates  # one objective
        ahead = first_batch(variant, half, replicates, population_scale, threads, engine)
        values = simulate(variant, ahead)
        if half < replicates:
            trial.report(_nanmean(values[kpi][:half]), step=half)
            if trial.should_prune():
                trial.set_user_attr("replicates_run", half)
                raise optuna.TrialPruned(f"running mean after {half} of {replicates} "
                                         f"replicates is below the feasible median")
            if ahead < replicates:
                rest = simulate(variant, replicates - ahead, first=ahead)
                values = {k: np.concatenate([values[k], rest[k]]) for k in values}
        trial.set_user_attr("replicates_run", replicates)  # one write to the storage
        mean = _nanmean(values[kpi])
        trial.set_user_attr("cost", float(np.mean(values["cost"])))
        found = violations(scenario, values)
        trial.set_user_attr("constraints", found)
        for key, value in found.items():
            trial.set_constraint(key, value)  # Optuna's constraints: <= 0 is feasible
        if math.isnan(mean):
            trial.set_user_attr("error", f"{kpi} undefined for this design")
            raise optuna.TrialPruned(f"{kpi} undefined")
        if second is not None:
            return mean, float(np.nanmean(values[second.kpi]))
        return mean

    return objective
