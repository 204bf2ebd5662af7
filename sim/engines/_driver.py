"""One replicate step by step: the core that both engines drive.

:class:`Driver` holds a replicate's agents and counts and advances them through
``begin`` / ``advance`` / ``end`` for each step; the fast engine
(:mod:`sim.engines.fast`) calls these in a loop, the event engine
(:mod:`sim.engines.des`) from a SimPy process with its queues' events in
between (DESIGN.md, "One agent-step, two drivers"). The driver reads the
compiled model only; the agent-step itself is the kernel in
:mod:`sim.engines._kernels`.
"""

from __future__ import annotations

import logging

import numba
import numpy as np

from sim._errors import SimError
from sim.engines._kernels import (
    Population,
    State,
    Tally,
    agent_key,
    features,
    make_buffers,
    make_factors,
    poisson,
    run_steps,
    run_steps_serial,
    step_begin,
    step_end,
    step_kernel,
    step_kernel_serial,
)
from sim.engines.raw import RawRun
from sim.model import CompiledModel

__all__ = ["ENTRY", "EVENT_COLUMNS", "EVENT_KINDS", "EXPOSURE", "MAX_AGENTS",
           "MAX_EXPOSURE_TOUCHPOINTS", "PARALLEL_MIN_AGENTS", "POPULATION_AGENT", "TRANSITION",
           "Driver", "draw_arrivals"]

log = logging.getLogger(__name__)

POPULATION_AGENT = 1 << 62
"""Agent id used for population-level draws (arrivals): never a real agent."""
MAX_AGENTS = 2**31 - 1
MAX_EXPOSURE_TOUCHPOINTS = 64
"""Exposure events keep an agent's exposures of a step as the bits of one uint64."""
ENTRY, TRANSITION, EXPOSURE = 0, 1, 2
EVENT_KINDS = ("entry", "transition", "exposure")
"""What an event row is, by its ``kind`` code."""
EVENT_COLUMNS = ("step", "agent", "segment", "from_stage", "to_stage", "kind", "touchpoint")
"""The raw events' columns (``from_stage`` -1 on an entry, ``touchpoint`` -1 unless an
exposure; stages, segments and touchpoints by index)."""
PARALLEL_MIN_AGENTS = 4_096
"""Below this population a step runs on one thread: a parallel launch costs more than
it saves. Both kernels walk the same chunks in the same order, so results match."""
RESULT_BLOCK = 65_536
"""Agents a replicate's end-of-run counts take at a time: their temporaries stay a few
hundred kilobytes, not bytes per agent of the whole population."""


def _grow(st: State, capacity: int) -> State:
    """The agents' arrays grown to ``capacity``, one at a time (each old one freed as its
    copy is made: the peak is the old arrays and one new one, not twice the state)."""
    fields = list(st)
    del st
    for k, a in enumerate(fields):
        if a.shape[0] == 0:  # fields of a run without queues or events stay empty
            continue
        out = np.zeros((capacity, *a.shape[1:]), dtype=a.dtype)
        out[: a.shape[0]] = a
        fields[k] = out
        del a, out
    return State(*fields)


def _alloc(capacity: int, H: int, queues: bool = False, exposures: bool = False,
           events: bool = True) -> State:
    q = capacity if queues else 0
    return State(
        stage=np.zeros(capacity, np.uint8), seg=np.zeros(capacity, np.uint8),
        dwell=np.zeros(capacity, np.int32), sat=np.zeros(capacity, np.float32),
        acq=np.full(capacity, -1, np.int32), born=np.zeros(capacity, np.int32),
        het=np.zeros((capacity, H), np.float32), clv=np.zeros(capacity),
        moved=np.full(capacity if events or exposures else 0, -1, np.int8),
        served=np.zeros(q, np.uint64), wait_sat=np.zeros(q),
        seen=np.zeros(capacity if exposures else 0, np.uint64),
    )


