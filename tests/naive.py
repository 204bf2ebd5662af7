"""Plain-Python twin of the fast engine (STYLE.md point 5).

Everything here is written for clarity, not speed, in pure Python: integers
for the counter-based generator (uint64 arithmetic made explicit with
``& MASK``), lists for agent state and buffers, :mod:`math` for the floats.
It reads the compiled model (:class:`sim.model.CompiledModel`), so it checks
the kernels and the between-step driver, not the compiler; the theory tests
check the compiler's meaning.

The kernel stores satisfaction and per-agent propensities as float32; the twin
rounds them the same way with :func:`f32` (``struct``, round-to-nearest-even).
Buffers keep the kernel's chunk axis, so floating-point sums are compared in
the very order the kernel adds them.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

MASK = 0xFFFF_FFFF_FFFF_FFFF
GOLDEN = 0x9E3779B97F4A7C15
M1 = 0xBF58476D1CE4E5B9
M2 = 0x94D049BB133111EB
STEP_MUL = 0xD1B54A32D192ED03
TWO53 = 1.0 / 9007199254740992.0

STREAM_REVIEW = 2
STREAM_REFERRAL = 3
BIRTH_STEP = 0xFFFF_FFFF
POPULATION_AGENT = 1 << 62
CHUNKS = 64
HET_BETA, HET_LOGIT_NORMAL = 0, 1


# ------------------------------------------------------------------ randomness


def mix64(z: int) -> int:
    """splitmix64 finaliser on a uint64 held in a Python int."""
    z &= MASK
    z = ((z ^ (z >> 30)) * M1) & MASK
    z = ((z ^ (z >> 27)) * M2) & MASK
    return z ^ (z >> 31)


def agent_key(seed: int, agent: int, step: int) -> int:
    """Key of one agent-step: ``mix64((seed + G*(agent+1)) ^ mix64(step*S + G))``."""
    return mix64(((seed + GOLDEN * (agent + 1)) & MASK) ^ mix64(step * STEP_MUL + GOLDEN))


def review_drawn(key: int, post: float) -> bool:
    """A review with probability ``post``: the key's low 11 bits below
    ``ceil(2048 post)``, then the review stream's uniform below ``post / q``."""
    q11 = math.ceil(post * 2048.0)
    return (key & 0x7FF) < q11 and uniform(key, STREAM_REVIEW) * q11 < post * 2048.0


def exit_uniform(key: int) -> float:
    """The exit draw: the key's own top 53 bits as a float in [0, 1)."""
    return float(key >> 11) * TWO53


def uniform(key: int, stream: int) -> float:
    """The top 53 bits of ``mix64(key + stream*G)`` as a float in [0, 1)."""
    return float(mix64(key + stream * GOLDEN) >> 11) * TWO53


def normal(key: int, stream: int) -> float:
    """Box-Muller on two uniforms of consecutive streams."""
    u1 = uniform(key, stream)
    u2 = uniform(key, stream + 1)
    return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)


def gamma(shape: float, key: int, stream: int) -> float:
    """Gamma(shape, 1), Marsaglia-Tsang; attempt k uses streams ``stream + 4k ..``."""
    boost = 1.0
    if shape < 1.0:
        boost = uniform(key, stream + 999_983) ** (1.0 / shape)
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    attempt = 0
    while True:
        sub = stream + 4 * attempt
        x = normal(key, sub)
        v = 1.0 + c * x
        attempt += 1
        if v <= 0.0:
            continue
        v = v * v * v
        u = uniform(key, sub + 2)
        if u < 1.0 - 0.0331 * x * x * x * x or math.log(u) < 0.5 * x * x + d * (
                1.0 - v + math.log(v)):
            return d * v * boost


def poisson(lam: float, key: int, stream: int) -> int:
    """Poisson(lam) by inversion, in pieces of mean <= 200, one uniform each."""
    total = 0
    pieces = math.ceil(lam / 200.0)
    for j in range(pieces):
        mean = lam / pieces
        u = uniform(key, stream + j)
        p = math.exp(-mean)
        cdf = p
        k = 0
        while u >= cdf and k < 10_000:
            k += 1
            p *= mean / k
            cdf += p
        total += k
    return total


