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
    # and leaves with probability 0.05 a day (no lift at all).
    rng = np.random.default_rng(7)
    n = 3000
    stay = rng.geometric(0.05, n)
    ids = np.arange(n).astype(str)
    entries = pd.DataFrame({"customer_id": ids, "day": 0, "event": "trial"})
    mails = pd.DataFrame({"customer_id": ids, "day": 1, "event": "welcome_mail"})
    done = stay < 60
    exits = pd.DataFrame({"customer_id": ids[done], "day": stay[done], "event": "paid"})
    log = pd.concat([entries, mails, exits]).sort_values(["customer_id", "day"], kind="stable")
    log.to_parquet(tmp_path / "log.parquet")
    (tmp_path / "map.yaml").write_text(
        "stages: {trial: prospect, paid: customer}\ntouchpoints: [welcome_mail]\nend_day: 60\n"
    )
    found = discover(tmp_path / "log.parquet", tmp_path / "map.yaml")
    assert any("welcome_mail in trial depends on the dwell" in w for w in found.warnings)
    assert "# warning: exposure to welcome_mail" in found.text


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
