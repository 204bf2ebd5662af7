"""Queues, optimisation, calibration and --compare: shown when present, with their numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import report
import sim
from report._compare import kpi_deltas
from report._data import ReportError
from tests.report.conftest import FIT


def test_every_section_is_shown_when_its_data_is_there(
        full_dataset: tuple[Path, Path, sim.RunResult, sim.RunResult], tmp_path: Path) -> None:
    folder, other, _, _ = full_dataset
    written = report.write_report(folder, tmp_path / "r.html", compare=[other])
    keys = set(written.charts)
    assert {"queue_waits", "queue_utilisation", "optimise_history_aftercare",
            "optimise_pareto_aftercare", "calibration_tiny_fit_survival",
            "calibration_tiny_fit_funnel", "calibration_tiny_fit_occupancy",
            "calibration_tiny_fit_parameters", "compare_kpis", "compare_retention",
            "compare_customers", "compare_money", "sankey", "retention"} <= keys
    assert "optimise_importances_aftercare" in keys or not json.loads(
        (folder / "optimise" / "aftercare" / "importances.json").read_text())


def test_without_extras_their_sections_are_absent(tiny_run: tuple[Path, sim.RunResult],
                                                  tmp_path: Path) -> None:
    written = report.write_report(tiny_run[0], tmp_path / "r.html")
    assert not [k for k in written.charts if k.startswith(("queue", "optimise", "calibration",
                                                           "compare"))]
    page = written.path.read_text()
    assert 'id="compare"' not in page and "Queue waits" not in page


def test_queue_charts_show_the_queues_table(
        full_dataset: tuple[Path, Path, sim.RunResult, sim.RunResult]) -> None:
    """Waits weighted by the requests served, averaged per bucket of steps, over replicates."""
    from report._extras import queue_charts

    folder, _, base, _ = full_dataset
    run = report.load_run(folder)
    charts = {c.key: c for c in queue_charts(run)}
    steps = base.scenario.steps
    size = int(np.ceil(steps / 60))
    assert steps % size == 0  # the synthetic table's buckets are whole
    s = np.arange(1, steps + 1)
    wait = np.array([1 + s / steps + 0.1 * r for r in range(3)])      # [rep, step], consult
    served = np.full_like(wait, 4.0)
    per_bucket = ((wait * served).reshape(3, -1, size).sum(axis=2)
                  / served.reshape(3, -1, size).sum(axis=2))
    waits = {t.name: t for t in charts["queue_waits"].figure.data}
    np.testing.assert_allclose(waits["consult: mean wait"].y, per_bucket.mean(axis=0))
    np.testing.assert_allclose(waits["consult: mean wait"].x,
                               np.arange(size, steps + 1, size))  # bucket ends, days
    phone = np.array([2 * (0.25 * (1 + s / steps) + 0.1 * r) for r in range(3)])
    np.testing.assert_allclose(waits["phone: 90th percentile wait"].y,
                               phone.reshape(3, -1, size).mean(axis=2).mean(axis=0))
    util = {t.name: t for t in charts["queue_utilisation"].figure.data}
    np.testing.assert_allclose(util["consult"].y, 100 * (0.5 + 0.1 + 0.2))
    note = charts["queue_waits"].note
    assert "consult: " in note and "abandoned" in note
    assert f"per {size:g} days" in charts["queue_waits"].figure.layout.title.subtitle.text


def test_calibration_shows_observed_fitted_and_projected(
        full_dataset: tuple[Path, Path, sim.RunResult, sim.RunResult]) -> None:
    from report._data import load_calibrations
    from report._extras import calibration_charts

    folder = full_dataset[0]
    charts = {c.key: c for cal in load_calibrations(folder) for c in calibration_charts(cal)}
    survival = {t.name: t for t in charts["calibration_tiny_fit_survival"].figure.data}
    np.testing.assert_allclose(survival["young: fitted"].x, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(survival["young: fitted"].y, FIT["fitted"][:5])
    np.testing.assert_allclose(survival["young: projected"].x, [5, 6, 7])
    np.testing.assert_allclose(survival["young: projected"].y, FIT["fitted"][5:8])
    assert survival["young: projected"].line.dash == "dash"
    np.testing.assert_allclose(survival["young: observed (held out)"].y, FIT["observed"][5:8])
    band = survival["young: projected: 95% CI"]
    np.testing.assert_allclose(sorted(band.y), sorted(FIT["low"][5:8] + FIT["high"][5:8]))
    funnel = {t.name: t for t in charts["calibration_tiny_fit_funnel"].figure.data}
    assert list(funnel["observed"].x) == ["aware", "use", "loyal"]
    params = charts["calibration_tiny_fit_parameters"].figure.data[0]
    assert list(params.cells.values[0]) == ["stages.use.exits.churned.p",
                                            "segments.young.share"]


def test_calibration_without_its_columns_is_refused(tmp_path: Path,
                                                    tiny_run: tuple[Path, sim.RunResult]
                                                    ) -> None:
    import shutil

    folder = tmp_path / "ds"
    shutil.copytree(tiny_run[0], folder)
    bad = folder / "calibrate" / "broken"
    bad.mkdir(parents=True)
    pq.write_table(pa.table({"target": ["survival"], "observed": [1.0]}), bad / "fit.parquet")
    with pytest.raises(ReportError, match="lacks the column"):
        report.write_report(folder, tmp_path / "r.html")


def test_optimisation_history_follows_the_trials(
        full_dataset: tuple[Path, Path, sim.RunResult, sim.RunResult]) -> None:
    from report._data import load_studies
    from report._extras import study_charts

    folder = full_dataset[0]
    (study,) = load_studies(folder)
    charts = {c.key: c for c in study_charts(study)}
    history = {t.name: t for t in charts["optimise_history_aftercare"].figure.data}
    trials = study.trials.to_pylist()
    done = [t for t in trials if t["state"] == "COMPLETE" and t["feasible"] is not False]
    assert sorted(history["feasible trial"].y) == sorted(t["value"] for t in done)
    best = history["best feasible so far"].y
    assert list(best) == sorted(best) and best[-1] == max(t["value"] for t in done)
    pareto = charts["optimise_pareto_aftercare"].figure.data[-1]
    assert list(pareto.customdata) == sorted(
        study.pareto.column("trial").to_pylist(),
        key=lambda n: study.pareto.to_pylist()[study.pareto.column("trial").to_pylist().index(
            n)]["cost"])


def test_compare_deltas_are_paired_differences(
        full_dataset: tuple[Path, Path, sim.RunResult, sim.RunResult], tmp_path: Path) -> None:
    from scipy import stats

    from tests.report.conftest import kpi_table

    folder, other, base, alt = full_dataset
    written = report.write_report(folder, tmp_path / "r.html", compare=[other])
    rows = kpi_table(written.path.read_text(), "delta-table")
    assert set(rows) == set(sim.KPI_NAMES)
    deltas = {d.kpi: d for d in kpi_deltas(report.load_run(folder), [report.load_run(other)])}
    for name in ("cost", "retention_90", "revenue"):
        a = np.asarray(base.kpis.column(name).to_numpy(), dtype=float)
        b = np.asarray(alt.kpis.column(name).to_numpy(), dtype=float)
        d = b - a  # same seeds: paired
        assert deltas[name].paired
        assert float(rows[name]["delta"][0]) == pytest.approx(d.mean())
        low, high = stats.t.interval(0.95, d.size - 1, loc=d.mean(),
                                     scale=d.std(ddof=1) / np.sqrt(d.size))
        assert (deltas[name].low, deltas[name].high) == pytest.approx((low, high))
    # the intervention costs money: its cost delta is positive and separated from zero
    assert deltas["cost"].low > 0
