"""Calendar time: profiles of arrivals, reach and exits by month, weekday or curve;
windows as dates; shaped interventions; the date column. Against theory (Poisson
and binomial counts, tolerances of 4 standard errors), and bit for bit where a
profile is constant."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow.compute as pc
import pytest

import sim
from sim.model import compile_scenario
from sim.scenario import SHAPE_LEVELS, shape_levels, step_multipliers
from sim.scenario._schema import MONTHS

Z = 4.0
SURGE = {"jan": 3.0, "feb": 1.6, "jul": 0.5, "dec": 0.8}
BASE = """\
name: calendar
seed: 5
time: {step_days: 1, horizon_days: 365, start_date: 2027-01-01}
population:
  initial:
    - {stage: member, count: 20000}
  arrivals: {per_day: 40, stage: lead}
stages:
  lead: {kind: prospect}
  member: {kind: customer}
touchpoints:
  app: {stages: [member], reach: 0.05}
"""


def _with(text: str, extra: str = "") -> sim.Scenario:
    return sim.load_scenario(text + extra)


def test_a_monthly_arrival_profile_gives_the_expected_monthly_entries() -> None:
    scenario = _with(BASE.replace("arrivals: {per_day: 40, stage: lead}",
                                  "arrivals: {per_day: 40, stage: lead, profile: surge}"),
                     "profiles:\n  surge:\n    by_month: {jan: 3.0, feb: 1.6, jul: 0.5, "
                     "dec: 0.8}\n")
    replicates = 4
    result = sim.run(scenario, replicates=replicates)
    flows = result.flows.filter(pc.equal(result.flows.column("kind"), "arrival"))
    month = np.array([d.month for d in flows.column("date").to_pylist()])
    count = flows.column("count").to_numpy()
    for m in range(1, 13):
        # a flow's date is the day of its step: 365 steps, one a day from 1 January
        days = (dt.date(2027 + m // 12, m % 12 + 1, 1) - dt.date(2027, m, 1)).days
        expected = replicates * 40 * SURGE.get(MONTHS[m - 1], 1.0) * days
        got = int(count[month == m].sum())
        # Poisson: the variance is the mean
        assert abs(got - expected) < Z * math.sqrt(expected), (m, got, expected)


def test_a_weekday_reach_profile_shows_in_exposures_by_weekday() -> None:
    # members never leave: each day N members are each exposed with reach x profile
    scenario = _with(BASE.replace("app: {stages: [member], reach: 0.05}",
                                  "app: {stages: [member], reach: 0.05, "
                                  "profile: {by_weekday: {sat: 0.0, sun: 2.0}}}"))
    result = sim.run(scenario, replicates=1)
    ledger = result.ledger.filter(pc.equal(result.ledger.column("item"), "app"))
    weekday = np.array([d.weekday() for d in ledger.column("date").to_pylist()])
    exposures = ledger.column("exposures").to_numpy()
    n = 20_000
    for wd, mult in ((0, 1.0), (2, 1.0), (5, 0.0), (6, 2.0)):
        days = int((weekday == wd).sum())
        p = 0.05 * mult
        got = int(exposures[weekday == wd].sum())
        expected = days * n * p
        assert abs(got - expected) <= Z * math.sqrt(days * n * p * (1 - p)), (wd, got, expected)


def test_an_exit_profile_multiplies_the_exit_probability() -> None:
    # a closed cohort leaving with p = 0.01 a day, twice as fast from day 100 (a
    # step curve): survival at day 200 is 0.99^100 0.98^100 (binomial SE)
    text = BASE.replace("member: {kind: customer}",
                        "member: {kind: customer, exits: {lost: {p: 0.01, profile: "
                        "{curve: [{day: 99, value: 1.0}, {day: 100, value: 2.0}]}}}}\n"
                        "  lost: {kind: lost}")
    text = text.replace("arrivals: {per_day: 40, stage: lead}", "arrivals: {per_day: 0}")
    scenario = _with(text)
    occ = sim.run(scenario, replicates=1).occupancy
    rows = [r for r in occ.to_pylist() if r["stage"] == "member" and r["step"] == 200]
    survived = rows[0]["count"]
    # steps 1..99 at 0.01 (day 99 at 1.0), steps 100..200 at 0.02
    p = 0.99 ** 99 * 0.98 ** 101
    n = 20_000
    assert abs(survived - n * p) < Z * math.sqrt(n * p * (1 - p)), (survived, n * p)


def test_a_constant_profile_reproduces_the_run_bit_for_bit() -> None:
    plain = _with(BASE)
    ones = {m: 1.0 for m in MONTHS}
    flat = _with(BASE.replace("arrivals: {per_day: 40, stage: lead}",
                              "arrivals: {per_day: 40, stage: lead, profile: flat}")
                 .replace("app: {stages: [member], reach: 0.05}",
                          "app: {stages: [member], reach: 0.05, profile: flat}"),
                 f"profiles:\n  flat:\n    by_month: {ones}\n    by_weekday: {{mon: 1.0}}\n"
                 .replace("'", ""))
    a = sim.run(plain, replicates=2, seed=3)
    b = sim.run(flat, replicates=2, seed=3)
    for name in ("occupancy", "flows", "ledger", "kpis"):
        ta, tb = getattr(a, name), getattr(b, name)
        keep = [c for c in ta.column_names if c not in ("run_id",)]
        # (pandas: NaN equals NaN where both have it, e.g. an empty stage's satisfaction)
        assert ta.select(keep).to_pandas().equals(tb.select(keep).to_pandas()), name


def test_the_date_column_counts_from_the_start_date() -> None:
    with_date = sim.run(_with(BASE), replicates=1)
    occ = with_date.occupancy
    first = occ.filter(pc.equal(occ.column("step"), 0)).column("date")[0].as_py()
    last = occ.filter(pc.equal(occ.column("step"), 365)).column("date")[0].as_py()
    assert (first, last) == (dt.date(2027, 1, 1), dt.date(2028, 1, 1))
    without = sim.run(_with(BASE.replace(", start_date: 2027-01-01", "")), replicates=1)
    assert "date" not in without.occupancy.column_names


def test_a_window_given_as_dates_is_the_window_given_as_days() -> None:
    iv = ("interventions:\n  push:\n    enabled: true\n    window: {WINDOW}\n"
          "    set: {touchpoints.app.reach.member: 0.2}\n")
    by_day = _with(BASE, iv.replace("{WINDOW}", "{start_day: 31, end_day: 59}"))
    by_date = _with(BASE, iv.replace("{WINDOW}",
                                     "{start_date: 2027-02-01, end_date: 2027-03-01}"))
    a, b = (sim.simulate(s, seed=2, replicates=1) for s in (by_day, by_date))
    np.testing.assert_array_equal(a.raw[0].exposures, b.raw[0].exposures)
    assert a.kpis["cost"] == b.kpis["cost"]


def test_a_shaped_campaign_ramps_up_and_decays() -> None:
    scenario = _with(BASE, "interventions:\n  push:\n    enabled: true\n"
                           "    window: {start_day: 100, end_day: 150}\n"
                           "    shape: {ramp_up_days: 20, half_life_days: 10}\n"
                           "    set: {touchpoints.app.reach.member: 0.45}\n")
    levels = shape_levels(scenario.interventions["push"], scenario.time)
    mid = np.arange(365) + 0.5
    weight = np.where((mid > 100) & (mid < 150), np.clip((mid - 100) / 20, 0, 1), 0.0)
    weight = np.where(mid >= 150, 0.5 ** ((mid - 150) / 10), weight)
    np.testing.assert_array_equal(levels, np.rint(weight * SHAPE_LEVELS))
    # the reach at each step is base + w (set - base): exposures follow it (binomial)
    counts = sim.simulate(scenario, replicates=1)
    exposures = counts.raw[0].exposures[1:, 0, 0]
    reach = 0.05 + levels / SHAPE_LEVELS * (0.45 - 0.05)
    n = 20_000
    for lo, hi in ((90, 100), (100, 110), (110, 120), (120, 150), (150, 170), (170, 200)):
        expected = n * reach[lo:hi].sum()
        var = n * (reach[lo:hi] * (1 - reach[lo:hi])).sum()
        got = int(exposures[lo:hi].sum())
        assert abs(got - expected) < Z * math.sqrt(var), (lo, hi, got, expected)
    # a day with a level between 0 and 32 runs a regime of its own
    model = compile_scenario(scenario)
    assert any("push@" in "".join(r) for r in model.regimes)


def test_profiles_give_one_multiplier_per_step_averaged_over_the_step() -> None:
    weekly = _with(BASE.replace("step_days: 1, horizon_days: 365",
                                "step_days: 7, horizon_days: 364")
                   .replace("app: {stages: [member], reach: 0.05}",
                            "app: {stages: [member], reach: 0.05, "
                            "profile: {by_weekday: {sat: 0.0, sun: 0.0}}}"))
    mult = step_multipliers(weekly, weekly.touchpoints["app"].profile)
    np.testing.assert_allclose(mult, 5 / 7)


@pytest.mark.parametrize(("edit", "message"), [
    (("arrivals: {per_day: 40, stage: lead}",
      "arrivals: {per_day: 40, stage: lead, profile: surg}"),
     "population.arrivals.profile: unknown profile 'surg'"),
    ((", start_date: 2027-01-01", ""),
     "touchpoints.app.profile.by_month: months, weekdays and dates need time.start_date"),
    ((", start_date: 2027-01-01", ", start_date: 2027-13-01"),
     "time.start_date: '2027-13-01' is not a date: write YYYY-MM-DD"),
    (("profile: {by_month: {jan: 2.0}}", "profile: {curve: [{day: 5, value: 1}, "
                                         "{day: 2, value: 2}]}"),
     "touchpoints.app.profile.curve.1: the curve's points must go forward"),
    (("profile: {by_month: {jan: 2.0}}", "profile: {by_month: {january: 2.0}}"),
     "touchpoints.app.profile.by_month.january: input should be 'jan'"),
])
def test_a_bad_profile_gets_one_located_line(tmp_path, edit: tuple[str, str],
                                             message: str) -> None:
    text = BASE.replace("app: {stages: [member], reach: 0.05}",
                        "app: {stages: [member], reach: 0.05, profile: {by_month: {jan: 2.0}}}")
    text = text.replace(*edit)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(sim.ScenarioError) as info:
        sim.load_scenario(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 1, lines
    # FILE:LINE:COL at the line that holds what is wrong
    where, _, what = lines[0].partition(": ")
    file, line, _col = where.rsplit(":", 2)
    assert file == str(path) and what.startswith(message), lines[0]
    key = message.split(":")[0].split(".")[-1]
    key = {"1": "day: 2"}.get(key, key)
    assert key in text.splitlines()[int(line) - 1], (lines[0], key)


def test_a_dated_window_needs_a_start_date_and_a_shape_needs_numbers(tmp_path) -> None:
    text = BASE.replace(", start_date: 2027-01-01", "") + (
        "interventions:\n  push:\n    window: {start_date: 2027-02-01}\n"
        "    shape: {ramp_up_days: 5}\n    set: {touchpoints.app.stages: [member]}\n")
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(sim.ScenarioError) as info:
        sim.load_scenario(path)
    text = str(info.value)
    assert "interventions.push.window.start_date: a window given as dates needs " \
           "time.start_date" in text
    assert "interventions.push.set.touchpoints.app.stages: a shaped intervention sets " \
           "numbers only" in text
