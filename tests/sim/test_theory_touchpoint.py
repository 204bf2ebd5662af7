"""Touchpoints, segments and satisfaction move exit probabilities as the model says.

An exposure (probability r = min(1, reach x affinity), on its own random
stream) adds its lift to the log-odds of the stage's exits, so one step's exit
probability is the mixture r sigmoid(logit p + L) + (1 - r) p. We measure the
one-step exit shares of large cohorts: each agent exits independently, so the
count is Binomial(n, p') and the tolerance is 4 sqrt(n p' (1 - p')).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.engines.fast import simulate
from sim.engines.raw import RawRun
from sim.model import CompiledModel, compile_scenario

N = 50_000
Z = 4.0
SCENARIO = f"""\
name: touch
time: {{step_days: 1, horizon_days: 1}}
population:
  initial:
    - {{stage: browse, count: {2 * N}}}
    - {{stage: member, count: {2 * N}}}
    - {{stage: crowded, count: {2 * N}}}
    - {{stage: mood, count: {2 * N}}}
segments:
  plain: {{share: 0.5}}
  keen:
    share: 0.5
    affinity: {{ad: 1.5, nag: 2.5}}
    offsets: {{browse->left: 0.9}}
stages:
  browse: {{kind: prospect, exits: {{bought: 0.1, left: 0.05}}}}
  member: {{kind: customer, exits: {{lapsed: 0.3}}}}
  crowded: {{kind: customer, exits: {{bought: 0.6, lapsed: 0.3}}}}
  mood: {{kind: customer, exits: {{lapsed: 0.2}}}}
  bought: {{kind: customer}}
  left: {{kind: lost}}
  lapsed: {{kind: lost}}
touchpoints:
  ad: {{stages: [browse], reach: 0.4, lift: {{browse->bought: 1.2}}}}
  nag: {{stages: [member], reach: 0.5, lift: {{member->lapsed: -1.0}}}}
  push: {{stages: [crowded], reach: 1.0, lift: {{crowded->bought: 3.0}}}}
  delight: {{stages: [mood], reach: 0.5, satisfaction: 0.5}}
satisfaction:
  initial: 0.4
  baseline: 0.0
  decay: 0.25
  effects: {{mood->lapsed: -1.5}}
