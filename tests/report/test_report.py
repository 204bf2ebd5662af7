"""`journey report`: a page for every shipped scenario, KPIs as in the kpis table, bad input."""

from __future__ import annotations

import math
import re
import struct
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import typer
from scipy import stats
from typer.testing import CliRunner

import optimise
import report
import sim
from sim import KPI_NAMES
from sim.cli import RUN_HOOKS
from sim.cli import kpi_table as print_kpis
from sim.metrics import kpi_bounds
from sim.model import compile_scenario
from sim.results import list_runs
from tests.report.conftest import ROOT, SCENARIOS, kpi_table, short

JOURNEY_CHARTS = {"sankey", "funnel", "occupancy", "retention", "money", "cost_by_touchpoint"}


def _expected(kpis: pa.Table, name: str, bounds: tuple[float, float]
              ) -> tuple[float, float, float]:
    """Mean and 95% interval inside the KPI's range, computed here independently of the
    report: Student-t on the logit (two finite ends) or log (a lower end) scale, mapped back."""
    values = np.asarray(kpis.column(name).to_numpy(zero_copy_only=False), dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    se = values.std(ddof=1) / math.sqrt(values.size)
    t = stats.t.ppf(0.975, values.size - 1)
    a, b = bounds
    if math.isfinite(a) and math.isfinite(b):
        u = (mean - a) / (b - a)
        if not 0 < u < 1:
            return mean, mean, mean
        g, h = math.log(u / (1 - u)), t * se / ((b - a) * u * (1 - u))
        return mean, a + (b - a) * stats.logistic.cdf(g - h), a + (b - a) * stats.logistic.cdf(
            g + h)
    if math.isfinite(a):
        if mean <= a:
            return mean, mean, mean
        return mean, a + (mean - a) * math.exp(-t * se / (mean - a)), \
            a + (mean - a) * math.exp(t * se / (mean - a))
    return mean, mean - t * se, mean + t * se


def _shown(text: str, currency: str) -> tuple[float, float]:
    """The number a reader sees in a KPI cell, in the KPI's own unit (a share as a
    fraction), and half the place value of its last digit: how far rounding for
    display may have moved it. Cells are written like `journey run` prints them
    (``71.2%``, ``€655,008``, ``1,234 CHF``, ``12.5 days``, ``34.2 pts``, ``0.0012``,
    ``1.235e-05``; ``–`` when undefined)."""
    if text == "–":
        return math.nan, 0.0
    number, scale = text.replace(",", ""), 1.0
    if number.endswith("%"):
        number, scale = number[:-1], 0.01
    for unit in (" days", " day", " pts", f" {currency}"):
        number = number.removesuffix(unit)
    number = number.translate({ord(c): None for c in "€$£¥"})
    if number.lstrip("+-") == "∞":
        return float(number.replace("∞", "inf")), 0.0
    mantissa, _, exponent = number.lower().partition("e")
    half = 0.5 * 10.0 ** (int(exponent or 0) - len(mantissa.partition(".")[2]))
    return float(number) * scale, half * scale


def _assert_kpis_match(page: str, kpis: pa.Table, scenario: sim.Scenario) -> None:
    rows = kpi_table(page)
    bounds = kpi_bounds(compile_scenario(scenario))
    currency = scenario.economics.currency
    assert list(rows) == [k for k in KPI_NAMES if k in kpis.column_names]
    assert {"conversion", "retention_90", "retention_180", "retention_365", "clv", "revenue",
            "cost", "roi", "referrals", "rating", "nps"} <= set(rows)
    for name in rows:
        for col, want in zip(("mean", "ci_low", "ci_high"),
                             _expected(kpis, name, bounds[name]), strict=True):
            value, text = rows[name][col]
            got = float(value)
            if math.isnan(want):
                assert math.isnan(got) and text == "–", (name, col)
                continue
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (name, col)
            # what a reader sees is the same number, rounded for display to its last digit
            shown, half_unit = _shown(text, currency)
            if math.isinf(want):
                assert shown == want, (name, col, text)
                continue
            assert abs(shown - want) <= half_unit + 1e-9, (name, col, text, want)


@pytest.mark.parametrize("name", [p.stem for p in SCENARIOS])
def test_report_for_every_shipped_scenario(name: str, shipped_runs: dict[str, Path],
                                           tmp_path: Path) -> None:
    folder = shipped_runs[name]
    out = tmp_path / "report.html"
    written = report.write_report(folder, out)
    assert written.path == out and out.is_file()
    # every journey chart its data allows (README, Reports), and why the others are absent
    scenario = written.run.scenario
    kpis = written.run.tables["kpis"]
    expected = {"sankey", "occupancy", "money"}
    if len(scenario.stages_of_kind("prospect") + scenario.stages_of_kind("customer")) >= 2:
        expected.add("funnel")
    if np.mean(kpis.column("acquired").to_numpy()) >= 20:
        expected.add("retention")
    if scenario.touchpoints or any(iv.enabled for iv in scenario.interventions.values()):
        expected.add("cost_by_touchpoint")
    assert set(written.charts) & JOURNEY_CHARTS == expected
    page = out.read_text()
    for absent in JOURNEY_CHARTS - expected:
        assert "Not shown — " in page, absent
    if written.run.table("queues") is not None:  # the event engine's capacity scenarios
        assert {"queue_waits", "queue_utilisation"} <= set(written.charts)
    assert kpis.num_rows == 2
    _assert_kpis_match(page, kpis, scenario)
    for key in written.charts:
        assert f'id="fig-{key}"' in page
    # plotly.js is inlined: no script or stylesheet is loaded from anywhere
    assert not re.search(r"<script[^>]*\bsrc=|<link[^>]*\bhref=", page)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files"


def test_kpis_equal_the_kpis_table_and_the_run_summary(tiny_run: tuple[Path, sim.RunResult],
                                                       tmp_path: Path) -> None:
    folder, result = tiny_run
    written = report.write_report(folder, tmp_path / "r.html")
    page = written.path.read_text()
    _assert_kpis_match(page, result.kpis, result.scenario)
    rows = kpi_table(page)
    for row in result.summary().to_pylist():  # what `journey run` printed
        assert float(rows[row["kpi"]]["mean"][0]) == pytest.approx(row["mean"], rel=1e-12,
                                                                   nan_ok=True)
    # ... and in the same words: each mean and interval as `journey run` writes them
    printed = print_kpis(result.summary(), "", result.scenario.economics.currency)
    for name, mean, interval in printed.cells:
        low, high = rows[name]["ci_low"][1], rows[name]["ci_high"][1]
        assert rows[name]["mean"][1] == mean, name
        assert (f"{low} … {high}" if low != "–" else low) == interval, name


def test_sankey_flows_add_up_to_the_flows_table(tiny_run: tuple[Path, sim.RunResult],
                                                tmp_path: Path) -> None:
    folder, result = tiny_run
    written = report.write_report(folder, tmp_path / "r.html")
    from report._charts import sankey

    fig = sankey(written.run)
    assert fig is not None
    first = fig.figure.data[0]  # all segments
    flows = result.flows.to_pandas()
    moved = flows[flows["kind"] == "transition"]
    labels = list(first.node.label)
    pairs = {(labels[s], labels[t]): v for s, t, v in
             zip(first.link.source, first.link.target, first.link.value, strict=True)}
    churn = moved[(moved["from_stage"] == "use") & (moved["to_stage"] == "churned")]
    assert pairs[("use (customer)", "churned (lost)")] == pytest.approx(
        churn["count"].sum() / 3)
    winback = moved[(moved["from_stage"] == "churned") & (moved["to_stage"] == "use")]
    assert pairs[("churned (lost)", "use (customer)")] == pytest.approx(
        winback["count"].sum() / 3)
    arrivals = flows[flows["kind"] == "arrival"]["count"].sum() / 3
    assert pairs[("arrivals", "aware (prospect)")] == pytest.approx(arrivals)
    # one Sankey per segment behind the menu, and their flows add up to the total
    assert len(fig.figure.data) == 1 + 2
    total = sum(sum(t.link.value) for t in fig.figure.data[1:])
    assert total == pytest.approx(sum(first.link.value))


def test_run_report_flag_writes_the_page(cli: typer.Typer, tmp_path: Path,
                                        tiny_scenario_text: str) -> None:
    file = tmp_path / "tiny.yaml"
    file.write_text(tiny_scenario_text)
    out = tmp_path / "results"
    # an earlier run of another variant in the same folder must not be mixed in
    sim.run(sim.load_scenario(tiny_scenario_text), seed=2, variant="other", out=out)
    res = CliRunner().invoke(cli, ["run", str(file), "--replicates", "2", "--out", str(out),
                                   "--seed", "3", "--quiet", "--report"])
    assert res.exit_code == 0, res.output
    page = out / "report-tiny.html"
    assert f"wrote report {page}" in res.stdout
    text = page.read_text()
    assert "<h2>Journey flows (Sankey)</h2>" in text and "variant base" in text
    assert len(kpi_table(text)) == len(KPI_NAMES)


def test_run_report_without_the_extra_says_so(cli: typer.Typer, tmp_path: Path,
                                              tiny_scenario_text: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(RUN_HOOKS, "report")
    file = tmp_path / "tiny.yaml"
    file.write_text(tiny_scenario_text)
    res = CliRunner().invoke(cli, ["run", str(file), "--out", str(tmp_path / "o"), "--report"])
    assert res.exit_code == 2
    assert res.stderr.strip() == ("--report needs the report extra (plotly, kaleido): "
                                  "pip install 'journey-engine[report]'")
    assert not (tmp_path / "o").exists(), "it refused before simulating"


def test_report_command_and_png(cli: typer.Typer, tiny_run: tuple[Path, sim.RunResult],
                                tmp_path: Path) -> None:
    folder, _ = tiny_run
    out = tmp_path / "page.html"
    slides = tmp_path / "slides"
    res = CliRunner().invoke(cli, ["report", str(folder), "--out", str(out), "--png",
                                   str(slides)])
    if res.exit_code != 0 and "needs Chrome or Chromium" in res.stderr:
        pytest.skip(f"no Chromium for kaleido: {res.stderr.strip()}")
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.stdout and out.is_file()
    pngs = sorted(p.name for p in slides.iterdir())
    assert pngs == sorted(f"{k}.png" for k in ["kpis", "sankey", "funnel", "occupancy",
                                               "retention", "money", "cost_by_touchpoint"])
    for name in pngs:
        data = (slides / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert (width, height) >= (1280, 720), name  # a 16:9 slide
        assert len(data) > 20_000, f"{name} looks empty"


@pytest.mark.parametrize("kind", ["missing", "empty", "file", "no_dataset", "corrupt"])
def test_bad_input_is_one_line_and_exit_2(cli: typer.Typer, tmp_path: Path, kind: str,
                                          tiny_run: tuple[Path, sim.RunResult]) -> None:
    target = tmp_path / "x"
    if kind == "empty":
        target.mkdir()
    elif kind == "file":
        target.write_text("not a dataset")
    elif kind == "no_dataset":
        (target / "kpis").mkdir(parents=True)
        (target / "kpis" / "notes.txt").write_text("hello")
    elif kind == "corrupt":
        import shutil

        shutil.copytree(tiny_run[0], target)
        part = next((target / "kpis").rglob("*.parquet"))
        part.write_bytes(b"PAR1 this is not parquet")
    res = CliRunner().invoke(cli, ["report", str(target), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(target) in lines[0], res.stderr
    assert "Traceback" not in res.output
    assert not (tmp_path / "r.html").exists()


def test_several_runs_must_be_chosen(cli: typer.Typer, tmp_path: Path,
                                     tiny_scenario: sim.Scenario) -> None:
    out = tmp_path / "ds"
    sim.run(tiny_scenario, seed=1, replicates=2, out=out)
    sim.run(tiny_scenario.apply(interventions=["more_email"]), seed=1, replicates=2,
            variant="email", out=out)
    res = CliRunner().invoke(cli, ["report", str(out)])
    assert res.exit_code == 2
    assert "holds several runs" in res.stderr and "variant email" in res.stderr
    res = CliRunner().invoke(cli, ["report", str(out), "--variant", "email"])
    assert res.exit_code == 0, res.output
    page = out / "report-tiny-email.html"
    assert page.is_file()
    run = report.load_run(out, variant="email")
    assert run.replicates == 2 and set(run.tables["kpis"].column("variant").to_pylist()) == {
        "email"}
    res = CliRunner().invoke(cli, ["report", str(out), "--variant", "nope"])
    assert res.exit_code == 2 and "no run in" in res.stderr
    # one variant beside the other, from the same folder
    res = CliRunner().invoke(cli, ["report", str(out), "--variant", "base", "--out",
                                   str(tmp_path / "both.html"), "--compare-variant", "email"])
    assert res.exit_code == 0, res.output
    deltas = kpi_table((tmp_path / "both.html").read_text(), "delta-table")
    assert float(deltas["cost"]["delta"][0]) > 0  # the email campaign costs money
    # a compared folder with several runs: the one of the same scenario is taken
    other = tmp_path / "other"
    sim.run(tiny_scenario.apply(overrides={"name": "tiny2"}), seed=1, out=other)
    sim.run(tiny_scenario, seed=1, out=other)
    written = report.write_report(out, tmp_path / "x.html", variant="base", compare=[other])
    assert written.path.is_file()


def test_entry_points_in_a_real_process(tmp_path: Path, tiny_scenario_text: str) -> None:
    """`journey run --report`, then `journey report`, as a user runs them (installed plugins)."""
    if not any(ep.name == "report" for ep in entry_points(group="journey.commands")):
        pytest.skip("the installed package metadata predates the report entry point "
                    "(pip install -e . refreshes it; .ci/run does)")
    file = tmp_path / "tiny.yaml"
    file.write_text(tiny_scenario_text)
    journey = [sys.executable, "-c", "from sim.cli import main; main()"]
    out = tmp_path / "results"
    proc = subprocess.run([*journey, "run", str(file), "--out", str(out), "--quiet",
                           "--replicates", "2", "--report"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report-tiny.html").is_file()
    proc = subprocess.run([*journey, "report", str(out), "--out", str(tmp_path / "r.html")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.html").is_file()


def test_one_replicate_has_no_intervals(tmp_path: Path, tiny_scenario: sim.Scenario) -> None:
    out = tmp_path / "ds"
    sim.run(tiny_scenario, seed=4, out=out)
    written = report.write_report(out)
    assert written.path == out / "report-tiny.html"
    rows = kpi_table(written.path.read_text())
    assert rows["conversion"]["ci_low"] == ("nan", "–")
    assert float(rows["conversion"]["mean"][0]) > 0
    assert "One replicate: no confidence band" in written.path.read_text()


def test_sim_never_imports_the_report() -> None:
    """DESIGN.md's layering: the report sits above sim; sim reaches it only through a hook."""
    import ast

    sim_root = Path(sim.__file__).parent
    for path in sim_root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] in ("report", "optimise")], path


def test_a_run_is_chosen_by_any_of_its_keys_and_the_error_lists_them(
        cli: typer.Typer, tmp_path: Path, tiny_scenario: sim.Scenario) -> None:
    out = tmp_path / "ds"
    base = sim.run(tiny_scenario, seed=1, replicates=2, out=out, population_scale=0.2)
    other = sim.run(tiny_scenario, seed=4, replicates=2, out=out, variant="slow",
                    engine="des", population_scale=0.1)
    res = CliRunner().invoke(cli, ["report", str(out)])
    assert res.exit_code == 2
    lines = res.stderr.splitlines()
    assert "--run, --scenario, --variant, --seed, --engine or --population-scale" in lines[0]
    listed = [line.strip() for line in lines[1:]]
    assert listed == [r.describe() for r in list_runs(out)]
    choices = (
        (["--run", other.run_id[:6]], {"run_id": other.run_id[:6]}, other),
        (["--engine", "fast"], {"engine": "fast"}, base),
        (["--population-scale", "0.1"], {"population_scale": 0.1}, other),
        (["--seed", "1"], {"seed": 1}, base),
    )
    for args, kwargs, want in choices:
        assert report.load_run(out, **kwargs).run_id == want.run_id  # type: ignore[arg-type]
        res = CliRunner().invoke(cli, ["report", str(out), *args, "--out",
                                       str(tmp_path / "r.html")])
        assert res.exit_code == 0, res.output
        assert f"run {want.run_id}" in (tmp_path / "r.html").read_text()


def test_the_page_says_the_scale_and_shows_full_population_counts(
        tmp_path: Path, tiny_scenario: sim.Scenario) -> None:
    out = tmp_path / "ds"
    result = sim.run(tiny_scenario, seed=1, replicates=2, out=out, population_scale=0.25)
    written = report.write_report(out, tmp_path / "r.html")
    page = written.path.read_text()
    assert "population scale 0.25 (KPIs, money and the charts' counts are for the " \
           "scenario's full population)" in page
    assert 'id="few-replicates"' in page
    # the funnel's first stage: simulated entrants / scale
    funnel = written.run.tables["occupancy"]
    start = sum(r["count"] for r in funnel.to_pylist() if r["step"] == 0) / 2
    assert result.population_scale == 0.25 and start > 0
    from report._charts import funnel as funnel_chart

    chart = funnel_chart(written.run)
    assert chart is not None
    placed = sum(float(trace.x[0]) for trace in chart.figure.data)
    entered = sum(r["count"] for r in result.flows.to_pylist()
                  if r["to_stage"] == "aware") / 2
    assert placed == pytest.approx((start + entered) / 0.25)


def test_a_sweep_variant_is_shown_by_its_values_and_sensitivity_has_a_section(
        tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    pytest.importorskip("SALib")
    scenario = short(sim.load_scenario(ROOT / "scenarios" / "dental_clinic.yaml"))
    variants = optimise.design({"touchpoints.care_tips_email.reach.use": [0.015, 0.1]})
    optimise.sweep(scenario, variants, out=tmp_path, population_scale=0.05, workers=1)
    written = report.write_report(tmp_path, tmp_path / "v.html", variant="v0001")
    assert written.run.label == "dental_clinic / v0001 (touchpoints.care_tips_email.reach.use=0.1)"
    assert "touchpoints.care_tips_email.reach.use=0.1" in written.path.read_text()
    optimise.sensitivity(scenario, {"touchpoints.care_tips_email.reach.use": (0.0, 0.2),
                                    "touchpoints.search_ads.reach.discover": (0.05, 0.2)},
                         method="morris", samples=2, kpis=["retention_365"], out=tmp_path,
                         population_scale=0.05, workers=1)
    written = report.write_report(tmp_path, tmp_path / "s.html", variant="m00000")
    assert "sensitivity_morris_retention_365" in written.charts


def test_an_attribution_has_a_section_with_truth_beside_the_path_methods(
        tmp_path: Path) -> None:
    scenario = short(sim.load_scenario(ROOT / "scenarios" / "cosmetic_clinic.yaml"))
    sim.run(scenario, out=tmp_path, population_scale=0.05, replicates=2)
    worth = optimise.attribute(scenario, kpis=["acquired", "revenue"], replicates=2,
                               population_scale=0.05, method="removal", out=tmp_path,
                               touchpoints=["consult", "review_site"])
    written = report.write_report(tmp_path, tmp_path / "a.html")
    assert "attribution_cosmetic_clinic" in written.charts
    assert "attribution_cosmetic_clinic_removal" in written.charts
    page = written.path.read_text()
    assert "truth beside the path methods" in page
    # the chart's bars are the written table's numbers
    side = {r["touchpoint"]: r for r in worth.side_by_side.to_pylist()}
    assert side["review_site"]["last_touch"] > 0