def f32(x: float) -> float:
    """``x`` rounded to the nearest float32 (what storing into a float32 array does)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def odds(p: float) -> float:
    """p / (1 - p), infinite at p = 1 (the kernel's ``odds``)."""
    return p / (1.0 - p) if p < 1.0 else math.inf


def plain(value: Any) -> Any:
    """A NumPy array or scalar as nested lists of Python numbers."""
    return value.tolist() if hasattr(value, "tolist") else value


@dataclass
class Model:
    """The compiled arrays as nested Python lists (same names as ``ModelArrays``)."""

    a: dict[str, Any]

    @classmethod
    def of(cls, arrays: Any) -> Model:
        return cls({name: plain(getattr(arrays, name)) for name in arrays._fields})

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["a"][name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class State:
    """Agent state as lists, one entry per agent (``het`` is a list of lists)."""

    stage: list[int] = field(default_factory=list)
    seg: list[int] = field(default_factory=list)
    dwell: list[int] = field(default_factory=list)
    sat: list[float] = field(default_factory=list)
    acq: list[int] = field(default_factory=list)
    born: list[int] = field(default_factory=list)
    het: list[list[float]] = field(default_factory=list)
    clv: list[float] = field(default_factory=list)
    moved: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, st: Any, n: int) -> State:
        """Copy the first ``n`` agents of a kernel state (``sim.engines._kernels.State``)."""
        return cls(*(plain(getattr(st, name)[:n]) for name in cls.__dataclass_fields__))


def _zeros(*shape: int) -> Any:
    if len(shape) == 1:
        return [0] * shape[0]
    return [_zeros(*shape[1:]) for _ in range(shape[0])]


@dataclass
class Buffers:
    """Per-chunk outputs, like the kernel's (leading axis: chunk)."""

    G: int
    S: int
    T: int
    L: int
    occ: Any = None
    sat_sum: Any = None
    flows: Any = None
    exposures: Any = None
    acquired: Any = None
    referrals: Any = None
    reviews: Any = None
    retained: Any = None
    to_convert: Any = None

    def __post_init__(self) -> None:
        self.retained = _zeros(CHUNKS, self.L)
        self.to_convert = _zeros(CHUNKS, self.L)
        self.reset()

    def reset(self) -> None:
        """Zero the per-step buffers (``retained`` and ``to_convert`` accumulate)."""
        C, G, S, T = CHUNKS, self.G, self.S, self.T
        self.occ = _zeros(C, G, S)
        self.sat_sum = [[[0.0] * S for _ in range(G)] for _ in range(C)]
        self.flows = _zeros(C, G, S, S)
        self.exposures = _zeros(C, G, T)
        self.acquired = _zeros(C, G)
        self.referrals = _zeros(C, G)
        self.reviews = _zeros(C, 2)


# ------------------------------------------------------------------ agents


def birth(i0: int, t: int, r: int, seed: int, segs: list[int], stages: list[int],
          m: Model, st: State) -> None:
    """Append agents ``i0, i0+1, ..`` born at step ``t`` (``i0`` must equal ``len(st.stage)``)."""
    assert i0 == len(st.stage)
    H = len(m.het_stream)
    for j, (g, s) in enumerate(zip(segs, stages, strict=True)):
        i = i0 + j
        st.stage.append(s)
        st.seg.append(g)
        st.dwell.append(0)
        st.sat.append(f32(m.sat_initial[r]))
        st.born.append(t)
        st.acq.append(-1 if m.kind[s] == 0 else -2)   # only prospects can be acquired
        st.clv.append(0.0)
        st.moved.append(-1)
        key = agent_key(seed, i, BIRTH_STEP)
        het = []
        for h in range(H):
            kind = m.het_kind[r][g][h]
            value = 0.0
            if kind == HET_BETA:
                x = gamma(m.het_a[r][g][h], key, m.het_stream[h])
                y = gamma(m.het_b[r][g][h], key, m.het_stream[h] + (1 << 20))
                value = x / (x + y)
            elif kind == HET_LOGIT_NORMAL:
                value = math.exp(m.het_a[r][g][h] * normal(key, m.het_stream[h]))
            het.append(f32(value))
        st.het.append(het)


def agent_step(i: int, t: int, r: int, seed: int, c: int, rep: float, con_add: float,
               m: Model, st: State, buf: Buffers) -> None:
    """One agent, one step: the agent-step rule of ``sim.engines._kernels``, written out."""
    s = st.stage[i]
    g = st.seg[i]
    key = agent_key(seed, i, t)
    dwell = st.dwell[i] + 1
    st.dwell[i] = dwell
    x = st.sat[i]
    x += m.sat_decay[r] * (m.sat_baseline[r] - x)

    # exposures: each touchpoint active in the stage, on its own stream
    exits = range(m.exit_start[s], m.exit_start[s + 1])
    lift = {e: 1.0 for e in exits}          # product of exp(lift) over exposures
    for k in range(m.act_start[s], m.act_start[s + 1]):
        tp = m.act_tp[k]
        if uniform(key, m.tp_stream[tp]) < m.reach[r][g][k]:
            buf.exposures[c][g][tp] += 1
            x += m.tp_sat[r][tp]
            for e in exits:
                lift[e] *= m.tp_elift[r][tp][e]
    x = min(1.0, max(-1.0, x))

    # one competing-exit draw on the modified probabilities, on the odds scale:
    # odds = odds(p) * exp(offset + beta_rep * rep) * prod exp(lift) * het * exp(beta_sat * x)
    to = s
    if len(exits) and dwell >= m.min_dwell[s]:
        prob = []
        for e in exits:
            p = m.base_p[r][e]
            if e == m.con_exit:
                p = min(1.0, p + con_add)   # Bass imitation term
            o = odds(p)
            het_mult = 1.0
            h = m.het_slot[g][e]
            if h >= 0 and m.het_kind[r][g][h] == HET_BETA:
                q = st.het[i][h]            # the agent's own rate replaces the base rate
                if e == m.con_exit:
                    q = min(1.0, q + con_add)
                o = odds(q)
            elif h >= 0 and m.het_kind[r][g][h] == HET_LOGIT_NORMAL:
                het_mult = st.het[i][h]
            mult = math.exp(m.seg_offset[r][g][e] + m.rep_effect[r][e] * rep)
            od = o * mult * lift[e] * het_mult
            if m.sat_effect[r][e] != 0.0:
                od *= math.exp(m.sat_effect[r][e] * x)
            prob.append(od / (1.0 + od) if od < math.inf else 1.0)
        total = sum_in_order(prob)
        u = exit_uniform(key)
        if total > 1.0:
            u *= total
        cum = 0.0
        for e, p in zip(exits, prob, strict=True):
            cum += p
            if u < cum:
                to = m.exit_to[e]
                break

    value = m.per_step_value[r][s]
    if to != s:
        buf.flows[c][g][s][to] += 1
        st.stage[i] = to
        st.dwell[i] = 0
        st.moved[i] = s
        value += m.on_entry[r][to]
        if m.kind[to] == 1 and st.acq[i] == -1:   # first acquisition of a prospect
            st.acq[i] = t
            buf.acquired[c][g] += 1
            buf.to_convert[c][t - st.born[i]] += 1
    else:
        st.moved[i] = -1
    st.sat[i] = f32(x)
    a = st.acq[i]
    if a >= 0:
        st.clv[i] += value * m.value_mult[r][g] * m.discount[t - a]
        if m.kind[to] == 1:
            buf.retained[c][t - a] += 1
    buf.occ[c][g][to] += 1
    buf.sat_sum[c][g][to] += x
    post = m.review_post[r][to]
    if post > 0.0 and review_drawn(key, post):
        score = m.review_min + (m.review_max - m.review_min) * (x + 1.0) * 0.5
        buf.reviews[c][0] += 1
        buf.reviews[c][1] += math.floor(score + 0.5)
    if m.ref_p[r] > 0.0 and m.ref_stage[r][to] == 1 and x >= m.ref_min_sat[r] and \
            uniform(key, STREAM_REFERRAL) < m.ref_p[r]:
        buf.referrals[c][g] += 1


def sum_in_order(values: list[float]) -> float:
    """Left-to-right float sum from 0.0 (the kernel's order, unlike :func:`math.fsum`)."""
    total = 0.0
    for v in values:
        total += v
    return total


def step(n: int, t: int, r: int, seed: int, rep: float, con_add: float, m: Model, st: State,
         buf: Buffers) -> None:
    """Advance agents ``0 .. n-1`` by step ``t``: chunk ``c`` owns ids ``c*size ..``."""
    buf.reset()
    size = (n + CHUNKS - 1) // CHUNKS
    for i in range(n):
        agent_step(i, t, r, seed, i // size, rep, con_add, m, st, buf)


# ------------------------------------------------------------------ queue requests

DUR_NEVER, DUR_EXPONENTIAL, DUR_FIXED = -1, 0, 1


def duration(kind: int, mean: float, sigma: float, key: int, stream: int) -> float:
    """Exponential, fixed or lognormal (mean ``mean``, log-sd ``sigma``) days, or inf."""
    if kind == DUR_NEVER:
        return math.inf
    if kind == DUR_EXPONENTIAL:
        return -mean * math.log(1.0 - uniform(key, stream))
    if kind == DUR_FIXED:
        return mean
    return mean * math.exp(sigma * normal(key, stream) - 0.5 * sigma * sigma)


def draw_requests(n: int, t: int, r: int, seed: int, m: Model, qa: Model, stage: list[int],
                  seg: list[int], busy: list[int]) -> list[tuple[int, int, float, float, float]]:
    """Requests of step ``t`` (the event engine's): (agent, queue, time in the step as a
    fraction, service days, patience days) for every agent whose exposure draw of a
    capacity-limited touchpoint active in its stage falls below the reach, unless it is
    already busy with that queue."""
    out = []
    for i in range(n):
        s, g = stage[i], seg[i]
        key = agent_key(seed, i, t)
        for k in range(m.act_start[s], m.act_start[s + 1]):
            tp = m.act_tp[k]
            bit = m.tp_qmask[tp]
            if bit == 0 or busy[i] & bit:
                continue
            if uniform(key, m.tp_stream[tp]) < m.reach[r][g][k]:
                q = qa.queue_of[tp]
                base = qa.stream[q]
                out.append((i, q, uniform(key, base),
                            duration(qa.service_kind[q], qa.service_mean[q],
                                     qa.service_sigma[q], key, base + 1),
                            duration(qa.patience_kind[q], qa.patience_mean[q],
                                     qa.patience_sigma[q], key, base + 3)))
    return out


# ------------------------------------------------------------------ a whole run


def chunk_sum(per_chunk: Any) -> Any:
    """Sum over the chunk axis, chunk after chunk (how ``ndarray.sum(axis=0)`` adds)."""
    total = per_chunk[0]
    for part in per_chunk[1:]:
        total = _add(total, part)
    return total


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, list):
        return [_add(x, y) for x, y in zip(a, b, strict=True)]
    return a + b


def draw_arrivals(model: Any, seed: int) -> list[list[int]]:
    """Arrivals by step and segment (row 0 empty): Poisson on the population agent's key."""
    G = len(model.segments)
    rates = plain(model.arrival_rate)
    of_step = plain(model.regime_of_step)
    out = [[0] * G]
    for t in range(1, model.steps + 1):
        key = agent_key(seed, POPULATION_AGENT, t)
        row = rates[of_step[t - 1]]
        out.append([poisson(row[g], key, 4096 * (g + 1)) if row[g] > 0 else 0
                    for g in range(G)])
    return out


def simulate(model: Any, seed: int) -> dict[str, Any]:
    """A whole run of ``model``: the twin of ``sim.engines.fast.simulate``.

    Returns:
        Per-step lists named like the fields of ``RawRun`` (``occupancy``,
        ``sat_sum``, ``flows``, ``arrivals``, ``referred``, ``exposures``,
        ``acquired``, ``reviews``, ``rating``, ``retained``, ``to_convert``),
        ``events`` as (step, agent, segment, from, to) tuples, and the final
        ``state``.
    """
    m = Model.of(model.arrays)
    G, S, T = len(model.segments), len(model.stages), len(model.touchpoints)
    steps = model.steps
    of_step = plain(model.regime_of_step)
    entry, ref_entry = plain(model.entry_stage), plain(model.ref_entry_stage)
    con_q, adopter = plain(model.con_q), plain(model.con_adopter)
    scn = model.scenario
    arrivals = draw_arrivals(model, seed)
    st = State()
    buf = Buffers(G, S, T, steps + 1)
    out: dict[str, Any] = {k: [] for k in ("occupancy", "sat_sum", "flows", "arrivals",
                                          "referred", "exposures", "acquired", "reviews",
                                          "rating")}
    events: list[tuple[int, int, int, int, int]] = []

    occ0, sat0 = _zeros(G, S), [[0.0] * S for _ in range(G)]
    r0 = of_step[0]
    for g, s, count in model.placements:
        events += [(0, len(st.stage) + j, g, -1, s) for j in range(count)]
        birth(len(st.stage), 0, r0, seed, [g] * count, [s] * count, m, st)
        occ0[g][s] += count
        sat0[g][s] += count * f32(m.sat_initial[r0])
    out["occupancy"].append(occ0)
    out["sat_sum"].append(sat0)
    out["flows"].append(_zeros(G, S, S))
    out["arrivals"].append(_zeros(G, S))
    out["referred"].append(_zeros(G, S))
    out["exposures"].append(_zeros(G, T))
    out["acquired"].append([0] * G)
    out["reviews"].append([0, 0])

    prior_mean = scn.reviews.prior_mean if scn.reviews else 0.0
    prior_weight = scn.reviews.prior_weight * model.population_scale if scn.reviews else 0.0
    mid = (m.review_min + m.review_max) / 2.0
    half = (m.review_max - m.review_min) / 2.0
    n_reviews, score_total = 0, 0
    out["rating"].append(prior_mean)
    pending = [0] * G
    for t in range(1, steps + 1):
        r = of_step[t - 1]
        segs = [g for g in range(G) for _ in range(arrivals[t][g])]
        n_arr = len(segs)
        segs += [g for g in range(G) for _ in range(pending[g])]
        stages = [entry[r]] * n_arr + [ref_entry[r]] * (len(segs) - n_arr)
        arr, ref = _zeros(G, S), _zeros(G, S)
        for g in range(G):
            arr[g][entry[r]] = arrivals[t][g]
            ref[g][ref_entry[r]] = pending[g]
        out["arrivals"].append(arr)
        out["referred"].append(ref)
        n0 = len(st.stage)
        events += [(t, n0 + j, g, -1, s) for j, (g, s) in enumerate(zip(segs, stages,
                                                                         strict=True))]
        birth(n0, t, r, seed, segs, stages, m, st)
        n = len(st.stage)

        reputation = (out["rating"][t - 1] - mid) / half if scn.reviews else 0.0
        con_add = 0.0
        if m.con_exit >= 0:
            before = out["occupancy"][t - 1]
            adopters = float(sum(before[g][s] for g in range(G) for s in range(S)
                                 if adopter[s] == 1))
            con_add = con_q[r] * adopters / model.market_size
        step(n, t, r, seed, reputation, con_add, m, st, buf)

        for name in ("occ", "sat_sum", "flows", "exposures", "acquired", "reviews"):
            out["occupancy" if name == "occ" else name].append(chunk_sum(getattr(buf, name)))
        pending = chunk_sum(buf.referrals)
        n_reviews += out["reviews"][t][0]
        score_total += out["reviews"][t][1]
        rating = prior_mean
        if scn.reviews and prior_weight + n_reviews > 0:
            rating = (prior_mean * prior_weight + score_total) / (prior_weight + n_reviews)
        out["rating"].append(rating if scn.reviews else 0.0)
        events += [(t, i, st.seg[i], st.moved[i], st.stage[i]) for i in range(n)
                   if st.moved[i] >= 0]
    out["retained"] = chunk_sum(buf.retained)
    out["to_convert"] = chunk_sum(buf.to_convert)
    out["events"] = events
    out["state"] = st
    return out
