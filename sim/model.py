"""Compile a scenario into the flat arrays the kernels read.

Validation happened at load; compilation cannot fail on a valid scenario.

Interventions with time windows are compiled as *regimes*: the horizon is cut
where any enabled intervention opens or closes, each distinct set of active
interventions is materialised into a scenario (:meth:`Scenario.materialise`)
and compiled into one slice of every regime-indexed array (leading axis
``R``). Stages and segments are the same in every regime; exits, touchpoints
and heterogeneity slots are the union over regimes (absent = zero).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from sim.scenario import SHAPE_LEVELS, Scenario, shape_levels, step_multipliers

__all__ = ["KIND_CODES", "CompiledModel", "ModelArrays", "QueueArrays", "QueueSpec",
           "compile_scenario", "stream_id", "switch_off"]

KIND_CODES = {"prospect": 0, "customer": 1, "lost": 2}
HET_NONE, HET_BETA, HET_LOGIT_NORMAL = -1, 0, 1
DUR_NEVER, DUR_EXPONENTIAL, DUR_FIXED, DUR_LOGNORMAL = -1, 0, 1, 2
"""Duration distributions of service times and patience (``DUR_NEVER``: infinite)."""
_DUR_CODES = {"exponential": DUR_EXPONENTIAL, "fixed": DUR_FIXED, "lognormal": DUR_LOGNORMAL}
MAX_QUEUES = 64
"""Capacity-limited touchpoints a model may hold (one bit each in a uint64 mask)."""
RETENTION_DAYS = (90, 180, 365)


class ModelArrays(NamedTuple):
    """What one agent-step reads (shapes: R regimes, G segments, S stages,
    E exits, K (stage, touchpoint) pairs, T touchpoints, H heterogeneity slots,
    L lags = steps + 1)."""

    step_days: float
    kind: np.ndarray            # int8[S]
    min_dwell: np.ndarray       # int32[S] steps
    exit_start: np.ndarray      # uint64[S + 1] CSR into exits
    exit_to: np.ndarray         # uint8[E]
    base_p: np.ndarray          # float64[R, E]
    seg_offset: np.ndarray      # float64[R, G, E]
    act_start: np.ndarray       # uint64[S + 1] CSR into (stage, touchpoint) pairs
    act_tp: np.ndarray          # uint64[K]
    reach: np.ndarray           # float64[R, G, K] exposure probability
    tp_stream: np.ndarray       # uint64[T] random stream of each touchpoint
    tp_elift: np.ndarray        # float64[R, T, E] odds multiplier exp(lift) per exposure
    tp_sat: np.ndarray          # float64[R, T]
    sat_initial: np.ndarray     # float64[R]
    sat_baseline: np.ndarray    # float64[R]
    sat_decay: np.ndarray       # float64[R]
    sat_effect: np.ndarray      # float64[R, E]
    sat_bound: np.ndarray       # float64[R, E] exp(|sat_effect|): the largest factor it gives
    rep_effect: np.ndarray      # float64[R, E]
    review_post: np.ndarray     # float64[R, S]
    review_min: float
    review_max: float
    ref_p: np.ndarray           # float64[R] per step
    ref_min_sat: np.ndarray     # float64[R]
    ref_stage: np.ndarray       # int8[R, S] 1 where customers refer
    con_exit: int               # exit index, -1 without contagion
    het_slot: np.ndarray        # int64[G, E] slot of the exit's heterogeneity, -1 none
    het_kind: np.ndarray        # int64[R, G, H]
    het_a: np.ndarray           # float64[R, G, H] (beta a, or normal sd); agents store
                                # their beta draw, or exp(sd * N) as an odds multiplier
    het_b: np.ndarray           # float64[R, G, H]
    het_stream: np.ndarray      # uint64[H]
    on_entry: np.ndarray        # float64[R, S]
    per_step_value: np.ndarray  # float64[R, S]
    value_mult: np.ndarray      # float64[R, G]
    discount: np.ndarray        # float64[L] factor at each lag in steps
    tp_qmask: np.ndarray        # uint64[T] 1 << q for the touchpoint of queue q, 0 unqueued
    exit_mult: np.ndarray       # float64[steps, E] calendar profile of each exit, by step
    reach_mult: np.ndarray      # float64[steps, T] calendar profile of each touchpoint's reach


class QueueArrays(NamedTuple):
    """What the event engine's request draws read, one entry per queue (Q of them:
    the capacity-limited touchpoints). Durations in days; ``*_sigma`` is the
    lognormal's log-scale sd (0 otherwise)."""

    queue_of: np.ndarray        # int64[T] queue of each touchpoint, -1 unqueued
    stream: np.ndarray          # uint64[Q] random stream of the queue's draws
    service_kind: np.ndarray    # int64[Q] DUR_* code
    service_mean: np.ndarray    # float64[Q]
    service_sigma: np.ndarray   # float64[Q]
    patience_kind: np.ndarray   # int64[Q] DUR_* code, DUR_NEVER for infinite patience
    patience_mean: np.ndarray   # float64[Q]
    patience_sigma: np.ndarray  # float64[Q]


