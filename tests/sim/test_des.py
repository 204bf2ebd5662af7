"""The event engine: the twin of the fast engine, queues against queueing theory.

* Twin: on a scenario without capacity limits ``engine="des"`` writes the very
  tables ``engine="fast"`` writes (every shipped scenario, small population,
  short horizon). No difference is tolerated: both engines run the same kernel
  through the same driver, so even float sums are added in the same order.
* Ample capacity: capacity-limited touchpoints with more servers than agents
  and a service of a nanosecond give the fast engine's results on the same
  scenario without capacity: the request draw is the exposure draw, the
  effects land in the same step, in the same order.
* Queueing theory: a touchpoint fed by Poisson arrivals with exponential
  service is an M/M/c queue (Erlang C: probability of waiting, mean wait);
  with exponential patience an M/M/c+M queue (Erlang A: abandonment share,
  from the birth-death chain). Estimates are means over independent
  replicates (fixed seeds); tolerances are 4 standard errors of that mean.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml

import sim
from sim import metrics
from sim.engines import _driver, des
from sim.engines._kernels import draw_requests
from sim.model import compile_scenario
from tests import naive

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))
QUEUE_KPIS = ("mean_wait_days", "served_within_target", "abandonment")
Z = 4.0
"""Tolerance in standard errors of the replicate mean."""


def _without_capacity(scenario: sim.Scenario) -> sim.Scenario:
    """The scenario with every touchpoint's queue settings removed (unlimited)."""
    data = scenario.to_data()
    data.pop("optimise", None)  # it may search a capacity
    queue_fields = ("capacity", "service_time", "patience", "opening",
                    "wait_satisfaction_per_day", "target_wait_days", "server_cost_per_day")
    for tp in data.get("touchpoints", {}).values():
        for name in queue_fields:
            tp.pop(name, None)
    for iv in data.get("interventions", {}).values():
        iv["set"] = {k: v for k, v in iv["set"].items()
                     if not any(f".{name}" in k for name in queue_fields)}
    return sim.load_scenario(yaml.safe_dump(data, sort_keys=False))


def _assert_tables_equal(a: pa.Table, b: pa.Table, name: str, skip: tuple[str, ...] = ()) -> None:
    assert a.column_names == b.column_names, name
    for col in a.column_names:
        if col in skip:
            continue
        x = a.column(col).to_numpy(zero_copy_only=False)
        y = b.column(col).to_numpy(zero_copy_only=False)
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), f"{name}.{col} differs"
        else:
            assert (x == y).all(), f"{name}.{col} differs"


def _assert_twin(fast: Any, event: Any, skip_kpis: tuple[str, ...] = ()) -> None:
    # the engines' runs differ in their run id (the engine is part of it), nothing else
    for name in ("occupancy", "flows", "retention", "ledger", "events"):
        _assert_tables_equal(getattr(fast, name), getattr(event, name), name, skip=("run_id",))
    _assert_tables_equal(fast.kpis, event.kpis, "kpis", skip=("run_id", *skip_kpis))


# ------------------------------------------------------------------ the twin


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_twin_every_shipped_scenario(path: Path) -> None:
    """des == fast, table for table, on every shipped scenario (queues removed) with
    every intervention enabled (windows open and close within the 120 days)."""
    base = _without_capacity(sim.load_scenario(path))
    days = 120 * base.time.step_days if base.time.step_days > 1 else 120
    overrides: dict[str, Any] = {"time.horizon_days": days}
    if base.kpis:               # custom KPIs read days past the shortened horizon
        overrides.update({"kpis": {}, "optimise": None})
    scenario = base.apply(interventions=list(base.interventions), overrides=overrides)
    kw: dict[str, Any] = {"population_scale": 0.03, "seed": 11, "replicates": 2,
                          "events": True}
    fast = sim.run(scenario, engine="fast", **kw)
    event = sim.run(scenario, engine="des", **kw)
    assert event.queues is None
    _assert_twin(fast, event)
    assert fast.kpis.column("agents").to_pylist() == event.kpis.column("agents").to_pylist()


