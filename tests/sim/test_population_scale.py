"""A scenario describes its full population: ``population_scale`` is only a speed knob.

Every KPI — counts, money with fixed costs, shares, per-customer figures, the
rating — has the same expectation at any scale; the tolerance of each
comparison comes from the two runs' standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest

import sim

SCALED_TEXT = """\
name: scaled
seed: 3
time: {step_days: 1, horizon_days: 240}
population:
  initial:
    - {stage: aware, count: 4000}
    - {stage: use, count: 1000}
  arrivals: {per_day: 40}
segments:
  all:
    share: 1
    heterogeneity:
      use->churned: {distribution: beta, a: 2, b: 60}
stages:
  aware:
    kind: prospect
    exits: {use: 0.03, gone: {mean_days: 50}}
  use:
    kind: customer
    value: {on_entry: 120, per_day: 2}
    exits: {churned: 0.01}
  churned:
    kind: lost
    exits: {use: {mean_days: 150}}
  gone: {kind: lost}
touchpoints:
  ads:
    stages: [aware]
    reach: 0.2
    lift: {aware->use: 0.6}
    satisfaction: 0.2
    cost_per_exposure: 1.5
    fixed_cost_per_day: 300
  care_call:
    stages: [use]
    reach: 0.05
    lift: {use->churned: -0.5}
    satisfaction: 0.4
    cost_per_exposure: 12
satisfaction: {initial: 0.0, baseline: 0.0, decay: 0.02, effects: {use->churned: -0.5}}
word_of_mouth:
  referrals: {per_day: 0.004, min_satisfaction: 0.3}
reviews:
  post: {use: 0.01}
  prior_mean: 3.0
  prior_weight: 400
  effects: {aware->use: 0.5}
interventions:
  campaign:
    enabled: true
    window: {start_day: 30, end_day: 150}
    cost: {fixed: 50000, per_day: 400}
    set: {touchpoints.ads.reach.aware: 0.4}
"""


@pytest.fixture(scope="module")
def scaled() -> sim.Scenario:
    return sim.load_scenario(SCALED_TEXT)


def _moments(result: sim.RunResult) -> dict[str, tuple[float, float]]:
    """KPI -> (mean, standard error of the mean) over the run's replicates."""
    out = {}
    for name in sim.KPI_NAMES:
        values = np.array(result.kpis.column(name).to_pylist(), dtype=float)
        values = values[~np.isnan(values)]
        if values.size > 1:
            out[name] = (float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size)))
    return out


def test_every_kpi_has_the_same_expectation_at_any_population_scale(
        scaled: sim.Scenario) -> None:
    small = _moments(sim.run(scaled, replicates=24, population_scale=0.05, seed=1))
    large = _moments(sim.run(scaled, replicates=8, population_scale=0.2, seed=2))
    checked = []
    for name in small.keys() & large.keys():
        (m1, s1), (m2, s2) = small[name], large[name]
        tolerance = 4.0 * math.hypot(s1, s2)
        assert abs(m1 - m2) <= tolerance, (name, m1, m2, tolerance)
        checked.append(name)
    # counts, money with fixed costs, shares, per-customer figures and the rating
    assert {"entrants", "acquired", "churned", "won_back", "revenue", "cost", "roi", "clv",
            "conversion", "retention_90", "referrals", "reviews", "rating", "nps"} <= set(checked)


def test_fixed_costs_are_not_scaled_and_variable_ones_are(scaled: sim.Scenario) -> None:
    result = sim.run(scaled, population_scale=0.1, seed=4)
    ledger = result.ledger.to_pandas()
    steps = scaled.steps
    ads = ledger[ledger["item"] == "ads"]
    fixed = 300.0 * steps
    assert ads["amount"].sum() == pytest.approx(fixed + 1.5 * ads["exposures"].sum() / 0.1)
    campaign = ledger[ledger["item"] == "campaign"]["amount"].sum()
    assert campaign == pytest.approx(50000 + 400 * 120)
    kpis = result.kpis.to_pylist()[0]
    assert kpis["cost"] == pytest.approx(ledger[ledger["kind"] != "revenue"]["amount"].sum())
    assert kpis["revenue"] == pytest.approx(ledger[ledger["kind"] == "revenue"]["amount"].sum())


def test_counts_are_expressed_for_the_full_population(scaled: sim.Scenario) -> None:
    result = sim.run(scaled, population_scale=0.1, seed=4)
    flows = result.flows.to_pandas()
    entered = flows[flows["kind"] != "transition"]["count"].sum()
    assert result.kpis.column("entrants")[0].as_py() == pytest.approx(entered / 0.1)


def test_the_scale_is_in_every_file_and_the_run_header(scaled: sim.Scenario, tmp_path) -> None:
    result = sim.run(scaled, population_scale=0.05, seed=4, out=tmp_path)
    for path in result.paths:
        meta = pq.read_schema(path).metadata
        assert meta[b"journey.population_scale"] == b"0.05"
    assert result.population_scale == 0.05
