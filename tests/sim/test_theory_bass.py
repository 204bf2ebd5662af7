"""A closed market with contagion follows the discrete Bass diffusion.

M agents start in ``potential``; the exit to ``adopter`` has base probability
p, and contagion adds q A(t-1) / M, A(t-1) being the adopters at the end of
the last step. In fractions a = A / M, given a(t-1) the new adopters are
Binomial(M (1 - a), h(a)) with h(a) = p + q a, so

    a(t) = f(a(t-1)) + noise,   f(a) = a + (1 - a) h(a),
    Var(noise | a) = (1 - a) h(a) (1 - h(a)) / M.

The mean-field (M -> infinity) path is the discrete Bass recursion
a*(t) = f(a*(t-1)). Because f is quadratic (f'' = -2q), the exact mean obeys
E a(t) = f(E a(t-1)) - q Var a(t-1): the expected path lies below a* by
O(1/M). To leading order in 1/M (linear noise approximation) the variance
obeys V(t) = f'(m)^2 V(t-1) + (1 - m) h(m) (1 - h(m)) / M with m = E a(t-1).
The test compares the mean over R replicates with a*(t), allowing
4 sqrt(V(t) / R) for the noise plus the O(1/M) bias |E a(t) - a*(t)|.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim

M = 50_000
R = 4
P, Q = 0.01, 0.4
STEPS = 40
Z = 4.0   # standard errors allowed
SCENARIO = f"""\
name: bass
time: {{step_days: 1, horizon_days: {STEPS}}}
population:
  initial: [{{stage: potential, count: {M}}}]
stages:
  potential: {{kind: prospect, exits: {{adopter: {P}}}}}
  adopter: {{kind: customer}}
word_of_mouth:
  contagion: {{exit: potential->adopter, q: {Q}, market_size: {M}}}
"""


def bass_moments(p: float, q: float, m: int, steps: int) -> tuple[np.ndarray, ...]:
    """Mean-field path a*, bias-corrected mean and variance of a(t) = A(t) / M."""
    def h(a: float) -> float:
        return p + q * a

    def f(a: float) -> float:
        return a + (1 - a) * h(a)

    def df(a: float) -> float:
        return 1 + q - p - 2 * q * a

    star, mean, var = np.zeros(steps + 1), np.zeros(steps + 1), np.zeros(steps + 1)
    for t in range(1, steps + 1):
        star[t] = f(star[t - 1])
        mu, v = mean[t - 1], var[t - 1]
        mean[t] = f(mu) - q * v
        var[t] = df(mu) ** 2 * v + (1 - mu) * h(mu) * (1 - h(mu)) / m
    return star, mean, var


def test_recursion_is_the_bass_model() -> None:
    # the discrete Bass model: new adopters = (M - A) (p + q A / M)
    star, _, _ = bass_moments(P, Q, M, STEPS)
    A = 0.0
    for t in range(1, STEPS + 1):
        A += (M - A) * (P + Q * A / M)
        assert star[t] * M == pytest.approx(A, rel=1e-12)


def test_adoption_follows_bass() -> None:
    result = sim.run(SCENARIO, seed=2024, replicates=R)
    occ = result.occupancy
    rows = np.asarray(occ["stage"].to_numpy(zero_copy_only=False)) == "adopter"
    step = np.asarray(occ["step"])[rows]
    rep = np.asarray(occ["replicate"])[rows]
    adopters = np.zeros((R, STEPS + 1))
    np.add.at(adopters, (rep, step), np.asarray(occ["count"])[rows])
    assert len(set(result.seeds)) == R           # replicates are independent runs

    star, mean, var = bass_moments(P, Q, M, STEPS)
    assert star[STEPS] > 0.99 and star[10] < 0.5   # the whole S-curve is inside the horizon
    observed = adopters.mean(axis=0) / M
    for t in (1, 3, 5, 8, 10, 12, 15, 20, 30, 40):
        bias = abs(mean[t] - star[t])                # O(1/M): below 1e-4 here
        tol = Z * math.sqrt(var[t] / R) + bias
        assert abs(observed[t] - star[t]) < tol, (t, observed[t], star[t], tol)

