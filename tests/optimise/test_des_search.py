"""The optimiser on the event engine: a capacity (with its cost) as a search variable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import optimise
import sim
from sim.cli import app

SLOTS = """\
name: slots
seed: 4
time: {horizon_days: 60}
population:
  arrivals: {per_day: 30}
stages:
  lead: {kind: prospect, exits: {customer: 0.01, lost: 0.2}}
  customer: {kind: customer}
  lost: {kind: lost}
touchpoints:
  consult:
    stages: [lead]
    reach: 1.0                         # every lead asks for a consult each day it is a lead
    lift: {lead->customer: 4.0}        # a consult converts
    capacity: 1
    service_time: {distribution: exponential, mean_days: 0.1}   # 10 consults a slot-day
    patience: {distribution: exponential, mean_days: 0.5}
    server_cost_per_day: 100           # cost = slots x 100 x 60 days, nothing else
optimise:
  objective: {kpi: acquired}
  constraints: {budget_total: 18500}   # three slots fit (18,000), four do not (24,000)
  search:
    - {path: touchpoints.consult.capacity, type: int, low: 1, high: 5}
  trials: 8
  replicates: 2
"""


def test_capacity_is_a_search_variable(tmp_path: Path) -> None:
    """Acquisitions rise with the slots while demand exceeds them; the cost of slots is
    exact, so the best feasible design is the most slots the budget allows among those
    tried (3 when tried), and the fast engine refuses the study."""
    scenario = sim.load_scenario(SLOTS)
    with pytest.raises(sim.SimError, match="--engine des"):
        optimise.optimise(scenario, out=tmp_path / "fast", trials=2)
    res = optimise.optimise(scenario, out=tmp_path / "des", engine="des", top_k=2,
                            reeval_replicates=4)
    rows = [r for r in res.trials.to_pylist() if r["state"] == "COMPLETE"]
    tried = {int(json.loads(r["param:touchpoints.consult.capacity"])) for r in rows}
    assert len(tried) >= 2
    feasible = [c for c in tried if c * 100 * 60 <= 18500]
    assert res.best is not None
    assert res.best.params["touchpoints.consult.capacity"] == max(feasible)
    assert res.best.cost == pytest.approx(max(feasible) * 100 * 60)
    assert res.best.uplift > 0 or max(feasible) == 1


def test_acquired_rises_with_slots() -> None:
    scenario = sim.load_scenario(SLOTS)
    acquired = []
    for c in (1, 2, 3):
        variant = scenario.apply(overrides={"touchpoints.consult.capacity": c})
        kpi = sim.run(variant, engine="des", seed=1, replicates=2).kpis.to_pandas()
        acquired.append(kpi["acquired"].mean())
        assert np.allclose(kpi["cost"], c * 100 * 60)
    assert acquired[0] < acquired[1] < acquired[2]


def test_cli_optimise_engine_des(tmp_path: Path) -> None:
    file = tmp_path / "slots.yaml"
    file.write_text(SLOTS)
    res = CliRunner().invoke(app, ["optimise", str(file), "--engine", "des", "--trials", "3",
                                   "--replicates", "1", "--top-k", "1", "--out",
                                   str(tmp_path / "o"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "best:" in res.stdout or "no re-evaluated design" in res.stdout
