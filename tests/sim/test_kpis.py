"""Custom KPIs (a scenario's ``kpis:`` block) and per-queue service levels.

A custom KPI is checked against the same quantity computed by hand from the
run's tables; the per-queue KPIs of two independent queues are checked against
runs of each queue alone on common random numbers (the engine's draws are keyed
by seed, agent, step and the touchpoint's name, so they agree bit for bit).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from typer.testing import CliRunner

import sim
from sim._kpi_expr import Context, ExprError, check
from sim.cli import app

HERE = Path(__file__).parent
TWO_DESKS = HERE / "kpis" / "two_desks.yaml"
SCALE = 0.5
runner = CliRunner()


@pytest.fixture(scope="module")
def result() -> sim.RunResult:
    return sim.run(TWO_DESKS, engine="des", replicates=2, population_scale=SCALE)


def _sum(table: pa.Table, replicate: int, **where: Any) -> float:
    """Sum of ``count`` over the rows of one replicate matching column == value, or a
    (column, low, high) window low < value <= high."""
    mask = pc.equal(table["replicate"], replicate)
    for col, want in where.items():
        if isinstance(want, tuple):
            mask = pc.and_(mask, pc.and_(pc.greater(table[col], want[0]),
                                         pc.less_equal(table[col], want[1])))
        else:
            mask = pc.and_(mask, pc.equal(table[col], want))
    return float(pc.sum(table.filter(mask)["count"]).as_py() or 0)


def _kpi(result: sim.RunResult, name: str, replicate: int) -> float:
    return float(result.kpis.filter(pc.equal(result.kpis["replicate"], replicate))[name][0]
                 .as_py())


@pytest.mark.parametrize("replicate", [0, 1])
def test_custom_kpis_equal_the_same_quantities_computed_from_the_tables(
        result: sim.RunResult, replicate: int) -> None:
    occ, flows, money = result.occupancy, result.flows, result.ledger
    # members at day 60 over members at day 0 (the scale cancels)
    growth = (_sum(occ, replicate, stage="member", day=60.0)
              / _sum(occ, replicate, stage="member", day=0.0))
    assert _kpi(result, "member_growth", replicate) == pytest.approx(growth, rel=1e-12)
    # entries into member during days (0, 30], for the full population
    joined = _sum(flows, replicate, to_stage="member", day=(0.0, 30.0)) / SCALE
    assert _kpi(result, "joined_first_month", replicate) == pytest.approx(joined, rel=1e-12)
    # phone members who left after day 30
    late = _sum(flows, replicate, from_stage="member", to_stage="gone", segment="phone",
                day=(30.0, math.inf)) / SCALE
    assert _kpi(result, "late_churn", replicate) == pytest.approx(late, rel=1e-12)
    # revenue of the walk-ins by hand: a member earns 1.5 a day (held at the start of the
    # step) and 50 on entry; arrivals enter the enquiry stage, which earns nothing
    held = sum(_sum(occ, replicate, stage="member", segment="walk_in", day=float(d))
               for d in range(60))
    entered = _sum(flows, replicate, to_stage="member", segment="walk_in", day=(0.0, 60.0))
    revenue = (1.5 * held + 50.0 * entered) / SCALE
    assert _kpi(result, "walk_in_revenue", replicate) == pytest.approx(revenue, rel=1e-9)
    # the front desk's share of the cost, from the ledger
    mine = money.filter(pc.equal(money["replicate"], replicate)).to_pydict()
    cost = [a for a, k in zip(mine["amount"], mine["kind"], strict=True) if k != "revenue"]
    desk = [a for a, i in zip(mine["amount"], mine["item"], strict=True) if i == "front_desk"]
    assert _kpi(result, "desk_cost_share", replicate) == pytest.approx(sum(desk) / sum(cost),
                                                                       rel=1e-12)
    posters = sum(e for e, i, d in zip(mine["exposures"], mine["item"], mine["day"],
                                       strict=True) if i == "posters" and d <= 30) / SCALE
    assert _kpi(result, "poster_exposures", replicate) == pytest.approx(posters, rel=1e-12)
    # a difference of two per-queue KPIs of the kpis table
    gap = (_kpi(result, "served_within_target:front_desk", replicate)
           - _kpi(result, "served_within_target:call_line", replicate))
    assert _kpi(result, "service_gap", replicate) == pytest.approx(gap, rel=1e-12, abs=1e-15)


def test_custom_kpis_are_in_the_dense_counts_and_the_summary_with_their_kind(
        result: sim.RunResult) -> None:
    counts = sim.simulate(TWO_DESKS, engine="des", replicates=2, population_scale=SCALE)
    for name in ("member_growth", "walk_in_revenue", "service_gap",
                 "served_within_target:call_line"):
        assert counts.kpis[name].tolist() == result.kpis[name].to_pylist()
    summary = {r["kpi"]: r for r in result.summary().to_pylist()}
    share = summary["desk_cost_share"]
    assert 0.0 <= share["ci_low"] <= share["mean"] <= share["ci_high"] <= 1.0
    assert result.bounds["joined_first_month"] == (0.0, math.inf)
    assert result.bounds["served_within_target:front_desk"] == (0.0, 1.0)
    assert sim.kpi_kinds(result.scenario)["walk_in_revenue"] == "money"


def test_per_step_served_within_target_adds_up_to_the_per_queue_share(
        result: sim.RunResult) -> None:
    q = result.queues
    assert q is not None
    for replicate in (0, 1):
        for tp in ("front_desk", "call_line"):
            rows = q.filter(pc.and_(pc.equal(q["replicate"], replicate),
                                    pc.equal(q["touchpoint"], tp)))
            within = pc.sum(rows["served_within_target"]).as_py()
            served = pc.sum(rows["served"]).as_py()
            assert served > 0
            assert within / served == pytest.approx(
                _kpi(result, f"served_within_target:{tp}", replicate), rel=1e-12)


def _without(data: dict[str, Any], drop: str) -> sim.Scenario:
    """The scenario with one of its two queues removed (and the custom KPIs that read it)."""
    data = yaml.safe_load(yaml.safe_dump(data, sort_keys=False))
    data.pop("kpis")
    del data["touchpoints"][drop]
    for segment in data["segments"].values():
        segment["affinity"].pop(drop, None)
    return sim.load_scenario(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize("keep,drop", [("front_desk", "call_line"),
                                       ("call_line", "front_desk")])
def test_per_queue_kpis_of_two_independent_queues_equal_each_queue_run_alone(
        keep: str, drop: str) -> None:
    # Each segment reaches only its own queue and nothing feeds back between agents (no
    # referrals, reviews or contagion), so removing one queue leaves every draw of the
    # other's agents as it was: on the same seeds its KPIs agree bit for bit.
    data = yaml.safe_load(TWO_DESKS.read_text())
    both = sim.simulate(TWO_DESKS, engine="des", replicates=3)
    alone = sim.simulate(_without(data, drop), engine="des", replicates=3)
    for kpi in sim.QUEUE_KPIS:
        mine = both.kpis[f"{kpi}:{keep}"]
        assert np.isfinite(mine).all()
        assert mine.tolist() == alone.kpis[f"{kpi}:{keep}"].tolist()
        assert mine.tolist() == alone.kpis[kpi].tolist()       # alone, pooled = per queue
    assert f"mean_wait_days:{drop}" not in alone.kpis
    # the pooled KPIs of the two-queue run lie between the queues' own
    for kpi in sim.QUEUE_KPIS:
        pooled, a, b = (both.kpis[kpi], both.kpis[f"{kpi}:front_desk"],
                        both.kpis[f"{kpi}:call_line"])
        assert (np.minimum(a, b) <= pooled + 1e-12).all()
        assert (pooled <= np.maximum(a, b) + 1e-12).all()


def test_kpi_names_are_the_built_in_then_per_queue_then_custom_ones() -> None:
    s = sim.load_scenario(TWO_DESKS)
    names = sim.kpi_names(s)
    assert names[: len(sim.KPI_NAMES)] == sim.KPI_NAMES
    assert names[len(sim.KPI_NAMES): len(sim.KPI_NAMES) + 6] == (
        "mean_wait_days:front_desk", "served_within_target:front_desk",
        "abandonment:front_desk", "mean_wait_days:call_line",
        "served_within_target:call_line", "abandonment:call_line")
    assert names[len(sim.KPI_NAMES) + 6:] == tuple(s.kpis)
    # a scenario without custom KPIs keeps its canonical text (and run ids)
    plain = sim.load_scenario(HERE.parents[1] / "scenarios" / "dental_clinic.yaml")
    assert "kpis" not in plain.to_data()


_CTX = Context(stages=["a", "b"], segments=["g"], touchpoints=["t"], items=["t"],
               kpis=["revenue", "cost"], horizon_days=100.0)


@pytest.mark.parametrize("text,why", [
    ("revenue.real", "attribute access not allowed"),
    ("open('x')", "unknown function 'open'"),
    ("revenue[0]", "subscripts not allowed"),
    ("(lambda: 1)()", "only the named functions may be called"),
    ("[x for x in 'ab']", "listcomp not allowed"),
    ("revenue if cost else 1", "if/else not allowed"),
    ("occupancy('a', day=cost)", "day must be a number"),
    ("occupancy(['a', 'c'], 5)", "unknown stage 'c'"),
    ("flows('a', 'b', until=3)", "flows() has no argument 'until'"),
    ("entries()", "entries() needs stage"),
    ("'a'", "is not a number"),
    ("min(revenue)", "min() takes two or more numbers"),
    ("occupancy", "occupancy is a function: call it"),
    ("revenue and cost", "and/or not allowed"),
    ("kpi('nope')", "unknown KPI 'nope'"),
])
def test_expressions_outside_the_whitelist_are_refused(text: str, why: str) -> None:
    with pytest.raises(ExprError, match=None) as info:
        check(text, _CTX)
    assert why in str(info.value)


def test_kpi_limits_constrain_a_search(tmp_path: Path) -> None:
    from optimise._search._objective import violations

    data = yaml.safe_load(TWO_DESKS.read_text())
    data["optimise"] = {
        "objective": {"kpi": "member_growth"},
        "constraints": {"kpis": {"served_within_target:front_desk": {"min": 0.7},
                                 "desk_cost_share": {"max": 0.5}}},
        "search": [{"path": "touchpoints.front_desk.capacity", "type": "int", "low": 1,
                    "high": 3}]}
    s = sim.load_scenario(yaml.safe_dump(data, sort_keys=False))
    values = {"cost": np.array([10.0, 12.0]), "served_within_target:front_desk":
              np.array([0.6, 0.7]), "desk_cost_share": np.array([0.4, np.nan])}
    found = violations(s, values)
    assert found["served_within_target:front_desk >= 0.7"] == pytest.approx(0.05)
    assert found["desk_cost_share <= 0.5"] == pytest.approx(-0.1)
    data["optimise"]["constraints"]["kpis"] = {"served_within_target:frontdesk": {"min": 0.7}}
    with pytest.raises(sim.ScenarioError, match="did you mean 'served_within_target:front_desk'"):
        sim.load_scenario(yaml.safe_dump(data, sort_keys=False))


def test_the_kpi_flag_takes_a_custom_kpi_and_refuses_a_typo_in_one_line(
        tmp_path: Path) -> None:
    bad = runner.invoke(app, ["sensitivity", str(TWO_DESKS), "--param",
                              "touchpoints.posters.reach.enquiry=0.1:0.3", "--param",
                              "stages.member.exits.gone=0.002:0.006", "--kpi", "member_growht",
                              "--out", str(tmp_path)])
    assert bad.exit_code == 2
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert lines == ["--kpi member_growht: unknown KPI (did you mean 'member_growth'?)"]
    worse = runner.invoke(app, ["sweep", str(TWO_DESKS), "--kpi", "served_within_target:",
                                "--out", str(tmp_path)])
    assert worse.exit_code == 2
    assert "--kpi served_within_target:: unknown KPI" in worse.output


def _with_search(constraint: float) -> sim.Scenario:
    data = yaml.safe_load(TWO_DESKS.read_text())
    data["optimise"] = {
        "objective": {"kpi": "service_gap", "direction": "maximize"},
        "constraints": {"kpis": {"served_within_target:call_line": {"min": constraint}}},
        "search": [{"path": "touchpoints.front_desk.capacity", "type": "int", "low": 1,
                    "high": 3},
                   {"path": "touchpoints.call_line.capacity", "type": "int", "low": 1,
                    "high": 3}],
        "trials": 8, "replicates": 2}
    return sim.load_scenario(yaml.safe_dump(data, sort_keys=False))


def test_a_search_optimises_a_custom_kpi_under_a_per_queue_constraint(tmp_path: Path) -> None:
    import optimise

    # the objective is a custom KPI, the constraint a per-queue KPI's floor: every
    # complete trial records that constraint's value, and is feasible exactly when the
    # call line's within-target share reaches the floor on the trial's replicates
    result = optimise.optimise(_with_search(0.3), out=tmp_path, seed=3, engine="des",
                               top_k=2)
    assert result.objective == "service_gap"
    trials = result.trials.to_pylist()
    assert trials and all(t["constraints"] is not None for t in trials
                          if t["state"] == "COMPLETE")
    for t in trials:
        if t["state"] == "COMPLETE":
            limits = json.loads(t["constraints"])
            assert set(limits) == {"served_within_target:call_line >= 0.3"}
            assert t["feasible"] == (limits["served_within_target:call_line >= 0.3"] <= 0)
    assert result.best is not None and result.best.feasible
    assert math.isfinite(result.best.objective)


def test_a_sweep_summarises_custom_and_per_queue_kpis(tmp_path: Path) -> None:
    from optimise import design, parse_vary, sweep

    variants = design(dict([parse_vary("touchpoints.front_desk.capacity=1,3")]))
    result = sweep(sim.load_scenario(TWO_DESKS), variants, replicates=2, out=tmp_path,
                   engine="des", workers=1)
    rows = {(r["variant"], r["kpi"]): r for r in result.summary.to_pylist()}
    one, three = rows["v0000", "served_within_target:front_desk"], rows[
        "v0001", "served_within_target:front_desk"]
    assert one["mean"] < three["mean"]          # more servers, shorter waits
    assert ("v0000", "member_growth") in rows and ("v0001", "walk_in_revenue") in rows
    # the call line's service level does not see the desk's servers (common random numbers)
    assert rows["v0000", "served_within_target:call_line"]["mean"] == \
        rows["v0001", "served_within_target:call_line"]["mean"]


def test_the_report_shows_custom_and_per_queue_kpis(tmp_path: Path,
                                                    result: sim.RunResult) -> None:
    import report

    sim.run(TWO_DESKS, engine="des", replicates=2, population_scale=SCALE, out=tmp_path)
    page = report.write_report(tmp_path, tmp_path / "r.html").path.read_text()
    rows = re.findall(r'<tr data-kpi="([^"]+)">', page)
    assert rows == [k for k in sim.kpi_names(result.scenario)]
    assert "members at day 60 per member at day 0" in page
    assert "touchpoint call_line alone" in page
