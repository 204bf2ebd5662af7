"""Round trip: simulate a shipped scenario with exposure events, discover a draft from its
events, and find the true parameters inside their intervals and the KPIs matched."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

import sim
from discover import discover
from sim import DataError

ROOT = Path(__file__).resolve().parents[2]
REPLICATES = 6
SHIPPED = {"dental_clinic": 1.0, "digital_service": 0.2}
"""Shipped scenarios of the round trip, with the population scale of their log."""
COUNTS = ("churned", "won_back", "entrants", "acquired")
"""KPIs that count customers: the full population's, so the log's divided by its scale."""


def _shipped(name: str) -> sim.Scenario:
    """A shipped scenario without what a log cannot show: satisfaction's effects on exits
    (a per-agent state no log records) and within-segment heterogeneity (tested apart)."""
    scenario = sim.load_scenario(ROOT / "scenarios" / f"{name}.yaml")
    cleared = {f"segments.{g}.heterogeneity": {} for g in scenario.segments}
    return scenario.apply(overrides={"satisfaction.effects": {}, **cleared})


def _mapping(scenario: sim.Scenario) -> str:
    """The mapping file of a simulated log: the events are the stage and touchpoint names."""
    stages = ", ".join(f"{n}: {s.kind}" for n, s in scenario.stages.items())
    return f"stages: {{{stages}}}\ntouchpoints: [{', '.join(scenario.touchpoints)}]\n"


@pytest.fixture(scope="module", params=list(SHIPPED))
def round_trip(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[sim.RunResult, object]:
    name = request.param
    scenario = _shipped(name)
    folder = tmp_path_factory.mktemp(name)
    (folder / "map.yaml").write_text(_mapping(scenario))
    run = sim.run(
        scenario,
        replicates=REPLICATES,
        seed=3,
        exposures=True,
        population_scale=SHIPPED[name],
        out=folder / "run",
    )
    one = folder / "run" / "events" / f"scenario={name}" / "variant=base" / "replicate=0"
    found = discover(one, folder / "map.yaml", out=folder / "draft.yaml")
    return run, found


def _truths(scenario: sim.Scenario, fit: pd.DataFrame, ref: str) -> pd.DataFrame:
    """The simulated value of every exit (per segment), reach (per stage and segment),
    offset (against the reference segment ``ref``) and lift of the fit table, beside its
    interval."""
    rows = []
    for e in fit.itertuples():
        key = f"{e.stage}->{e.target}"
        if e.kind == "exit_segment":
            off = scenario.segments[e.segment].offsets.get(key, 0.0)
            truth = float(expit(logit(scenario.stage_exit_p(e.stage, e.target)) + off))
        elif e.kind == "reach" and isinstance(e.segment, str):
            tp = scenario.touchpoints[e.touchpoint]
            aff = scenario.segments[e.segment].affinity.get(e.touchpoint, 1.0)
            truth = min(1.0, tp.reach[e.stage] * aff)
        elif e.kind == "offset":
            segs = scenario.segments
            truth = segs[e.segment].offsets.get(key, 0.0) - segs[ref].offsets.get(key, 0.0)
        elif e.kind == "lift":
            truth = scenario.touchpoints[e.touchpoint].lift.get(key, 0.0)
        else:
            continue
        rows.append((e.kind, key, e.segment, e.touchpoint, truth, e.low, e.high))
    out = pd.DataFrame(rows, columns=["kind", "exit", "segment", "tp", "truth", "low", "high"])
    out["covered"] = (out["low"] <= out["truth"]) & (out["truth"] <= out["high"])
    return out


def test_true_exits_reach_offsets_and_lifts_lie_in_their_intervals_at_95_percent(
    round_trip: tuple[sim.RunResult, object],
) -> None:
    run, found = round_trip
    ref = found.discovery.log.segments[0]  # type: ignore[attr-defined]
    scenario = _shipped(run.scenario.name)
    table = _truths(scenario, found.fit.to_pandas(), ref)  # type: ignore[attr-defined]
    assert set(table["kind"]) == {"exit_segment", "reach", "offset", "lift"}
    k = len(table)
    assert k >= 70  # every exit per segment, reach per stage and segment, every lift
    # Each 95% interval covers its truth with probability 0.95, so the count covered is
    # about Binomial(k, 0.95) (the intervals are nearly independent): its mean 0.95 k and
    # its standard error sqrt(k * 0.95 * 0.05); we allow three standard errors below.
    covered = int(table["covered"].sum())
    low = 0.95 * k - 3 * math.sqrt(k * 0.95 * 0.05)
    assert covered >= low, table[~table["covered"]].to_string()
    # the lifts the scenario names, with enough exposed exits to measure, are recovered
    named = table[(table["kind"] == "lift") & (table["truth"] != 0)]
    assert len(named) >= 8


def test_the_minimum_dwell_is_found_where_the_scenario_has_one(
    round_trip: tuple[sim.RunResult, object],
) -> None:
    run, found = round_trip
    draft = found.scenario  # type: ignore[attr-defined]
    truth = _shipped(run.scenario.name)
    sd = truth.time.step_days
    for name, stage in truth.stages.items():  # the engine counts a dwell in whole steps
        steps = math.ceil(stage.min_dwell_days / sd - 1e-9)
        assert draft.stages[name].min_dwell_days == steps * sd, name
        assert draft.stages[name].exits.keys() <= stage.exits.keys(), name
    assert draft.entry_stage() == truth.entry_stage()


def test_the_drafts_kpis_match_the_originals_within_sampling_error(
    round_trip: tuple[sim.RunResult, object],
) -> None:
    run, found = round_trip
    draft = sim.run(found.scenario, replicates=REPLICATES, seed=11)  # type: ignore[attr-defined]
    a, b = run.kpis.to_pandas(), draft.kpis.to_pandas()
    scale = SHIPPED[run.scenario.name]
    for kpi in COUNTS:  # the draft's population is the log's: scale times the full one
        b[kpi] = b[kpi] / scale
    for kpi in (
        "conversion",
        "retention_90",
        "retention_180",
        "retention_365",
        "churned",
        "won_back",
        "entrants",
        "acquired",
    ):
        # The draft is fitted to one run, so it carries that run's sampling error: on a
        # KPI about one run's standard deviation (the same counts made both), plus the
        # Monte Carlo error of each mean over REPLICATES runs. Four of these combined
        # standard errors bound the difference (a few KPIs are tested at once).
        sd_a, sd_b = a[kpi].std(), b[kpi].std()
        se = math.sqrt(sd_a**2 + sd_a**2 / REPLICATES + sd_b**2 / REPLICATES)
        assert abs(a[kpi].mean() - b[kpi].mean()) <= 4 * se, (kpi, a[kpi].mean(), b[kpi].mean(), se)


HET = """\
name: het_check
time: {step_days: 1, horizon_days: 120}
population:
  initial:
    - {stage: active, count: 4000, segment: mixed}
    - {stage: active, count: 4000, segment: uniform}
