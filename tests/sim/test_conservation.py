"""Accounting identities of a run: agents are conserved, flows explain occupancy, KPIs add up.

These hold exactly, for any seed, on the journey that exercises arrivals,
referrals, reviews, contagion, touchpoints, windowed interventions and
win-back; no statistics involved.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

import sim
from sim.engines.fast import simulate
from sim.engines.raw import RawRun
from sim.model import CompiledModel, compile_scenario

SCALE = 5          # 1,000 agents at step 0, ~20 arrivals a day
REPLICATES = 2


@pytest.fixture(scope="module")
def scenario(journey_text: str) -> sim.Scenario:
    return sim.load_scenario(journey_text)


@pytest.fixture(scope="module")
def model(scenario: sim.Scenario) -> CompiledModel:
    return compile_scenario(scenario, SCALE)


@pytest.fixture(scope="module")
def raw(model: CompiledModel) -> RawRun:
    return simulate(model, 99)


@pytest.fixture(scope="module")
def result(scenario: sim.Scenario) -> sim.RunResult:
    return sim.run(scenario, seed=3, replicates=REPLICATES, population_scale=SCALE, events=True)


def _rows(table: pa.Table, replicate: int) -> dict[str, np.ndarray]:
    """Columns of one replicate's rows as NumPy arrays (strings as object arrays)."""
    mask = np.asarray(table["replicate"]) == replicate
    return {name: np.asarray(table[name].to_numpy(zero_copy_only=False))[mask]
            for name in table.column_names}


def _kinds(scenario: sim.Scenario) -> dict[str, str]:
    return {name: stage.kind for name, stage in scenario.stages.items()}


# ------------------------------------------------------------------ raw counts


def test_agents_are_never_created_or_lost(raw: RawRun, model: CompiledModel) -> None:
    initial = sum(count for _, _, count in model.placements)
    assert raw.occupancy[0].sum() == initial == 1000
    entrants = np.cumsum((raw.arrivals + raw.referred).sum(axis=(1, 2)))
    assert np.array_equal(raw.occupancy.sum(axis=(1, 2)), initial + entrants)
    assert raw.agents == raw.occupancy[-1].sum()
    assert raw.arrivals.sum() > 0 and raw.referred.sum() > 0


def test_flows_explain_occupancy(raw: RawRun) -> None:
    # occupancy[t] = occupancy[t-1] + entrants[t] + inflows[t] - outflows[t], per segment, stage
    inflow = raw.flows.sum(axis=2)       # [T1, G, to]
    outflow = raw.flows.sum(axis=3)      # [T1, G, from]
    expected = raw.occupancy[:-1] + raw.arrivals[1:] + raw.referred[1:] + inflow[1:] - outflow[1:]
    assert np.array_equal(raw.occupancy[1:], expected)
    assert not raw.flows[0].any()
    assert (raw.occupancy >= 0).all()


def test_flows_follow_declared_exits(raw: RawRun, model: CompiledModel) -> None:
    S = len(model.stages)
    allowed = np.zeros((S, S), bool)
    for a, b in model.exits:
        allowed[model.stages.index(a), model.stages.index(b)] = True
    used = raw.flows.sum(axis=(0, 1)) > 0
    assert not (used & ~allowed).any()
    assert used[allowed].all()          # every exit, win-back included, was taken


def test_entrants_enter_their_stage(raw: RawRun, model: CompiledModel) -> None:
    aware = model.stages.index("aware")
    others = [s for s in range(len(model.stages)) if s != aware]
    assert not raw.arrivals[:, :, others].any() and not raw.referred[:, :, others].any()
    # referrals are made by eligible customers one step and enter the next
    assert not raw.referred[1].any()


def test_exposures_only_where_and_when_active(raw: RawRun, model: CompiledModel) -> None:
    variants = [model.scenario.materialise(active) for active in model.regimes]
    start = raw.occupancy[:-1] + raw.arrivals[1:] + raw.referred[1:]   # held at step start
    for ti, name in enumerate(model.touchpoints):
        exposed = raw.exposures[1:, :, ti]
        for t in range(1, model.steps + 1):
            variant = variants[model.regime_of_step[t - 1]]
            if name not in variant.touchpoints:
                assert not exposed[t - 1].any(), (name, t)
                continue
            stages = [model.stages.index(s) for s in variant.touchpoints[name].stages]
            assert (exposed[t - 1] <= start[t - 1][:, stages].sum(axis=1)).all(), (name, t)
    # winback_mail exists from day 15 (step 16) and was used
    wb = model.touchpoints.index("winback_mail")
    assert not raw.exposures[:16, :, wb].any() and raw.exposures[16:, :, wb].sum() > 0


