"""The pieces that keep satisfaction's reconstruction fast on a large log: the decayed
exposure counts read once for every decay, and Newton's fits of the case-control sample
started where its offsets do not throw them off."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from discover._estimate import _glm
from discover._satisfaction import _Stocks

duckdb = pytest.importorskip("duckdb")
sm = pytest.importorskip("statsmodels.api")


def test_the_decayed_counts_are_the_sums_over_each_customers_earlier_exposures() -> None:
    rng = np.random.default_rng(3)
    n_tp, customers = 3, 40
    exposed = []  # (customer, step, mask); a customer-step may repeat (its masks or-ed)
    for c in range(customers):
        for step in rng.choice(60, size=int(rng.integers(0, 12)), replace=True):
            exposed.append((f"c{c}", int(step), int(rng.integers(1, 2**n_tp))))
    samp = [(i, f"c{int(rng.integers(customers))}", int(rng.integers(0, 70))) for i in range(300)]
    con = duckdb.connect()
    con.execute("CREATE TABLE exposed (customer VARCHAR, step BIGINT, mask UBIGINT)")
    con.executemany("INSERT INTO exposed VALUES (?, ?, ?)", exposed)
    con.execute("CREATE TABLE samp (id BIGINT, customer VARCHAR, step BIGINT)")
    con.executemany("INSERT INTO samp VALUES (?, ?, ?)", samp)
    stocks = _Stocks(con, n_tp)
    steps: dict[tuple[str, int], int] = {}
    for c, step, mask in exposed:
        steps[(c, step)] = steps.get((c, step), 0) | mask
    for decay in (0.01, 0.3):  # one reading of the pairs serves every decay
        got = stocks(decay)
        want = np.zeros((len(samp), n_tp))
        for i, c, t in samp:  # the definition: Σ over exposure steps s <= t of (1 - decay)^(t - s)
            for (cc, s), mask in steps.items():
                if cc == c and s <= t:
                    for k in range(n_tp):
                        want[i, k] += (mask >> k & 1) * (1 - decay) ** (t - s)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_a_case_control_sample_is_fitted_by_newton_from_its_offsets() -> None:
    # A rare exit (log-odds -6 at x = g = 0) sampled as the satisfaction module does: every
    # exit kept, the other steps at rate r0, so every row carries the offset log(1 / r0)
    # (several units). From all-zero coefficients Newton's first step overshoots and its
    # Hessian turns singular (the slow least-squares fallback took over); started from
    # the intercept at the mean log-odds less the offset, it converges.
    rng = np.random.default_rng(7)
    n, r0 = 400_000, 0.02
    x = rng.exponential(1.0, n) * (rng.random(n) < 0.5)
    g = (rng.random(n) < 0.4).astype(float)
    truth = np.array([-6.0, 0.3, 0.5])
    eta = truth[0] + truth[1] * g + truth[2] * x
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    keep = (y == 1) | (rng.random(n) < r0)
    X = np.column_stack([np.ones(int(keep.sum())), g[keep], x[keep]])
    offset = np.full(int(keep.sum()), math.log(1 / r0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(np.linalg.LinAlgError):  # what the start avoids
            sm.Logit(y[keep], X, offset=offset).fit(disp=0, maxiter=60)
    fit = _glm(y[keep], np.ones(int(keep.sum())), X, offset)
    assert fit.mle_retvals["converged"]  # Newton's own result, not the fallback's
    glm = sm.GLM(y[keep], X, family=sm.families.Binomial(), offset=offset).fit()
    np.testing.assert_allclose(fit.params, glm.params, rtol=1e-6, atol=1e-8)
    # case-control sampling with the offset estimates the full data's coefficients: each
    # within 4 of its standard errors (a two-sided normal test at 6e-5)
    se = np.sqrt(np.diag(fit.cov_params()))
    assert np.all(np.abs(fit.params - truth) <= 4 * se), (fit.params, se)
