"""Intervals never leave their KPI's range, and say when replicates are too few."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import stdtrit

import sim
from sim.metrics import kpi_bounds
from sim.model import compile_scenario
from sim.stats import mean_interval, paired_or_welch

BOUNDS = [(0.0, 1.0), (0.0, math.inf), (-1.0, math.inf), (-100.0, 100.0), (1.0, 5.0),
          (-math.inf, 10.0)]


def _inside(bounds: tuple[float, float]) -> st.SearchStrategy[float]:
    low, high = bounds
    return st.floats(min_value=low if math.isfinite(low) else -1e6,
                     max_value=high if math.isfinite(high) else 1e6, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(BOUNDS).flatmap(
    lambda b: st.tuples(st.just(b), st.lists(_inside(b), min_size=2, max_size=12))))
def test_an_interval_stays_inside_the_range_and_contains_the_mean(
        case: tuple[tuple[float, float], list[float]]) -> None:
    bounds, values = case
    mean, low, high = (float(x) for x in mean_interval(values, bounds=bounds))
    assert bounds[0] <= low <= mean <= high <= bounds[1]


def test_far_from_the_ends_it_is_the_student_t_interval() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(5000.0, 20.0, size=8)
    _, low, high = mean_interval(values, bounds=(0.0, math.inf))
    half = stdtrit(7, 0.975) * values.std(ddof=1) / math.sqrt(8)
    assert float(low) == pytest.approx(values.mean() - half, rel=1e-4)
    assert float(high) == pytest.approx(values.mean() + half, rel=1e-4)
    plain = mean_interval(values)
    assert float(plain[1]) == pytest.approx(values.mean() - half, rel=1e-12)


def test_the_logit_interval_covers_a_share_near_one_at_its_nominal_rate() -> None:
    """Coverage of the share's expectation over many seeded experiments (binomial shares)."""
    rng = np.random.default_rng(11)
    p, n_customers, replicates, experiments = 0.97, 400, 5, 4000
    shares = rng.binomial(n_customers, p, size=(experiments, replicates)) / n_customers
    _, low, high = mean_interval(shares.T, bounds=(0.0, 1.0))
    covered = float(np.mean((low <= p) & (p <= high)))
    se = math.sqrt(0.95 * 0.05 / experiments)
    assert covered >= 0.95 - 4 * se
    assert (high <= 1.0).all() and (low >= 0.0).all()


def test_all_replicates_on_an_end_give_that_end() -> None:
    mean, low, high = mean_interval([1.0, 1.0, 1.0], bounds=(0.0, 1.0))
    assert (float(mean), float(low), float(high)) == (1.0, 1.0, 1.0)


def test_paired_differences_are_plain_student_t() -> None:
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 3.9, 4.2])
    delta, low, high = paired_or_welch(a, b, paired=True)
    d = b - a
    half = stdtrit(3, 0.975) * d.std(ddof=1) / 2
    assert (delta, low, high) == pytest.approx((d.mean(), d.mean() - half, d.mean() + half))


def test_a_run_over_two_replicates_keeps_every_interval_in_range_and_says_too_few(
        tiny_scenario: sim.Scenario) -> None:
    result = sim.run(tiny_scenario, replicates=2, population_scale=0.1, seed=3)
    bounds = kpi_bounds(compile_scenario(tiny_scenario))
    summary = result.summary().to_pylist()
    for row in summary:
        if math.isnan(row["ci_low"]):
            continue
        low, high = bounds[row["kpi"]]
        assert low <= row["ci_low"] <= row["mean"] <= row["ci_high"] <= high, row
    assert all(row["few"] for row in summary if row["n"] == 2)
    enough = sim.run(tiny_scenario, replicates=4, population_scale=0.1, seed=3).summary()
    assert not any(enough.column("few").to_pylist())


def test_kpi_bounds_follow_the_scenario(tiny_scenario: sim.Scenario) -> None:
    bounds = kpi_bounds(compile_scenario(tiny_scenario))
    assert bounds["retention_365"] == (0.0, 1.0)
    assert bounds["acquired"] == (0.0, math.inf)
    assert bounds["roi"] == (-1.0, math.inf)
    assert bounds["median_days_to_convert"] == (0.0, 365.0)
    costly = tiny_scenario.apply(overrides={"stages.use.value.per_day": -2.0})
    signed = kpi_bounds(compile_scenario(costly))
    assert signed["revenue"] == signed["clv"] == signed["roi"] == (-math.inf, math.inf)
    assert signed["cost"] == (0.0, math.inf)