def test_acquisitions_are_moves_into_customer_stages(raw: RawRun, model: CompiledModel) -> None:
    kind = model.arrays.kind
    into = raw.flows[:, :, kind != 1][:, :, :, kind == 1].sum(axis=(2, 3))   # [T1, G]
    assert (raw.acquired <= into).all()
    assert raw.acquired.sum() > 0
    # retention counts only acquired agents: at lag 0 everyone acquired is retained
    assert raw.retained[0] == raw.acquired.sum() == raw.to_convert.sum()


# ------------------------------------------------------------------ tables and KPIs


@pytest.mark.parametrize("rep", range(REPLICATES))
def test_tables_balance(result: sim.RunResult, rep: int) -> None:
    scn = result.scenario
    occ = _rows(result.occupancy, rep)
    flows = _rows(result.flows, rep)
    steps = scn.steps
    total = np.bincount(occ["step"], weights=occ["count"], minlength=steps + 1)
    entering = np.isin(flows["kind"], ["arrival", "referral"])
    entrants = np.bincount(flows["step"][entering], weights=flows["count"][entering],
                           minlength=steps + 1)
    assert np.array_equal(total, total[0] + np.cumsum(entrants))
    kpi = _rows(result.kpis, rep)
    assert kpi["agents"][0] == total[-1]
    # per stage: end = start + entrants + inflow - outflow, step by step
    stages = list(scn.stages)
    held = np.zeros((steps + 1, len(stages)))
    np.add.at(held, (occ["step"], [stages.index(s) for s in occ["stage"]]), occ["count"])
    change = np.zeros_like(held)
    to = [stages.index(s) for s in flows["to_stage"]]
    np.add.at(change, (flows["step"], to), flows["count"])
    moved = flows["kind"] == "transition"
    frm = [stages.index(s) for s in flows["from_stage"][moved]]
    np.add.at(change, (flows["step"][moved], frm), -flows["count"][moved])
    assert np.array_equal(held[1:], held[:-1] + change[1:])


@pytest.mark.parametrize("rep", range(REPLICATES))
def test_kpis_add_up(result: sim.RunResult, rep: int) -> None:
    scn = result.scenario
    kinds = _kinds(scn)
    kpi = {k: v[0] for k, v in _rows(result.kpis, rep).items()}
    flows = _rows(result.flows, rep)
    moved = flows["kind"] == "transition"
    frm = np.array([kinds.get(s, "") for s in flows["from_stage"]])
    to = np.array([kinds[s] for s in flows["to_stage"]])
    count = flows["count"]

    # count KPIs are for the scenario's full population: the simulated counts / SCALE
    full = {k: kpi[k] * SCALE for k in ("churned", "won_back", "referrals", "entrants",
                                        "acquired", "reviews")}
    assert full["churned"] == pytest.approx(
        count[moved & (frm == "customer") & (to == "lost")].sum(), rel=1e-12)
    assert full["won_back"] == pytest.approx(
        count[moved & (frm == "lost") & (to == "customer")].sum(), rel=1e-12)
    assert full["referrals"] == pytest.approx(count[flows["kind"] == "referral"].sum(),
                                              rel=1e-12)
    assert full["entrants"] == pytest.approx(count[flows["kind"] != "transition"].sum(),
                                             rel=1e-12)
    assert min(full["churned"], full["won_back"], full["referrals"]) > 0

    # acquired: agents that entered the run as prospects (placed or arriving) and later
    # moved into a customer stage; agents placed as customers or lost are never acquired
    ev = _rows(result.events, rep)
    entry = np.array([f is None for f in ev["from_stage"]])
    born_prospect = set(ev["agent"][entry & np.array(
        [kinds[t] == "prospect" for t in ev["to_stage"]])].tolist())
    into = np.array([f is not None and kinds[t] == "customer" for f, t in
                     zip(ev["from_stage"], ev["to_stage"], strict=True)])
    acquired = set(ev["agent"][into].tolist()) & born_prospect
    assert full["acquired"] == pytest.approx(len(acquired), rel=1e-12) and acquired
    placed_lost = set(ev["agent"][entry & np.array(
        [kinds[t] == "lost" for t in ev["to_stage"]])].tolist())
    assert not acquired & placed_lost
    occ = _rows(result.occupancy, rep)
    initial_prospects = occ["count"][(occ["step"] == 0) & np.isin(
        occ["stage"], scn.stages_of_kind("prospect"))].sum()
    assert kpi["conversion"] == pytest.approx(
        full["acquired"] / (initial_prospects + full["entrants"]), rel=1e-12)
    assert 0 < kpi["conversion"] <= 1

    money = _rows(result.ledger, rep)
    is_rev = money["kind"] == "revenue"
    assert kpi["revenue"] == pytest.approx(money["amount"][is_rev].sum(), rel=1e-12)
    assert kpi["cost"] == pytest.approx(money["amount"][~is_rev].sum(), rel=1e-12)
    assert kpi["roi"] == pytest.approx((kpi["revenue"] - kpi["cost"]) / kpi["cost"], rel=1e-12)

    retention = _rows(result.retention, rep)
    assert retention["share"][0] == 1.0
    assert (retention["retained"] <= retention["eligible"]).all()
    for days in (90, 180, 365):
        want = retention["share"][days] if days <= scn.steps else math.nan
        assert kpi[f"retention_{days}"] == pytest.approx(want, nan_ok=True)
    assert -100 <= kpi["nps"] <= 100 and 1 <= kpi["rating"] <= 5


