"""Beta heterogeneity of churn makes a cohort follow the shifted-beta-geometric curve.

Each agent draws its own per-step churn probability theta ~ Beta(a, b) at
birth; it survives t steps with probability (1 - theta)^t, so the cohort's
survival is S(t) = E(1 - theta)^t = B(a, b + t) / B(a, b) (Fader & Hardie
2007). Agents are independent, so the survivors at step t are
Binomial(n, S(t)) and the share has SE sqrt(S (1 - S) / n).
"""

from __future__ import annotations

import math

import pytest

import sim
from sim.engines.fast import simulate
from sim.engines.raw import RawRun
from sim.model import CompiledModel, compile_scenario

N = 20_000
YEARS = 7
SHAPES = {"wary": (0.7, 2.5), "fickle": (3.0, 0.6)}   # a < 1 and b < 1: both gamma samplers
SCENARIO = f"""\
name: sbg
time: {{step_days: 365, horizon_days: {YEARS * 365}}}
population:
  initial:
    - {{stage: customer, count: {N}, segment: wary}}
    - {{stage: customer, count: {N}, segment: fickle}}
segments:
  wary:
    heterogeneity:
      customer->lost: {{distribution: beta, a: {SHAPES["wary"][0]}, b: {SHAPES["wary"][1]}}}
  fickle:
    heterogeneity:
      customer->lost: {{distribution: beta, a: {SHAPES["fickle"][0]}, b: {SHAPES["fickle"][1]}}}
stages:
  customer:
    kind: customer
    exits: {{lost: 0.5}}     # replaced by each agent's own draw
  lost: {{kind: lost}}
"""


def log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def survival(a: float, b: float, t: int) -> float:
    """Shifted-beta-geometric survival S(t) = B(a, b + t) / B(a, b)."""
    return math.exp(log_beta(a, b + t) - log_beta(a, b))


@pytest.fixture(scope="module")
def model() -> CompiledModel:
    return compile_scenario(sim.load_scenario(SCENARIO))


@pytest.fixture(scope="module")
def raw(model: CompiledModel) -> RawRun:
    return simulate(model, 777)


def test_survival_formula() -> None:
    # S(1) = b / (a + b) = 1 - E theta, S(2) = b (b + 1) / ((a + b)(a + b + 1))
    assert survival(2.0, 3.0, 1) == pytest.approx(3 / 5)
    assert survival(2.0, 3.0, 2) == pytest.approx(3 * 4 / (5 * 6))


@pytest.mark.parametrize("segment", list(SHAPES))
def test_cohort_follows_shifted_beta_geometric(raw: RawRun, model: CompiledModel,
                                               segment: str) -> None:
    a, b = SHAPES[segment]
    g = model.segments.index(segment)
    customer = model.stages.index("customer")
    alive = raw.occupancy[:, g, customer]
    assert alive[0] == N
    for t in range(1, YEARS + 1):
        s = survival(a, b, t)
        se = math.sqrt(s * (1 - s) / N)
        assert abs(alive[t] / N - s) < 4 * se, (segment, t, alive[t] / N, s, se)
    # a mixture of geometrics: the churn rate among survivors falls year after year, as
    # h(t) = a / (a + b + t - 1); given alive[t - 1] survivors the churned are binomial,
    # so the observed rate has SE sqrt(h (1 - h) / alive[t - 1])
    hazard = 1 - alive[1:] / alive[:-1]
    for t in range(1, YEARS + 1):
        h = a / (a + b + t - 1)
        assert abs(hazard[t - 1] - h) < 4 * math.sqrt(h * (1 - h) / alive[t - 1]), (t, h)
    # and it falls: by more than half its theoretical fall (0.14 wary, 0.52 fickle), which
    # is many SEs of the first and last rates
    assert hazard[0] - hazard[-1] > 0.5 * (a / (a + b) - a / (a + b + YEARS - 1))