@dataclass(frozen=True)
class QueueSpec:
    """One capacity-limited touchpoint as the event engine runs it."""

    touchpoint: str
    capacity: int
    wait_sat_per_day: float
    target_wait_days: float
    open_hour: float | None          # None: always open
    close_hour: float | None
    days_per_week: int
    active: tuple[bool, ...]         # [S] stages where agents may wait for it


@dataclass
class CompiledModel:
    """A scenario compiled for the engines; arrays in :attr:`arrays`."""

    scenario: Scenario
    stages: list[str]
    segments: list[str]
    touchpoints: list[str]
    exits: list[tuple[str, str]]
    interventions: list[str]
    regimes: list[tuple[str, ...]]
    regime_of_step: np.ndarray          # int64[steps]: regime of step t+1
    arrays: ModelArrays
    placements: list[tuple[int, int, int]]   # (segment, stage, count)
    arrival_rate: np.ndarray             # float64[R, G] expected arrivals per step
    arrival_mult: np.ndarray             # float64[steps] calendar profile of the arrivals
    entry_stage: np.ndarray              # int64[R]
    ref_entry_stage: np.ndarray          # int64[R]
    con_q: np.ndarray                    # float64[R]
    con_adopter: np.ndarray              # int8[S]
    market_size: float
    cost_per_exposure: np.ndarray        # float64[R, T]
    fixed_cost_per_step: np.ndarray      # float64[R, T] (0 where absent)
    iv_fixed: np.ndarray                 # float64[I]
    iv_per_step: np.ndarray              # float64[I]
    iv_active: np.ndarray                # bool[steps, I]
    has_reviews: bool
    """Whether customers post reviews: the driver keeps the public rating between steps."""
    rating_prior_mean: float             # 0 without reviews
    rating_prior_weight: float
    """The rating prior's weight in reviews of the simulated population: the
    scenario's weight (reviews of the full population) scaled like the reviews."""
    promoter_above: float                # satisfaction bands of NPS at the horizon
    detractor_below: float
    retention_lags: dict[int, int] = field(default_factory=dict)  # days -> steps
    queues: list[QueueSpec] = field(default_factory=list)
    queue_arrays: QueueArrays | None = None
    queue_settings: list[dict[str, str]] = field(default_factory=list)
    """Per regime: each queued touchpoint's queue settings as text (the event
    engine refuses settings that change within a run)."""
    population_scale: float = 1.0
    """Agents simulated per agent of the scenario: what turns simulated counts into
    the full population's (``sim.metrics``)."""

    @property
    def steps(self) -> int:
        return int(self.regime_of_step.shape[0])


