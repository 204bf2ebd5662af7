"""Numba kernels: counter-based randomness, one agent-step, the step driver.

Kernels are pure functions over arrays (STYLE.md point 4): the caller
validates and allocates, kernels compute into ``out`` buffers. Every random
number is a hash of (seed, agent id, step, stream), so results do not depend
on the thread count, and two scenarios that differ in one touchpoint share
every other draw (common random numbers). Scheme ``splitmix64-counter-v2``:
an agent-step's key is one splitmix64 finaliser of the agent's counter
(``seed + golden * (agent + 1)``) xor the step's; the exit draw is the key's
own top 53 bits (its low 11 bits pre-screen a review: :func:`review_drawn`),
and every other stream (a touchpoint's exposure, a review, a referral, a
queue's times) is the finaliser of key + stream * golden. All helpers of a
kernel live in this module (numba's cache goes stale across modules).

The parallel step kernel runs ``prange`` over a fixed number of chunks of
agents; each chunk owns its slice of every output buffer and processes its
agents in id order, so even float sums are identical for any thread count.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import prange

from sim._jit import Flags, flag_bits, inner_kernel, kernel, parallel_kernel
from sim.model import (
    DUR_EXPONENTIAL,
    DUR_FIXED,
    DUR_NEVER,
    HET_BETA,
    HET_LOGIT_NORMAL,
    ModelArrays,
    QueueArrays,
)

__all__ = [
    "BIRTH_STEP",
    "CHUNKS",
    "RNG_SCHEME",
    "STREAM_REFERRAL",
    "STREAM_REVIEW",
    "Buffers",
    "Factors",
    "Population",
    "State",
    "Tally",
    "advance",
    "birth",
    "births_due",
    "draw_requests",
    "features",
    "make_buffers",
    "make_factors",
    "mix64",
    "odds",
    "poisson",
    "review_drawn",
    "run_steps",
    "run_steps_serial",
    "step_begin",
    "step_end",
    "step_factors",
    "step_kernel",
    "step_kernel_serial",
    "uniform",
]

RNG_SCHEME = "splitmix64-counter-v2"
"""Name of the randomness scheme, written into every output's metadata."""

CHUNKS = 64
"""Fixed number of agent chunks: the unit of parallel work and of reduction."""

STREAM_REVIEW = np.uint64(2)
STREAM_REFERRAL = np.uint64(3)
BIRTH_STEP = np.uint64(0xFFFF_FFFF)
"""Step number used for draws at an agent's birth (heterogeneity)."""

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_STEP_MUL = np.uint64(0xD1B54A32D192ED03)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_ONE = np.uint64(1)
_TWO53 = 1.0 / 9007199254740992.0
_2POW53 = 9007199254740992.0
_LOW11 = np.uint64(0x7FF)
_NEVER = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
"""A cut above every 53-bit draw: the event always happens."""

F_QUEUES = 1
F_SEEN = 2
F_MOVES = 4
F_HET = 8
F_SAT_EFFECTS = 16
F_REVIEWS = 32
F_REFERRALS = 64
"""The mechanisms a run's agent step may need (:func:`features`)."""


class State(NamedTuple):
    """Agent state, one entry per agent id (capacity >= population)."""

    stage: np.ndarray   # uint8 (unsigned indices: no negative-index wraparound code)
    seg: np.ndarray     # uint8
    dwell: np.ndarray   # int32 steps spent in the current stage
    sat: np.ndarray     # float32 satisfaction in [-1, 1]
    acq: np.ndarray     # int32 step of first acquisition, -1 before
    born: np.ndarray    # int32 step of entry (0 for the initial population)
    het: np.ndarray     # float32[N, H] per-agent propensities
    clv: np.ndarray     # float64 discounted revenue since acquisition
    moved: np.ndarray   # int8 stage left this step, -1 when the agent stayed (zero-length
                        # unless events are recorded)
    # queues (event engine; zero-length arrays when the model has none):
    served: np.ndarray    # uint64 queues (bits) whose service ended in this step
    wait_sat: np.ndarray  # float64 satisfaction change from waits that ended in this step
    # exposure events (zero-length unless requested):
    seen: np.ndarray      # uint64 touchpoints (bits) the agent was exposed to in this step


class Buffers(NamedTuple):
    """Per-chunk outputs of one step (leading axis: chunk)."""

    sat_sum: np.ndarray    # float64[C, G, S] satisfaction summed over occupants
    flows: np.ndarray      # int64[C, G, S, S] transitions from -> to
    exposures: np.ndarray  # int64[C, G, T]
    acquired: np.ndarray   # int64[C, G] first acquisitions
    referrals: np.ndarray  # int64[C, G] referrals made (by referrer's segment)
    reviews: np.ndarray    # int64[C, 2] reviews posted, sum of their scores
    retained: np.ndarray   # int64[C, L] cumulative: acquired agents in a customer stage by lag
    to_convert: np.ndarray  # int64[C, L] cumulative: steps from entry to acquisition
    scratch: np.ndarray    # float64[C, 2, Emax] per-chunk work space


class Factors(NamedTuple):
    """What :func:`step_factors` precomputes for one step (shapes as in ModelArrays)."""

    odds0: np.ndarray      # float64[G, E] base odds (contagion's addition included)
    mult: np.ndarray       # float64[G, E] exp(segment offset + reputation effect * rep)
    p0: np.ndarray         # float64[G, E] the probability from these two alone
    exit_cut: np.ndarray   # uint64[G, S] an unexposed agent can leave only below this
    reach_cut: np.ndarray  # uint64[G, K] exposed when the draw lies below this
    act_key: np.ndarray    # uint64[K] the stream of each (stage, touchpoint) pair, times G
    emult: np.ndarray      # float64[E] this step's profile multiplier of each exit
    het_base: np.ndarray   # float64[G, S] bound of the exits without heterogeneity of a stage
                           # with some (its exit_cut passes every draw), -1 elsewhere
    het_bound: np.ndarray  # float64[G, E, 2] what bounds an exit's agent-specific probability


