"""Fixtures of the report tests: small runs of every shipped scenario, and the CLI."""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer

import optimise
import sim
from sim.cli import app
from sim.results import RunKey, run_metadata, with_keys, write_run_table

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
HORIZON_DAYS = 400
"""Short horizon for the shipped scenarios: long enough for retention at 365 days."""


def short(scenario: sim.Scenario) -> sim.Scenario:
    """The scenario over about HORIZON_DAYS (whole steps, at least two; never longer)."""
    step = scenario.time.step_days
    horizon = step * max(2, math.ceil(HORIZON_DAYS / step))
    return scenario.apply(overrides={"time.horizon_days": min(horizon,
                                                              scenario.time.horizon_days)})


def engine_of(scenario: sim.Scenario) -> str:
    """The engine a scenario runs on: the event engine where a touchpoint has a capacity."""
    queued = any(getattr(tp, "queued", tp.capacity is not None)
                 for tp in scenario.touchpoints.values())
    return "des" if queued else "fast"


@pytest.fixture(scope="session")
def cli() -> typer.Typer:
    """The `journey` app with `report` registered.

    The entry point registers it in an installed tree; an editable install
    made before the report package existed lacks it, so register it here
    (``register`` is idempotent).
    """
    from report.cli import register

    register(app)
    return app


@pytest.fixture(scope="session")
def shipped_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each shipped scenario run at a small scale (2 replicates), one dataset folder each."""
    out = {}
    for path in SCENARIOS:
        scenario = short(sim.load_scenario(path))
        folder = tmp_path_factory.mktemp(f"ds-{path.stem}")
        sim.run(scenario, replicates=2, population_scale=0.05, seed=11, out=folder,
                engine=engine_of(scenario))
        out[path.stem] = folder
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_scenario: sim.Scenario
             ) -> tuple[Path, sim.RunResult]:
    """The tiny scenario, 3 replicates, written to its own dataset folder."""
    folder = tmp_path_factory.mktemp("ds-tiny")
    result = sim.run(tiny_scenario, replicates=3, seed=5, out=folder)
    return folder, result


AFTERCARE = """\
name: aftercare
seed: 3
time: {horizon_days: 200}
population:
  arrivals: {per_day: 6}
stages:
  prospect: {kind: prospect, exits: {customer: {mean_days: 4}}}
  customer: {kind: customer, exits: {churned: {mean_days: 120}}}
  churned: {kind: lost}
touchpoints:
  aftercare_call:
    stages: [customer]
    reach: 0.0
    lift: {customer->churned: -2.5}
    cost_per_exposure: 4.0
optimise:
  objective: {kpi: retention_90}
  second_objective: {kpi: cost, direction: minimize}
  search:
    - {path: touchpoints.aftercare_call.reach.customer, low: 0.0, high: 0.6}
  trials: 6
  replicates: 2
"""


def queues_table(steps: int, replicate: int) -> pa.Table:
    """A synthetic event-engine queues table: two touchpoints, known values."""
    rng = np.random.default_rng(replicate)
    rows: dict[str, list[object]] = {k: [] for k in (
        "step", "day", "touchpoint", "arrivals", "served", "abandoned", "queue_length",
        "mean_wait_days", "p90_wait_days", "utilisation")}
    for tp, scale in (("consult", 1.0), ("phone", 0.25)):
        for step in range(1, steps + 1):
            wait = scale * (1 + step / steps) + 0.1 * replicate
            rows["step"].append(step)
            rows["day"].append(float(step))
            rows["touchpoint"].append(tp)
            rows["arrivals"].append(int(rng.integers(5, 10)))
            rows["served"].append(4)
            rows["abandoned"].append(1)
            rows["queue_length"].append(int(rng.integers(0, 5)))
            rows["mean_wait_days"].append(wait)
            rows["p90_wait_days"].append(2 * wait)
            rows["utilisation"].append(min(1.0, 0.5 + 0.1 * replicate + 0.2 * scale))
    return pa.table(rows)


def write_queues(folder: Path, result: sim.RunResult) -> None:
    """Write a queues table beside the run through sim.results' writer."""
    scen = result.scenario
    for r, seed in enumerate(result.seeds):
        key = RunKey(scen.name, "base", r, seed, result.run_id)
        meta = run_metadata(scenario_yaml=scen.to_yaml(), scenario_hash=scen.content_hash,
                            seed=seed, base_seed=result.seed, replicate=r, engine="des",
                            rng="test", version="test", population_scale=1.0,
                            run_id=result.run_id)
        write_run_table(folder, "queues", with_keys(queues_table(scen.steps, r), key, meta), key)