def switch_off(model: CompiledModel, touchpoints: list[str] | tuple[str, ...]) -> CompiledModel:
    """``model`` with ``touchpoints`` switched off: no agent is exposed to them (reach 0
    in every stage, segment and regime, whatever an intervention sets) and their costs
    are gone; everything else is as it was.

    Every touchpoint draws from its own random stream (:func:`stream_id`), so the other
    draws of every agent and step stay the same: a run of the result and a run of
    ``model`` on one seed differ only by what the touchpoints did (common random
    numbers).

    Raises:
        ValueError: a name that is not a touchpoint of the model.
    """
    names = list(touchpoints)
    unknown = [n for n in names if n not in model.touchpoints]
    if unknown:
        raise ValueError(f"not a touchpoint of {model.scenario.name}: {', '.join(unknown)}")
    if not names:
        return model
    off = np.array([model.touchpoints.index(n) for n in names], dtype=np.int64)
    m = model.arrays
    pairs = np.isin(m.act_tp.astype(np.int64), off)
    reach = m.reach.copy()
    reach[:, :, pairs] = 0.0
    cost = model.cost_per_exposure.copy()
    cost[:, off] = 0.0
    fixed = model.fixed_cost_per_step.copy()
    fixed[:, off] = 0.0
    return replace(model, arrays=m._replace(reach=reach), cost_per_exposure=cost,
                   fixed_cost_per_step=fixed)


def stream_id(name: str) -> int:
    """Stable random-stream number of a named thing (touchpoint, exit)."""
    return 1024 + zlib.crc32(name.encode("utf-8"))


def _regimes(s: Scenario) -> tuple[list[tuple[str, ...]], np.ndarray, np.ndarray, list[str],
                                   list[list[tuple[str, float]]]]:
    """The distinct sets of active interventions over the run (regimes), the regime of
    each step, each intervention's activity (its window: what its costs follow), the
    interventions' names, and each regime's interventions with their weights.

    A shaped intervention (``shape:``) is active at a weight in 1/32 steps
    (:func:`sim.scenario.shape_levels`); such a regime is named ``name@k/32``.
    """
    names = list(s.interventions)
    steps = s.steps
    active = np.zeros((steps, len(names)), dtype=bool)
    levels = np.zeros((steps, len(names)), dtype=np.int64)
    day = np.arange(steps) * s.time.step_days
    for j, name in enumerate(names):
        iv = s.interventions[name]
        if not iv.enabled:
            continue
        start, end = iv.window.days(s.time) if iv.window else (0.0, math.inf)
        active[:, j] = (day >= start) & (day < end)
        levels[:, j] = shape_levels(iv, s.time)
    regimes: list[tuple[str, ...]] = []
    weighted: list[list[tuple[str, float]]] = []
    of_step = np.zeros(steps, dtype=np.int64)
    for t in range(steps):
        key = tuple(n if levels[t, j] == SHAPE_LEVELS else f"{n}@{levels[t, j]}/{SHAPE_LEVELS}"
                    for j, n in enumerate(names) if levels[t, j] > 0)
        if key not in regimes:
            regimes.append(key)
            weighted.append([(n, levels[t, j] / SHAPE_LEVELS)
                             for j, n in enumerate(names) if levels[t, j] > 0])
        of_step[t] = regimes.index(key)
    return regimes, of_step, active, names, weighted


def _placements(s: Scenario, stages: list[str], segments: list[str],
                scale: float) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for placement in s.population.initial:
        count = round(placement.count * scale)
        si = stages.index(placement.stage)
        if placement.segment is not None:
            out.append((segments.index(placement.segment), si, count))
            continue
        shares = np.array([s.segments[g].share or 0.0 for g in segments])
        if shares.sum() == 0:
            shares = np.ones(len(segments))
        shares = shares / shares.sum()
        exact = shares * count
        whole = np.floor(exact).astype(np.int64)
        order = np.argsort(-(exact - whole), kind="stable")
        whole[order[: count - int(whole.sum())]] += 1  # largest remainder
        out.extend((g, si, int(whole[g])) for g in range(len(segments)) if whole[g])
    return out