class Population(NamedTuple):
    """What the between-step feedbacks read (:func:`step_begin`), from the compiled model."""

    regime_of_step: np.ndarray   # int64[steps] regime of step t + 1
    entry_stage: np.ndarray      # int64[R] where arrivals enter
    ref_entry_stage: np.ndarray  # int64[R] where referred prospects enter
    con_q: np.ndarray            # float64[R] contagion's imitation coefficient
    con_adopter: np.ndarray      # int8[S] 1 for the stages that count as adopters
    placements: np.ndarray       # int64[P, 3] the initial population: segment, stage, count
                                 # of each run of agents (born at step 0, by step 1's begin)
    consts: np.ndarray           # float64[6] market size, reviews (1/0), the rating's prior
                                 # mean and weight, the review scale's middle and half-width


class Tally(NamedTuple):
    """A replicate's counts by step (leading axis: step 0 .. steps) and running totals."""

    arrivals: np.ndarray   # int64[T1, G] arrivals drawn for each step
    occupancy: np.ndarray  # int64[T1, G, S]
    sat_sum: np.ndarray    # float64[T1, G, S]
    flows: np.ndarray      # int64[T1, G, S, S]
    arrived: np.ndarray    # int64[T1, G, S]
    referred: np.ndarray   # int64[T1, G, S]
    exposures: np.ndarray  # int64[T1, G, T]
    acquired: np.ndarray   # int64[T1, G]
    reviews: np.ndarray    # int64[T1, 2]
    rating: np.ndarray     # float64[T1]
    pending: np.ndarray    # int64[G] referrals made in the last step: born in the next
    totals: np.ndarray     # int64[3] agents, reviews posted, sum of their scores
    con_add: np.ndarray    # float64[1] contagion's addition in the current step


def make_factors(G: int, S: int, E: int, K: int) -> Factors:
    """Allocate the per-step factors."""
    return Factors(odds0=np.zeros((G, E)), mult=np.zeros((G, E)), p0=np.zeros((G, E)),
                   exit_cut=np.zeros((G, S), np.uint64), reach_cut=np.zeros((G, K), np.uint64),
                   act_key=np.zeros(K, np.uint64), emult=np.ones(E),
                   het_base=np.zeros((G, S)), het_bound=np.zeros((G, E, 2)))


def make_buffers(G: int, S: int, T: int, L: int, e_max: int) -> Buffers:
    """Allocate zeroed buffers for ``CHUNKS`` chunks."""
    C = CHUNKS
    return Buffers(
        sat_sum=np.zeros((C, G, S)),
        flows=np.zeros((C, G, S, S), np.int64), exposures=np.zeros((C, G, T), np.int64),
        acquired=np.zeros((C, G), np.int64), referrals=np.zeros((C, G), np.int64),
        reviews=np.zeros((C, 2), np.int64), retained=np.zeros((C, L), np.int64),
        to_convert=np.zeros((C, L), np.int64), scratch=np.zeros((C, 2, max(e_max, 1))),
    )


def features(m: ModelArrays, st: State) -> Flags:
    """Which mechanisms the agent step of this model and state needs, as bits (``F_*``).

    The step kernels take it as a compile-time constant (:class:`sim._jit.Flags`): the
    agent loop is compiled once per combination a process uses, without the code of
    the mechanisms the run lacks. Leaving that code in costs the loop every agent-step
    even where its branches are never taken (registers spilled to the stack, values
    reloaded): the lean benchmark's agent-step took a fifth more instructions with it
    (220.8 against 184.5 under callgrind). A bit is clear only where the mechanism
    cannot act: its arrays are empty or its parameters zero in every regime, so either
    way the results are the same.
    """
    bits = 0
    if st.served.shape[0] > 0:
        bits |= F_QUEUES
    if st.seen.shape[0] > 0:
        bits |= F_SEEN
    if st.moved.shape[0] > 0:
        bits |= F_MOVES
    if (np.asarray(m.het_slot) >= 0).any():
        bits |= F_HET
    if (np.asarray(m.sat_effect) != 0.0).any():
        bits |= F_SAT_EFFECTS
    if (np.asarray(m.review_post) > 0.0).any():
        bits |= F_REVIEWS
    if (np.asarray(m.ref_p) > 0.0).any():
        bits |= F_REFERRALS
    return Flags(bits)


# ------------------------------------------------------------------ randomness