FIT = {
    "target": ["survival"] * 8 + ["funnel"] * 3 + ["occupancy"] * 4,
    "segment": ["young"] * 8 + [None] * 3 + ["old"] * 4,
    "stage": [None] * 8 + ["aware", "use", "loyal"] + ["use"] * 4,
    "x": [0.0, 1, 2, 3, 4, 5, 6, 7] + [None] * 3 + [0.0, 10, 20, 30],
    "observed": [1.0, 0.9, 0.82, 0.75, 0.7, 0.64, 0.6, 0.57, 1000, 300, 120, 50, 60, 64, 70],
    "fitted": [1.0, 0.91, 0.83, 0.76, 0.69, 0.64, 0.59, 0.55, 990, 310, 115, 52, 59, 66, 69],
    "low": [1.0, 0.88, 0.8, 0.72, 0.65, 0.6, 0.54, 0.5, 950, 290, 100, 48, 55, 61, 60],
    "high": [1.0, 0.94, 0.86, 0.8, 0.73, 0.69, 0.64, 0.6, 1030, 330, 130, 56, 63, 71, 78],
    "role": ["fit"] * 5 + ["holdout"] * 3 + ["fit", "fit", "holdout"] + ["fit"] * 3
    + ["holdout"],
}


def write_calibration(folder: Path) -> Path:
    """A small calibration output as `journey calibrate` writes it."""
    cal = folder / "calibrate" / "tiny_fit"
    cal.mkdir(parents=True)
    pq.write_table(pa.table(FIT, schema=pa.schema([
        ("target", pa.string()), ("segment", pa.string()), ("stage", pa.string()),
        ("x", pa.float64()), ("observed", pa.float64()), ("fitted", pa.float64()),
        ("low", pa.float64()), ("high", pa.float64()), ("role", pa.string())])),
        cal / "fit.parquet")
    pq.write_table(pa.table({"parameter": ["stages.use.exits.churned.p", "segments.young.share"],
                             "value": [0.011, 0.58], "low": [0.009, 0.52],
                             "high": [0.013, 0.64]}), cal / "parameters.parquet")
    return cal


@pytest.fixture(scope="session")
def full_dataset(tmp_path_factory: pytest.TempPathFactory, tiny_scenario: sim.Scenario
                 ) -> tuple[Path, Path, sim.RunResult, sim.RunResult]:
    """A run with queues, an optimisation study and a calibration beside it; an alternative."""
    folder = tmp_path_factory.mktemp("full")
    short = tiny_scenario.apply(overrides={"time.horizon_days": 200})
    base = sim.run(short, replicates=3, seed=9, out=folder)
    write_queues(folder, base)
    write_calibration(folder)
    optimise.optimise(sim.load_scenario(AFTERCARE), out=folder, seed=1, top_k=2,
                      reeval_replicates=3)
    other = tmp_path_factory.mktemp("alternative")
    alt = sim.run(short.apply(interventions=["more_email"]), replicates=3, seed=9,
                  variant="more_email", out=other)
    return folder, other, base, alt


class KpiTable(HTMLParser):
    """Rows of the page's KPI table: kpi -> {column class: (data-value, shown text)}."""

    def __init__(self, table_id: str = "kpi-table") -> None:
        super().__init__()
        self.table_id = table_id
        self.inside = False
        self.rows: dict[str, dict[str, tuple[str, str]]] = {}
        self._row: str | None = None
        self._cell: tuple[str, str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag == "tr" and a.get("data-kpi"):
            self._row = a["data-kpi"]
            self.rows[self._row or ""] = {}
        elif self.inside and tag == "td" and self._row and a.get("data-value") is not None:
            self._cell = ((a.get("class") or "").split(" ")[0], a["data-value"] or "")
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            cls, value = self._cell
            self.rows[self._row][cls] = (value, "".join(self._text))
            self._cell = None
        elif tag == "table" and self.inside:
            self.inside = False


def kpi_table(html_text: str, table_id: str = "kpi-table") -> dict[str, dict[str, tuple[str, str]]]:
    """Parse the KPI (or delta) table of a report page."""
    parser = KpiTable(table_id)
    parser.feed(html_text)
    return parser.rows
