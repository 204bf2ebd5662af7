"""The numba kernels against their plain-Python twin (``tests/naive.py``), bit for bit.

Tests named ``test_twin_exact_*`` run twice: compiled here, and as plain
Python under ``NUMBA_DISABLE_JIT=1`` in a subprocess
(:func:`test_twin_exact_tests_pass_without_jit`).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import sim
from sim.engines import _kernels as K
from sim.engines._driver import POPULATION_AGENT, _alloc, draw_arrivals
from sim.engines.fast import simulate
from sim.model import CompiledModel, compile_scenario
from tests import naive

SEED = 20240611
STEPS = 30
JIT_DISABLED = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")


@pytest.fixture(scope="module")
def model(journey_text: str) -> CompiledModel:
    """The journey (200 agents at step 0) cut to 30 steps: ``push`` opens and closes,
    ``winback`` opens (four regimes)."""
    text = journey_text.replace("horizon_days: 120", f"horizon_days: {STEPS}")
    return compile_scenario(sim.load_scenario(text))


# the kernels' inner helpers are compiled into their callers only: called from Python here
# through compiled functions of the test's own (plain Python under NUMBA_DISABLE_JIT)
@numba.njit(cache=False)
def _normal(key: np.uint64, stream: np.uint64) -> float:
    return K._normal(key, stream)


@numba.njit(cache=False)
def _gamma(shape: float, key: np.uint64, stream: np.uint64) -> float:
    return K._gamma(shape, key, stream)


@numba.njit(cache=False)
def _cut53(p: float) -> np.uint64:
    return K._cut53(p)


def _kernel_state(model: CompiledModel, n: int) -> K.State:
    return _alloc(n, model.arrays.het_kind.shape[2])


def _assert_state_equal(st: K.State, twin: naive.State, n: int) -> None:
    for name in naive.State.__dataclass_fields__:
        got = getattr(st, name)[:n]
        want = np.array(getattr(twin, name), dtype=got.dtype).reshape(got.shape)
        assert np.array_equal(got, want), f"state.{name} differs"


def _assert_buffers_equal(buf: K.Buffers, twin: naive.Buffers) -> None:
    for name in ("sat_sum", "flows", "exposures", "acquired", "referrals", "reviews",
                 "retained", "to_convert"):
        got = getattr(buf, name)
        want = np.array(getattr(twin, name), dtype=got.dtype)
        assert np.array_equal(got, want), f"buffer {name} differs"


def _born(model: CompiledModel, seed: int) -> tuple[K.State, naive.State, int]:
    """200 agents born by the kernel and by the twin: segments and stages round-robin."""
    n = 200
    G, S = len(model.segments), len(model.stages)
    seg = np.arange(n, dtype=np.int64) % G
    stage = (np.arange(n, dtype=np.int64) // G) % S
    st = _kernel_state(model, n)
    m = model.arrays
    half = n // 2   # two calls, two regimes: i0 > 0 and a different regime slice
    for i in range(n):  # births come in runs of one segment and stage: here runs of one
        t, r = (0, 0) if i < half else (3, len(model.regimes) - 1)
        K.birth(np.int64(i), np.int64(i + 1), np.int64(t), np.int64(r), np.uint64(seed),
                np.int64(seg[i]), np.int64(stage[i]), m, st)
    twin = naive.State()
    nm = naive.Model.of(m)
    naive.birth(0, 0, 0, seed, seg[:half].tolist(), stage[:half].tolist(), nm, twin)
    naive.birth(half, 3, len(model.regimes) - 1, seed, seg[half:].tolist(),
                stage[half:].tolist(), nm, twin)
    return st, twin, n


# ------------------------------------------------------------------ randomness


def test_twin_exact_mix64_known_answer() -> None:
    # splitmix64 seeded with 0: the first output is mix64(golden ratio) = 0xE220A8397B1DCDAF
    assert naive.mix64(naive.GOLDEN) == 0xE220A8397B1DCDAF
    assert int(K.mix64(np.uint64(naive.GOLDEN))) == 0xE220A8397B1DCDAF


def test_twin_exact_counter_rng() -> None:
    seeds = [0, 1, SEED, 2**63 - 1, 2**64 - 1]
    agents = [0, 1, 63, 2**31 - 2, POPULATION_AGENT]
    steps = [0, 1, 365, naive.BIRTH_STEP]
    streams = [1, 2, 3, 4096, 2**33 + 5, 2**64 - 1]
    for seed in seeds:
        for agent in agents:
            for step in steps:
                key = naive.agent_key(seed, agent, step)
                got = int(K.agent_key(np.uint64(seed), np.int64(agent), np.uint64(step)))
                assert got == key, (seed, agent, step)
                for stream in streams:
                    u = K.uniform(np.uint64(key), np.uint64(stream))
                    assert u == naive.uniform(key, stream), (key, stream)
                    assert 0.0 <= u < 1.0


def test_twin_exact_samplers() -> None:
    key = naive.agent_key(SEED, 17, naive.BIRTH_STEP)
    for stream in (1024, 77_777, 2**32):
        assert _normal(np.uint64(key), np.uint64(stream)) == naive.normal(key, stream)
        for shape in (0.3, 0.8, 1.0, 2.5, 40.0):
            assert _gamma(shape, np.uint64(key), np.uint64(stream)) == \
                naive.gamma(shape, key, stream)
        for lam in (0.0, 0.5, 7.0, 199.9, 450.0):
            assert K.poisson(lam, np.uint64(key), np.uint64(stream)) == \
                naive.poisson(lam, key, stream)


@numba.njit(cache=False)
def _reviews(seed: np.uint64, n: np.int64, post: float) -> np.int64:
    count = 0
    for i in range(n):
        if K.review_drawn(K.agent_key(seed, np.int64(i), np.uint64(7)), post):
            count += 1
    return count


def test_review_draw_probability() -> None:
    """The two-stage review draw posts with probability ``post``: a count of n agent-steps
    is binomial, within 4 SE = 4 sqrt(n p (1 - p)) of n p (p >= 1: every step)."""
    n = 2_000_000
    for post in (1e-5, 0.0003, 1 / 2048, 0.0015, 0.01, 0.3, 0.999, 1.0, 1.5):
        got = int(_reviews(np.uint64(SEED), np.int64(n), post))
        p = min(post, 1.0)
        assert abs(got - n * p) <= 4 * math.sqrt(n * p * (1 - p)), (post, got)
    for key in (naive.agent_key(SEED, a, 3) for a in range(2000)):
        for post in (0.0003, 0.5, 1.0):
            assert bool(K.review_drawn(np.uint64(key), post)) == naive.review_drawn(key, post)


def test_twin_exact_integer_cuts() -> None:
    """A draw's 53 bits lie below ``_cut53(p)`` exactly when its uniform lies below p
    (how the agent loop compares exposure and exit draws)."""
    two53 = 2**53
    probabilities = [0.0, 5e-324, 2.0**-53, 1e-12, 0.003, 1 / 3, 0.5, 0.1 + 0.2,
                     1.0 - 2.0**-53, 1.0, 1.5, math.inf]
    for p in probabilities:
        cut = int(_cut53(p))
        exact = min(math.ceil(p * two53), two53) if p < math.inf else two53
        for bits in {0, 1, exact - 1, exact, exact + 1, two53 - 1}:
            if 0 <= bits < two53:
                assert (bits < cut) == (bits * naive.TWO53 < p), (p, bits)
    key = naive.agent_key(SEED, 5, 9)
    for stream in (1, 2, 3, 4096):
        bits = int(K._bits53(np.uint64(key), np.uint64(stream * naive.GOLDEN & naive.MASK)))
        assert bits * naive.TWO53 == naive.uniform(key, stream)


# ------------------------------------------------------------------ agents


def test_twin_exact_birth(model: CompiledModel) -> None:
    st, twin, n = _born(model, SEED)
    _assert_state_equal(st, twin, n)
    het = np.asarray(st.het[:n])
    assert (het[:, 0] > 0).any() and (het[:, 1] != 0).any()   # both kinds were drawn


@pytest.mark.parametrize("kernel", ["step_kernel", "step_kernel_serial"])
def test_twin_exact_steps(model: CompiledModel, kernel: str) -> None:
    """Twelve steps from the same births; every regime, reputation and contagion level."""
    workers = (np.int64(2),) if kernel == "step_kernel" else ()  # the parallel one's threads
    step_kernel = getattr(K, kernel)
    st, twin, n = _born(model, SEED)
    m = model.arrays
    G, S, T = len(model.segments), len(model.stages), len(model.touchpoints)
    e_max = int(np.max(np.diff(m.exit_start)))
    buf = K.make_buffers(G, S, T, STEPS + 1, e_max)
    twin_buf = naive.Buffers(G, S, T, STEPS + 1)
    nm = naive.Model.of(m)
    assert m.con_exit >= 0 and m.rep_effect.any() and m.sat_effect.any()
    moved = 0
    E = m.base_p.shape[1]
    f = K.make_factors(G, S, E, m.act_tp.shape[0])
    for t in range(1, 13):
        r = t % len(model.regimes)
        rep = 0.9 - 0.15 * t          # reputation from +0.75 down to -0.9
        con_add = 0.03 * t
        K.step_factors(t, r, rep, con_add, m, f)
        step_kernel(np.int64(n), np.int64(t), np.int64(r), np.uint64(SEED), con_add,
                    f, m, st, buf, *workers, K.features(m, st))
        naive.step(n, t, r, SEED, rep, con_add, nm, twin, twin_buf)
        _assert_state_equal(st, twin, n)
        _assert_buffers_equal(buf, twin_buf)
        moved += int(buf.flows.sum())
    assert moved > 100
    assert np.asarray(buf.reviews)[:, 0].sum() + np.asarray(buf.referrals).sum() > 0


def test_twin_exact_run(model: CompiledModel) -> None:
    """A whole run, between-step feedbacks included: arrivals, referrals, rating, contagion."""
    raw = simulate(model, SEED, events=True)
    twin = naive.simulate(model, SEED)
    assert np.array_equal(draw_arrivals(model, SEED), np.array(naive.draw_arrivals(model, SEED)))
    for name in ("occupancy", "sat_sum", "flows", "arrivals", "referred", "exposures",
                 "acquired", "reviews", "rating", "retained", "to_convert"):
        got = getattr(raw, name)
        assert np.array_equal(got, np.array(twin[name], dtype=got.dtype)), name
    assert raw.events is not None
    events = np.stack([raw.events[c] for c in ("step", "agent", "segment", "from_stage",
                                               "to_stage")], axis=1)
    assert np.array_equal(events, np.array(twin["events"], dtype=np.int64))
    end: naive.State = twin["state"]
    assert raw.agents == len(end.stage)
    assert raw.clv_total == float(np.array(end.clv).sum())
    # the run used every mechanism it is meant to check
    assert raw.arrivals.sum() > 0 and raw.referred.sum() > 0 and raw.reviews[:, 0].sum() > 0
    assert raw.acquired.sum() > 0 and (raw.exposures.sum(axis=(0, 1)) > 0).all()
    assert len(set(model.regime_of_step.tolist())) == len(model.regimes) == 4


@pytest.mark.parametrize("variant", ["lean", "homogeneous"])
def test_twin_exact_run_without_mechanisms(journey_text: str, variant: str) -> None:
    """A run whose kernels are compiled without the mechanisms its scenario lacks
    (:func:`sim.engines._kernels.features`) equals the twin's, which has no such
    switches: no reviews, word of mouth or satisfaction effects (``lean``), no
    heterogeneity (``homogeneous``); no events, queues or exposure records in either."""
    text = journey_text.replace("horizon_days: 120", f"horizon_days: {STEPS}")
    scenario = sim.load_scenario(text)
    if variant == "lean":
        scenario = scenario.apply(overrides={"reviews": None, "word_of_mouth": {},
                                             "satisfaction.effects": {}})
        clear = K.F_REVIEWS | K.F_REFERRALS | K.F_SAT_EFFECTS
    else:
        scenario = scenario.apply(overrides={f"segments.{g}.heterogeneity": {}
                                             for g in ("young", "old")})
        clear = K.F_HET
    model = compile_scenario(scenario)
    st = _alloc(16, model.arrays.het_kind.shape[2], events=False)  # as simulate's
    bits = K.features(model.arrays, st).bits
    assert bits & (clear | K.F_QUEUES | K.F_SEEN | K.F_MOVES) == 0
    assert bits | clear == K.F_HET | K.F_SAT_EFFECTS | K.F_REVIEWS | K.F_REFERRALS
    raw = simulate(model, SEED)
    twin = naive.simulate(model, SEED)
    for name in ("occupancy", "sat_sum", "flows", "arrivals", "referred", "exposures",
                 "acquired", "reviews", "rating", "retained", "to_convert"):
        got = getattr(raw, name)
        assert np.array_equal(got, np.array(twin[name], dtype=got.dtype)), name
    assert raw.clv_total == float(np.array(twin["state"].clv).sum())
    assert raw.flows.sum() > 100


def test_twin_exact_jit_mode() -> None:
    """The kernels are compiled, or plain Python under NUMBA_DISABLE_JIT=1."""
    for kernel in (K.mix64, K.birth, K.step_kernel, K.step_kernel_serial):
        assert hasattr(kernel, "py_func") != JIT_DISABLED


# ------------------------------------------------------------------ plain Python run


@pytest.mark.skipif(JIT_DISABLED, reason="already running without the JIT")
def test_twin_exact_tests_pass_without_jit() -> None:
    """Every ``twin_exact`` test again, the numba kernels running as plain Python."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(Path(__file__).resolve()), "-q", "-p",
         "no:cacheprovider", "-k", "twin_exact and not without_jit",
         "-W", "ignore::RuntimeWarning"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    expected = sum(1 for name in globals()
                   if name.startswith("test_twin_exact_") and "without_jit" not in name)
    expected += 1   # test_twin_exact_steps runs once per kernel
    expected += 1   # test_twin_exact_run_without_mechanisms runs once per variant
    assert f"{expected} passed" in proc.stdout, proc.stdout[-2000:]


