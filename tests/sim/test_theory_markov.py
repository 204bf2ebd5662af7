"""A journey without touchpoints or feedbacks is an absorbing Markov chain.

Transient stages ``lead``, ``trial``, ``active``; absorbing ``won`` and
``gone``. With Q the transient-to-transient and R the transient-to-absorbing
block of the transition matrix P, the fundamental matrix N = (I - Q)^-1 gives
the absorption probabilities B = N R, the expected number of steps spent in
transient stages t = N 1 (counting the start, i.e. the step of absorption) and
its variance (2N - I) t - t*t (Kemeny & Snell). Agents are independent, so
each count is a sum of independent per-agent indicators and its variance is
the sum of theirs: every tolerance below is 4 such standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.engines.fast import simulate
from sim.engines.raw import RawRun
from sim.model import CompiledModel, compile_scenario

STAGES = ["lead", "trial", "active", "won", "gone"]
TRANSIENT, ABSORBING = [0, 1, 2], [3, 4]
START = {"lead": 12_000, "trial": 5_000, "active": 3_000}
HORIZON = 200
_PLACEMENTS = "".join(f"    - {{stage: {s}, count: {n}}}\n" for s, n in START.items())
SCENARIO = f"""\
name: markov
time: {{step_days: 1, horizon_days: {HORIZON}}}
population:
  initial:
{_PLACEMENTS}\
stages:
  lead: {{kind: prospect, exits: {{trial: 0.2, gone: 0.1}}}}
  trial: {{kind: customer, exits: {{active: 0.25, lead: 0.1, gone: 0.05}}}}
  active: {{kind: customer, exits: {{won: 0.1, trial: 0.05, gone: 0.08}}}}
  won: {{kind: customer}}
  gone: {{kind: lost}}
"""
Z = 4.0   # standard errors allowed


def _matrix() -> np.ndarray:
    """The one-step transition matrix of the stages (rows sum to 1)."""
    P = np.zeros((5, 5))
    exits = {("lead", "trial"): 0.2, ("lead", "gone"): 0.1, ("trial", "active"): 0.25,
             ("trial", "lead"): 0.1, ("trial", "gone"): 0.05, ("active", "won"): 0.1,
             ("active", "trial"): 0.05, ("active", "gone"): 0.08}
    for (a, b), p in exits.items():
        P[STAGES.index(a), STAGES.index(b)] = p
    P[np.arange(5), np.arange(5)] = 1.0 - P.sum(axis=1)
    return P


@pytest.fixture(scope="module")
def model() -> CompiledModel:
    return compile_scenario(sim.load_scenario(SCENARIO))


@pytest.fixture(scope="module")
def raw(model: CompiledModel) -> RawRun:
    return simulate(model, 4242)


def _start() -> np.ndarray:
    return np.array([START.get(s, 0) for s in STAGES], dtype=float)


def test_compiled_matrix_is_the_scenario(model: CompiledModel) -> None:
    assert model.stages == STAGES
    P = np.zeros((5, 5))
    for e, (a, b) in enumerate(model.exits):
        P[STAGES.index(a), STAGES.index(b)] = model.arrays.base_p[0, e]
    P[np.arange(5), np.arange(5)] = 1.0 - P.sum(axis=1)
    assert np.array_equal(P, _matrix())


def test_absorption_probabilities(raw: RawRun) -> None:
    P = _matrix()
    Q = P[np.ix_(TRANSIENT, TRANSIENT)]
    R = P[np.ix_(TRANSIENT, ABSORBING)]
    N = np.linalg.inv(np.eye(3) - Q)
    B = N @ R                                   # absorption probabilities from each start
    assert np.allclose(B.sum(axis=1), 1.0)
    # absorbed by the horizon T: sum_{k<T} Q^k R = (I - Q^T) N R; the rest is negligible
    QT = np.linalg.matrix_power(Q, HORIZON)
    B_T = (np.eye(3) - QT) @ B
    assert np.abs(B_T - B).max() < 1e-12
    n = _start()[TRANSIENT]
    end = raw.occupancy[HORIZON].sum(axis=0)
    # expected transient agents left at T: n Q^T 1 ~ 3e-9, so (with that probability at
    # most) none is left and the final occupancy is the absorption by T
    assert (n @ QT).sum() < 1e-6 and end[TRANSIENT].sum() == 0
    for k, j in enumerate(ABSORBING):
        expected = n @ B[:, k]
        # count in j = sum of independent Bernoulli(B_ij): var = sum_i n_i B_ij (1 - B_ij)
        se = math.sqrt(n @ (B[:, k] * (1 - B[:, k])))
        assert abs(end[j] - expected) < Z * se, (STAGES[j], end[j], expected, se)


def test_mean_steps_to_absorption(raw: RawRun) -> None:
    P = _matrix()
    Q = P[np.ix_(TRANSIENT, TRANSIENT)]
    N = np.linalg.inv(np.eye(3) - Q)
    t = N @ np.ones(3)                          # E[steps in transient stages] by start
    var = (2 * N - np.eye(3)) @ t - t * t       # Var of the same (Kemeny & Snell 3.3.5)
    n = _start()[TRANSIENT]
    # an agent absorbed at step tau is transient at the ends of steps 0 .. tau-1, so
    # sum_t transient occupancy[t] = sum over agents of tau (tail past T: ~1e-8 agent-steps)
    observed = raw.occupancy[:, :, TRANSIENT].sum() / n.sum()
    expected = n @ t / n.sum()
    se = math.sqrt(n @ var) / n.sum()
    assert abs(observed - expected) < Z * se, (observed, expected, se)


@pytest.mark.parametrize("t", [1, 2, 5, 10, 25, 60])
def test_occupancy_follows_the_chain(raw: RawRun, t: int) -> None:
    Pt = np.linalg.matrix_power(_matrix(), t)
    n = _start()
    expected = n @ Pt                           # pi_0 P^t in counts
    se = np.sqrt(n @ (Pt * (1 - Pt)))           # sum of per-agent multinomial variances
    observed = raw.occupancy[t].sum(axis=0)
    assert observed.sum() == n.sum()
    ok = np.abs(observed - expected) <= Z * se
    assert ok.all(), (t, observed, expected, se)