@pytest.mark.parametrize("rep", range(REPLICATES))
def test_ledger_prices_counts(result: sim.RunResult, rep: int) -> None:
    scn = result.scenario
    steps = scn.steps
    money = _rows(result.ledger, rep)

    def item(name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = money["item"] == name
        order = np.argsort(money["step"][rows])
        return money["exposures"][rows][order], money["amount"][rows][order]

    # touchpoints: exposures x price per exposure + fixed cost per day x step_days; money
    # is for the full population: the simulated exposures / SCALE, fixed costs as written
    for name, price, fixed in (("ads", 0.5, 0.0), ("survey", 0.1, 3.0), ("noop", 1.0, 0.0)):
        exposures, amount = item(name)
        assert exposures.size == steps and exposures.sum() > 0
        assert np.allclose(amount, exposures * price / SCALE + fixed, rtol=0, atol=1e-9)
    exposures, amount = item("winback_mail")
    assert not exposures[:15].any() and exposures[15:].sum() > 0     # days >= 15: steps >= 16
    assert np.allclose(amount, exposures * 0.8 / SCALE, rtol=0, atol=1e-9)
    # interventions: the fixed cost on the first active step, then the daily cost
    _, push = item("push")
    want = np.zeros(steps)
    want[10:25] = 5.0            # days 10..24 are steps 11..25
    want[10] += 100.0
    assert np.array_equal(push, want)
    _, winback = item("winback")
    want = np.zeros(steps)
    want[15] = 50.0
    assert np.array_equal(winback, want)
    assert "idle" not in set(money["item"])      # disabled: neither active nor billed

    # revenue: per-day value of the stage held at the start of each step, entry value on moves
    occ = _rows(result.occupancy, rep)
    flows = _rows(result.flows, rep)
    segments, stages = list(scn.segments), list(scn.stages)
    mult = np.array([scn.segments[g].value_multiplier for g in segments])
    per_day = np.array([scn.stages[s].value.per_day for s in stages])
    on_entry = np.array([scn.stages[s].value.on_entry for s in stages])
    held = np.zeros((steps + 1, len(segments), len(stages)))
    np.add.at(held, (occ["step"], [segments.index(g) for g in occ["segment"]],
                     [stages.index(s) for s in occ["stage"]]), occ["count"])
    entered = np.zeros_like(held)      # arrivals/referrals join the step they arrive in
    moved_in = np.zeros_like(held)
    new = flows["kind"] != "transition"
    for mask, target in ((new, entered), (~new, moved_in)):
        np.add.at(target, (flows["step"][mask], [segments.index(g) for g in
                                                 flows["segment"][mask]],
                           [stages.index(s) for s in flows["to_stage"][mask]]),
                  flows["count"][mask])
    start = held[:-1] + entered[1:]
    revenue = ((start * per_day * scn.time.step_days + moved_in[1:] * on_entry)
               * mult[None, :, None]).sum(axis=(1, 2)) / SCALE
    _, amount = item("revenue")
    assert np.allclose(amount, revenue, rtol=1e-12, atol=1e-9)
