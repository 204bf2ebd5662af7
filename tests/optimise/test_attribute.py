"""Attribution: counterfactual removal effects and Shapley values against theory and
their own identities; exact Markov removal effects against a hand computation; the
command, its files, its resumption and its errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import sim
from optimise import attribute, attribute_paths
from optimise._attribute._paths import PathSet, markov, path_attribution, read_paths
from sim.cli import load_commands

runner = CliRunner()

# One prospect stage with a single exit, so an agent still in it converts in a step
# with probability sigmoid(logit p + sum of the lifts of the touchpoints it met that
# step), each touchpoint met independently with its reach. ``quiet`` has no lift and
# no satisfaction effect: it changes nothing but the cost.
N, T, P = 20_000, 60, 0.005
LIFTS = {"web": (0.3, 0.5), "mail": (0.2, 0.8)}          # reach, lift on lead->customer
ADDITIVE = f"""\
name: additive
seed: 11
time: {{step_days: 1, horizon_days: {T}}}
population:
  initial:
    - {{stage: lead, count: {N}}}
stages:
  lead: {{kind: prospect, exits: {{customer: {P}}}}}
  customer: {{kind: customer, value: {{on_entry: 100}}}}
touchpoints:
  web: {{stages: [lead], reach: {LIFTS["web"][0]}, lift: {{lead->customer: {LIFTS["web"][1]}}},
        cost_per_exposure: 0.1}}
  mail: {{stages: [lead], reach: {LIFTS["mail"][0]},
         lift: {{lead->customer: {LIFTS["mail"][1]}}}, cost_per_exposure: 0.5}}
  quiet: {{stages: [lead], reach: 0.4, cost_per_exposure: 0.2}}