def draw_arrivals(model: CompiledModel, seed: int) -> np.ndarray:
    """Arrivals by step and segment: int64[steps + 1, G] (row 0 is empty)."""
    G = len(model.segments)
    out = np.zeros((model.steps + 1, G), np.int64)
    seed64 = np.uint64(seed)
    for t in range(1, model.steps + 1):
        rates = model.arrival_rate[model.regime_of_step[t - 1]] * model.arrival_mult[t - 1]
        key = np.uint64(agent_key(seed64, POPULATION_AGENT, np.uint64(t)))
        for g in range(G):
            if rates[g] > 0:
                out[t, g] = poisson(float(rates[g]), key, np.uint64(4096 * (g + 1)))
    return out


class Driver:
    """One replicate step by step: the between-step feedbacks and the kernel.

    Both engines drive a replicate through these calls, in this order, for
    t = 1 .. steps: :meth:`begin` (arrivals and referred prospects are born,
    reputation and contagion set this step's factors), :meth:`advance` (every
    agent takes step t), :meth:`end` (counts, rating, events). The fast engine
    calls them in a loop; the event engine from a SimPy process at the step
    boundaries, with its queues' events in between.

    Args:
        model: the compiled scenario.
        seed: the replicate's seed (0 <= seed < 2**64).
        events: also record one row per agent transition and entry.
        parallel: allow the parallel kernel (for populations past
            :data:`PARALLEL_MIN_AGENTS`); results are the same either way.
        queues: allocate the agents' queue fields (``State.served``,
            ``State.wait_sat``) that the event engine writes.

    Raises:
        SimError: the population would pass 2**31 - 1 agents.
    """

    def __init__(self, model: CompiledModel, seed: int, *, events: bool = False,
                 parallel: bool = True, queues: bool = False, exposures: bool = False) -> None:
        m = model.arrays
        self.model = model
        self.seed = seed
        self.events = events or exposures
        self.exposure_events = exposures
        if exposures and len(model.touchpoints) > MAX_EXPOSURE_TOUCHPOINTS:
            raise SimError(f"exposure events follow at most {MAX_EXPOSURE_TOUCHPOINTS} "
                           f"touchpoints; this scenario has {len(model.touchpoints)}")
        self.parallel = parallel
        G, S, T = len(model.segments), len(model.stages), len(model.touchpoints)
        steps = model.steps
        T1 = steps + 1
        H = m.het_kind.shape[2]
        self.seed64 = np.uint64(seed)
        arrivals = draw_arrivals(model, seed)
        initial = sum(c for _, _, c in model.placements)
        expected = initial + int(arrivals.sum())
        if expected > MAX_AGENTS:
            raise SimError(f"the run would hold {expected:,} agents; the engine's limit is "
                           f"{MAX_AGENTS:,} (lower population_scale)")
        # arrivals are drawn in advance; only referred prospects are not known: room for
        # an eighth more where the scenario has referrals
        referrals = bool((m.ref_p > 0).any())
        self.capacity = max(16, expected + (expected // 8 if referrals else 0))
        self.st = _alloc(self.capacity, H, queues, exposures, self.events)
        self.feats = features(m, self.st)   # the step kernels' compile-time mechanisms
        e_max = int(np.max(np.diff(m.exit_start))) if len(m.exit_start) > 1 else 1
        self.buf = make_buffers(G, S, T, T1, e_max)
        E = m.base_p.shape[1]
        self.f = make_factors(G, S, E, m.act_tp.shape[0])
        self.pop = Population(
            regime_of_step=model.regime_of_step.astype(np.int64),
            entry_stage=model.entry_stage.astype(np.int64),
            ref_entry_stage=model.ref_entry_stage.astype(np.int64),
            con_q=model.con_q.astype(np.float64), con_adopter=model.con_adopter.astype(np.int8),
            placements=np.array([list(p) for p in model.placements], np.int64).reshape(-1, 3),
            consts=np.array([model.market_size, 1.0 if model.has_reviews else 0.0,
                             model.rating_prior_mean, model.rating_prior_weight,
                             (m.review_min + m.review_max) / 2.0,
                             (m.review_max - m.review_min) / 2.0]))
        self.tally = tl = Tally(
            arrivals=arrivals, occupancy=np.zeros((T1, G, S), np.int64),
            sat_sum=np.zeros((T1, G, S)), flows=np.zeros((T1, G, S, S), np.int64),
            arrived=np.zeros((T1, G, S), np.int64), referred=np.zeros((T1, G, S), np.int64),
            exposures=np.zeros((T1, G, T), np.int64), acquired=np.zeros((T1, G), np.int64),
            reviews=np.zeros((T1, 2), np.int64), rating=np.zeros(T1),
            pending=np.zeros(G, np.int64), totals=np.zeros(3, np.int64), con_add=np.zeros(1))
        self.ev: list[np.ndarray] = []

        # the initial population is counted here and born by step 1's begin (its ids from 0)
        n = 0
        r0 = int(model.regime_of_step[0])
        for g, s, count in model.placements:
            tl.occupancy[0, g, s] += count
            tl.sat_sum[0, g, s] += count * float(np.float32(m.sat_initial[r0]))
            if self.events and count:
                self.ev.append(np.stack([np.zeros(count, np.int64), np.arange(n, n + count),
                                         np.full(count, g), np.full(count, -1),
                                         np.full(count, s), np.full(count, ENTRY),
                                         np.full(count, -1)]))
            n += count
        self.initial = n
        tl.rating[0] = model.rating_prior_mean

    @property
    def n(self) -> int:
        """Agents born so far (the initial population is born by step 1's begin)."""
        return int(self.tally.totals[0])

    def _present(self, t: int) -> int:
        """Agents there before step ``t``'s arrivals and referred prospects: those born so
        far, and at step 1 the initial population, which step 1's begin gives birth to."""
        return self.n + (self.initial if t == 1 else 0)

    def _room(self, t: int) -> None:
        """Grow the agents' arrays when step ``t``'s births would not fit."""
        tl = self.tally   # births_due, in Python (it is compiled for the kernels alone)
        need = self._present(t) + int(tl.arrivals[t].sum() + tl.pending.sum())
        if need > MAX_AGENTS:
            raise SimError(f"the population passed {MAX_AGENTS:,} agents at step {t}")
        if need > self.capacity:
            self.capacity = min(MAX_AGENTS, max(need, self.capacity + self.capacity // 2))
            log.debug("growing agent arrays to %d", self.capacity)
            self.st = _grow(self.st, self.capacity)

    def _threads(self, n: int) -> int:
        """Threads for a kernel over ``n`` agents: 1 below :data:`PARALLEL_MIN_AGENTS`."""
        threads = numba.get_num_threads()
        return threads if self.parallel and n >= PARALLEL_MIN_AGENTS else 1

    def run(self, t0: int, t1: int) -> None:
        """Steps ``t0 .. t1-1`` (begin, advance, end each) in compiled loops: the fast
        engine's path when no events are recorded. The same results as the calls one
        by one."""
        m = self.model.arrays
        while t0 < t1:
            self._room(t0)
            threads = self._threads(self._present(t0))
            if threads > 1:
                t0 = run_steps(t0, t1, self.seed64, self.pop, self.tally, self.f, m, self.st,
                               self.buf, threads, self.feats)
            else:
                t0 = run_steps_serial(t0, t1, self.seed64, self.pop, self.tally, self.f, m,
                                      self.st, self.buf, self.feats)

    def begin(self, t: int) -> int:
        """Start step ``t``: births of arrivals and referred prospects, this step's
        factors (reputation, contagion). Returns the step's regime."""
        self._room(t)
        n = self._present(t)  # the initial population's entry rows are step 0's
        r = int(step_begin(t, self.seed64, self.pop, self.tally, self.model.arrays, self.st,
                           self.f))
        if self.events and self.n > n:
            st, k = self.st, self.n - n
            self.ev.append(np.stack([np.full(k, t), np.arange(n, n + k),
                                     st.seg[n:self.n].astype(np.int64), np.full(k, -1),
                                     st.stage[n:self.n].astype(np.int64), np.full(k, ENTRY),
                                     np.full(k, -1)]))
        return r

    def advance(self, t: int, r: int) -> None:
        """Every agent takes step ``t`` under regime ``r`` (the kernel)."""
        threads = self._threads(self.n)
        con_add = float(self.tally.con_add[0])
        if threads > 1:
            step_kernel(self.n, t, r, self.seed64, con_add, self.f, self.model.arrays,
                        self.st, self.buf, threads, self.feats)
        else:
            step_kernel_serial(self.n, t, r, self.seed64, con_add, self.f, self.model.arrays,
                               self.st, self.buf, self.feats)

    def end(self, t: int) -> None:
        """Finish step ``t``: reduce the kernel's chunks, update the rating, record events."""
        step_end(t, self.pop, self.tally, self.buf)
        if self.events:
            st, n = self.st, self.n
            idx = np.flatnonzero(st.moved[:n] >= 0)
            if idx.size:
                self.ev.append(np.stack([np.full(idx.size, t), idx,
                                         st.seg[idx].astype(np.int64),
                                         st.moved[idx].astype(np.int64),
                                         st.stage[idx].astype(np.int64),
                                         np.full(idx.size, TRANSITION), np.full(idx.size, -1)]))
            if self.exposure_events:
                self.ev.append(self._exposure_rows(t))

    def _exposure_rows(self, t: int) -> np.ndarray:
        """One event row per (agent, touchpoint) exposure of step ``t``, in agent order;
        the stage is the one the agent was in when exposed (before this step's move)."""
        st, n = self.st, self.n
        idx = np.flatnonzero(st.seen[:n])
        if not idx.size:
            return np.zeros((7, 0), np.int64)
        T = len(self.model.touchpoints)
        bits = (st.seen[idx][:, None] >> np.arange(T, dtype=np.uint64)) & np.uint64(1)
        agent_pos, tp = np.nonzero(bits)
        agents = idx[agent_pos]
        stage = np.where(st.moved[agents] >= 0, st.moved[agents], st.stage[agents])
        stage = stage.astype(np.int64)
        k = agents.size
        return np.stack([np.full(k, t), agents, st.seg[agents].astype(np.int64), stage, stage,
                         np.full(k, EXPOSURE), tp.astype(np.int64)])

    def result(self) -> RawRun:
        """The raw counts of the finished replicate."""
        model, st, n, buf, tl = self.model, self.st, self.n, self.buf, self.tally
        m = model.arrays
        customers = promoters = detractors = 0
        for lo in range(0, n, RESULT_BLOCK):  # no temporaries the size of the population
            block = slice(lo, min(n, lo + RESULT_BLOCK))
            sat_end = st.sat[block][m.kind[st.stage[block]] == 1]
            customers += sat_end.size
            promoters += int((sat_end > model.promoter_above).sum())
            detractors += int((sat_end < model.detractor_below).sum())
        events_out = None
        if self.events:
            allev = np.concatenate(self.ev, axis=1) if self.ev else np.zeros((7, 0), np.int64)
            events_out = {name: allev[j] for j, name in enumerate(EVENT_COLUMNS)}
        return RawRun(
            model=model, seed=self.seed, occupancy=tl.occupancy, sat_sum=tl.sat_sum,
            flows=tl.flows, arrivals=tl.arrived, referred=tl.referred,
            exposures=tl.exposures, acquired=tl.acquired, reviews=tl.reviews,
            rating=tl.rating, retained=buf.retained.sum(axis=0),
            to_convert=buf.to_convert.sum(axis=0), clv_total=float(st.clv[:n].sum()), agents=n,
            promoters=promoters, detractors=detractors, customers_at_end=customers,
            events=events_out,
        )