def compile_scenario(s: Scenario, population_scale: float = 1.0) -> CompiledModel:
    """Compile a validated scenario.

    Args:
        s: the scenario.
        population_scale: how many agents stand for one of the scenario's: it
            multiplies initial counts, arrival rates, the contagion market size and
            the reviews' prior weight, so that every KPI keeps its expectation (a
            speed knob; capacities of the event engine's queues do not scale).
    """
    regimes, of_step, iv_active, iv_names, weighted = _regimes(s)
    variants = [s.materialise_weighted(active) for active in weighted]
    stages = list(s.stages)
    segments = list(s.segments)
    S, G, R = len(stages), len(segments), len(regimes)
    sd = s.time.step_days
    steps = s.steps

    exits: list[tuple[str, str]] = []
    for name in stages:
        for v in variants:
            for target in v.stages[name].exits:
                if (name, target) not in exits:
                    exits.append((name, target))
    exits.sort(key=lambda e: stages.index(e[0]))  # stable: keeps file order within a stage
    E = len(exits)
    exit_index = {f"{a}->{b}": i for i, (a, b) in enumerate(exits)}
    exit_start = np.zeros(S + 1, dtype=np.int64)
    for a, _ in exits:
        exit_start[stages.index(a) + 1] += 1
    # unsigned index arrays: numba emits no negative-index wraparound for them
    exit_start = np.cumsum(exit_start).astype(np.uint64)
    exit_to = np.array([stages.index(b) for _, b in exits], dtype=np.uint8)

    touchpoints: list[str] = []
    for v in variants:
        touchpoints.extend(t for t in v.touchpoints if t not in touchpoints)
    T = len(touchpoints)
    pairs = sorted({(stages.index(st), touchpoints.index(tn))
                    for v in variants for tn, tp in v.touchpoints.items() for st in tp.stages})
    K = len(pairs)
    act_start = np.zeros(S + 1, dtype=np.int64)
    for si, _ in pairs:
        act_start[si + 1] += 1
    act_start = np.cumsum(act_start).astype(np.uint64)
    act_tp = np.array([ti for _, ti in pairs], dtype=np.uint64)

    het_keys: list[str] = []
    for v in variants:
        for seg in v.segments.values():
            het_keys.extend(k for k in seg.heterogeneity if k not in het_keys)
    H = len(het_keys)
    het_slot = np.full((G, E), -1, dtype=np.int64)

    base_p = np.zeros((R, E))
    seg_offset = np.zeros((R, G, E))
    reach = np.zeros((R, G, K))
    tp_lift = np.zeros((R, T, E))
    tp_sat = np.zeros((R, T))
    sat_effect = np.zeros((R, E))
    rep_effect = np.zeros((R, E))
    review_post = np.zeros((R, S))
    ref_p = np.zeros(R)
    ref_min = np.zeros(R)
    ref_stage = np.zeros((R, S), dtype=np.int8)
    het_kind = np.full((R, G, max(H, 1)), HET_NONE, dtype=np.int64)
    het_a = np.zeros((R, G, max(H, 1)))
    het_b = np.zeros((R, G, max(H, 1)))
    on_entry = np.zeros((R, S))
    per_step_value = np.zeros((R, S))
    value_mult = np.zeros((R, G))
    arrival_rate = np.zeros((R, G))
    entry_stage = np.zeros(R, dtype=np.int64)
    ref_entry = np.zeros(R, dtype=np.int64)
    con_q = np.zeros(R)
    cost_per_exposure = np.zeros((R, T))
    fixed_cost = np.zeros((R, T))
    sat_initial, sat_baseline, sat_decay = np.zeros(R), np.zeros(R), np.zeros(R)

    for r, v in enumerate(variants):
        for e, (a, b) in enumerate(exits):
            exit_rate = v.stages[a].exits.get(b)
            base_p[r, e] = exit_rate.per_step(sd) if exit_rate is not None else 0.0
        for g, gname in enumerate(segments):
            seg = v.segments[gname]
            for key, off in seg.offsets.items():
                seg_offset[r, g, exit_index[key]] = off
            for key, het in seg.heterogeneity.items():
                h = het_keys.index(key)
                het_slot[g, exit_index[key]] = h
                if het.distribution == "beta":
                    het_kind[r, g, h] = HET_BETA
                    het_a[r, g, h], het_b[r, g, h] = het.a or 0.0, het.b or 0.0
                else:
                    het_kind[r, g, h] = HET_LOGIT_NORMAL
                    het_a[r, g, h] = het.sd or 0.0
            value_mult[r, g] = seg.value_multiplier
            share = seg.share or 0.0
            arrival_rate[r, g] = (v.population.arrivals.per_day * share
                                  + (seg.arrivals_per_day or 0.0)) * sd * population_scale
            for k, (si, ti) in enumerate(pairs):
                tname = touchpoints[ti]
                tp = v.touchpoints.get(tname)
                if tp is not None and stages[si] in tp.reach:
                    reach[r, g, k] = min(1.0, tp.reach[stages[si]] * seg.affinity.get(tname, 1.0))
        for ti, tname in enumerate(touchpoints):
            tp = v.touchpoints.get(tname)
            if tp is None:
                continue
            for key, lift in tp.lift.items():
                tp_lift[r, ti, exit_index[key]] = lift
            tp_sat[r, ti] = tp.satisfaction
            cost_per_exposure[r, ti] = tp.cost_per_exposure
            servers = (tp.capacity or 0) * (tp.server_cost_per_day or 0.0)
            fixed_cost[r, ti] = (tp.fixed_cost_per_day + servers) * sd
        sat = v.satisfaction
        sat_initial[r], sat_baseline[r], sat_decay[r] = sat.initial, sat.baseline, sat.decay
        for key, eff in sat.effects.items():
            sat_effect[r, exit_index[key]] = eff
        if v.reviews is not None:
            for stage_name, post in v.reviews.post.items():
                review_post[r, stages.index(stage_name)] = post
            for key, eff in v.reviews.effects.items():
                rep_effect[r, exit_index[key]] = eff
        ref = v.word_of_mouth.referrals
        entry_stage[r] = stages.index(v.entry_stage())
        ref_entry[r] = entry_stage[r]
        if ref is not None:
            ref_p[r] = min(1.0, ref.per_day * sd)
            ref_min[r] = ref.min_satisfaction
            for stage_name in ref.stages or v.stages_of_kind("customer"):
                ref_stage[r, stages.index(stage_name)] = 1
            if ref.entry_stage is not None:
                ref_entry[r] = stages.index(ref.entry_stage)
        con = v.word_of_mouth.contagion
        if con is not None:
            con_q[r] = con.q
        for si, stage_name in enumerate(stages):
            st = v.stages[stage_name]
            on_entry[r, si] = st.value.on_entry
            per_step_value[r, si] = st.value.per_day * sd

    con = s.word_of_mouth.contagion
    con_exit = exit_index[con.exit] if con is not None else -1
    con_adopter = np.zeros(S, dtype=np.int8)
    market = 0.0
    placements = _placements(s, stages, segments, population_scale)
    if con is not None:
        for name in con.adopter_stages or s.stages_of_kind("customer"):
            con_adopter[stages.index(name)] = 1
        market = (con.market_size * population_scale if con.market_size is not None
                  else float(sum(c for _, _, c in placements)))
        market = max(market, 1.0)

    rate = s.economics.discount_rate_annual
    lags = np.arange(steps + 1)
    discount = (1.0 + rate) ** (-(lags * sd) / 365.0)

    queued = [t for t in touchpoints
              if any(t in v.touchpoints and v.touchpoints[t].queued for v in variants)]
    tp_qmask = np.zeros(T, dtype=np.uint64)
    for q, tname in enumerate(queued[:MAX_QUEUES]):
        tp_qmask[touchpoints.index(tname)] = np.uint64(1) << np.uint64(q)
    queues, queue_arrays = _queues(variants, queued, touchpoints, stages)
    settings = [{t: _queue_text(v.touchpoints[t]) for t in queued if t in v.touchpoints}
                for v in variants]

    arrays = ModelArrays(
        step_days=float(sd),
        kind=np.array([KIND_CODES[s.stages[n].kind] for n in stages], dtype=np.int8),
        min_dwell=np.array([math.ceil(s.stages[n].min_dwell_days / sd - 1e-9) for n in stages],
                           dtype=np.int32),
        exit_start=exit_start, exit_to=exit_to, base_p=base_p,
        seg_offset=seg_offset, act_start=act_start, act_tp=act_tp, reach=reach,
        tp_stream=np.array([stream_id("touchpoint:" + t) for t in touchpoints], dtype=np.uint64),
        tp_elift=np.exp(tp_lift), tp_sat=tp_sat, sat_initial=sat_initial, sat_baseline=sat_baseline,
        sat_decay=sat_decay, sat_effect=sat_effect, sat_bound=np.exp(np.abs(sat_effect)),
        rep_effect=rep_effect,
        review_post=review_post,
        review_min=float(s.reviews.scale_min) if s.reviews else 1.0,
        review_max=float(s.reviews.scale_max) if s.reviews else 5.0,
        ref_p=ref_p, ref_min_sat=ref_min, ref_stage=ref_stage, con_exit=con_exit,
        het_slot=het_slot, het_kind=het_kind, het_a=het_a, het_b=het_b,
        het_stream=np.array([stream_id("heterogeneity:" + k) for k in het_keys] or [0],
                            dtype=np.uint64),
        on_entry=on_entry, per_step_value=per_step_value, value_mult=value_mult,
        discount=discount, tp_qmask=tp_qmask,
        exit_mult=_by_step(variants, of_step, lambda v: [
            step_multipliers(v, v.stages[a].exits[b].profile) if b in v.stages[a].exits
            else np.ones(steps) for a, b in exits], len(exits)),
        reach_mult=_by_step(variants, of_step, lambda v: [
            step_multipliers(v, v.touchpoints[t].profile) if t in v.touchpoints
            else np.ones(steps) for t in touchpoints], T),
    )
    iv_fixed = np.array([s.interventions[n].cost.fixed for n in iv_names])
    iv_per_step = np.array([s.interventions[n].cost.per_day * sd for n in iv_names])
    return CompiledModel(
        scenario=s, stages=stages, segments=segments, touchpoints=touchpoints, exits=exits,
        interventions=iv_names, regimes=regimes, regime_of_step=of_step, arrays=arrays,
        placements=placements, arrival_rate=arrival_rate,
        arrival_mult=_by_step(variants, of_step,
                              lambda v: [step_multipliers(v, v.population.arrivals.profile)],
                              1)[:, 0],
        entry_stage=entry_stage,
        ref_entry_stage=ref_entry, con_q=con_q, con_adopter=con_adopter, market_size=market,
        cost_per_exposure=cost_per_exposure, fixed_cost_per_step=fixed_cost,
        iv_fixed=iv_fixed.reshape(len(iv_names)), iv_per_step=iv_per_step.reshape(len(iv_names)),
        iv_active=iv_active, **_rating_and_nps(s, population_scale),
        retention_lags={d: max(1, round(d / sd)) for d in RETENTION_DAYS},
        queues=queues, queue_arrays=queue_arrays, queue_settings=settings,
        population_scale=float(population_scale),
    )