@kernel
def mix64(z: np.uint64) -> np.uint64:
    """splitmix64 finaliser: a bijection of uint64 with full avalanche."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@kernel
def agent_key(seed: np.uint64, agent: int, step: np.uint64) -> np.uint64:
    """Key of one agent-step; its top 53 bits are the exit draw, the draws of its
    other streams derive from it (:func:`uniform`)."""
    return mix64((seed + _GOLDEN * (np.uint64(agent) + _ONE)) ^ mix64(step * _STEP_MUL + _GOLDEN))


@kernel
def _bits53(key: np.uint64, stream_g: np.uint64) -> np.uint64:
    """The 53 random bits of :func:`uniform` for ``stream_g = stream * G``, as an integer."""
    return mix64(key + stream_g) >> _S11


@inner_kernel
def _cut53(p: float) -> np.uint64:
    """The integer c with ``uniform < p`` exactly when its 53 bits lie below c.

    ``bits * 2**-53 < p`` iff ``bits < p * 2**53`` (scaling by a power of two is
    exact) iff ``bits < ceil(p * 2**53)`` for an integer ``bits``.
    """
    if p <= 0.0:
        return np.uint64(0)
    if p >= 1.0:
        return _NEVER
    return np.uint64(math.ceil(p * _2POW53))


@kernel
def uniform(key: np.uint64, stream: np.uint64) -> float:
    """Uniform in [0, 1) with 53 random bits, for ``stream`` under ``key``."""
    # the top 53 bits fit an int64 exactly; converting through int64 avoids the
    # slow unsigned-to-float sequence
    return float(np.int64(mix64(key + stream * _GOLDEN) >> _S11)) * _TWO53


@inner_kernel
def _normal(key: np.uint64, stream: np.uint64) -> float:
    u1 = uniform(key, stream)
    u2 = uniform(key, stream + _ONE)
    return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)


@inner_kernel
def _gamma(shape: float, key: np.uint64, stream: np.uint64) -> float:
    """Gamma(shape, 1) by Marsaglia-Tsang, each attempt on its own sub-stream."""
    boost = 1.0
    if shape < 1.0:
        boost = uniform(key, stream + np.uint64(999_983)) ** (1.0 / shape)
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    attempt = np.uint64(0)
    while True:
        sub = stream + np.uint64(4) * attempt
        x = _normal(key, sub)
        v = 1.0 + c * x
        attempt += _ONE
        if v <= 0.0:
            continue
        v = v * v * v
        u = uniform(key, sub + np.uint64(2))
        if u < 1.0 - 0.0331 * x * x * x * x or math.log(u) < 0.5 * x * x + d * (
                1.0 - v + math.log(v)):
            return d * v * boost


@kernel
def poisson(lam: float, key: np.uint64, stream: np.uint64) -> np.int64:
    """Poisson(lam) by inversion, in pieces of mean <= 200 (one uniform each)."""
    total = np.int64(0)
    pieces = math.ceil(lam / 200.0)
    for j in range(pieces):
        mean = lam / pieces
        u = uniform(key, stream + np.uint64(j))
        p = math.exp(-mean)
        cdf = p
        k = 0
        while u >= cdf and k < 10_000:
            k += 1
            p *= mean / k
            cdf += p
        total += k
    return total


@kernel
def review_drawn(key: np.uint64, post: float) -> bool:
    """Whether the agent-step of ``key`` posts a review, with probability ``post``.

    In two stages, exactly: the key's low 11 bits (the exit draw uses the top 53)
    pass with q = ceil(2048 post) / 2048 >= post, then the review stream's draw
    with post / q. Most agent-steps stop at the first stage, without a hash.
    """
    q11 = math.ceil(post * 2048.0)
    return bool((key & _LOW11) < np.uint64(q11)
                and uniform(key, STREAM_REVIEW) * q11 < post * 2048.0)


# ------------------------------------------------------------------ agents


@kernel
def odds(p: float) -> float:
    """p / (1 - p), infinite at p = 1."""
    return p / (1.0 - p) if p < 1.0 else math.inf


@kernel
def step_factors(t: int, r: int, rep: float, con_add: float, m: ModelArrays, f: Factors
                 ) -> None:
    """:func:`_step_factors`, callable from Python (the kernels call the inner one: a
    kernel's Python wrapper of these named tuples is slow to compile)."""
    _step_factors(t, r, rep, con_add, m, f)


@inner_kernel
def _step_factors(t: int, r: int, rep: float, con_add: float, m: ModelArrays, f: Factors
                  ) -> None:
    """What every agent-step of step ``t`` (1-based) shares (``f``'s arrays are
    overwritten).

    Calendar profiles enter here: the step's multiplier of each exit's base
    probability (``emult[e]``, capped at 1; it also multiplies an agent's own base
    rate of a Beta heterogeneity) and of each touchpoint's reach (capped at 1).

    * ``odds0[g, e]``: base odds (contagion's addition included); ``mult[g, e]``:
      exp(segment offset + reputation effect * rep); ``p0[g, e]``: the probability
      from these two alone (what an agent without lift, heterogeneity or
      satisfaction effect on the exit gets).
    * ``exit_cut[g, s]``: an agent of the segment in the stage who was not exposed
      this step can leave only if the 53 bits of its exit draw lie below this: the
      cut of an upper bound of the stage's exit probabilities plus a margin for
      rounding; no draw reaches it where an exit depends on the agent's
      heterogeneity.
    * ``het_base[g, s]``, ``het_bound[g, e]``: where an exit of the stage depends on
      the agent's heterogeneity, an unexposed agent's exit probabilities are bounded
      by ``het_base`` (the other exits' bound) plus, per such exit, for a Beta
      ``min(1, q * het_bound[0])`` with q the agent's own rate (``sigma(logit q + c)
      <= q * max(1, e^c)``: ``het_bound[0] = max(1, mult * sat_bound)``), for a
      logit-normal multiplier h ``min(1, het_bound[0] * max(1, h) * het_bound[1])``
      (``p0`` and the satisfaction bound); ``het_base`` is -1 for other stages.
    * ``reach_cut[g, k]``, ``act_key[k]``: (stage, touchpoint) pair k exposes the
      agent when the 53 bits of its draw (stream ``act_key[k]``) lie below the cut;
      the cut is 0 for a capacity-limited touchpoint, which acts only when the
      event engine reports the agent served (``State.served``).
    """
    G, E = f.odds0.shape
    for e in range(E):
        f.emult[e] = m.exit_mult[t - 1, e]
        p = m.base_p[r, e] * f.emult[e]
        if p > 1.0:
            p = 1.0
        if e == m.con_exit:
            # min(1, p) written out, here and in the kernels below: numba's min and max are
            # functions of their own to compile on a cold start; this is their definition
            p += con_add
            p = p if p < 1.0 else 1.0
        o = odds(p)
        for g in range(G):
            f.odds0[g, e] = o
            f.mult[g, e] = math.exp(m.seg_offset[r, g, e] + m.rep_effect[r, e] * rep)
            od = o * f.mult[g, e]
            f.p0[g, e] = od / (1.0 + od) if od < math.inf else 1.0
    S = f.exit_cut.shape[1]
    for g in range(G):
        for s in range(S):
            # the bound of advance's exit draw with no lift: p0, or with a satisfaction
            # effect the probability at the largest factor the effect gives
            bound = 0.0
            het = False
            for e in range(m.exit_start[s], m.exit_start[s + 1]):
                satb = m.sat_bound[r, e] if m.sat_effect[r, e] != 0.0 else 1.0
                if m.het_slot[g, e] >= 0:
                    het = True
                    if m.het_kind[r, g, m.het_slot[g, e]] == HET_BETA:
                        lift = f.mult[g, e] * satb
                        f.het_bound[g, e, 0] = lift if lift > 1.0 else 1.0
                    else:
                        f.het_bound[g, e, 0] = f.p0[g, e]
                        f.het_bound[g, e, 1] = satb
                elif m.sat_effect[r, e] == 0.0:
                    bound += f.p0[g, e]
                else:
                    od = f.odds0[g, e] * f.mult[g, e] * m.sat_bound[r, e]
                    bound += od / (1.0 + od) if od < math.inf else 1.0
            # advance computes the exits when not (bound < 1 and u >= bound + 1e-12)
            f.het_base[g, s] = bound if het else -1.0
            if het:
                bound = math.inf
            f.exit_cut[g, s] = _cut53(bound + 1e-12) if bound < 1.0 else _NEVER
        for k in range(f.reach_cut.shape[1]):
            # a capacity-limited touchpoint acts only through its queue (served bits)
            queued = m.tp_qmask[m.act_tp[k]] != 0
            reach = m.reach[r, g, k] * m.reach_mult[t - 1, m.act_tp[k]]
            reach = reach if reach < 1.0 else 1.0
            f.reach_cut[g, k] = np.uint64(0) if queued else _cut53(reach)
    for k in range(f.act_key.shape[0]):
        f.act_key[k] = m.tp_stream[m.act_tp[k]] * _GOLDEN


@kernel
def birth(i0: int, i1: int, t: int, r: int, seed: np.uint64, g: int, s: int,
          m: ModelArrays, st: State) -> None:
    """:func:`_birth`, callable from Python (tests)."""
    _birth(i0, i1, t, r, seed, g, s, m, st)


@inner_kernel
def _birth(i0: int, i1: int, t: int, r: int, seed: np.uint64, g: int, s: int,
           m: ModelArrays, st: State) -> None:
    """Initialise agents ``i0 .. i1-1`` of segment ``g`` entering stage ``s`` at step
    ``t`` under regime ``r`` (every birth is a run of one segment and one stage:
    a placement, a step's arrivals or referred prospects of a segment)."""
    stage, seg, dwell, sat, born, acq, clv, moved, het = (
        st.stage, st.seg, st.dwell, st.sat, st.born, st.acq, st.clv, st.moved, st.het)
    track = moved.shape[0] > 0
    H = het.shape[1]
    # -1: born a prospect, not yet acquired; -2: placed as a customer or lost,
    # so never counted as an acquisition of this run
    first = -1 if m.kind[s] == 0 else -2
    sat0 = m.sat_initial[r]
    het_kind, het_a, het_b, het_stream = m.het_kind[r, g], m.het_a[r, g], m.het_b[r, g], \
        m.het_stream
    for i in range(i0, i1):
        stage[i] = s
        seg[i] = g
        dwell[i] = 0
        sat[i] = sat0
        born[i] = t
        acq[i] = first
        clv[i] = 0.0
        if track:
            moved[i] = -1
        if H == 0:
            continue
        key = agent_key(seed, i, BIRTH_STEP)
        for h in range(H):
            kind = het_kind[h]
            value = 0.0
            if kind == HET_BETA:
                x = _gamma(het_a[h], key, het_stream[h])
                y = _gamma(het_b[h], key, het_stream[h] + np.uint64(1 << 20))
                value = x / (x + y)
            elif kind == HET_LOGIT_NORMAL:  # stored as the odds multiplier exp(sd * N)
                value = math.exp(het_a[h] * _normal(key, het_stream[h]))
            het[i, h] = value


@inner_kernel
def _worker_of(c: int, workers: int) -> int:
    """The worker (of ``workers``) that advances chunk ``c``.

    The chunks form up to four runs of consecutive chunks (fewer when a run would
    have fewer chunks than there are workers); each run is cut into ``workers``
    pieces as even as it goes, and run q's piece j goes to worker ``(j - q) mod
    workers``. So every worker has a piece of each run, spread over the ids, and
    as many chunks as any other to within one (two for 17 or 18 workers). Agents
    of one stage sit together along the ids (placed stage by stage, arrivals
    appended) and stages differ in work: with one contiguous share each, a worker
    waited for the other at every step. Single chunks dealt in turn would also
    balance, but put the workers' writes side by side at every chunk boundary.
    """
    runs = CHUNKS // workers
    runs = runs if runs < 4 else 4
    runs = runs if runs > 1 else 1
    q = 0
    while (q + 1) * CHUNKS // runs <= c:
        q += 1
    lo = q * CHUNKS // runs
    span = (q + 1) * CHUNKS // runs - lo
    j = 0
    while lo + (j + 1) * span // workers <= c:
        j += 1
    return (j - q) % workers


@inner_kernel
def advance(w: int, workers: int, n: int, t: int, r: int, seed: np.uint64, con_add: float,
            f: Factors, m: ModelArrays, st: State, buf: Buffers, feats: Flags) -> None:
    """Advance worker ``w``'s share of the chunks (of agents ``0 .. n-1``; all of them
    for ``workers == 1``) by step ``t`` (1-based) under regime ``r``; each chunk's
    per-step buffers are reset first.

    This is the one agent-step rule of the engine. The loops over chunks and
    agents are inside the function so that the model, state and buffer tuples
    are unpacked once per call, not once per chunk or agent (an inner kernel, it
    is compiled without reference counting: unpacking costs loads, no atomics).

    Order, per agent: dwell and satisfaction decay; exposures (lift,
    satisfaction, exposure counts); one competing-exit draw on the modified
    probabilities; then, in the stage it ends in, satisfaction, value,
    retention, a review and a referral (occupancy follows from the moves:
    :func:`step_end`).

    The modified probability of exit j is computed on the odds scale,
    ``odds = odds0 * mult * prod(exp(lift)) * het * exp(sat_effect * sat)`` and
    ``p = odds / (1 + odds)``, which is ``sigmoid(logit(p) + offsets + lifts +
    beta_sat * sat + beta_rep * rep)`` without an exp per exit. An agent that was
    not exposed and whose exit draw lies above this step's ``exit_cut`` for its
    segment and stage stays without computing any of it (most agent-steps). Draws
    are compared as integers against cuts (:func:`_cut53`): the same decisions as
    ``uniform(...) < p``.

    Args:
        w, workers: this worker and their number; worker w advances the chunks
            :func:`_worker_of` gives it. Chunk c holds agents ``c * size .. (c + 1)
            * size - 1`` with ``size = ceil(n / CHUNKS)`` and receives their counts
            in its slices of ``buf``.
        con_add: contagion's addition to the contagion exit's probability.
        f: this step's factors from :func:`step_factors`.
        feats: :func:`features` of the model and state, a compile-time constant.
    """
    on = flag_bits(feats)
    queues = (on & F_QUEUES) != 0
    track = (on & F_SEEN) != 0
    track_moves = (on & F_MOVES) != 0
    hets = (on & F_HET) != 0
    sat_effects = (on & F_SAT_EFFECTS) != 0
    reviews_on = (on & F_REVIEWS) != 0
    referrals_on = (on & F_REFERRALS) != 0
    # every array is taken out of its tuple once, before the loops
    stage, seg, dwell_of, sat, acq = st.stage, st.seg, st.dwell, st.sat, st.acq
    born, het, clv, moved = st.born, st.het, st.clv, st.moved
    served_of, wait_sat_of = st.served, st.wait_sat
    seen_of = st.seen
    tp_qmask = m.tp_qmask
    exit_start, min_dwell, act_start, act_tp = m.exit_start, m.min_dwell, m.act_start, m.act_tp
    kind, exit_to, discount = m.kind, m.exit_to, m.discount
    tp_sat, on_entry = m.tp_sat[r], m.on_entry[r]
    tp_elift, het_slot, het_kind = m.tp_elift[r], m.het_slot, m.het_kind[r]
    sat_effect, sat_bound, con_exit = m.sat_effect[r], m.sat_bound[r], m.con_exit
    per_step_value, value_mult = m.per_step_value[r], m.value_mult[r]
    review_post, ref_stage = m.review_post[r], m.ref_stage[r]
    decay, baseline = m.sat_decay[r], m.sat_baseline[r]
    ref_p, ref_min_sat = m.ref_p[r], m.ref_min_sat[r]
    review_min, review_max = m.review_min, m.review_max
    odds0, mult, p0, exit_cut, reach_cut = f.odds0, f.mult, f.p0, f.exit_cut, f.reach_cut
    act_key, emult, het_base, het_bound = f.act_key, f.emult, f.het_base, f.het_bound
    b_sat_sum, b_flows, b_exposures = buf.sat_sum, buf.flows, buf.exposures
    b_acquired, b_referrals, b_reviews = buf.acquired, buf.referrals, buf.reviews
    b_retained, b_to_convert, b_scratch = buf.retained, buf.to_convert, buf.scratch
    step_key = mix64(np.uint64(t) * _STEP_MUL + _GOLDEN)
    size = (n + CHUNKS - 1) // CHUNKS
    for c in range(CHUNKS):
        if workers > 1 and _worker_of(c, workers) != w:
            continue
        sat_sum, flows, exposures = b_sat_sum[c], b_flows[c], b_exposures[c]
        acquired, referrals, reviews = b_acquired[c], b_referrals[c], b_reviews[c]
        retained, to_convert, scr = b_retained[c], b_to_convert[c], b_scratch[c]
        sat_sum[:, :] = 0.0
        flows[:, :, :] = 0
        exposures[:, :] = 0
        acquired[:] = 0
        referrals[:] = 0
        reviews[:] = 0
        lo = c * size
        lo = lo if lo < n else n
        hi = lo + size
        hi = hi if hi < n else n
        # agent, stage, segment, exit target and touchpoint indices are unsigned: numba
        # emits no negative-index wraparound for them
        for i in range(np.uint64(lo), np.uint64(hi)):
            s = stage[i]
            g = seg[i]
            key = mix64((seed + _GOLDEN * (i + _ONE)) ^ step_key)  # agent_key(seed, i, t)
            dwell = dwell_of[i] + 1
            dwell_of[i] = dwell
            x = float(sat[i])
            x += decay * (baseline - x)

            # exposures; scr[0, :] holds the product of their exits' lifts once there is one.
            # A capacity-limited touchpoint (never drawn here: its cut is 0) counts as an
            # exposure in the step its service ends, in the same order as any other.
            done = np.uint64(0)
            if queues:
                done = served_of[i]
            e0 = exit_start[s]
            ne = exit_start[s + 1] - e0
            exposed = False
            mask = np.uint64(0)
            # the draws up to the first hit in a loop of their own: most agent-steps see
            # nothing, and the effects run only from the first hit (from the stage's first
            # touchpoint when a service ended), the later touchpoints drawn as they come
            k1 = act_start[s + 1]
            first = k1
            for k in range(act_start[s], k1):
                if _bits53(key, act_key[k]) < reach_cut[g, k]:
                    first = k
                    break
            if first < k1 or done != 0:
                for k in range(act_start[s] if done != 0 else first, k1):
                    tp = act_tp[k]
                    hit = k == first or (k > first and _bits53(key, act_key[k]) < reach_cut[g, k])
                    if not hit and done != 0 and (done & tp_qmask[tp]) != 0:
                        hit = True
                        done ^= tp_qmask[tp]
                    if hit:
                        if track:
                            mask |= _ONE << tp
                        exposures[g, tp] += 1
                        x += tp_sat[tp]
                        if not exposed:
                            exposed = True
                            for j in range(ne):
                                scr[0, j] = 1.0
                        for j in range(ne):
                            scr[0, j] *= tp_elift[tp, e0 + j]
            if queues:
                # served for a touchpoint not active in this stage (the agent moved while
                # being served): the same effects, after the active ones
                for tp in range(tp_qmask.shape[0]):
                    if done != 0 and (done & tp_qmask[tp]) != 0:
                        done ^= tp_qmask[tp]
                        if track:
                            mask |= _ONE << np.uint64(tp)
                        exposures[g, tp] += 1
                        x += tp_sat[tp]
                        if not exposed:
                            exposed = True
                            for j in range(ne):
                                scr[0, j] = 1.0
                        for j in range(ne):
                            scr[0, j] *= tp_elift[tp, e0 + j]
                served_of[i] = 0
                x += wait_sat_of[i]
                wait_sat_of[i] = 0.0
            if track:
                seen_of[i] = mask
            x = x if x > -1.0 else -1.0
            x = x if x < 1.0 else 1.0

            to = s
            if ne > 0 and dwell >= min_dwell[s]:
                bits = key >> _S11  # the exit draw: the key's own top 53 bits
                # the exits' probabilities are needed only for an agent that was exposed, or
                # one whose draw lies below the cut
                if exposed or bits < exit_cut[g, s]:
                    u = float(np.int64(bits)) * _TWO53
                    full = True
                    if hets and not exposed and het_base[g, s] >= 0.0:
                        # a stage with an exit of the agent's own heterogeneity: its bound
                        # from the agent's values, without the exits' exact probabilities
                        bound = het_base[g, s]
                        for j in range(ne):
                            e = e0 + j
                            h = het_slot[g, e]
                            if h >= 0:
                                hv = float(het[i, h])
                                if het_kind[g, h] == HET_BETA:
                                    q = hv * emult[e]
                                    q = q if q < 1.0 else 1.0
                                    if e == con_exit:
                                        q += con_add
                                        q = q if q < 1.0 else 1.0
                                    q *= het_bound[g, e, 0]
                                else:
                                    q = het_bound[g, e, 0] * (hv if hv > 1.0 else 1.0) \
                                        * het_bound[g, e, 1]
                                bound += q if q < 1.0 else 1.0
                        full = not (bound < 1.0 and u >= bound + 1e-12)
                    if full:
                        if not exposed:
                            for j in range(ne):
                                scr[0, j] = 1.0
                        # pass 1: each exit's probability, or for an exit with a satisfaction effect
                        # an upper bound (satisfaction lies in [-1, 1], so its factor is at most
                        # exp(|beta|)); scr[0, j] keeps the odds still to be finished, or -1
                        bound = 0.0
                        for j in range(ne):
                            e = e0 + j
                            h = het_slot[g, e] if hets else -1
                            beta = sat_effect[e] if sat_effects else 0.0
                            lift = scr[0, j]
                            scr[0, j] = -1.0
                            if h < 0 and beta == 0.0 and lift == 1.0:
                                p = p0[g, e]  # nothing agent-specific: this step's probability
                            else:
                                o = odds0[g, e]
                                het_mult = 1.0
                                if h >= 0:
                                    if het_kind[g, h] == HET_BETA:  # the agent's own base rate
                                        q = float(het[i, h]) * emult[e]
                                        q = q if q < 1.0 else 1.0
                                        if e == con_exit:
                                            q += con_add
                                            q = q if q < 1.0 else 1.0
                                        o = odds(q)
                                    elif het_kind[g, h] == HET_LOGIT_NORMAL:
                                        het_mult = float(het[i, h])
                                od = o * mult[g, e] * lift * het_mult
                                if beta != 0.0:
                                    scr[0, j] = od
                                    od *= sat_bound[e]
                                p = od / (1.0 + od) if od < math.inf else 1.0
                            scr[1, j] = p
                            bound += p
                        # an agent whose draw lies above the bound stays, whatever its satisfaction;
                        # the exact probabilities (an exp each) are needed only below it
                        if not (bound < 1.0 and u >= bound + 1e-12):
                            total = 0.0
                            for j in range(ne):
                                od = scr[0, j]
                                if od >= 0.0:
                                    od *= math.exp(sat_effect[e0 + j] * x)
                                    scr[1, j] = od / (1.0 + od) if od < math.inf else 1.0
                                total += scr[1, j]
                            if total > 1.0:
                                u *= total  # renormalise: compare on the cumulative's scale
                            cum = 0.0
                            for j in range(ne):
                                cum += scr[1, j]
                                if u < cum:
                                    to = exit_to[e0 + j]
                                    break

            # value earned this step: the stage's per-step value, and entry value on a move
            value = per_step_value[s]
            if to != s:
                flows[g, s, to] += 1
                stage[i] = to
                dwell_of[i] = 0
                if track_moves:
                    moved[i] = s
                value += on_entry[to]
                # acquisition: the first move into a customer stage from a non-customer one
                # (an agent placed as a customer is not acquired by moving between customer stages)
                if kind[to] == 1 and acq[i] == -1:  # the first acquisition
                    acq[i] = t
                    acquired[g] += 1
                    to_convert[t - born[i]] += 1
            elif track_moves:
                moved[i] = -1
            sat[i] = x
            a = acq[i]
            if a >= 0:
                if value != 0.0:  # adding a zero changes no sum: skip the load and store
                    clv[i] += value * value_mult[g] * discount[t - a]
                if kind[to] == 1:
                    retained[t - a] += 1
            sat_sum[g, to] += x
            post = review_post[to] if reviews_on else 0.0
            if post > 0.0 and review_drawn(key, post):
                score = review_min + (review_max - review_min) * (x + 1.0) * 0.5
                reviews[0] += 1
                reviews[1] += np.int64(math.floor(score + 0.5))
            if (referrals_on and ref_p > 0.0 and ref_stage[to] == 1 and x >= ref_min_sat
                    and uniform(key, STREAM_REFERRAL) < ref_p):
                referrals[g] += 1


@inner_kernel
def _duration(kind: int, mean: float, sigma: float, key: np.uint64,
              stream: np.uint64) -> float:
    """A duration in days: exponential, fixed or lognormal (mean ``mean``), or inf."""
    if kind == DUR_NEVER:
        return math.inf
    if kind == DUR_EXPONENTIAL:
        return -mean * math.log(1.0 - uniform(key, stream))
    if kind == DUR_FIXED:
        return mean
    return mean * math.exp(sigma * _normal(key, stream) - 0.5 * sigma * sigma)


@kernel
def draw_requests(n: int, t: int, r: int, seed: np.uint64, m: ModelArrays, qa: QueueArrays,
                  stage: np.ndarray, seg: np.ndarray, busy: np.ndarray, agent: np.ndarray,
                  queue: np.ndarray, at: np.ndarray, service: np.ndarray,
                  patience: np.ndarray) -> int:
    """Requests of step ``t`` to capacity-limited touchpoints (event engine).

    Agent i requests queue q when q's touchpoint is active in its stage, it is
    not already waiting or being served there (bit q of ``busy[i]``), and the
    53 bits of its exposure draw lie below the reach: the very draw
    :func:`advance` makes for an unlimited touchpoint, so with ample capacity and
    instant service the two engines expose the same agents. Under the agent-step
    key each request also draws its time within the step (a fraction of it), its
    service time and its patience (days; inf for infinite patience).

    Args:
        stage, seg: uint8[n] the agents' stage and segment at the start of the step.
        busy: uint64[n] queues each agent is waiting or being served in.
        agent, queue, at, service, patience: outputs, room for every request
            (int64, int64, float64, float64, float64).

    Returns:
        The number of requests written.
    """
    step_key = mix64(np.uint64(t) * _STEP_MUL + _GOLDEN)
    count = 0
    for i in range(np.uint64(0), np.uint64(n)):
        s = stage[i]
        g = seg[i]
        key = np.uint64(0)
        keyed = False
        for k in range(m.act_start[s], m.act_start[s + 1]):
            tp = m.act_tp[k]
            bit = m.tp_qmask[tp]
            if bit == 0 or (busy[i] & bit) != 0:
                continue
            if not keyed:
                key = mix64((seed + _GOLDEN * (i + _ONE)) ^ step_key)  # agent_key(seed, i, t)
                keyed = True
            reach = m.reach[r, g, k] * m.reach_mult[t - 1, tp]
            reach = reach if reach < 1.0 else 1.0
            if _bits53(key, m.tp_stream[tp] * _GOLDEN) < _cut53(reach):
                q = qa.queue_of[tp]
                base = qa.stream[q]
                agent[count] = i
                queue[count] = q
                at[count] = uniform(key, base)
                service[count] = _duration(qa.service_kind[q], qa.service_mean[q],
                                           qa.service_sigma[q], key, base + np.uint64(1))
                patience[count] = _duration(qa.patience_kind[q], qa.patience_mean[q],
                                            qa.patience_sigma[q], key, base + np.uint64(3))
                count += 1
    return count


@parallel_kernel
def step_kernel(n: int, t: int, r: int, seed: np.uint64, con_add: float,
                f: Factors, m: ModelArrays, st: State, buf: Buffers, workers: int,
                feats: Flags) -> None:
    """Advance agents ``0 .. n-1`` by step ``t``; per-step buffers are reset first.

    ``workers`` (numba's thread count, passed in: asking numba for it inside a
    kernel would keep the kernel out of the cache) threads each take their share of
    the chunks (:func:`_worker_of`; one unpacking of the tuples per
    thread and step); which thread advances a chunk changes nothing, as every chunk
    has its own buffers and walks its agents in id order. The ``prange`` body only
    calls :func:`advance`: numba's parfor pass mishandles writes through
    named-tuple fields made directly in a ``prange`` body (reproduced with numba
    0.68), so they stay in a serial function.
    """
    workers = workers if workers < CHUNKS else CHUNKS
    workers = workers if workers > 1 else 1
    for w in prange(workers):
        advance(w, workers, n, t, r, seed, con_add, f, m, st, buf, feats)


@kernel
def step_kernel_serial(n: int, t: int, r: int, seed: np.uint64, con_add: float,
                       f: Factors, m: ModelArrays, st: State, buf: Buffers, feats: Flags
                       ) -> None:
    """:func:`step_kernel` on the calling thread: the same chunks in order, so the
    same results; for small populations, where a parallel launch costs more than
    it saves."""
    advance(0, 1, n, t, r, seed, con_add, f, m, st, buf, feats)


# ------------------------------------------------------------------ steps


@inner_kernel
def births_due(t: int, p: Population, tl: Tally) -> int:
    """How many agents step ``t`` gives birth to (arrivals and referred prospects, and
    at step 1 the initial population first)."""
    due = 0  # loops: numba's array sum is a function of its own to compile on a cold start
    for g in range(tl.pending.shape[0]):
        due += tl.arrivals[t, g] + tl.pending[g]
    if t == 1:
        for j in range(p.placements.shape[0]):
            due += p.placements[j, 2]
    return due


@kernel
def step_begin(t: int, seed: np.uint64, p: Population, tl: Tally, m: ModelArrays, st: State,
               f: Factors) -> int:
    """:func:`_step_begin`, callable from Python (events and the event engine)."""
    return _step_begin(t, seed, p, tl, m, st, f)


@inner_kernel
def _step_begin(t: int, seed: np.uint64, p: Population, tl: Tally, m: ModelArrays, st: State,
                f: Factors) -> int:
    """Start step ``t``: arrivals then referred prospects are born (by segment, ids
    after every agent so far), reputation and contagion set this step's factors. Step
    1 first gives birth to the initial population (ids from 0, born at step 0 under
    the first regime), whose counts the caller put into step 0's tally: so only the
    compiled step loops initialise agents, and no kernel with the model's and the
    state's Python wrappers is compiled for it.

    Returns:
        The step's regime, or -1 (nothing done) when the agents' arrays cannot take
        the births (:func:`births_due`): the caller grows them and calls again.
    """
    n = tl.totals[0]
    if n + births_due(t, p, tl) > st.stage.shape[0]:
        return -1
    r = p.regime_of_step[t - 1]
    if t == 1:
        for j in range(p.placements.shape[0]):
            k = p.placements[j, 2]
            _birth(n, n + k, 0, r, seed, p.placements[j, 0], p.placements[j, 1], m, st)
            n += k
    G = tl.pending.shape[0]
    for g in range(G):
        k = tl.arrivals[t, g]
        _birth(n, n + k, t, r, seed, g, p.entry_stage[r], m, st)
        tl.arrived[t, g, p.entry_stage[r]] = k
        n += k
    for g in range(G):
        k = tl.pending[g]
        _birth(n, n + k, t, r, seed, g, p.ref_entry_stage[r], m, st)
        tl.referred[t, g, p.ref_entry_stage[r]] = k
        n += k
    tl.totals[0] = n
    market, reviews, mid, half = p.consts[0], p.consts[1], p.consts[4], p.consts[5]
    reputation = (tl.rating[t - 1] - mid) / half if reviews != 0.0 else 0.0
    con_add = 0.0
    if m.con_exit >= 0:
        adopters = 0
        for g in range(G):
            for s in range(p.con_adopter.shape[0]):
                if p.con_adopter[s] == 1:
                    adopters += tl.occupancy[t - 1, g, s]
        con_add = p.con_q[r] * float(adopters) / market
    tl.con_add[0] = con_add
    _step_factors(t, r, reputation, con_add, m, f)
    return r


@kernel
def step_end(t: int, p: Population, tl: Tally, buf: Buffers) -> None:
    """:func:`_step_end`, callable from Python (events and the event engine)."""
    _step_end(t, p, tl, buf)


@inner_kernel
def _step_end(t: int, p: Population, tl: Tally, buf: Buffers) -> None:
    """Finish step ``t``: the chunks' counts summed in chunk order, the occupancy from
    the last step's, the births and the moves, the rating updated."""
    C, G, S = buf.sat_sum.shape
    for g in range(G):
        for s in range(S):
            total = 0.0
            for c in range(C):
                total += buf.sat_sum[c, g, s]
            tl.sat_sum[t, g, s] = total
            for s2 in range(S):
                flows = 0
                for c in range(C):
                    flows += buf.flows[c, g, s, s2]
                tl.flows[t, g, s, s2] = flows
        for s in range(S):
            occ = tl.occupancy[t - 1, g, s] + tl.arrived[t, g, s] + tl.referred[t, g, s]
            for s2 in range(S):
                occ += tl.flows[t, g, s2, s] - tl.flows[t, g, s, s2]
            tl.occupancy[t, g, s] = occ
        for k in range(buf.exposures.shape[2]):
            exposed = 0
            for c in range(C):
                exposed += buf.exposures[c, g, k]
            tl.exposures[t, g, k] = exposed
        acquired = 0
        referrals = 0
        for c in range(C):
            acquired += buf.acquired[c, g]
            referrals += buf.referrals[c, g]
        tl.acquired[t, g] = acquired
        tl.pending[g] = referrals
    posted = 0
    score = 0
    for c in range(C):
        posted += buf.reviews[c, 0]
        score += buf.reviews[c, 1]
    tl.reviews[t, 0] = posted
    tl.reviews[t, 1] = score
    tl.totals[1] += posted
    tl.totals[2] += score
    prior, weight = p.consts[2], p.consts[3]
    if p.consts[1] != 0.0:
        count = weight + tl.totals[1]
        tl.rating[t] = (prior * weight + tl.totals[2]) / count if count > 0 else prior


@parallel_kernel
def run_steps(t0: int, t1: int, seed: np.uint64, p: Population, tl: Tally, f: Factors,
              m: ModelArrays, st: State, buf: Buffers, workers: int, feats: Flags) -> int:
    """Steps ``t0 .. t1-1`` in one call: begin, every agent (chunks over ``workers``
    threads, as :func:`step_kernel`), end.

    Returns:
        The first step not taken: ``t1``, or the step whose births the agents' arrays
        cannot take (the caller grows them and calls again from there).
    """
    workers = workers if workers < CHUNKS else CHUNKS
    workers = workers if workers > 1 else 1
    for t in range(t0, t1):
        r = _step_begin(t, seed, p, tl, m, st, f)
        if r < 0:
            return t
        n = tl.totals[0]
        con_add = tl.con_add[0]
        for w in prange(workers):
            advance(w, workers, n, t, r, seed, con_add, f, m, st, buf, feats)
        _step_end(t, p, tl, buf)
    return t1


@kernel
def run_steps_serial(t0: int, t1: int, seed: np.uint64, p: Population, tl: Tally, f: Factors,
                     m: ModelArrays, st: State, buf: Buffers, feats: Flags) -> int:
    """:func:`run_steps` on the calling thread (the same results)."""
    for t in range(t0, t1):
        r = _step_begin(t, seed, p, tl, m, st, f)
        if r < 0:
            return t
        advance(0, 1, tl.totals[0], t, r, seed, tl.con_add[0], f, m, st, buf, feats)
        _step_end(t, p, tl, buf)
    return t1