segments:
  mixed:
    share: 0.5
    heterogeneity: {active->gone: {distribution: beta, a: 2.0, b: 198.0}}
  uniform: {share: 0.5}
stages:
  active: {kind: customer, exits: {gone: 0.01}}
  gone: {kind: lost}
"""


# ------------------------------------------------------------------ the dental clinic as shipped


@pytest.fixture(scope="module")
def as_shipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[sim.RunResult, object]:
    """The shipped dental clinic with nothing switched off (satisfaction effects and
    heterogeneity on): one simulated log, its draft."""
    scenario = sim.load_scenario(ROOT / "scenarios" / "dental_clinic.yaml")
    folder = tmp_path_factory.mktemp("dental_as_shipped")
    (folder / "map.yaml").write_text(_mapping(scenario))
    run = sim.run(scenario, replicates=REPLICATES, seed=5, exposures=True, out=folder / "run")
    one = folder / "run" / "events" / "scenario=dental_clinic" / "variant=base" / "replicate=0"
    return run, discover(one, folder / "map.yaml", out=folder / "draft.yaml")


def _sat_truths(scenario: sim.Scenario, fit: pd.DataFrame, ref: str) -> pd.DataFrame:
    """Like :func:`_truths` for a scenario with satisfaction: an exit's probability at
    baseline satisfaction is ``expit(logit(p) + offset + effect * baseline)``; the
    coefficient of touchpoint k's decayed exposure count on exit e is
    ``effect_e * kick_k``. Exits (and offsets) of a segment with heterogeneity on them
    have no single true probability (the agents draw their own): they are left out."""
    sat = scenario.satisfaction
    rows = []
    for e in fit.itertuples():
        key = f"{e.stage}->{e.target}"
        effect = sat.effects.get(key, 0.0)
        het = {g for g, seg in scenario.segments.items() if key in seg.heterogeneity}
        if e.kind == "exit_segment":
            if e.segment in het:
                continue
            off = scenario.segments[e.segment].offsets.get(key, 0.0)
            p = scenario.stage_exit_p(e.stage, e.target)
            truth = float(expit(logit(p) + off + effect * sat.baseline))
        elif e.kind == "reach" and isinstance(e.segment, str):
            tp = scenario.touchpoints[e.touchpoint]
            aff = scenario.segments[e.segment].affinity.get(e.touchpoint, 1.0)
            truth = min(1.0, tp.reach[e.stage] * aff)
        elif e.kind == "offset":
            if het & {e.segment, ref}:
                continue
            segs = scenario.segments
            truth = segs[e.segment].offsets.get(key, 0.0) - segs[ref].offsets.get(key, 0.0)
        elif e.kind == "lift":
            truth = scenario.touchpoints[e.touchpoint].lift.get(key, 0.0)
        elif e.kind == "satisfaction_stock":
            truth = effect * scenario.touchpoints[e.touchpoint].satisfaction
        elif e.kind == "satisfaction_decay":
            truth = sat.decay
        else:
            continue
        rows.append((e.kind, key, e.segment, e.touchpoint, truth, e.low, e.high))
    out = pd.DataFrame(rows, columns=["kind", "exit", "segment", "tp", "truth", "low", "high"])
    out["covered"] = (out["low"] <= out["truth"]) & (out["truth"] <= out["high"])
    return out


def _enough(k: int) -> float:
    """The least count of k nearly independent 95% intervals covering their truths that
    is not rejected: the count is about Binomial(k, 0.95), mean 0.95 k, standard error
    sqrt(k * 0.95 * 0.05); three standard errors below the mean (a one-sided binomial
    test at about 0.1%)."""
    return 0.95 * k - 3 * math.sqrt(k * 0.95 * 0.05)


def test_the_shipped_dental_clinic_gives_back_its_exits_reach_offsets_and_lifts(
    as_shipped: tuple[sim.RunResult, object],
) -> None:
    run, found = as_shipped
    ref = found.discovery.log.segments[0]  # type: ignore[attr-defined]
    fit = found.fit.to_pandas()  # type: ignore[attr-defined]
    table = _sat_truths(run.scenario, fit, ref)
    main = table[table["kind"].isin(["exit_segment", "reach", "offset", "lift"])]
    assert set(main["kind"]) == {"exit_segment", "reach", "offset", "lift"}
    k = len(main)
    assert k >= 75  # every exit per segment (less the heterogeneous), reach, offsets, lifts
    covered = int(main["covered"].sum())
    assert covered >= _enough(k), main[~main["covered"]].to_string()
    # the exits' probabilities at baseline satisfaction, which the log never shows directly
    exits = main[main["kind"] == "exit_segment"]
    assert int(exits["covered"].sum()) >= _enough(len(exits)), exits.to_string()


def test_satisfaction_is_reconstructed_from_the_exposures(
    as_shipped: tuple[sim.RunResult, object],
) -> None:
    run, found = as_shipped
    sat = found.discovery.satisfaction  # type: ignore[attr-defined]
    assert sat is not None and sat.accepted and sat.p < 1e-6
    fit = found.fit.to_pandas()  # type: ignore[attr-defined]
    table = _sat_truths(run.scenario, fit, found.discovery.log.segments[0])  # type: ignore[attr-defined]
    stock = table[table["kind"].isin(["satisfaction_stock", "satisfaction_decay"])]
    assert len(stock) >= 60
    covered = int(stock["covered"].sum())
    assert covered >= _enough(len(stock)), stock[~stock["covered"]].to_string()
    # the reconciled kicks have the truth's signs where the truth's kick is material: the
    # scale is not identified, only the products effect x kick
    draft = found.scenario  # type: ignore[attr-defined]
    truth = run.scenario
    for name in ("fitting", "checkup", "repair_service"):
        assert np.sign(draft.touchpoints[name].satisfaction) == np.sign(
            truth.touchpoints[name].satisfaction
        ), name
    for key in ("use->loyal", "use->terminated", "repair->terminated", "loyal->upgrade"):
        assert np.sign(draft.satisfaction.effects[key]) == np.sign(
            truth.satisfaction.effects[key]
        ), key
    assert "satisfaction:" in found.text  # type: ignore[attr-defined]


def test_the_shipped_dental_clinics_draft_matches_its_kpis(
    as_shipped: tuple[sim.RunResult, object],
) -> None:
    run, found = as_shipped
    draft = sim.run(found.scenario, replicates=REPLICATES, seed=11)  # type: ignore[attr-defined]
    a, b = run.kpis.to_pandas(), draft.kpis.to_pandas()
    for kpi in ("conversion", "retention_90", "retention_180", "retention_365", *COUNTS):
        # as in test_the_drafts_kpis_match_the_originals_within_sampling_error: one run's
        # standard deviation (the draft is fitted to one run) and the Monte Carlo error of
        # both means over REPLICATES runs; four combined standard errors
        sd_a, sd_b = a[kpi].std(), b[kpi].std()
        se = math.sqrt(sd_a**2 + sd_a**2 / REPLICATES + sd_b**2 / REPLICATES)
        assert abs(a[kpi].mean() - b[kpi].mean()) <= 4 * se, (kpi, a[kpi].mean(), b[kpi].mean(), se)


def test_without_satisfaction_effects_no_satisfaction_is_written(
    round_trip: tuple[sim.RunResult, object],
) -> None:
    _, found = round_trip
    sat = found.discovery.satisfaction  # type: ignore[attr-defined]
    assert sat is None or not sat.accepted
    assert "satisfaction:" not in found.text  # type: ignore[attr-defined]


def test_heterogeneity_is_found_where_agents_differ_and_not_where_they_do_not(
    tmp_path: Path,
) -> None:
    (tmp_path / "map.yaml").write_text("stages: {active: customer, gone: lost}\n")
    sim.run(sim.load_scenario(HET), seed=1, events=True, out=tmp_path / "run")
    found = discover(tmp_path / "run" / "events", tmp_path / "map.yaml")
    fit = found.fit.to_pandas()
    beta = fit[fit["kind"].isin(["beta_a", "beta_b"])].set_index("kind")
    assert set(beta["segment"]) == {"mixed"}  # the homogeneous segment is not flagged
    assert beta.loc["beta_a", "low"] <= 2.0 <= beta.loc["beta_a", "high"]
    assert beta.loc["beta_b", "low"] <= 198.0 <= beta.loc["beta_b", "high"]
    het = found.scenario.segments["mixed"].heterogeneity["active->gone"]
    assert het.distribution == "beta"
    uniform = fit[(fit["kind"] == "exit_segment") & (fit["segment"] == "uniform")].iloc[0]
    assert uniform["low"] <= 0.01 <= uniform["high"]


def test_exposure_tied_to_the_dwell_earns_a_confounding_warning(tmp_path: Path) -> None:
    # A synthetic log: every customer gets the e-mail on its first day in `trial` only,
    # and leaves with probability 0.05 a day (no lift at all). The log opens on day 0 with
    # one customer already there; the others enter from day 1 (stays under way on the
    # log's first day are delayed entries, left out of the warning's test).
    rng = np.random.default_rng(7)
    n = 3000
    stay = rng.geometric(0.05, n)
    ids = np.arange(n).astype(str)
    entries = pd.DataFrame({"customer_id": ids, "day": 1, "event": "trial"})
    mails = pd.DataFrame({"customer_id": ids, "day": 2, "event": "welcome_mail"})
    done = stay < 60
    exits = pd.DataFrame({"customer_id": ids[done], "day": 1 + stay[done], "event": "paid"})
    opener = pd.DataFrame({"customer_id": ["opener"], "day": [0], "event": ["trial"]})
    log = pd.concat([opener, entries, mails, exits]).sort_values(["customer_id", "day"],
                                                                  kind="stable")
    log.to_parquet(tmp_path / "log.parquet")
    (tmp_path / "map.yaml").write_text(
        "stages: {trial: prospect, paid: customer}\ntouchpoints: [welcome_mail]\nend_day: 61\n"
    )
    found = discover(tmp_path / "log.parquet", tmp_path / "map.yaml")
    assert any("welcome_mail in trial depends on the dwell" in w for w in found.warnings)
    assert "# warning: exposure to welcome_mail" in found.text
    # without satisfaction's reconstruction (--no-satisfaction) the draft says so
    plain = discover(tmp_path / "log.parquet", tmp_path / "map.yaml", satisfaction=False)
    assert any("satisfaction was not reconstructed" in w for w in plain.warnings)
    assert "\nsatisfaction:" not in plain.text


def test_the_logs_occupancy_is_the_engines_and_the_check_compares_it_with_the_draft(
    round_trip: tuple[sim.RunResult, object], tmp_path: Path
) -> None:
    run, found = round_trip
    folder = Path(found.paths[0]).parent  # type: ignore[attr-defined]
    name = run.scenario.name
    one = folder / "run" / "events" / f"scenario={name}" / "variant=base" / "replicate=0"
    checked = discover(one, folder / "map.yaml", check=3, out=tmp_path / "d.yaml")
    assert checked.check is not None and str(tmp_path / "d.check.parquet") in checked.paths
    table = checked.check.to_pandas()
    # the log's occupancy, rebuilt from its events, is the engine's own table exactly
    occ = run.occupancy.to_pandas()
    occ = occ[occ["replicate"] == 0].groupby(["stage", "step"])["count"].sum()
    mine = table[table["curve"] != "survival"].set_index(["curve", "step"])["observed"]
    mine.index.names = ["stage", "step"]
    pd.testing.assert_series_equal(
        mine.sort_index(), occ.sort_index().astype(float), check_names=False
    )
    # step 0 is the placed population in both, and survival starts at 1
    first = table[table["step"] == 0]
    assert (first["observed"] == first["simulated"]).all()
    survival = table[table["curve"] == "survival"]
    assert survival["observed"].iloc[0] == 1.0
    assert survival[["observed", "low", "high"]].stack().between(0, 1).all()


def test_a_folder_of_several_replicates_is_refused_with_one_line(
    round_trip: tuple[sim.RunResult, object],
) -> None:
    _, found = round_trip
    folder = Path(found.paths[0]).parent  # type: ignore[attr-defined]
    with pytest.raises(DataError) as err:
        discover(folder / "run" / "events", folder / "map.yaml")
    (line,) = str(err.value).splitlines()
    assert f"holds the events of {REPLICATES} runs (replicates)" in line


CUT = """\
name: cut_check
time: {step_days: 1, horizon_days: 400}
population:
  initial:
    - {stage: trial, count: 1500}
    - {stage: member, count: 3000}
  arrivals: {per_day: 15, stage: trial}