def _by_step(variants: list[Scenario], of_step: np.ndarray,
             curves: Callable[[Scenario], list[np.ndarray]], width: int) -> np.ndarray:
    """float64[steps, width]: column j at step t is curve j of the regime of step t.

    Without any profile every entry is exactly 1.0 (the run is the run without
    calendar, bit for bit)."""
    steps = of_step.shape[0]
    out = np.ones((steps, width))
    for r, v in enumerate(variants):
        at = of_step == r
        if not at.any():
            continue
        for j, curve in enumerate(curves(v)):
            out[at, j] = curve[at]
    return out


def _rating_and_nps(s: Scenario, population_scale: float) -> dict[str, Any]:
    """What the driver reads between steps and at the end besides the arrays: the
    public rating's prior, and the satisfaction bands of promoters and detractors."""
    rev = s.reviews
    return {
        "has_reviews": rev is not None,
        "rating_prior_mean": float(rev.prior_mean) if rev is not None else 0.0,
        "rating_prior_weight": (rev.prior_weight * float(population_scale)
                                if rev is not None else 0.0),
        "promoter_above": float(s.satisfaction.promoter_above),
        "detractor_below": float(s.satisfaction.detractor_below),
    }


def _duration(d: Any) -> tuple[int, float, float]:
    """(DUR_* code, mean days, lognormal sigma) of a duration, or DUR_NEVER for None."""
    if d is None:
        return DUR_NEVER, math.inf, 0.0
    sigma = math.sqrt(math.log1p(d.cv * d.cv)) if d.distribution == "lognormal" else 0.0
    return _DUR_CODES[d.distribution], float(d.mean_days), sigma