def test_ample_capacity_and_instant_service_reproduce_the_fast_engine(
        journey_text: str) -> None:
    """Queues that never hold anyone are invisible: the same agents request as would be
    exposed, are served within the step and get the effects in the kernel's order."""
    instant = ("    capacity: 100000\n"
               "    service_time: {distribution: fixed, mean_days: 1.0e-9}\n")
    text = journey_text.replace("    cost_per_exposure: 0.5\n",
                                "    cost_per_exposure: 0.5\n" + instant)
    text = text.replace("    cost_per_exposure: 0.1\n", "    cost_per_exposure: 0.1\n" + instant)
    text = text.replace("horizon_days: 120", "horizon_days: 60")
    limited = sim.load_scenario(text)
    assert [n for n, tp in limited.touchpoints.items() if tp.queued] == ["ads", "survey"]
    kw: dict[str, Any] = {"seed": 5, "replicates": 2, "events": True}
    fast = sim.run(_without_capacity(limited), engine="fast", **kw)
    event = sim.run(limited, engine="des", **kw)
    per_queue = [c for c in event.kpis.column_names if ":" in c]
    assert len(per_queue) == 2 * len(QUEUE_KPIS)       # ads and survey, each alone
    kpi = event.kpis.to_pylist()[0]
    event.kpis = event.kpis.drop_columns(per_queue)
    _assert_twin(fast, event, skip_kpis=QUEUE_KPIS)
    queues = event.queues.to_pandas()
    assert queues["served"].sum() == queues["arrivals"].sum() > 1000
    assert (queues["served_within_target"] == queues["served"]).all()
    assert (queues[["abandoned", "withdrawn", "queue_length"]] == 0).all().all()
    for tp in ("", ":ads", ":survey"):
        assert kpi["mean_wait_days" + tp] == 0.0 and kpi["served_within_target" + tp] == 1.0
        assert kpi["abandonment" + tp] == 0.0
    assert all(math.isnan(fast.kpis.to_pylist()[0][k]) for k in QUEUE_KPIS)


def test_queue_settings_changing_within_a_run_are_refused(tiny_scenario_text: str) -> None:
    text = tiny_scenario_text.replace(
        "    cost_per_exposure: 0.05\n",
        "    cost_per_exposure: 0.05\n    capacity: 2\n"
        "    service_time: {distribution: exponential, mean_days: 0.1}\n")
    scenario = sim.load_scenario(text)
    windowed = scenario.apply(overrides={"interventions.more_email.set": {
        "touchpoints.email.capacity": 3}}, interventions=["more_email"])
    with pytest.raises(sim.SimError, match=r"'email'.*change within the run"):
        sim.run(windowed, engine="des")
    # the same change for the whole run is a different scenario, and runs
    always = scenario.apply(overrides={"touchpoints.email.capacity": 3,
                                       "time.horizon_days": 30})
    assert sim.run(always, engine="des").queues is not None


def test_same_seed_same_queues_different_seed_different() -> None:
    scenario = sim.load_scenario(ROOT / "scenarios" / "cosmetic_clinic_capacity.yaml")
    scenario = scenario.apply(overrides={"time.horizon_days": 120})
    a = sim.run(scenario, engine="des", seed=3, population_scale=0.5)
    b = sim.run(scenario, engine="des", seed=3, population_scale=0.5, threads=1)
    c = sim.run(scenario, engine="des", seed=4, population_scale=0.5)
    assert a.queues is not None and b.queues is not None and c.queues is not None
    same = (a.queues.to_pandas().equals(b.queues.to_pandas())   # NaN == NaN here
            and a.kpis.to_pandas().equals(b.kpis.to_pandas()))
    assert same
    assert not a.queues.to_pandas().equals(c.queues.to_pandas())


