"""The report's Discovery section: a draft's log against the draft's own runs."""

from __future__ import annotations

from pathlib import Path

import sim
from discover import discover
from report import write_report

SHOP = """\
name: shop
time: {step_days: 1, horizon_days: 60}
population:
  initial: [{stage: active, count: 400}]
  arrivals: {per_day: 5, stage: browsing}
stages:
  browsing: {kind: prospect, exits: {active: 0.05, gone: 0.02}}
  active: {kind: customer, exits: {gone: 0.01}}
  gone: {kind: lost}
"""


def test_a_run_of_a_checked_draft_reports_the_log_against_the_draft(tmp_path: Path) -> None:
    sim.run(sim.load_scenario(SHOP), seed=2, events=True, out=tmp_path / "log")
    (tmp_path / "map.yaml").write_text(
        "name: shop_draft\nstages: {browsing: prospect, active: customer, gone: lost}\n"
    )
    root = tmp_path / "results"
    found = discover(
        tmp_path / "log" / "events",
        tmp_path / "map.yaml",
        check=3,
        out=root / "discover" / "shop_draft.yaml",
    )
    assert found.check is not None
    sim.run(found.scenario, out=root)
    written = write_report(root)
    assert "discovery_occupancy_shop_draft" in written.charts
    assert "discovery_survival_shop_draft" in written.charts
    page = written.path.read_text()
    assert "Survival of the initial cohort" in page and "the log against its draft" in page