def _queue_text(tp: Any) -> str:
    if not tp.queued:
        return "unlimited"
    return repr(tp.model_dump(include={"capacity", "service_time", "patience", "opening",
                                       "wait_satisfaction_per_day", "target_wait_days"}))


def _queues(variants: list[Scenario], queued: list[str], touchpoints: list[str],
            stages: list[str]) -> tuple[list[QueueSpec], QueueArrays | None]:
    """Queue settings (from the first regime that has each queued touchpoint)."""
    if not queued:
        return [], None
    specs: list[QueueSpec] = []
    Q = len(queued)
    queue_of = np.full(len(touchpoints), -1, dtype=np.int64)
    arr = {k: np.zeros(Q) for k in ("service_mean", "service_sigma", "patience_mean",
                                    "patience_sigma")}
    kinds = {k: np.zeros(Q, dtype=np.int64) for k in ("service_kind", "patience_kind")}
    for q, tname in enumerate(queued):
        tp = next(v.touchpoints[tname] for v in variants
                  if tname in v.touchpoints and v.touchpoints[tname].queued)
        queue_of[touchpoints.index(tname)] = q
        kinds["service_kind"][q], arr["service_mean"][q], arr["service_sigma"][q] = \
            _duration(tp.service_time)
        kinds["patience_kind"][q], arr["patience_mean"][q], arr["patience_sigma"][q] = \
            _duration(tp.patience)
        active = {st for v in variants if tname in v.touchpoints
                  for st in v.touchpoints[tname].stages}
        opening = tp.opening
        specs.append(QueueSpec(
            touchpoint=tname, capacity=int(tp.capacity or 1),
            wait_sat_per_day=float(tp.wait_satisfaction_per_day or 0.0),
            target_wait_days=float(tp.target_wait_days or 0.0),
            open_hour=None if opening is None else float(opening.open_hour),
            close_hour=None if opening is None else float(opening.close_hour),
            days_per_week=7 if opening is None else int(opening.days_per_week),
            active=tuple(st in active for st in stages)))
    streams = np.array([stream_id("queue:" + t) for t in queued], dtype=np.uint64)
    return specs, QueueArrays(queue_of=queue_of, stream=streams, **kinds, **arr)