# ------------------------------------------------------------------ uniforms


@numba.njit(cache=False)
def _uniforms(seed: np.uint64, n: np.int64, steps: np.int64, out: np.ndarray) -> None:
    k = 0
    for t in range(1, steps + 1):
        for i in range(n):
            key = K.agent_key(seed, np.int64(i), np.uint64(t))
            out[k] = float(np.int64(key >> np.uint64(11))) * 2.0**-53  # the exit draw
            out[k + 1] = K.uniform(key, np.uint64(1024 + i))
            k += 2


def test_uniforms_mean_and_range() -> None:
    """Uniforms fill [0, 1): a shift gone arithmetic would put them all in [0, 0.5).

    For U ~ U[0, 1): E U = 1/2, Var U = 1/12, so the mean of n draws has
    SE = sqrt(1/(12 n)) and the share above 1/2 has SE = sqrt(1/(4 n)).
    """
    n_agents, steps = 50_000, 10
    u = np.empty(2 * n_agents * steps)
    _uniforms(np.uint64(SEED), np.int64(n_agents), np.int64(steps), u)
    n = u.size
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / (12 * n))
    assert abs((u >= 0.5).mean() - 0.5) < 4 * math.sqrt(1 / (4 * n))
    # each tenth holds a tenth: binomial SE sqrt(0.1 * 0.9 / n)
    counts = np.bincount((u * 10).astype(np.int64), minlength=10) / n
    assert np.all(np.abs(counts - 0.1) < 4 * math.sqrt(0.09 / n))
    # the top of the range is reached: P(max < 1 - 20/n) = (1 - 20/n)^n ~ e^-20
    assert u.max() > 1 - 20 / n


def test_exit_draw_uncorrelated() -> None:
    """The exit draw (the key's own bits) is uncorrelated with the same agent-step's
    stream draws, with the next agent's exit draw and with the next step's: for
    independent uniforms the sample correlation of m pairs has SE 1/sqrt(m)."""
    n_agents, steps = 50_000, 10
    u = np.empty(2 * n_agents * steps)
    _uniforms(np.uint64(SEED), np.int64(n_agents), np.int64(steps), u)
    exit_draw = u[0::2].reshape(steps, n_agents)
    stream = u[1::2].reshape(steps, n_agents)
    pairs = [(exit_draw, stream), (exit_draw[:, :-1], exit_draw[:, 1:]),
             (exit_draw[:-1], exit_draw[1:])]
    for a, b in pairs:
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert abs(r) < 4 / math.sqrt(a.size), r
