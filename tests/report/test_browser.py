"""The report in a real headless Chromium: it draws, offline, with no console error."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import report
import sim
from tests.report.browser import Unavailable, chromium, render
from tests.report.conftest import HORIZON_DAYS, SCENARIOS


@pytest.fixture(scope="module")
def browser() -> str:
    """Path of the Chromium binary; skip, saying why, where there is none."""
    try:
        return chromium()
    except Unavailable as exc:
        pytest.skip(str(exc))


def _check(page: Path, tmp_path: Path, charts: list[str]) -> dict[str, object]:
    shot = tmp_path / "screenshot.png"
    seen = render(page, shot)
    assert seen.errors == [], seen.errors
    assert seen.requests == [], f"the page reached for the network: {seen.requests}"
    facts = seen.facts
    plots = {p["id"]: p for p in facts["plots"]}
    assert set(plots) == {f"fig-{k}" for k in charts}
    assert all(p["svg"] >= 1 for p in plots.values()), "a chart did not draw"
    assert facts["kpi_rows"] == len(sim.KPI_NAMES)
    assert shot.is_file() and shot.stat().st_size > 50_000
    return facts


def test_run_report_renders_in_chromium(browser: str, cli: typer.Typer, tmp_path: Path) -> None:
    """`journey run scenarios/<one>.yaml --report`, then the page in the browser."""
    shipped = next(p for p in SCENARIOS if p.stem == "cosmetic_clinic")
    scenario = sim.load_scenario(shipped).apply(overrides={"time.horizon_days": HORIZON_DAYS})
    file = tmp_path / "cosmetic_clinic.yaml"
    file.write_text(scenario.to_yaml())
    out = tmp_path / "results"
    res = CliRunner().invoke(cli, ["run", str(file), "--replicates", "2", "--population-scale",
                                   "0.05", "--out", str(out), "--quiet", "--report"])
    assert res.exit_code == 0, res.output
    page = out / "report-cosmetic_clinic.html"
    charts = ["sankey", "funnel", "occupancy", "retention", "money", "cost_by_touchpoint"]
    facts = _check(page, tmp_path, charts)
    plots = {p["id"]: p for p in facts["plots"]}  # type: ignore[attr-defined]
    assert facts["sankey_nodes"] == 3 + len(scenario.stages)
    assert facts["sankey_links"] > len(scenario.stages)
    assert plots["fig-sankey"]["types"] == ["sankey"]
    segments = len(scenario.segments)
    assert plots["fig-sankey"]["traces"] == 1 + segments          # filterable by segment
    assert plots["fig-sankey"]["menus"] == [1 + segments]
    assert plots["fig-occupancy"]["menus"] == [1 + segments]
    assert facts["retention_paths"] == 2                          # the band and the curve
    assert plots["fig-funnel"]["traces"] == segments


def test_page_with_every_section_renders(browser: str, full_dataset: tuple[Path, Path, object,
                                                                          object],
                                         tmp_path: Path) -> None:
    folder, other, _, _ = full_dataset
    written = report.write_report(folder, tmp_path / "all.html", compare=[other])
    facts = _check(written.path, tmp_path, written.charts)
    plots = {p["id"]: p for p in facts["plots"]}  # type: ignore[attr-defined]
    assert "table" in plots["fig-calibration_tiny_fit_parameters"]["types"]
    assert facts["sankey_nodes"] > 0