"""


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def converted(on: list[str]) -> float:
    """Expected conversions by the horizon with only the touchpoints ``on``: each step
    an agent still a lead converts with the mixture h over the independent exposures,
    so N (1 - (1 - h)^T) convert."""
    h = 0.0
    for combo in range(1 << len(on)):
        weight, lift = 1.0, 0.0
        for i, name in enumerate(on):
            reach, effect = LIFTS[name]
            if (combo >> i) & 1:
                weight *= reach
                lift += effect
            else:
                weight *= 1 - reach
        h += weight * sigmoid(math.log(P / (1 - P)) + lift)
    return N * (1 - (1 - h) ** T)


@pytest.fixture(scope="module")
def additive() -> sim.Scenario:
    return sim.load_scenario(ADDITIVE)


@pytest.fixture(scope="module")
def worth(additive: sim.Scenario) -> object:
    return attribute(additive, kpis=["acquired", "revenue", "cost", "conversion"],
                     replicates=6, method="both")


def same(a: object, b: object) -> bool:
    """Two tables hold the same values, bit for bit (NaN equal to NaN)."""
    def rows(t: object) -> list:
        return [{k: ("nan" if isinstance(v, float) and math.isnan(v) else v)
                 for k, v in r.items()} for r in t.to_pylist()]   # type: ignore[attr-defined]
    return rows(a) == rows(b)


def _removal(worth: object, name: str, kpi: str) -> dict:
    rows = [r for r in worth.removal.to_pylist()     # type: ignore[attr-defined]
            if r["name"] == name and r["kpi"] == kpi and r["segment"] is None]
    assert len(rows) == 1
    return rows[0]


def test_a_touchpoint_that_changes_nothing_has_an_effect_of_exactly_zero(worth: object
                                                                         ) -> None:
    for kpi in ("acquired", "revenue", "conversion"):
        row = _removal(worth, "quiet", kpi)
        assert row["effect"] == 0.0 and row["ci_low"] == 0.0 and row["ci_high"] == 0.0, row
    cost = _removal(worth, "quiet", "cost")
    # all it does is cost: its removal saves exactly its own spend
    assert cost["effect"] == pytest.approx(cost["cost"], rel=1e-12)
    assert cost["cost"] > 0
    shapley = [r for r in worth.shapley.to_pylist()      # type: ignore[attr-defined]
               if r["name"] == "quiet" and r["kpi"] == "acquired"]
    assert shapley[0]["value"] == 0.0


def test_removal_effects_match_the_analytic_difference(worth: object) -> None:
    # With common random numbers a lead that converts without the touchpoint converts
    # with it too (the same uniform, a higher probability), so the paired difference
    # counts the agents converted only with it: Binomial-like with q = effect / N per
    # agent, SE of the mean over R replicates sqrt(N q (1 - q) / R).
    replicates = 6
    for name in ("web", "mail"):
        expected = converted(["web", "mail"]) - converted(
            [n for n in ("web", "mail") if n != name])
        row = _removal(worth, name, "acquired")
        q = expected / N
        se = math.sqrt(N * q * (1 - q) / replicates)
        assert abs(row["effect"] - expected) < 4 * se, (name, row["effect"], expected, se)
        assert row["ci_low"] < expected < row["ci_high"] or abs(
            row["effect"] - expected) < 4 * se


def test_shapley_values_add_up_to_the_effect_of_all_touchpoints(worth: object) -> None:
    rows = worth.shapley.to_pylist()                    # type: ignore[attr-defined]
    for kpi in ("acquired", "revenue", "cost", "conversion"):
        mine = [r for r in rows if r["kpi"] == kpi and r["segment"] is None]
        assert {r["method"] for r in mine} == {"exact"}
        total = mine[0]["total"]
        assert sum(r["value"] for r in mine) == pytest.approx(total, rel=1e-12, abs=1e-9)
    # and the total is the difference all on - all off, against theory
    acquired = next(r for r in rows if r["kpi"] == "acquired" and r["segment"] is None)
    expected = converted(["web", "mail"]) - converted([])
    q = expected / N
    assert abs(acquired["total"] - expected) < 4 * math.sqrt(N * q * (1 - q) / 6)


def test_sampled_shapley_values_add_up_too(additive: sim.Scenario) -> None:
    worth = attribute(additive, kpis=["acquired"], replicates=2, method="shapley", orders=4,
                      population_scale=0.1)
    rows = [r for r in worth.shapley.to_pylist() if r["segment"] is None]
    assert {r["method"] for r in rows} == {"sampled"}
    assert sum(r["value"] for r in rows) == pytest.approx(rows[0]["total"], rel=1e-12)
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in rows)


def test_the_event_engine_attributes_the_same_way(additive: sim.Scenario) -> None:
    fast = attribute(additive, kpis=["acquired"], replicates=2, method="removal",
                     population_scale=0.05)
    des = attribute(additive, kpis=["acquired"], replicates=2, method="removal",
                    population_scale=0.05, engine="des")
    # without capacity limits both engines give the same numbers on the same seeds
    assert fast.removal.column("effect").to_pylist() == des.removal.column("effect").to_pylist()
    assert des.summary["engine"] == "des"


# ------------------------------------------------------------------- the path methods

HAND = """\
path,total_conversions,total_null
a > b,2,1
b,1,1
a,0,2
a > a > b,1,0
"""


def test_markov_removal_effects_equal_the_fundamental_matrix_by_hand(tmp_path: Path) -> None:
    # Transitions (weight conversions + nulls): start->a 6, start->b 2; a->b 4, a->a 1,
    # a->null 2; b->conversion 4, b->null 2. So from b 2/3 convert; from a
    # x = 4/7 * 2/3 + 1/7 x, x = 4/9; from start 6/8 * 4/9 + 2/8 * 2/3 = 1/2.
    # Without a: 2/8 * 2/3 = 1/6, removal effect 1 - (1/6)/(1/2) = 2/3; without b: 0, 1.
    file = tmp_path / "paths.csv"
    file.write_text(HAND)
    paths = read_paths(file)
    effects, p = markov(paths)
    assert p == pytest.approx(0.5, abs=1e-14)
    assert effects == pytest.approx({"a": 2 / 3, "b": 1.0}, abs=1e-14)
    table = {r["channel"]: r for r in path_attribution(paths).to_pylist()}
    assert table["a"]["share"] == pytest.approx(0.4, abs=1e-14)
    assert table["a"]["conversions"] == pytest.approx(1.6, abs=1e-13)
    assert table["b"]["conversions"] == pytest.approx(2.4, abs=1e-13)
    assert (table["a"]["last_touch"], table["b"]["last_touch"]) == (0.0, 4.0)
    assert (table["a"]["first_touch"], table["b"]["first_touch"]) == (3.0, 1.0)
    # a self-loop does not move absorption: collapsing repeats changes nothing at order 1
    assert markov(paths, collapse=True)[0] == pytest.approx(effects, abs=1e-14)
    # the same file twice: the same numbers, to the last bit (no Monte Carlo)
    assert attribute_paths(file).table.equals(attribute_paths(file).table)


def test_a_chain_as_long_as_the_paths_reproduces_each_paths_rate() -> None:
    # order >= the longest path: the states are whole prefixes, so P(conversion) is
    # the observed share and a removal loses exactly the conversions of the paths
    # holding the channel: a is on paths with 3 of the 4 conversions, b on all
    paths = PathSet([("a", "b"), ("b",), ("a",), ("a", "a", "b")],
                    np.array([2.0, 1.0, 0.0, 1.0]), np.array([1.0, 1.0, 2.0, 0.0]))
    effects, p = markov(paths, order=3)
    assert p == pytest.approx(4 / 8, abs=1e-14)
    assert effects == pytest.approx({"a": 3 / 4, "b": 1.0}, abs=1e-14)


@pytest.mark.parametrize(("text", "where"), [
    ("route,total_conversions\na,1\n", "p.csv:1: no column 'path'"),
    ("path,total_conversions\na > > b,1\n", "p.csv:2: path: 'a > > b' has an empty channel"),
    ("path,total_conversions\na,-1\n", "p.csv:2: total_conversions: '-1' is not a count"),
    ("path,total_conversions,total_null\na,1,x\n", "p.csv:2: total_null: 'x' is not a number"),
    ("path,total_conversions\n,1\n", "p.csv:2: path: the path is empty"),
    ("path,total_conversions\na,0\n", "p.csv:1: total_conversions: no path has a conversion"),
])
def test_a_bad_paths_file_gets_one_located_line(tmp_path: Path, text: str, where: str
                                                ) -> None:
    file = tmp_path / "p.csv"
    file.write_text(text)
    result = runner.invoke(load_commands(), ["attribute", "--paths", str(file)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{tmp_path}/{where}"), lines
    assert "Traceback" not in result.output


def test_the_paths_command_prints_and_writes_the_table(tmp_path: Path) -> None:
    file = tmp_path / "journeys.csv"
    file.write_text(HAND)
    result = runner.invoke(load_commands(), ["attribute", "--paths", str(file), "--out",
                                             str(tmp_path / "out"), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {r["channel"]: r["conversions"] for r in doc["channels"]} == pytest.approx(
        {"a": 1.6, "b": 2.4})
    written = pq.read_table(tmp_path / "out" / "attribute" / "journeys" / "paths.parquet")
    assert written.column_names[:4] == ["channel", "removal_effect", "share", "conversions"]


def test_scenario_and_paths_together_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "p.csv"
    file.write_text(HAND)
    result = runner.invoke(load_commands(), ["attribute", "x.yaml", "--paths", str(file)])
    assert result.exit_code == 2
    assert "--paths" in result.stderr and "not both" in result.stderr


def test_scenario_flags_are_refused_with_a_paths_file(tmp_path: Path) -> None:
    file = tmp_path / "p.csv"
    file.write_text(HAND)
    result = runner.invoke(load_commands(), ["attribute", "--paths", str(file),
                                             "--population-scale", "0.5"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"--paths {file}: --population-scale applies to a "
                                     f"scenario's attribution, not to a paths file")


def test_unknown_touchpoints_are_named_with_the_flag(tmp_path: Path) -> None:
    file = tmp_path / "a.yaml"
    file.write_text(ADDITIVE)
    result = runner.invoke(load_commands(), ["attribute", str(file), "--touchpoints",
                                             "web,mial"])
    assert result.exit_code == 2
    assert result.stderr.startswith("--touchpoints web,mial: unknown touchpoint 'mial'")
    assert "mail" in result.stderr


# ------------------------------------------------- simulated paths, files, resumption


def test_simulated_paths_count_every_acquired_customer(additive: sim.Scenario,
                                                       tmp_path: Path) -> None:
    worth = attribute(additive, kpis=["acquired"], replicates=2, method="removal",
                      population_scale=0.1, out=tmp_path)
    # every conversion is on a path or among the prospects no touchpoint reached
    acquired = _removal(worth, "web", "acquired")["base"]
    untouched = worth.summary["prospects_without_touchpoint"]["conversions"]
    counts = worth.path_counts.column("total_conversions").to_numpy().sum()
    assert counts + untouched == pytest.approx(acquired, rel=1e-12)
    # a touchpoint with no lift still gets path credit: the path methods cannot tell
    side = {r["touchpoint"]: r for r in worth.side_by_side.to_pylist()}
    assert side["quiet"]["removal_effect"] == 0.0
    assert side["quiet"]["markov"] > 0 and side["quiet"]["last_touch"] > 0
    folder = tmp_path / "attribute" / "additive"
    meta = pq.read_schema(folder / "removal.parquet").metadata
    assert meta[b"journey.scenario_hash"].decode() == additive.content_hash


def test_an_interrupted_attribution_resumes_with_the_same_numbers(additive: sim.Scenario,
                                                                   tmp_path: Path) -> None:
    first = attribute(additive, kpis=["acquired"], replicates=2, population_scale=0.1,
                      out=tmp_path)
    stored = sorted((tmp_path / "attribute" / "additive" / "coalitions").glob("*.parquet"))
    assert len(stored) == first.summary["coalitions"]
    for path in stored[::2]:          # as if the run had stopped before these
        path.unlink()
    again = attribute(additive, kpis=["acquired"], replicates=2, population_scale=0.1,
                      out=tmp_path)
    assert again.summary["reused_coalitions"] == len(stored) - len(stored[::2])
    assert same(again.removal, first.removal) and same(again.shapley, first.shapley)
    other = attribute(additive, kpis=["acquired"], replicates=2, population_scale=0.1,
                      seed=99, out=tmp_path)
    assert other.summary["replaced_coalitions"] == len(stored)


def test_the_command_prints_the_side_by_side_table(tmp_path: Path) -> None:
    file = tmp_path / "a.yaml"
    file.write_text(ADDITIVE)
    result = runner.invoke(load_commands(), [
        "attribute", str(file), "--population-scale", "0.05", "--replicates", "2",
        "--kpi", "acquired", "--out", str(tmp_path / "out"), "--segments"])
    assert result.exit_code == 0, result.output
    for text in ("removal effect", "Shapley", "Markov", "last touch", "first touch",
                 "quiet", "add up to", "side_by_side.parquet"):
        assert text in result.stdout, text


def test_an_enabled_intervention_gets_its_removal_effect(tiny_scenario: sim.Scenario) -> None:
    scenario = tiny_scenario.apply(["more_email"])
    worth = attribute(scenario, kpis=["churned", "cost"], replicates=2, method="removal",
                      population_scale=0.2)
    rows = [r for r in worth.removal.to_pylist()
            if r["kind"] == "intervention" and r["segment"] is None]
    assert {r["name"] for r in rows} == {"more_email"}
    by_kpi = {r["kpi"]: r for r in rows}
    # its own cost is its fixed cost; without it fewer e-mails are sent, so the run
    # without it costs less by that and by the e-mails it added
    assert by_kpi["cost"]["cost"] == pytest.approx(1000.0)
    assert by_kpi["cost"]["effect"] > 1000.0
    # the e-mails lower churn: switched off, more customers churn
    assert by_kpi["churned"]["effect"] < 0
    assert worth.summary["interventions"] == ["more_email"]