def test_request_draws_match_their_plain_python_twin(journey_text: str) -> None:
    """The request kernel against ``tests/naive.py``, bit for bit: three queues (lognormal,
    exponential with patience, fixed), agents busy with some of them."""
    text = journey_text.replace(
        "    cost_per_exposure: 0.5\n",
        "    cost_per_exposure: 0.5\n    capacity: 2\n"
        "    service_time: {distribution: lognormal, mean_days: 0.2, cv: 0.7}\n")
    text = text.replace(
        "    cost_per_exposure: 0.1\n",
        "    cost_per_exposure: 0.1\n    capacity: 1\n"
        "    service_time: {distribution: exponential, mean_days: 0.3}\n"
        "    patience: {distribution: exponential, mean_days: 2}\n")
    text = text.replace(
        "    cost_per_exposure: 2.0\n",
        "    cost_per_exposure: 2.0\n    capacity: 3\n"
        "    service_time: {distribution: fixed, mean_days: 0.05}\n")
    model = compile_scenario(sim.load_scenario(text))
    assert len(model.queues) == 3
    drv = _driver.Driver(model, 77, queues=True)
    drv.begin(1)  # the initial population (and step 1's arrivals) is born
    n = drv.n
    st = drv.st
    st.stage[:n:5] = model.stages.index("trial")  # the population has none there
    busy = (np.arange(n, dtype=np.uint64) % np.uint64(8))  # every combination of 3 bits
    qa = model.queue_arrays
    assert qa is not None
    nm, nq = naive.Model.of(model.arrays), naive.Model.of(qa)
    for t, r in ((1, 0), (12, int(model.regime_of_step[11]))):
        out = [np.zeros(3 * n, np.int64), np.zeros(3 * n, np.int64)] + [
            np.zeros(3 * n) for _ in range(3)]
        k = draw_requests(n, t, r, np.uint64(77), model.arrays, qa, st.stage, st.seg, busy,
                          *out)
        got = list(zip(*(a[:k].tolist() for a in out), strict=True))
        want = naive.draw_requests(n, t, r, 77, nm, nq, st.stage[:n].tolist(),
                                   st.seg[:n].tolist(), busy.tolist())
        assert got == [tuple(w) for w in want]
        assert {q for _, q, *_ in got} == {0, 1, 2}
        assert any(math.isinf(p) for *_, p in got) and any(math.isfinite(p) for *_, p in got)


# ------------------------------------------------------------------ queueing theory