"""


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def mixture(reach: float, p: float, lift: float) -> float:
    """Per-step exit probability under a touchpoint of reach ``reach`` and lift ``lift``."""
    return reach * sigmoid(logit(p) + lift) + (1 - reach) * p


def assert_binomial(count: int, n: int, p: float, what: str) -> None:
    """``count`` ~ Binomial(n, p): within Z standard errors sqrt(n p (1 - p)) of n p."""
    se = math.sqrt(n * p * (1 - p))
    assert abs(count - n * p) < Z * se, (what, count, n * p, se)


@pytest.fixture(scope="module")
def model() -> CompiledModel:
    return compile_scenario(sim.load_scenario(SCENARIO))


@pytest.fixture(scope="module")
def raw(model: CompiledModel) -> RawRun:
    return simulate(model, 31337)


def _flow(raw: RawRun, model: CompiledModel, seg: str, a: str, b: str) -> int:
    return int(raw.flows[1, model.segments.index(seg), model.stages.index(a),
                         model.stages.index(b)])


def _exposed(raw: RawRun, model: CompiledModel, seg: str, tp: str) -> int:
    return int(raw.exposures[1, model.segments.index(seg), model.touchpoints.index(tp)])


def test_cohorts(raw: RawRun, model: CompiledModel) -> None:
    for seg in model.segments:
        assert (raw.occupancy[0, model.segments.index(seg), :4] == N).all()


@pytest.mark.parametrize(("seg", "reach"), [("plain", 0.4), ("keen", 0.4 * 1.5)])
def test_lift_is_a_reach_weighted_mixture(raw: RawRun, model: CompiledModel, seg: str,
                                          reach: float) -> None:
    # affinity scales reach; exposure is Binomial(n, reach)
    assert_binomial(_exposed(raw, model, seg, "ad"), N, reach, "exposures")
    p = mixture(reach, 0.1, 1.2)
    assert_binomial(_flow(raw, model, seg, "browse", "bought"), N, p, "browse->bought")
    assert p > 0.1 + Z * math.sqrt(p * (1 - p) / N)   # the lift is visible at this size
    # the lift of one exit leaves the other alone; the segment offset shifts its log-odds
    left = 0.05 if seg == "plain" else sigmoid(logit(0.05) + 0.9)
    assert_binomial(_flow(raw, model, seg, "browse", "left"), N, left, "browse->left")


@pytest.mark.parametrize(("seg", "reach"), [("plain", 0.5), ("keen", 1.0)])
def test_negative_lift_lowers_the_exit(raw: RawRun, model: CompiledModel, seg: str,
                                       reach: float) -> None:
    # keen: 0.5 x 2.5 affinity is capped at reach 1, so every member is exposed
    exposed = _exposed(raw, model, seg, "nag")
    if reach == 1.0:
        assert exposed == N
    else:
        assert_binomial(exposed, N, reach, "exposures")
    p = mixture(reach, 0.3, -1.0)
    assert p < 0.3
    assert_binomial(_flow(raw, model, seg, "member", "lapsed"), N, p, "member->lapsed")


@pytest.mark.parametrize("seg", ["plain", "keen"])
def test_competing_exits_renormalise(raw: RawRun, model: CompiledModel, seg: str) -> None:
    # exposed for sure: p_bought = sigmoid(logit 0.6 + 3) and p_lapsed = 0.3 sum past 1,
    # so the draw picks each exit with p_j / sum and nobody stays
    bought, lapsed = sigmoid(logit(0.6) + 3.0), 0.3
    total = bought + lapsed
    assert total > 1
    b = _flow(raw, model, seg, "crowded", "bought")
    assert b + _flow(raw, model, seg, "crowded", "lapsed") == N
    assert_binomial(b, N, bought / total, "crowded->bought")


@pytest.mark.parametrize("seg", ["plain", "keen"])
def test_satisfaction_shifts_log_odds(raw: RawRun, model: CompiledModel, seg: str) -> None:
    # satisfaction decays first: 0.4 + 0.25 (0 - 0.4) = 0.3; an exposure then adds 0.5
    # (0.8) before the exit draw, whose log-odds gain -1.5 x satisfaction
    unexposed, exposed = 0.3, 0.8
    p = 0.5 * sigmoid(logit(0.2) - 1.5 * exposed) + 0.5 * sigmoid(logit(0.2) - 1.5 * unexposed)
    assert_binomial(_flow(raw, model, seg, "mood", "lapsed"), N, p, "mood->lapsed")
    # mean satisfaction of those still in `mood` lies between the two levels (float32 state)
    g, s = model.segments.index(seg), model.stages.index("mood")
    mean = raw.sat_sum[1, g, s] / raw.occupancy[1, g, s]
    assert unexposed < mean < exposed


# ------------------------------------------------------------------ minimum dwell


def _dwell_scenario(step_days: float, min_dwell_days: float) -> str:
    return f"""\
name: dwell
time: {{step_days: {step_days}, horizon_days: {30 * step_days}}}
population:
  initial:
    - {{stage: queue, count: {N // 2}}}
    - {{stage: wait, count: {N // 2}}}
stages:
  queue: {{kind: prospect, exits: {{wait: 0.2}}}}
  wait: {{kind: customer, min_dwell_days: {min_dwell_days}, exits: {{done: 0.3}}}}
  done: {{kind: lost}}
"""


@pytest.mark.parametrize(("step_days", "min_dwell_days", "steps"),
                         [(1, 5, 5), (7, 10, 2), (0.5, 2.2, 5), (1, 0, 1)])
def test_min_dwell_delays_exits_exactly(step_days: float, min_dwell_days: float,
                                        steps: int) -> None:
    """No exit before ``ceil(min_dwell_days / step_days)`` steps in the stage, then p."""
    model = compile_scenario(sim.load_scenario(_dwell_scenario(step_days, min_dwell_days)))
    raw = simulate(model, 5, events=True)
    wait, done = model.stages.index("wait"), model.stages.index("done")
    out = raw.flows[:, 0, wait, done]
    # the cohort placed at step 0 is the only one that can leave at step `steps`
    assert not out[:steps].any()
    assert_binomial(int(out[steps]), N // 2, 0.3, "first exits")
    # agents who enter `wait` at step e leave at step e + steps at the earliest
    assert raw.events is not None
    ev = raw.events
    enter = ev["to_stage"] == wait
    leave = (ev["from_stage"] == wait) & (ev["to_stage"] == done)
    entered_at = dict(zip(ev["agent"][enter & (ev["step"] > 0)].tolist(),
                          ev["step"][enter & (ev["step"] > 0)].tolist(), strict=True))
    stays = np.array([t - entered_at[a] for a, t in zip(ev["agent"][leave].tolist(),
                                                      ev["step"][leave].tolist(), strict=True)
                      if a in entered_at])
    assert stays.size > 1000
    # each eligible mover leaves on its first allowed step with p = 0.3: that none of
    # > 1000 does has probability < 0.7^1000
    assert stays.min() == max(steps, 1)
