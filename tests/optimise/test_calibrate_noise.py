"""Calibration's simulation noise: the Monte Carlo standard errors it reports, the
population scale it chooses from the data, and where both are shown.

The cohorts follow the shifted-beta-geometric model, whose likelihood is closed
form (Fader & Hardie 2007): the exact maximum likelihood is computed here with
scipy, and every tolerance is derived from a standard error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats
from typer.testing import CliRunner

import optimise
from optimise._calibrate._noise import RHO, nice
from sim.cli import app
from sim.display import format_number
from tests.optimise.sbg import SHIPPED, sbg_mle, sbg_nll, survival

SMALL = """\
name: small_cohort
seed: 3
time: {step_days: 365, horizon_days: 1825}
population:
  initial: [{stage: active, count: 400}]
segments:
  all:
    share: 1.0
    heterogeneity:
      active->churned: {distribution: beta, a: 1.0, b: 2.0}
stages:
  active: {kind: customer, exits: {churned: 0.3}}
  churned: {kind: lost}
calibrate:
  parameters:
    - {path: "segments.all.heterogeneity.active->churned.a", type: log, low: 0.1, high: 10}
    - {path: "segments.all.heterogeneity.active->churned.b", type: log, low: 0.1, high: 20}
  observed:
    survival: {file: survival.csv}
  trials: 20
  replicates: 1
  population_scale: 16
  intervals: none
