"""KPIs of a run, computed from its raw counts, and their summary over replicates.

Money is computed here, outside the kernels, from integer counts
(occupancy, entries, exposures) and the compiled values and costs, so it is
exact and identical for any thread count.

A scenario describes its full population; ``population_scale`` only chooses
how many agents stand for it. The tables keep the simulated counts, and every
KPI and every amount of money is expressed for the full population: counts,
revenue and per-exposure costs are divided by the scale, fixed costs (a
touchpoint's ``fixed_cost_per_day`` and servers, an intervention's ``fixed``
and ``per_day``) are what the scenario says. So a KPI has the same
expectation at any scale, and a budget means what it says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from sim._kpi_catalogue import KPI_KINDS, KPI_NAMES, QUEUE_KPIS, queue_kpi
from sim._kpi_expr import evaluate
from sim.engines.raw import RawRun
from sim.model import CompiledModel
from sim.scenario._kpis import kpi_names, queued_touchpoints
from sim.stats import UNBOUNDED, Bounds, mean_interval, too_few

__all__ = ["KPI_NAMES", "SEGMENT_KPIS", "kpi_bounds", "kpis", "ledger", "queue_table",
           "retention_curve", "segment_kpis", "summarise"]


def _regime_rows(raw: RawRun) -> np.ndarray:
    """Regime of each step row 1..steps (row 0 gets the first regime)."""
    of = raw.model.regime_of_step
    return np.concatenate([of[:1], of])


def _money(raw: RawRun) -> tuple[np.ndarray, list[tuple[str, str, np.ndarray, np.ndarray]]]:
    """Revenue by step, and each cost item by step: ``(item, kind, exposures, amount)``
    for every touchpoint, then every intervention that is ever active (money for the
    scenario's full population). :func:`ledger` lays them out as a table; :func:`kpis`
    only sums them, without the table's per-row labels."""
    model = raw.model
    m = model.arrays
    scale = model.population_scale
    reg = _regime_rows(raw)
    steps = model.steps
    r = reg[1:]
    # revenue: per-step value of the stage held at the start of the step, entry value on moves
    start = raw.occupancy[:-1] + raw.arrivals[1:] + raw.referred[1:]       # [steps, G, S]
    inflow = raw.flows[1:].sum(axis=2)                                       # [steps, G, S]
    per_step = m.per_step_value[r][:, None, :]                                # [steps, 1, S]
    on_entry = m.on_entry[r][:, None, :]
    mult = m.value_mult[r][:, :, None]                                        # [steps, G, 1]
    revenue = ((start * per_step + inflow * on_entry) * mult).sum(axis=(1, 2)) / scale
    costs: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    exp = raw.exposures[1:].sum(axis=1)                                       # [steps, T]
    for ti, name in enumerate(model.touchpoints):
        cost = (exp[:, ti] * model.cost_per_exposure[r, ti] / scale
                + model.fixed_cost_per_step[r, ti])
        costs.append((name, "touchpoint", exp[:, ti], cost))
    for j, name in enumerate(model.interventions):
        active = model.iv_active[:, j]
        if not active.any():
            continue
        cost = active * model.iv_per_step[j]
        cost[int(np.argmax(active))] += model.iv_fixed[j]
        costs.append((name, "intervention", np.zeros(steps, np.int64), cost))
    return revenue, costs


def ledger(raw: RawRun) -> dict[str, np.ndarray]:
    """Money by step and item: revenue, each touchpoint's cost, each intervention's cost.

    Returns:
        Columns ``step`` (int64), ``item`` (str), ``kind`` (``revenue`` /
        ``touchpoint`` / ``intervention``), ``exposures`` (int64: simulated
        exposures), ``amount`` (float64: money for the scenario's full population).
    """
    steps = raw.model.steps
    t_idx = np.arange(1, steps + 1)
    revenue, costs = _money(raw)
    rows = [("revenue", "revenue", np.zeros(steps, np.int64), revenue), *costs]
    return {"step": np.concatenate([t_idx] * len(rows)),
            "item": np.concatenate([np.full(steps, item, dtype=object) for item, *_ in rows]),
            "kind": np.concatenate([np.full(steps, kind, dtype=object) for _, kind, *_ in rows]),
            "exposures": np.concatenate([exposures for _, _, exposures, _ in rows]),
            "amount": np.concatenate([amount for *_, amount in rows]).astype(np.float64)}


def retention_curve(raw: RawRun) -> dict[str, np.ndarray]:
    """Share of acquired customers in a customer stage by time since acquisition.

    At lag L steps the eligible customers are those acquired at least L steps
    before the horizon.
    """
    steps = raw.model.steps
    by_step = raw.acquired.sum(axis=1)                   # [T1]
    cum = np.cumsum(by_step)
    lags = np.arange(steps + 1)
    eligible = cum[steps - lags]                         # acquired at steps <= horizon - L
    retained = raw.retained[: steps + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(eligible > 0, retained / np.maximum(eligible, 1), np.nan)
    return {"lag_steps": lags, "lag_days": lags * raw.model.arrays.step_days,
            "eligible": eligible, "retained": retained, "share": share}


def _median_from_hist(hist: np.ndarray) -> float:
    total = hist.sum()
    if total == 0:
        return math.nan
    cum = np.cumsum(hist)
    lo = int(np.searchsorted(cum, (total + 1) // 2))
    if total % 2 == 1:
        return float(lo)
    hi = int(np.searchsorted(cum, total // 2 + 1))
    return (lo + hi) / 2.0


def kpis(raw: RawRun) -> dict[str, float]:
    """Every KPI of the run's scenario for one run (NaN where undefined): those of
    :data:`KPI_NAMES`, the queue KPIs of each capacity-limited touchpoint
    (``served_within_target:consult``…), then the scenario's custom KPIs
    (:func:`sim.scenario._kpis.kpi_names`).

    Counts and money are expressed for the scenario's full population (the
    simulated counts divided by ``population_scale``); shares, ratios, per-customer
    figures, the rating and days need no scaling.
    """
    model = raw.model
    m = model.arrays
    scale = model.population_scale
    kind = m.kind
    by_step, costs = _money(raw)
    # the sums the ledger's rows give: each over its rows' amounts, in the ledger's order
    revenue = float(by_step.sum())
    cost = float(np.concatenate([amount for *_, amount in costs]).astype(np.float64).sum()
                 ) if costs else 0.0
    entrants = int(raw.arrivals.sum() + raw.referred.sum())
    initial_prospects = int(raw.occupancy[0][:, kind == 0].sum())
    acquired = int(raw.acquired.sum())
    flows = raw.flows.sum(axis=(0, 1))
    churned = int(flows[np.ix_(kind == 1, kind == 2)].sum())
    won_back = int(flows[np.ix_(kind == 2, kind == 1)].sum())
    curve = retention_curve(raw)
    out: dict[str, float] = {
        "entrants": entrants / scale,
        "acquired": acquired / scale,
        "conversion": acquired / (initial_prospects + entrants)
        if initial_prospects + entrants else math.nan,
        "churned": churned / scale,
        "won_back": won_back / scale,
        "revenue": revenue,
        "cost": cost,
        "clv": raw.clv_total / acquired if acquired else math.nan,
        "roi": (revenue - cost) / cost if cost > 0 else math.nan,
        "referrals": int(raw.referred.sum()) / scale,
        "reviews": int(raw.reviews[:, 0].sum()) / scale,
        "rating": float(raw.rating[-1]) if model.has_reviews else math.nan,
        "nps": 100.0 * (raw.promoters - raw.detractors) / raw.customers_at_end
        if raw.customers_at_end else math.nan,
        "median_days_to_convert": _median_from_hist(raw.to_convert) * m.step_days,
    }
    out.update(_queue_kpis(raw))
    for days, lag in model.retention_lags.items():
        out[f"retention_{days}"] = float(curve["share"][lag]) if lag <= model.steps \
            else math.nan
    result = {name: float(out[name]) for name in KPI_NAMES}
    result.update(_per_queue_kpis(raw))
    custom = model.scenario.kpis
    if custom:
        quantities = _Quantities(raw, result)
        for name, spec in custom.items():
            result[name] = evaluate(spec.expr, quantities)
    return result


SEGMENT_KPIS: tuple[str, ...] = ("entrants", "acquired", "conversion", "churned", "won_back",
                                  "revenue")
"""The KPIs :func:`segment_kpis` computes per segment: those whose counts the engine
keeps by segment (costs, retention curves and the rating are kept for all only)."""


def segment_kpis(raw: RawRun) -> dict[str, dict[str, float]]:
    """The KPIs of :data:`SEGMENT_KPIS` for each segment of one run.

    Defined as in :func:`kpis`, restricted to the agents of one segment (an agent's
    segment never changes), so the counts and revenue of the segments add up to the
    run's; expressed for the full population like :func:`kpis`.

    Returns:
        segment -> KPI -> value (NaN where undefined).
    """
    model = raw.model
    m = model.arrays
    scale = model.population_scale
    kind = m.kind
    reg = _regime_rows(raw)[1:]
    start = raw.occupancy[:-1] + raw.arrivals[1:] + raw.referred[1:]       # [steps, G, S]
    inflow = raw.flows[1:].sum(axis=2)
    revenue = ((start * m.per_step_value[reg][:, None, :] + inflow * m.on_entry[reg][:, None, :])
               * m.value_mult[reg][:, :, None]).sum(axis=(0, 2)) / scale          # [G]
    entrants = (raw.arrivals.sum(axis=(0, 2)) + raw.referred.sum(axis=(0, 2)))     # [G]
    prospects = raw.occupancy[0][:, kind == 0].sum(axis=1)                         # [G]
    acquired = raw.acquired.sum(axis=0)                                            # [G]
    flows = raw.flows.sum(axis=0)                                                  # [G, S, S]
    churned = flows[:, kind == 1][:, :, kind == 2].sum(axis=(1, 2))
    won_back = flows[:, kind == 2][:, :, kind == 1].sum(axis=(1, 2))
    out: dict[str, dict[str, float]] = {}
    for g, name in enumerate(model.segments):
        base = int(prospects[g] + entrants[g])
        out[name] = {
            "entrants": float(entrants[g]) / scale,
            "acquired": float(acquired[g]) / scale,
            "conversion": float(acquired[g]) / base if base else math.nan,
            "churned": float(churned[g]) / scale,
            "won_back": float(won_back[g]) / scale,
            "revenue": float(revenue[g]),
        }
    return out


SERVED, ABANDONED = 1, 2
"""Request outcomes (``sim.engines.des.OUTCOMES``)."""


def _queue_kpis(raw: RawRun) -> dict[str, float]:
    """Mean wait, share served within target and abandonment over every queue; NaN
    without queues (or without served / ended requests)."""
    nan = {"mean_wait_days": math.nan, "served_within_target": math.nan,
           "abandonment": math.nan}
    if raw.queues is None:
        return nan
    q = raw.queues
    served = q["outcome"] == SERVED
    abandoned = int((q["outcome"] == ABANDONED).sum())
    out = dict(nan)
    if served.any():
        wait = q["start"][served] - q["arrive"][served]
        target = np.array([spec.target_wait_days for spec in raw.model.queues])
        out["mean_wait_days"] = float(wait.mean())
        out["served_within_target"] = float((wait <= target[q["queue"][served]]).mean())
    if served.any() or abandoned:
        out["abandonment"] = abandoned / (int(served.sum()) + abandoned)
    return out


def _per_queue_kpis(raw: RawRun) -> dict[str, float]:
    """The queue KPIs of each capacity-limited touchpoint of the scenario, as the pooled
    ones restricted to its requests: ``mean_wait_days:T``, ``served_within_target:T``,
    ``abandonment:T`` (NaN for a touchpoint without a queue in this run)."""
    model = raw.model
    out: dict[str, float] = {}
    queues = {spec.touchpoint: q for q, spec in enumerate(model.queues)}
    for name in queued_touchpoints(model.scenario):
        values = dict.fromkeys(QUEUE_KPIS, math.nan)
        q = queues.get(name)
        if raw.queues is not None and q is not None:
            mine = raw.queues["queue"] == q
            served = mine & (raw.queues["outcome"] == SERVED)
            abandoned = int((mine & (raw.queues["outcome"] == ABANDONED)).sum())
            if served.any():
                wait = raw.queues["start"][served] - raw.queues["arrive"][served]
                values["mean_wait_days"] = float(wait.mean())
                values["served_within_target"] = float(
                    (wait <= model.queues[q].target_wait_days).mean())
            if served.any() or abandoned:
                values["abandonment"] = abandoned / (int(served.sum()) + abandoned)
        out.update({queue_kpi(k, name): v for k, v in values.items()})
    return out


class _Quantities:
    """What a custom KPI's expression reads from one run (:class:`sim._kpi_expr.Quantities`):
    counts for the full population, money from the ledger, KPIs computed so far."""

    def __init__(self, raw: RawRun, values: dict[str, float]) -> None:
        self.raw = raw
        self.values = values
        self.model = raw.model
        self.scale = raw.model.population_scale
        self.sd = raw.model.arrays.step_days
        self.day = np.arange(raw.occupancy.shape[0]) * self.sd
        self._ledger: dict[str, np.ndarray] | None = None

    def kpi(self, name: str) -> float:
        return float(self.values.get(name, math.nan))

    def _rows(self, args: Mapping[str, Any]) -> np.ndarray:
        """Step rows whose day lies in from_day < day <= to_day."""
        keep = np.ones(self.day.size, bool)
        if args.get("from_day") is not None:
            keep &= self.day > float(args["from_day"])
        if args.get("to_day") is not None:
            keep &= self.day <= float(args["to_day"])
        return keep

    def _segments(self, args: Mapping[str, Any]) -> list[int]:
        segment = args.get("segment")
        if segment is None:
            return list(range(len(self.model.segments)))
        return [self.model.segments.index(segment)]

    def _stages(self, value: Any) -> list[int]:
        names = value if isinstance(value, tuple) else (value,)
        return [self.model.stages.index(n) for n in names]

    def value(self, func: str, args: Mapping[str, Any]) -> float:
        raw, g = self.raw, self._segments(args)
        if func == "occupancy":
            step = min(math.floor(float(args["day"]) / self.sd + 1e-9), self.model.steps)
            return float(raw.occupancy[step][np.ix_(g, self._stages(args["stage"]))].sum()
                         / self.scale)
        rows = self._rows(args)
        if func == "entries":
            into = raw.flows.sum(axis=2) + raw.arrivals + raw.referred       # [T1, G, S]
            return float(into[rows][:, g][:, :, self._stages(args["stage"])].sum() / self.scale)
        if func == "flows":
            a, b = self._stages(args["from_stage"])[0], self._stages(args["to_stage"])[0]
            return float(raw.flows[rows][:, g, a, b].sum() / self.scale)
        if func == "exposures":
            if args["touchpoint"] not in self.model.touchpoints:
                return 0.0           # added by an intervention that is not active
            ti = self.model.touchpoints.index(args["touchpoint"])
            return float(raw.exposures[rows][:, g, ti].sum() / self.scale)
        if func == "revenue" and args.get("segment") is not None:
            by_step = _revenue_by_segment(raw)                                # [steps, G]
            return float(by_step[rows[1:]][:, g].sum())
        if self._ledger is None:
            self._ledger = ledger(raw)
        money = self._ledger
        keep = rows[money["step"]]
        if func == "revenue":
            keep &= money["kind"] == "revenue"
        elif args.get("item") is not None:
            keep &= money["item"] == args["item"]
        else:
            keep &= money["kind"] != "revenue"
        return float(money["amount"][keep].sum())


def _revenue_by_segment(raw: RawRun) -> np.ndarray:
    """Revenue by step 1..steps and segment (currency, full population): float64[steps, G]."""
    model = raw.model
    m = model.arrays
    reg = _regime_rows(raw)[1:]
    start = raw.occupancy[:-1] + raw.arrivals[1:] + raw.referred[1:]
    inflow = raw.flows[1:].sum(axis=2)
    return ((start * m.per_step_value[reg][:, None, :] + inflow * m.on_entry[reg][:, None, :])
            * m.value_mult[reg][:, :, None]).sum(axis=2) / model.population_scale


def queue_table(raw: RawRun) -> dict[str, np.ndarray] | None:
    """Per capacity-limited touchpoint and step: requests that arrived, were served
    (started service), were served within the touchpoint's ``target_wait_days``,
    abandoned, withdrew; queue length and services running at the
    end of the step; mean and 90th-percentile wait of the requests served in the step
    (days, NaN when none); utilisation (server time spent serving / servers x step) and
    utilisation_open (the same over the servers' opening time in the step: NaN when
    closed all step; a service finished after closing can lift it past 1).

    Returns:
        Columns (arrays of length steps x Q, steps 1..steps), or None without queues.
    """
    if raw.queues is None:
        return None
    model = raw.model
    q = raw.queues
    steps, Q = model.steps, len(model.queues)
    sd = model.arrays.step_days
    t_idx = np.repeat(np.arange(1, steps + 1), Q)
    q_idx = np.tile(np.arange(Q), steps)
    out: dict[str, np.ndarray] = {
        "step": t_idx, "touchpoint": np.array([s.touchpoint for s in model.queues],
                                              dtype=object)[q_idx],
        "capacity": np.array([s.capacity for s in model.queues], np.int64)[q_idx],
    }
    for name in ("arrivals", "served", "abandoned", "withdrawn", "queue_length", "in_service"):
        out[name] = q[name][1:].reshape(-1)
    mean = np.full((steps + 1, Q), np.nan)
    p90 = np.full((steps + 1, Q), np.nan)
    served = q["outcome"] == SERVED
    wait = q["start"][served] - q["arrive"][served]
    if wait.size:
        cell = q["served_step"][served] * Q + q["queue"][served]
        order = np.argsort(cell, kind="stable")
        cells, first = np.unique(cell[order], return_index=True)
        for c, part in zip(cells, np.split(wait[order], first[1:]), strict=True):
            mean.flat[c] = part.mean()
            p90.flat[c] = np.percentile(part, 90)
    within = np.zeros((steps + 1, Q), np.int64)
    if wait.size:
        target = np.array([spec.target_wait_days for spec in model.queues])
        ok = wait <= target[q["queue"][served]]
        np.add.at(within, (q["served_step"][served][ok], q["queue"][served][ok]), 1)
    out["served_within_target"] = within[1:].reshape(-1)
    out["mean_wait_days"] = mean[1:].reshape(-1)
    out["p90_wait_days"] = p90[1:].reshape(-1)
    servers = np.array([s.capacity for s in model.queues], dtype=float)
    out["utilisation"] = (q["busy_days"][1:] / (servers * sd)).reshape(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        open_time = servers * q["open_days"][1:]
        out["utilisation_open"] = np.where(open_time > 0, q["busy_days"][1:]
                                           / np.where(open_time > 0, open_time, 1.0),
                                           np.nan).reshape(-1)
    return out


def kpi_bounds(model: CompiledModel) -> dict[str, Bounds]:
    """The range of every KPI of a compiled scenario (what its interval must stay in).

    Counts, cost and days are never negative; shares lie in [0, 1]; the NPS in
    [-100, 100]; the rating on the reviews' scale; the median days to convert within
    the horizon. Revenue and CLV are never negative, and ROI never below -1, when no
    stage value is negative. A per-queue KPI has its pooled KPI's range; a custom KPI
    the range of its kind (:data:`_CUSTOM_BOUNDS`). The keys are every KPI of the
    scenario, in the order of the ``kpis`` table.
    """
    m = model.arrays
    earns = bool((m.on_entry >= 0).all() and (m.per_step_value >= 0).all()
                 and (m.value_mult >= 0).all())
    horizon = model.steps * m.step_days
    by_kind: dict[str, Bounds] = {
        "count": (0.0, math.inf), "share": (0.0, 1.0), "points": (-100.0, 100.0),
        "number": UNBOUNDED,
        "ratio": (-1.0, math.inf) if earns else UNBOUNDED,
        "money": (0.0, math.inf) if earns else UNBOUNDED, "days": (0.0, math.inf),
    }
    out = {name: by_kind[KPI_KINDS[name]] for name in KPI_NAMES}
    out["cost"] = (0.0, math.inf)
    out["rating"] = (m.review_min, m.review_max)
    out["median_days_to_convert"] = (0.0, horizon)
    scenario = model.scenario
    for name in kpi_names(scenario)[len(KPI_NAMES):]:
        base = name.split(":", 1)[0]
        if name in scenario.kpis:
            out[name] = _CUSTOM_BOUNDS[scenario.kpis[name].kind]
        elif base in QUEUE_KPIS:
            out[name] = out[base]
    return out


_CUSTOM_BOUNDS: dict[str, Bounds] = {
    "count": (0.0, math.inf), "days": (0.0, math.inf), "share": (0.0, 1.0),
    "points": (-100.0, 100.0), "money": UNBOUNDED, "ratio": UNBOUNDED, "number": UNBOUNDED,
}
"""The range of a custom KPI by its kind: counts and days are never negative, shares lie
in [0, 1]; money and ratios may be anything (a custom amount may be a margin)."""


def summarise(rows: list[dict[str, float]], level: float = 0.95,
              bounds: Mapping[str, Bounds] | None = None) -> dict[str, dict[str, Any]]:
    """Mean and a confidence interval of each KPI over replicates.

    The interval is Student-t on a scale where the KPI's range is the whole line
    (:func:`sim.stats.mean_interval`), so it never leaves that range.

    Args:
        rows: one KPI dict per replicate.
        level: confidence level of the interval.
        bounds: each KPI's range (:func:`kpi_bounds`), which also says which KPIs
            to summarise (those of :data:`KPI_NAMES` when None); a KPI missing from
            a row counts as undefined there.

    Returns:
        KPI -> {mean, sd, n, ci_low, ci_high, few}; with one replicate (or NaN
        values) the interval is NaN; ``few`` says that the replicates are too few
        for the interval to mean much (:func:`sim.stats.too_few`).
    """
    out: dict[str, dict[str, Any]] = {}
    for name in KPI_NAMES if bounds is None else bounds:
        values = np.array([row.get(name, math.nan) for row in rows], dtype=float)
        values = values[~np.isnan(values)]
        n = values.size
        mean, low, high = mean_interval(values, level, (bounds or {}).get(name, UNBOUNDED))
        sd = float(values.std(ddof=1)) if n > 1 else math.nan
        out[name] = {"mean": float(mean), "sd": sd, "n": n, "ci_low": float(low),
                     "ci_high": float(high), "few": n > 0 and too_few(n)}
    return out
