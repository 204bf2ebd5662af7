"""Optimisation: a known best under a binding budget, resume, reproducibility, outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import optimise
import sim
from sim.cli import app

AFTERCARE = """\
name: aftercare
seed: 3
time: {horizon_days: 400}
population:
  arrivals: {per_day: 6}
stages:
  prospect: {kind: prospect, exits: {customer: {mean_days: 4}}}
  customer: {kind: customer, exits: {churned: {mean_days: 120}}}
  churned: {kind: lost}
touchpoints:
  aftercare_call:
    stages: [customer]
    reach: 0.0
    lift: {customer->churned: -2.5}     # a call makes churn ~12x less likely that day
    cost_per_exposure: 4.0
optimise:
  objective: {kpi: retention_90}
  constraints: {budget_total: BUDGET}
  search:
    - {path: touchpoints.aftercare_call.reach.customer, low: 0.0, high: 0.6}
  trials: 30
  replicates: 2
"""
R_STAR = 0.25
REPLICATES = 2
SEED = 0


def _scenario(budget: float) -> sim.Scenario:
    return sim.load_scenario(AFTERCARE.replace("BUDGET", repr(budget)))


@pytest.fixture(scope="module")
def budget() -> float:
    """The budget that binds exactly at reach R_STAR on the search seeds.

    Retention rises with reach (the call only lowers churn) and, with common random
    numbers, so does cost; the best feasible design is therefore the reach whose
    mean cost equals the budget: R_STAR.
    """
    s = _scenario(1e12).apply(overrides={"touchpoints.aftercare_call.reach.customer": R_STAR})
    costs = sim.run(s, seed=SEED, replicates=REPLICATES).kpis.column("cost").to_numpy()
    return float(np.mean(costs))


def test_cost_and_retention_rise_with_reach(budget: float) -> None:
    base = _scenario(budget)
    rows = []
    for reach in (0.0, 0.15, R_STAR, 0.4):
        s = base.apply(overrides={"touchpoints.aftercare_call.reach.customer": reach})
        k = sim.run(s, seed=SEED, replicates=REPLICATES).kpis
        rows.append((np.mean(k.column("cost").to_numpy()),
                     np.mean(k.column("retention_90").to_numpy())))
    costs, retention = zip(*rows, strict=True)
    assert list(costs) == sorted(costs) and list(retention) == sorted(retention)


def test_finds_the_known_best(tmp_path: Path, budget: float) -> None:
    res = optimise.optimise(_scenario(budget), out=tmp_path, seed=SEED, top_k=3)
    trials = res.trials.to_pylist()
    assert sum(t["state"] in ("COMPLETE", "PRUNED") for t in trials) == 30
    # the search respects the budget: feasible trials lie at or below R_STAR
    feasible = [float(t["param:touchpoints.aftercare_call.reach.customer"]) for t in trials
                if t["feasible"]]
    assert feasible and max(feasible) <= R_STAR + 0.01
    assert res.best is not None
    reach = res.best.params["touchpoints.aftercare_call.reach.customer"]
    assert R_STAR - 0.06 <= reach <= R_STAR + 0.01, reach
    # and it beats the baseline (no calls) by a CI-separated margin
    assert res.best.uplift_ci[0] > 0
    assert res.baseline.objective < res.best.objective


def test_outputs_are_written_and_runnable(tmp_path: Path, budget: float) -> None:
    res = optimise.optimise(_scenario(2 * budget), trials=8, out=tmp_path, seed=SEED)
    folder = tmp_path / "optimise" / "aftercare"
    assert pq.read_table(folder / "trials.parquet").num_rows == 8
    assert (folder / "importances.json").is_file() and (folder / "summary.json").is_file()
    assert res.best_scenario is not None
    again = sim.load_scenario(folder / "best_scenario.yaml")
    assert again == res.best_scenario
    sim.run(again, population_scale=0.5)


def test_same_seed_same_study(tmp_path: Path, budget: float) -> None:
    a = optimise.optimise(_scenario(budget), trials=6, out=tmp_path / "a", seed=4)
    b = optimise.optimise(_scenario(budget), trials=6, out=tmp_path / "b", seed=4)
    cols = ["number", "state", "value", "param:touchpoints.aftercare_call.reach.customer"]
    assert a.trials.select(cols).to_pylist() == b.trials.select(cols).to_pylist()


def test_interrupt_and_resume(tmp_path: Path, budget: float,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = _scenario(budget)
    real = sim.simulate
    calls = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 5:  # baseline check, then trials 0-2; the 4th trial is cut off
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sim, "simulate", flaky)
    with pytest.raises(KeyboardInterrupt):
        optimise.optimise(scenario, trials=8, out=tmp_path, seed=SEED)
    monkeypatch.setattr(sim, "simulate", real)
    res = optimise.optimise(scenario, trials=8, out=tmp_path, seed=SEED)
    trials = res.trials.to_pylist()
    counted = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]
    failed = [t for t in trials if t["state"] == "FAIL"]
    assert len(counted) == 8 and len(failed) == 1
    assert not [t for t in trials if t["state"] == "RUNNING"]
    key = "param:touchpoints.aftercare_call.reach.customer"
    # the interrupted trial was run again with the same parameters, once
    assert [t[key] for t in counted].count(failed[0][key]) == 1
    numbers = [t["number"] for t in trials]
    assert len(numbers) == len(set(numbers))
    # a further call with the same study name runs nothing more
    again = optimise.optimise(scenario, trials=8, out=tmp_path, seed=SEED)
    assert again.trials.num_rows == res.trials.num_rows


def test_cli_optimise(tmp_path: Path, budget: float) -> None:
    file = tmp_path / "aftercare.yaml"
    file.write_text(AFTERCARE.replace("BUDGET", repr(2 * budget)))
    res = CliRunner().invoke(app, ["optimise", str(file), "--trials", "6", "--out",
                                   str(tmp_path / "o"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "baseline" in res.stdout and "uplift" in res.stdout
    assert "best_scenario.yaml" in res.stdout


def test_refuses_scenario_without_block(tmp_path: Path, tiny_scenario_text: str) -> None:
    text = tiny_scenario_text.split("optimise:")[0]
    with pytest.raises(sim.SimError, match="no optimise"):
        optimise.optimise(sim.load_scenario(text), out=tmp_path)


def test_storage_url_and_journal(tmp_path: Path, budget: float) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    res = optimise.optimise(_scenario(budget), trials=3, storage=url, out=tmp_path)
    assert optuna.load_study(study_name="aftercare", storage=url).trials
    assert res.storage == url
    with pytest.raises(sim.SimError):
        optimise.optimise(_scenario(budget), trials=1, storage="postgresql://nobody@127.0.0.1:1/x",
                          out=tmp_path)


def test_pruning_saves_replicates_and_counts_them(tmp_path: Path, budget: float) -> None:
    scenario = _scenario(budget).apply(overrides={"optimise.replicates": 4})
    res = optimise.optimise(scenario, trials=24, out=tmp_path, seed=SEED)
    rows = res.trials.to_pylist()
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned, "with 24 trials some designs fall below the feasible median"
    assert all(r["replicates_run"] == 2 for r in pruned)
    assert all(r["replicates_run"] == 4 for r in rows if r["state"] == "COMPLETE")
    assert res.replicates_full == 24 * 4
    assert res.replicates_run == 4 * (24 - len(pruned)) + 2 * len(pruned)
    assert res.pruning_saving == pytest.approx(len(pruned) * 2 / (24 * 4))


def test_two_objectives_give_a_pareto_front(tmp_path: Path, budget: float) -> None:
    """Retention against cost: along the front, more retention costs more."""
    scenario = _scenario(4 * budget).apply(overrides={
        "optimise.second_objective": {"kpi": "cost", "direction": "minimize"}})
    res = optimise.optimise(scenario, trials=16, out=tmp_path, seed=SEED)
    assert res.pareto is not None and res.pareto.num_rows >= 2
    assert (tmp_path / "optimise" / "aftercare" / "pareto.parquet").is_file()
    rows = sorted(res.trials.to_pylist(), key=lambda r: r["number"])
    done = [r for r in rows if r["state"] == "COMPLETE"]
    assert all(r["value_2"] is not None for r in done)
    # the search-phase front is non-dominated: sorted by cost, retention rises
    front_numbers = set(res.pareto.column("trial").to_pylist())
    front = sorted((r["value_2"], r["value"]) for r in done if r["number"] in front_numbers)
    assert [v for _, v in front] == sorted(v for _, v in front)


def test_budgets_apply_to_the_full_population_at_any_scale(tmp_path: Path,
                                                          budget: float) -> None:
    """A trial run at population scale 0.2 is charged what the full population costs."""
    res = optimise.optimise(_scenario(budget), out=tmp_path, seed=SEED, trials=6, top_k=1,
                            population_scale=0.2)
    done = [t for t in res.trials.to_pylist() if t["state"] == "COMPLETE"]
    assert done
    for trial in done:
        reach = float(trial["param:touchpoints.aftercare_call.reach.customer"])
        s = _scenario(budget).apply(overrides={"touchpoints.aftercare_call.reach.customer":
                                               reach})
        full = float(np.mean(sim.run(s, seed=SEED, replicates=REPLICATES).kpis.column(
            "cost").to_numpy()))
        if full > 0:
            # unscaled, the trial's cost would be a fifth of the full population's
            assert 0.75 < trial["cost"] / full < 1.33, (reach, trial["cost"], full)
        assert trial["feasible"] == (trial["cost"] <= budget)
