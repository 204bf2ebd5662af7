"""The fast engine: numba kernels over flat agent arrays.

:func:`simulate` runs one replicate of a compiled model and returns its raw
counts (:class:`RawRun`); metrics and tables are built from those elsewhere.
Between steps it applies the population-level feedbacks: arrivals (Poisson
by segment, drawn from the counter-based stream), referred prospects, the
public rating, contagion and the regime of open interventions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numba
import numpy as np

from sim._errors import SimError
from sim.engines._kernels import (
    CHUNKS,
    State,
    agent_key,
    birth,
    make_buffers,
    make_factors,
    poisson,
    step_factors,
    step_kernel,
    step_kernel_serial,
)
from sim.model import CompiledModel

__all__ = ["CHUNKS", "RawRun", "draw_arrivals", "simulate"]

log = logging.getLogger(__name__)

POPULATION_AGENT = 1 << 62
"""Agent id used for population-level draws (arrivals): never a real agent."""
MAX_AGENTS = 2**31 - 1
PARALLEL_MIN_AGENTS = 32_768
"""Below this population a step runs on one thread: a parallel launch costs more than
it saves. Both kernels walk the same chunks in the same order, so results match."""


@dataclass
class RawRun:
    """Raw counts of one replicate; index ``t`` is step t (0 = initial state).

    Shapes: T1 = steps + 1, G segments, S stages, T touchpoints, L = steps + 1 lags.
    """

    model: CompiledModel
    seed: int
    occupancy: np.ndarray      # int64[T1, G, S] at the end of each step
    sat_sum: np.ndarray        # float64[T1, G, S]
    flows: np.ndarray          # int64[T1, G, S, S]
    arrivals: np.ndarray       # int64[T1, G, S] entrants by entry stage (arrivals)
    referred: np.ndarray       # int64[T1, G, S] entrants by entry stage (referrals)
    exposures: np.ndarray      # int64[T1, G, T]
    acquired: np.ndarray       # int64[T1, G]
    reviews: np.ndarray        # int64[T1, 2] (count, score sum) posted in step t
    rating: np.ndarray         # float64[T1] public rating at the end of step t
    retained: np.ndarray       # int64[L]
    to_convert: np.ndarray     # int64[L]
    clv_total: float
    agents: int
    promoters: int
    detractors: int
    customers_at_end: int
    events: dict[str, np.ndarray] | None = field(default=None)


def _grow(st: State, capacity: int) -> State:
    def grow(a: np.ndarray) -> np.ndarray:
        out = np.zeros((capacity, *a.shape[1:]), dtype=a.dtype)
        out[: a.shape[0]] = a
        return out

    return State(*(grow(a) for a in st))


def _alloc(capacity: int, H: int) -> State:
    return State(
        stage=np.zeros(capacity, np.uint8), seg=np.zeros(capacity, np.uint8),
        dwell=np.zeros(capacity, np.int32), sat=np.zeros(capacity, np.float32),
        acq=np.full(capacity, -1, np.int32), born=np.zeros(capacity, np.int32),
        het=np.zeros((capacity, H), np.float32), clv=np.zeros(capacity),
        moved=np.full(capacity, -1, np.int8),
    )


def draw_arrivals(model: CompiledModel, seed: int) -> np.ndarray:
    """Arrivals by step and segment: int64[steps + 1, G] (row 0 is empty)."""
    G = len(model.segments)
    out = np.zeros((model.steps + 1, G), np.int64)
    seed64 = np.uint64(seed)
    for t in range(1, model.steps + 1):
        rates = model.arrival_rate[model.regime_of_step[t - 1]]
        key = np.uint64(agent_key(seed64, POPULATION_AGENT, np.uint64(t)))
        for g in range(G):
            if rates[g] > 0:
                out[t, g] = poisson(float(rates[g]), key, np.uint64(4096 * (g + 1)))
    return out


def simulate(model: CompiledModel, seed: int, *, events: bool = False,
             progress: Callable[[int], None] | None = None, parallel: bool = True) -> RawRun:
    """Run one replicate.

    Args:
        model: the compiled scenario.
        seed: the replicate's seed (0 <= seed < 2**64).
        events: also record one row per agent transition and entry.
        progress: called with the number of steps done after each step; an
            exception it raises stops the run.
        parallel: allow the parallel kernel (for populations past
            :data:`PARALLEL_MIN_AGENTS`); results are the same either way.

    Returns:
        The raw counts of the run.

    Raises:
        SimError: the population would pass 2**31 - 1 agents.
    """
    m = model.arrays
    G, S, T = len(model.segments), len(model.stages), len(model.touchpoints)
    steps = model.steps
    T1 = steps + 1
    H = m.het_kind.shape[2]
    seed64 = np.uint64(seed)
    arrivals = draw_arrivals(model, seed)
    initial = sum(c for _, _, c in model.placements)
    expected = initial + int(arrivals.sum())
    if expected > MAX_AGENTS:
        raise SimError(f"the run would hold {expected:,} agents; the engine's limit is "
                       f"{MAX_AGENTS:,} (lower population_scale)")
    capacity = max(16, expected + expected // 8)
    st = _alloc(capacity, H)
    e_max = int(np.max(np.diff(m.exit_start))) if len(m.exit_start) > 1 else 1
    buf = make_buffers(G, S, T, T1, e_max)
    E = m.base_p.shape[1]
    f = make_factors(G, S, E, m.act_tp.shape[0])

    occupancy = np.zeros((T1, G, S), np.int64)
    sat_sum = np.zeros((T1, G, S))
    flows = np.zeros((T1, G, S, S), np.int64)
    arrived = np.zeros((T1, G, S), np.int64)
    referred = np.zeros((T1, G, S), np.int64)
    exposures = np.zeros((T1, G, T), np.int64)
    acquired = np.zeros((T1, G), np.int64)
    reviews = np.zeros((T1, 2), np.int64)
    rating = np.zeros(T1)
    ev: list[np.ndarray] = []

    n = 0
    r0 = int(model.regime_of_step[0])
    for g, s, count in model.placements:
        birth(n, n + count, 0, r0, seed64, np.full(count, g, np.int64),
              np.full(count, s, np.int64), m, st)
        occupancy[0, g, s] += count
        sat_sum[0, g, s] += count * float(np.float32(m.sat_initial[r0]))
        if events and count:
            ev.append(np.stack([np.zeros(count, np.int64), np.arange(n, n + count),
                                np.full(count, g), np.full(count, -1), np.full(count, s)]))
        n += count

    scn = model.scenario
    prior_mean = scn.reviews.prior_mean if scn.reviews else 0.0
    prior_weight = scn.reviews.prior_weight if scn.reviews else 0.0
    mid = (m.review_min + m.review_max) / 2.0
    half = (m.review_max - m.review_min) / 2.0
    n_reviews, score_total = 0, 0
    rating[0] = prior_mean
    pending_referrals = np.zeros(G, np.int64)

    for t in range(1, steps + 1):
        r = int(model.regime_of_step[t - 1])
        new_seg = np.concatenate([np.repeat(np.arange(G), arrivals[t]),
                                  np.repeat(np.arange(G), pending_referrals)]).astype(np.int64)
        n_arr = int(arrivals[t].sum())
        new_stage = np.empty(new_seg.shape[0], np.int64)
        new_stage[:n_arr] = model.entry_stage[r]
        new_stage[n_arr:] = model.ref_entry_stage[r]
        arrived[t, :, model.entry_stage[r]] = arrivals[t]
        referred[t, :, model.ref_entry_stage[r]] = pending_referrals
        if n + new_seg.shape[0] > MAX_AGENTS:
            raise SimError(f"the population passed {MAX_AGENTS:,} agents at step {t}")
        if n + new_seg.shape[0] > capacity:
            capacity = min(MAX_AGENTS, max(n + new_seg.shape[0], capacity + capacity // 2))
            log.debug("growing agent arrays to %d", capacity)
            st = _grow(st, capacity)
        if new_seg.shape[0]:
            birth(n, n + new_seg.shape[0], t, r, seed64, new_seg, new_stage, m, st)
            if events:
                k = new_seg.shape[0]
                ev.append(np.stack([np.full(k, t), np.arange(n, n + k), new_seg,
                                    np.full(k, -1), new_stage]))
            n += new_seg.shape[0]

        reputation = (rating[t - 1] - mid) / half if scn.reviews else 0.0
        con_add = 0.0
        if m.con_exit >= 0:
            adopters = float(occupancy[t - 1][:, model.con_adopter == 1].sum())
            con_add = float(model.con_q[r]) * adopters / model.market_size
        kernel = step_kernel if (parallel and n >= PARALLEL_MIN_AGENTS
                                 and numba.get_num_threads() > 1) else step_kernel_serial
        step_factors(r, reputation, con_add, m, f)
        kernel(n, t, r, seed64, con_add, f, m, st, buf)

        occupancy[t] = buf.occ.sum(axis=0)
        sat_sum[t] = buf.sat_sum.sum(axis=0)
        flows[t] = buf.flows.sum(axis=0)
        exposures[t] = buf.exposures.sum(axis=0)
        acquired[t] = buf.acquired.sum(axis=0)
        reviews[t] = buf.reviews.sum(axis=0)
        pending_referrals = buf.referrals.sum(axis=0)
        n_reviews += int(reviews[t, 0])
        score_total += int(reviews[t, 1])
        if scn.reviews:
            rating[t] = (prior_mean * prior_weight + score_total) / (prior_weight + n_reviews) \
                if prior_weight + n_reviews > 0 else prior_mean
        if events:
            idx = np.flatnonzero(st.moved[:n] >= 0)
            if idx.size:
                ev.append(np.stack([np.full(idx.size, t), idx, st.seg[idx].astype(np.int64),
                                    st.moved[idx].astype(np.int64),
                                    st.stage[idx].astype(np.int64)]))
        if progress is not None:
            progress(t)

    kinds = m.kind[st.stage[:n]]
    customers = kinds == 1
    sat_end = st.sat[:n][customers]
    sat_cfg = scn.satisfaction
    events_out = None
    if events:
        allev = np.concatenate(ev, axis=1) if ev else np.zeros((5, 0), np.int64)
        events_out = {name: allev[j] for j, name in
                      enumerate(("step", "agent", "segment", "from_stage", "to_stage"))}
    return RawRun(
        model=model, seed=seed, occupancy=occupancy, sat_sum=sat_sum, flows=flows,
        arrivals=arrived, referred=referred, exposures=exposures, acquired=acquired,
        reviews=reviews, rating=rating, retained=buf.retained.sum(axis=0),
        to_convert=buf.to_convert.sum(axis=0), clv_total=float(st.clv[:n].sum()), agents=n,
        promoters=int((sat_end > sat_cfg.promoter_above).sum()),
        detractors=int((sat_end < sat_cfg.detractor_below).sum()),
        customers_at_end=int(customers.sum()), events=events_out,
    )