"""


def _mle(active: np.ndarray) -> np.ndarray:
    """The exact maximum-likelihood (a, b) of cohort counts."""
    return sbg_mle(active)[0]


def _small_cohort(tmp_path: Path) -> Path:
    """A 400-customer cohort whose counts are its sBG expectation at a = 0.8, b = 2."""
    active = np.round(400 * survival(0.8, 2.0, 5))
    (tmp_path / "survival.csv").write_text("period,active\n" + "".join(
        f"{t},{int(v)}\n" for t, v in enumerate(active)))
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


def test_the_monte_carlo_error_matches_the_spread_of_fits_over_seed_sets(
        tmp_path: Path) -> None:
    """The reported Monte Carlo standard error (K = 16 refits) against the standard
    deviation of n = 16 whole calibrations on independent seeds.

    Both are standard deviations estimated from few values: an SD from m values has
    relative standard error about 1/sqrt(2(m - 1)), so log(reported / spread) has
    standard error sqrt(1/(2(K-1)) + 1/(2(n-1))) ≈ 0.26; we allow three (a factor
    of about 2.2 either way).
    """
    scenario = _small_cohort(tmp_path)
    k_seeds, n_fits = 16, 16
    result = optimise.calibrate(scenario, out=tmp_path / "mc", mc_seeds=k_seeds)
    assert result.population_scale_source == "block" and result.population_scale == 16
    mc = result.monte_carlo
    assert mc is not None and mc.seeds == k_seeds and len(mc.refits) == k_seeds
    fits = [optimise.calibrate(scenario, out=tmp_path / "spread", seed=s, mc_seeds=0).values
            for s in range(1, n_fits + 1)]
    tol = 3 * math.sqrt(1 / (2 * (k_seeds - 1)) + 1 / (2 * (n_fits - 1)))
    for p in result.parameters:
        spread = float(np.std([f[p.path] for f in fits], ddof=1))
        assert p.mc_se == mc.se[p.path] > 0
        # one fit's error (the spread of the refits) against the spread of whole fits
        single = mc.single_se[p.path]
        assert abs(math.log(single / spread)) < tol, (p.path, single, spread)
        # the reported value is the mean of the fit and its K refits, its error theirs
        # over sqrt(K + 1)
        every = np.array([mc.first[p.path], *(v[p.path] for v in mc.refits)])
        assert p.value == pytest.approx(every.mean(), rel=1e-12)
        assert p.mc_se == pytest.approx(every.std(ddof=1) / math.sqrt(k_seeds + 1))
    # the files say the same: parameters, fit rows (projections too), summary
    folder = tmp_path / "mc" / "calibrate" / result.study_name
    params = pq.read_table(folder / "parameters.parquet").to_pylist()
    assert [r["mc_se"] for r in params] == [p.mc_se for p in result.parameters]
    fit = pq.read_table(folder / "fit.parquet")
    assert fit.column("mc_se").to_pylist() == pytest.approx(list(mc.fit_se))
    assert fit.column("mc_se").to_pylist()[0] == 0          # period 0: the whole cohort
    assert all(v > 0 for v in fit.column("mc_se").to_pylist()[1:])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["population_scale"] == 16 and summary["population_scale_source"] == "block"
    assert summary["mc_seeds"] == k_seeds
    assert summary["monte_carlo"]["se"] == mc.se
    assert [p["mc_se"] for p in summary["parameters"]] == [p.mc_se for p in result.parameters]
    # the report's calibration section shows them beside the intervals, with the scale
    from report._data import load_calibrations
    from report._extras import calibration_charts

    charts = {c.key: c for cal in load_calibrations(tmp_path / "mc")
              for c in calibration_charts(cal)}
    table = charts[f"calibration_{result.study_name}_parameters"]
    header = list(table.figure.data[0].header.values)
    assert header[-1] == "MC s.e."
    shown = list(table.figure.data[0].cells.values[-1])
    assert shown == [format_number(p.mc_se, 3) for p in result.parameters]
    assert "16 other seed sets" in table.note and "population scale 16 (block)" in table.note
    # the refits ran on seed sets of their own, cached apart for a resume
    assert (folder / "evaluations-mc.jsonl").is_file()
    again = optimise.calibrate(scenario, out=tmp_path / "mc", mc_seeds=k_seeds)
    assert again.monte_carlo is not None and again.monte_carlo.se == mc.se


def test_material_noise_is_said_with_the_scale_that_brings_it_under(tmp_path: Path) -> None:
    """At scale 0.1 and one replicate the simulation has a tenth of the data's customers:
    one fit's Monte Carlo error is sqrt(10) ≈ 3.2 data standard errors, the mean of the
    fit and its 4 refits' 3.2 / sqrt(5) ≈ 1.4, far above a quarter of the interval's
    half-width (0.25 · 1.96 ≈ 0.5 of one)."""
    scenario = _small_cohort(tmp_path)
    result = optimise.calibrate(scenario, out=tmp_path, population_scale=0.1, mc_seeds=4,
                                intervals="profile")
    mc = result.monte_carlo
    assert mc is not None and mc.scale_needed is not None and mc.scale_needed > 0.1
    assert any("material share" in n for n in mc.notes), mc.notes
    # noise ∝ 1/sqrt(scale): the scale that brings each share under a quarter
    needed = max(nice(0.1 * (p.mc_se / ((p.high - p.low) / 2) / 0.25) ** 2, up=True)
                 for p in result.parameters)
    assert mc.scale_needed == needed
    assert any(f"population_scale {needed:g} would bring it under 25%" in n for n in mc.notes)
    assert result.population_scale_source == "flag"


def test_the_automatic_scale_brings_the_fit_within_its_stated_tolerance(
        tmp_path: Path) -> None:
    """The shipped cohort, no population_scale: the scale is chosen so that N >= n / RHO;
    its stated Monte Carlo error is sqrt(n / N) data standard errors. A fitted value
    lies within three such errors of the exact maximum likelihood (plus the refinement's
    tolerance: 2e-3 of the log range)."""
    result = optimise.calibrate(SHIPPED, fit_periods=7, out=tmp_path, trials=20, mc_seeds=0,
                                intervals="none")
    assert result.population_scale_source == "automatic"
    # 1,000 observed customers; 1,000 simulated per replicate at scale 1, 2 replicates
    assert result.population_scale == nice(1000 / (RHO * 2000), up=True) == 50
    folder = tmp_path / "calibrate" / result.study_name
    summary = json.loads((folder / "summary.json").read_text())
    noise = summary["expected_mc_share_of_data_se"]
    assert noise == pytest.approx(math.sqrt(1000 / (50 * 2000)))
    assert summary["population_scale"] == 50 and "1,000 customers" in \
        summary["population_scale_reason"]
    active = np.array([1000, 631, 468, 382, 326, 289, 262, 241], float)
    mle = _mle(active)
    # the data standard errors of the exact fit (Fader & Hardie 2007): from the
    # observed information of log a, log b, by finite differences of the exact nll
    se = _data_se(active, mle)
    for j, p in enumerate(result.parameters):
        tol = 3 * noise * se[j] + p.value * 2e-3 * math.log(20 / 0.05 if j == 0 else 50 / 0.05)
        assert abs(p.value - mle[j]) < tol, (p.path, p.value, mle[j], tol)


def _data_se(active: np.ndarray, mle: np.ndarray) -> np.ndarray:
    """Standard errors of a, b at the exact MLE: the inverse observed information."""

    def nll(x: np.ndarray) -> float:
        return sbg_nll(*np.exp(x), active)

    x0, h = np.log(mle), 1e-4
    hess = np.empty((2, 2))
    for i in range(2):
        for j in range(2):
            e_i, e_j = np.eye(2)[i] * h, np.eye(2)[j] * h
            hess[i, j] = (nll(x0 + e_i + e_j) - nll(x0 + e_i - e_j) - nll(x0 - e_i + e_j)
                          + nll(x0 - e_i - e_j)) / (4 * h * h)
    return mle * np.sqrt(np.diag(np.linalg.inv(hess)))        # delta method: a = exp(x)


def test_the_command_on_the_shipped_cohort_lands_within_its_monte_carlo_error(
        tmp_path: Path) -> None:
    """``journey calibrate scenarios/subscription_cohort.yaml``, nothing else: it says
    which scale it chose, and each fitted value lies within its reported Monte Carlo
    error of the exact sBG maximum likelihood of the five fitted periods: the fit's
    distance over its standard error, estimated from K refits, is Student's t with
    K - 1 degrees of freedom; we allow its 99% point (3.5 for K = 8), so that a fixed
    seed fails one time in a hundred, not one in twenty."""
    res = CliRunner().invoke(app, ["calibrate", str(SHIPPED), "--out", str(tmp_path),
                                   "--quiet", "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["population_scale_source"] == "automatic" and doc["population_scale"] == 50
    k = doc["monte_carlo"]["seed_sets"]
    assert k == 8
    mle = _mle(np.array([1000, 631, 468, 382, 326, 289], float))
    # the value is the mean of K + 1 fits, its s.e. from their spread (K degrees of
    # freedom): the exact MLE lies within the 95% Monte Carlo interval it implies
    t = float(stats.t.ppf(0.975, k))
    for row, exact in zip(doc["parameters"], mle, strict=True):
        assert abs(row["value"] - exact) < t * row["mc_se"], (row, exact)
    # people read the choice and the errors (the same study: it resumes from its files)
    table = CliRunner().invoke(app, ["calibrate", str(SHIPPED), "--out", str(tmp_path),
                                     "--quiet"])
    assert "population scale 50 (automatic): chosen from the data" in table.output
    assert "MC s.e." in table.output and "simulation noise" in table.output
    assert any(line.startswith("hold-out survival mean abs error: ") and "(MC s.e. " in line
               for line in table.output.splitlines())


@pytest.mark.parametrize(("flag", "value", "why"), [
    ("--mc-seeds", "1", "must be 0 (none) or a whole number >= 2"),
    ("--mc-seeds", "-3", "must be 0 (none) or a whole number >= 2"),
    ("--time-budget", "0", "must be a number of seconds > 0"),
    ("--time-budget", "-5", "must be a number of seconds > 0"),
])
def test_bad_noise_flags_are_one_line_and_exit_2(tmp_path: Path, flag: str, value: str,
                                                 why: str) -> None:
    res = CliRunner().invoke(app, ["calibrate", str(SHIPPED), flag, value, "--out",
                                   str(tmp_path), "--quiet"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"{flag} {value}: {why}"), res.output
    assert "Traceback" not in res.output


def test_bad_noise_arguments_are_refused(tmp_path: Path) -> None:
    import sim

    with pytest.raises(sim.SimError, match="mc_seeds must be 0"):
        optimise.calibrate(SHIPPED, out=tmp_path, mc_seeds=1)
    with pytest.raises(sim.SimError, match="time_budget must be"):
        optimise.calibrate(SHIPPED, out=tmp_path, time_budget=-1.0)


def test_a_tight_time_budget_caps_the_scale_and_says_so(tmp_path: Path) -> None:
    result = optimise.calibrate(SHIPPED, out=tmp_path, trials=2, intervals="none",
                                mc_seeds=0, time_budget=1e-3)
    assert result.population_scale_source == "automatic"
    assert result.population_scale == 1            # never below 1 for the budget's sake
    assert "capped at 1 by the time budget" in result.population_scale_reason


def test_nice_rounds_to_one_two_five() -> None:
    assert [nice(x, up=True) for x in (0.3, 1, 1.01, 3, 20, 21, 99)] == \
        [0.5, 1, 2, 5, 20, 50, 100]
    assert [nice(x, up=False) for x in (0.3, 1, 1.99, 3, 20, 21, 99)] == \
        [0.2, 1, 1, 2, 20, 20, 50]
