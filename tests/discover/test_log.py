"""Reading a log and its mapping file: bad ones get one located line per problem (exit 2,
no traceback); good ones give a valid draft."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from discover import discover
from sim import DataError, ScenarioError
from sim.cli import load_commands

MAP = """\
name: tiny_shop
step_days: 1
stages: {browse: prospect, buy: customer, gone: lost}
touchpoints: [email]
events: {visit: browse}
ignore: [page_view]
"""

GOOD = """\
customer_id,day,event,segment
a,0,visit,web
a,1,email,web
a,3,buy,web
b,0,browse,shop
b,2,page_view,shop
b,5,gone,shop
c,4,browse,web
"""


def _files(tmp_path: Path, log: str, mapping: str = MAP) -> tuple[Path, Path]:
    (tmp_path / "log.csv").write_text(log)
    (tmp_path / "map.yaml").write_text(mapping)
    return tmp_path / "log.csv", tmp_path / "map.yaml"


def test_a_good_small_log_gives_a_valid_draft(tmp_path: Path) -> None:
    log, mapping = _files(tmp_path, GOOD)
    found = discover(log, mapping, out=tmp_path / "draft.yaml")
    assert set(found.scenario.stages) == {"browse", "buy", "gone"}
    assert found.scenario.stages["browse"].exits.keys() == {"buy", "gone"}
    assert found.scenario.time.horizon_days == 5
    assert (tmp_path / "draft.fit.parquet").exists()
    assert "# Not estimable from an event log" in found.text


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (
            GOOD + "d,2,signup,web\nd,3,signup,web\n",
            ["log.csv:9: event: unknown event 'signup' (2 rows;"],
        ),
        (
            GOOD + "a,2,email,web\n",
            [
                "log.csv:9: timestamp: time goes backwards for customer 'a': day 2 after day 3 "
                "(line 4)"
            ],
        ),
        (
            GOOD + "c,4,browse,web\n",
            [
                "log.csv:8: event: duplicate row: customer 'c', day 4, event 'browse' appears 2 "
                "times (also line 9)"
            ],
        ),
        (
            "customer_id,when,event\na,0,visit\n",
            ["log.csv:1: timestamp (or day): column 'timestamp (or day)' is missing"],
        ),
        (
            "client,day,what\na,0,visit\n",
            [
                "log.csv:1: customer_id: column 'customer_id' is missing",
                "log.csv:1: event: column 'event' is missing",
            ],
        ),
        (
            GOOD + "d,4,browse,web shop\n",
            ["log.csv:9: segment: segment 'web shop' (1 rows) is not a valid name"],
        ),
    ],
    ids=[
        "unknown event",
        "time backwards",
        "duplicate",
        "no time column",
        "two missing",
        "segment name",
    ],
)
def test_a_bad_log_gets_one_located_line_per_problem(
    tmp_path: Path, log: str, expected: list[str]
) -> None:
    path, mapping = _files(tmp_path, log)
    with pytest.raises(DataError) as err:
        discover(path, mapping)
    lines = str(err.value).splitlines()
    assert len(lines) == len(expected), lines
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(str(tmp_path / start)), line


def test_the_command_prints_the_lines_and_exits_2_without_a_traceback(tmp_path: Path) -> None:
    log, mapping = _files(tmp_path, GOOD + "a,2,email,web\nd,2,signup,web\n")
    res = CliRunner().invoke(
        load_commands(),
        ["discover", str(log), "--map", str(mapping), "--out", str(tmp_path / "d.yaml")],
    )
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in res.stderr
    assert "unknown event 'signup'" in lines[0] and "time goes backwards" in lines[1]
    assert not (tmp_path / "d.yaml").exists()


def test_a_bad_mapping_file_is_located(tmp_path: Path) -> None:
    log, mapping = _files(tmp_path, GOOD, MAP.replace("buy: customer", "buy: client"))
    with pytest.raises(ScenarioError) as err:
        discover(log, mapping)
    (line,) = str(err.value).splitlines()
    assert line.startswith(f"{mapping}:3:") and "stages.buy" in line


def test_a_start_date_that_is_no_date_is_located(tmp_path: Path) -> None:
    log, mapping = _files(tmp_path, GOOD, MAP + "start_date: 2027-02-30\n")
    with pytest.raises(ScenarioError) as err:
        discover(log, mapping)
    (line,) = str(err.value).splitlines()
    n = MAP.count("\n") + 1
    assert line.startswith(f"{mapping}:{n}:") and "2027-02-30 is not a calendar date" in line


def test_the_command_writes_the_draft_that_journey_validate_accepts(tmp_path: Path) -> None:
    log, mapping = _files(tmp_path, GOOD)
    app = load_commands()
    res = CliRunner().invoke(
        app,
        [
            "discover",
            str(log),
            "--map",
            str(mapping),
            "--out",
            str(tmp_path / "d.yaml"),
            "--step-days",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert f"wrote {tmp_path / 'd.yaml'}" in res.stdout
    res = CliRunner().invoke(app, ["validate", str(tmp_path / "d.yaml")])
    assert res.exit_code == 0, res.output


def test_timestamps_are_cut_into_steps_and_a_second_discovery_gives_the_same_draft(
    tmp_path: Path,
) -> None:
    stamped = (
        "customer_id,timestamp,event,segment\n"
        "a,2026-01-01 09:00:00,visit,web\n"
        "a,2026-01-02 10:00:00,email,web\n"
        "a,2026-01-04 08:00:00,buy,web\n"
        "b,2026-01-01 09:00:00,browse,shop\n"
        "b,2026-01-06 09:00:00,gone,shop\n"
        "c,2026-01-05 12:00:00,browse,web\n"
    )
    log, mapping = _files(tmp_path, stamped)
    first = discover(log, mapping)
    again = discover(log, mapping)
    assert first.text == again.text
    assert first.fit.equals(again.fit)
    # day 0 is the first event: a and b are the initial population, c arrived in step 5
    initial = {(p.stage, p.count, p.segment) for p in first.scenario.population.initial}
    assert initial == {("browse", 1, "web"), ("browse", 1, "shop")}
    assert first.scenario.entry_stage() == "browse"
    assert first.scenario.population.arrivals.per_day == pytest.approx(1 / 5, rel=1e-5)
    assert first.scenario.time.horizon_days == 5


def test_values_of_entry_events_become_the_stages_entry_values(tmp_path: Path) -> None:
    priced = "customer_id,day,event,segment,value\n" + "".join(
        f"{c},0,browse,web,\n{c},{d},buy,web,{v}\n"
        for c, d, v in (("a", 2, 100.0), ("b", 3, 140.0), ("c", 4, 120.0))
    )
    log, mapping = _files(tmp_path, priced)
    found = discover(log, mapping)
    assert found.scenario.stages["buy"].value.on_entry == pytest.approx(120.0)
    (row,) = found.fit.to_pandas().query("kind == 'value_on_entry'").itertuples()
    assert row.n == 3 and row.low < 120.0 < row.high


def test_the_installed_command_reports_a_bad_log_in_a_real_process(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    log, mapping = _files(tmp_path, GOOD + "c,4,browse,web\n")
    exe = shutil.which("journey", path=str(Path(sys.executable).parent)) or "journey"
    res = subprocess.run(
        [exe, "discover", str(log), "--map", str(mapping)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"{log}:8: event: duplicate row: customer 'c', day 4, event 'browse' appears 2 "
        "times (also line 9)"
    ]


def test_an_exposure_on_the_step_of_the_exit_counts_for_the_stage_left(tmp_path: Path) -> None:
    log, mapping = _files(tmp_path, GOOD.replace("a,1,email,web", "a,3,email,web"))
    found = discover(log, mapping)
    reach = found.fit.to_pandas().query("kind == 'reach' and segment == 'web'")
    # a's three steps in browse (1..3) hold its one e-mail; c arrived in step 4 and stays
    # to the end (steps 4 and 5): five customer-steps of web in browse
    assert reach[["stage", "n", "events"]].values.tolist() == [["browse", 5, 1]]
    # one exposed step, and it ended in an exit: no lift can be told from it
    assert found.discovery.find("lift") == []
    assert "lift not estimable" in found.text