def _queue_text(c: int, per_day: float, mean_days: float, horizon: int,
                patience: float | None = None, opening: str = "") -> str:
    """One touchpoint ``desk`` with c servers, fed by Poisson arrivals: an agent is born
    in ``new``, requests the desk at a uniform time within its first step (reach 1),
    moves to ``seen`` at the step's end (where the desk is still active, reach 0:
    it keeps waiting) and never requests again."""
    extra = f"\n    patience: {{distribution: exponential, mean_days: {patience}}}" \
        if patience else ""
    return f"""
name: mmc
time: {{horizon_days: {horizon}}}
population: {{arrivals: {{per_day: {per_day}}}}}
stages:
  new: {{kind: prospect, exits: {{seen: 1.0}}}}
  seen: {{kind: customer}}
touchpoints:
  desk:
    stages: [new, seen]
    reach: {{new: 1.0, seen: 0.0}}
    capacity: {c}
    service_time: {{distribution: exponential, mean_days: {mean_days}}}{extra}{opening}
"""


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with offered load a = lambda/mu."""
    top = a ** c / math.factorial(c) * c / (c - a)
    return top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)


def erlang_a_abandonment(c: int, lam: float, mu: float, theta: float, n_max: int = 2000) -> float:
    """Share of arrivals that abandon in an M/M/c+M queue (exponential patience, rate
    theta): the birth-death chain's stationary law, truncated where it is negligible;
    abandonments per day / arrivals per day."""
    log_p = np.zeros(n_max + 1)
    for n in range(1, n_max + 1):
        death = min(n, c) * mu + max(n - c, 0) * theta
        log_p[n] = log_p[n - 1] + math.log(lam / death)
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    waiting = np.maximum(np.arange(n_max + 1) - c, 0)
    return float((p * waiting).sum() * theta / lam)


HORIZON, WARMUP, TAIL, REPLICATES = 120, 10, 5, 20
"""Days simulated; days left out at the start (the queue starts empty) and at the end
(requests still waiting there have no wait yet); independent replicates."""


def _replicates(text: str) -> list[dict[str, np.ndarray]]:
    model = compile_scenario(sim.load_scenario(text))
    out = []
    for rep in range(REPLICATES):
        q = des.simulate(model, sim.derive_seed(2024, rep)).queues
        assert q is not None
        sel = (q["arrive"] >= WARMUP) & (q["arrive"] < HORIZON - TAIL)
        out.append({k: v[sel] for k, v in q.items() if v.ndim == 1})
    return out


def _mean_se(values: list[float]) -> tuple[float, float]:
    x = np.asarray(values)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


@pytest.mark.parametrize("servers", [1, 2, 4])
def test_erlang_c_probability_of_waiting_and_mean_wait(servers: int) -> None:
    """M/M/c at utilisation 0.7 (mean service 0.1 day): P(wait > 0) = C(c, a) and
    E[wait] = C(c, a) / (c mu - lambda), each within 4 standard errors of the mean over
    20 replicates. With infinite patience nobody is lost: every request in the window
    is served."""
    mean_days, rho = 0.1, 0.7
    lam = rho * servers / mean_days
    reps = _replicates(_queue_text(servers, lam, mean_days, HORIZON))
    for q in reps:
        assert (q["outcome"] == des.OUTCOMES["served"]).all(), "infinite patience lost someone"
    waits = [q["start"] - q["arrive"] for q in reps]
    c_theory = erlang_c(servers, lam * mean_days)
    w_theory = c_theory / (servers / mean_days - lam)
    p_mean, p_se = _mean_se([float((w > 0).mean()) for w in waits])
    w_mean, w_se = _mean_se([float(w.mean()) for w in waits])
    assert abs(p_mean - c_theory) <= Z * p_se, (p_mean, c_theory, p_se)
    assert abs(w_mean - w_theory) <= Z * w_se, (w_mean, w_theory, w_se)
    # the tolerance has power: it tells c servers from c + 1
    c_more = erlang_c(servers + 1, lam * mean_days)
    assert abs(p_mean - c_more) > Z * p_se
    assert abs(w_mean - c_more / ((servers + 1) / mean_days - lam)) > Z * w_se


@pytest.mark.parametrize(("servers", "rho", "patience"), [(1, 1.2, 0.3), (3, 0.95, 0.1)])
def test_erlang_a_abandonment_share(servers: int, rho: float, patience: float) -> None:
    """M/M/c+M (exponential patience): the share of requests that abandon matches the
    birth-death chain's, within 4 standard errors; also past saturation (rho 1.2)."""
    mean_days = 0.1
    lam = rho * servers / mean_days
    reps = _replicates(_queue_text(servers, lam, mean_days, HORIZON, patience))
    shares = []
    for q in reps:
        ended = np.isin(q["outcome"], [des.OUTCOMES["served"], des.OUTCOMES["abandoned"]])
        assert ended.all()
        shares.append(float((q["outcome"] == des.OUTCOMES["abandoned"]).mean()))
    theory = erlang_a_abandonment(servers, lam, 1 / mean_days, 1 / patience)
    mean, se = _mean_se(shares)
    assert abs(mean - theory) <= Z * se, (mean, theory, se)
    # the tolerance has power: it tells this patience from a 50% longer one
    longer = erlang_a_abandonment(servers, lam, 1 / mean_days, 1 / (1.5 * patience))
    assert abs(mean - longer) > Z * se