stages:
  trial: {kind: prospect, min_dwell_days: 5, exits: {member: 0.05, gone: 0.03}}
  member: {kind: customer, exits: {gone: 0.004}}
  gone: {kind: lost}
"""


def test_a_log_that_starts_mid_journey_still_covers_the_truth(tmp_path: Path) -> None:
    # The first 100 days of a simulated log are cut, as in an export that starts on a
    # given day: each customer present then gets one row for the stage it is in on day
    # 100 (its dwell there unknown to the log), followed by its later events.
    import pyarrow.dataset as ds

    scenario = sim.load_scenario(CUT)
    sim.run(scenario, seed=2, events=True, out=tmp_path / "run")
    ev = ds.dataset(tmp_path / "run" / "events", partitioning="hive").to_table().to_pandas()
    ev = ev.sort_values(["agent", "day"], kind="stable")
    cut = 100.0
    before = ev[ev["day"] <= cut].groupby("agent").tail(1)
    snapshot = pd.DataFrame(
        {"customer_id": before["agent"], "day": cut, "event": before["to_stage"]}
    )
    after = ev[ev["day"] > cut]
    later = pd.DataFrame(
        {"customer_id": after["agent"], "day": after["day"], "event": after["to_stage"]}
    )
    log = pd.concat([snapshot, later]).sort_values(["customer_id", "day"], kind="stable")
    log.to_parquet(tmp_path / "log.parquet")
    (tmp_path / "map.yaml").write_text(
        "stages: {trial: prospect, member: customer, gone: lost}\n"
    )
    found = discover(tmp_path / "log.parquet", tmp_path / "map.yaml")
    fit = found.fit.to_pandas()
    under_way = int((snapshot["event"] == "trial").sum())
    assert under_way > 100  # stays in trial under way on the first day, dwell unknown
    exits = fit[fit["kind"] == "exit"].set_index(["stage", "target"])
    for (s, t), row in exits.iterrows():
        truth = scenario.stage_exit_p(s, t)
        assert row["low"] <= truth <= row["high"], (s, t, truth, row.to_dict())
        assert "under way on the log's first day" in row["note"]
    assert "delayed entries from their step 5" in exits.loc[("trial", "member"), "note"]
    # the minimum dwell is read from the stays that began inside the log only: a stay
    # under way that ends on day 101 says nothing of the dwell
    assert found.scenario.stages["trial"].min_dwell_days == 5
    assert not any("depends on the dwell" in w for w in found.warnings)


SEASON = """\
name: season_check
time: {step_days: 1, horizon_days: 730, start_date: 2027-01-01}
profiles:
  new_year: {by_month: {jan: 3.0, feb: 1.6, jul: 0.6, dec: 0.5}}