def test_queue_accounts_are_conserved_on_the_capacity_scenario() -> None:
    """Conservation in place of a closed form (opening hours, withdrawals, lognormal and
    fixed services, feedback through satisfaction): at the end of every step each
    request that arrived so far was served, abandoned, withdrew or is still waiting; a
    service counts as an exposure (its cost) once it ends; servers are never more than
    busy; no service starts while the touchpoint is closed."""
    scenario = sim.load_scenario(ROOT / "scenarios" / "cosmetic_clinic_capacity.yaml")
    scenario = scenario.apply(overrides={"time.horizon_days": 200})
    model = compile_scenario(scenario)
    raw = des.simulate(model, seed=9)
    q = raw.queues
    assert q is not None
    for j, spec in enumerate(model.queues):
        arrived = np.cumsum(q["arrivals"][:, j])
        left = np.cumsum(q["served"][:, j] + q["abandoned"][:, j] + q["withdrawn"][:, j])
        assert np.array_equal(arrived - left, q["queue_length"][:, j]), spec.touchpoint
        assert q["served"][:, j].sum() > 100
        ti = model.touchpoints.index(spec.touchpoint)
        done = raw.exposures[:, :, ti].sum()
        assert done == q["served"][:, j].sum() - q["in_service"][-1, j]
        util = q["busy_days"][1:, j] / (spec.capacity * model.arrays.step_days)
        assert (util >= 0).all() and (util <= 1 + 1e-9).all()
        # open 8 or 9 hours on 4 or 5 days of every 7
        hours = (spec.close_hour - spec.open_hour) * spec.days_per_week / 7
        weeks = q["open_days"][1:197, j].reshape(-1, 7).sum(axis=1) * 24 / 7
        assert np.allclose(weeks, hours)
        assert spec.open_hour is not None and spec.close_hour is not None
        start = q["start"][(q["queue"] == j) & (q["outcome"] == des.OUTCOMES["served"])]
        hour = (start % 1.0) * 24
        assert ((hour >= spec.open_hour - 1e-6) & (hour <= spec.close_hour + 1e-6)).all()
        assert (np.floor(start) % 7 < spec.days_per_week).all()
    assert q["withdrawn"].sum() > 0 and q["abandoned"].sum() > 0
    # the table's per-step waits and the KPIs, recomputed from the requests one by one
    table = metrics.queue_table(raw)
    assert table is not None
    served = q["outcome"] == des.OUTCOMES["served"]
    target = {0: model.queues[0].target_wait_days, 1: model.queues[1].target_wait_days}
    waits: dict[tuple[int, int], list[float]] = {}
    for j, t, a, b in zip(q["queue"][served], q["served_step"][served], q["arrive"][served],
                          q["start"][served], strict=True):
        waits.setdefault((int(t), int(j)), []).append(b - a)
    Q = len(model.queues)
    for (t, j), w in waits.items():
        row = (t - 1) * Q + j
        assert table["step"][row] == t and table["served"][row] == len(w)
        assert table["mean_wait_days"][row] == pytest.approx(np.mean(w), rel=1e-12)
        assert table["p90_wait_days"][row] == pytest.approx(np.percentile(w, 90), rel=1e-12)
    assert np.isnan(table["mean_wait_days"][table["served"] == 0]).all()
    kpi = metrics.kpis(raw)
    all_waits = [(j, w) for (_, j), ws in waits.items() for w in ws]
    assert kpi["mean_wait_days"] == pytest.approx(np.mean([w for _, w in all_waits]))
    assert kpi["served_within_target"] == pytest.approx(
        np.mean([w <= target[j] for j, w in all_waits]))
    n_ab = int((q["outcome"] == des.OUTCOMES["abandoned"]).sum())
    assert kpi["abandonment"] == pytest.approx(n_ab / (n_ab + int(served.sum())))


def test_closed_periods_follow_the_opening_hours() -> None:
    spec = compile_scenario(sim.load_scenario(_queue_text(
        1, 1.0, 0.1, 30, opening="\n    opening: {open_hour: 9, close_hour: 17, "
                                 "days_per_week: 5}"))).queues[0]
    periods = []
    for period in des.closed_periods(spec):
        periods.append(period)
        if len(periods) == 7:
            break
    hours = [(round(a * 24, 6), round(b * 24, 6)) for a, b in periods]
    assert hours[:5] == [(0, 9), (17, 33), (41, 57), (65, 81), (89, 105)]
    assert hours[5] == (113, 7 * 24 + 9)         # Friday 17:00 to Monday 09:00
    assert hours[6] == (7 * 24 + 17, 8 * 24 + 9)