population:
  arrivals: {per_day: 10, stage: interested, profile: new_year}
stages:
  interested: {kind: prospect, exits: {member: 0.05, gone: 0.05}}
  member: {kind: customer, exits: {gone: 0.01}}
  gone: {kind: lost}
"""


@pytest.mark.parametrize("profile", [True, False])
def test_a_monthly_arrival_profile_is_found_when_there_is_one(
    tmp_path: Path, profile: bool
) -> None:
    scenario = sim.load_scenario(SEASON)
    if not profile:
        scenario = scenario.apply(overrides={"population.arrivals.profile": None})
    sim.run(scenario, seed=4, events=True, out=tmp_path / "run")
    (tmp_path / "map.yaml").write_text(
        "stages: {interested: prospect, member: customer, gone: lost}\n"
        "start_day: 0\nstart_date: 2027-01-01\n"
    )
    found = discover(tmp_path / "run" / "events", tmp_path / "map.yaml")
    fit = found.fit.to_pandas()
    months = fit[fit["kind"] == "arrivals_by_month"].set_index("target")
    if not profile:  # a constant rate: the test at 1% keeps it
        assert months.empty and "profiles:" not in found.text
        return
    assert len(months) == 12
    truth = scenario.profiles["new_year"].by_month or {}
    # the estimate is a month's rate over the log's mean rate, the days' mean of the
    # multipliers; each interval is a 95% one, so the count covered is bounded as in _enough
    mean = sum(truth.get(m, 1.0) * n for m, n in months["n"].items()) / months["n"].sum()
    covered = sum(
        row["low"] <= truth.get(str(m), 1.0) / mean <= row["high"] for m, row in months.iterrows()
    )
    assert covered >= _enough(12), months.to_string()
    draft = found.scenario
    assert draft.time.start_date == "2027-01-01"
    assert draft.population.arrivals is not None
    assert draft.population.arrivals.profile == "arrivals_by_month"
    assert draft.profiles["arrivals_by_month"].by_month["jan"] > 2.0  # type: ignore[index]
