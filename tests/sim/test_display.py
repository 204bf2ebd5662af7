"""`sim.display`: one way to write numbers, units, counts and tables in every command."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

import sim
from sim.display import (
    Table,
    format_interval,
    format_kpi,
    format_number,
    format_pm,
    plural,
    render_csv,
    render_json,
    render_plain,
)


@pytest.mark.parametrize(("value", "text"), [
    (655008.4, "655,008"), (3.25e5, "325,000"), (12.3456, "12.35"), (0.012346, "0.01235"),
    (7, "7"), (7.0, "7"), (-0.5, "-0.5"), (0.0, "0"), (-0.0, "0"), (999.96, "1,000"),
    (2.5e-7, "2.5e-07"), (3e16, "3e+16"), (math.nan, "–"), (None, "–"), (math.inf, "∞"),
])
def test_numbers_have_separators_and_four_significant_digits(value: float, text: str) -> None:
    assert format_number(value) == text


def test_a_difference_carries_its_sign() -> None:
    assert format_number(2.5, signed=True) == "+2.5"
    assert format_number(-2.5, signed=True) == "-2.5"
    assert format_number(0, signed=True) == "0"


@pytest.mark.parametrize(("kpi", "value", "text"), [
    ("conversion", 0.71234, "71.2%"),
    ("retention_365", 1.0, "100%"),
    ("retention_30", 0.5, "50%"),          # any retention lag is a share
    ("served_within_target", 0.25, "25%"),
    ("abandonment", 0.031, "3.1%"),
    ("revenue", 655008.4, "€655,008"),
    ("cost", -12.5, "-€12.5"),
    ("clv", 355.123, "€355.1"),
    ("median_days_to_convert", 1.0, "1 day"),
    ("mean_wait_days", 2.5, "2.5 days"),
    ("acquired", 6104.0, "6,104"),
    ("nps", 12.345, "12.3 pts"),
    ("roi", 148.23, "148.2"),
    ("conversion", math.nan, "–"),
])
def test_every_kpi_reads_in_its_unit(kpi: str, value: float, text: str) -> None:
    assert format_kpi(kpi, value, "EUR") == text


def test_every_kpi_has_a_kind() -> None:
    from sim._kpi_catalogue import KPI_KINDS

    assert set(KPI_KINDS) == set(sim.KPI_NAMES)


def test_money_uses_the_scenario_currency() -> None:
    assert format_kpi("revenue", 1234.5, "USD") == "$1,234"
    assert format_kpi("revenue", 1234.5, "CHF") == "1,234 CHF"


def test_differences_of_shares_are_percentage_points() -> None:
    assert format_kpi("retention_365", 0.0291, delta=True) == "+2.91 pp"
    assert format_interval("retention_365", -0.01, 0.02, delta=True) == "-1 pp … +2 pp"


def test_mean_and_half_width_share_the_unit() -> None:
    assert format_pm("conversion", 0.712, 0.701, 0.723) == "71.2% ± 1.1 pp"
    assert format_pm("revenue", 325000, 320300, 329700, "EUR") == "€325,000 ± €4,700"
    assert format_pm("cost", 4797, 4797 - 527.3, 4797 + 527.3) == "€4,797 ± €530"
    assert format_pm("acquired", 1234, math.nan, math.nan) == "1,234"
    # an interval that narrows toward the range's end says how far it reaches each way
    assert format_pm("retention_90", 0.962, 0.919, 0.983) == "96.2% +2.1/−4.3 pp"


@pytest.mark.parametrize(("count", "word", "text"), [
    (1, "replicate", "1 replicate"), (2, "replicate", "2 replicates"),
    (0, "day", "0 days"), (1, "day", "1 day"), (1, "intervention", "1 intervention"),
    (1000, "entry", "1,000 entries"),
])
def test_counts_take_the_right_plural(count: int, word: str, text: str) -> None:
    many = "entries" if word == "entry" else None
    assert plural(count, word, many) == text


def _table() -> Table:
    table = Table("kpis", "a title", ["KPI", "mean"])
    table.add(["conversion", "71.2%"], {"kpi": "conversion", "mean": 0.7123456789012345})
    table.add(["a." + "very_long_parameter_path." * 8, "€655,008"],
              {"kpi": "revenue", "mean": math.nan})
    return table


def test_plain_tables_have_no_box_drawing_and_no_wrapping() -> None:
    text = render_plain(_table())
    lines = text.splitlines()
    assert lines[0] == "a title"
    assert len(lines) == 4                          # title, header, two rows
    assert not any(c in text for c in "─│┃┏┡└┗╇━")
    assert lines[2].endswith("71.2%") and lines[3].endswith("€655,008")
    assert len(lines[2]) == len(lines[3])           # right-aligned numbers line up


def test_csv_and_json_keep_full_precision_and_write_missing_values_as_empty() -> None:
    records = _table().records
    rows = list(csv.DictReader(io.StringIO(render_csv(records))))
    assert float(rows[0]["mean"]) == 0.7123456789012345
    assert rows[1]["mean"] == ""
    document = json.loads(render_json({"kpis": records}))
    assert document["kpis"][0]["mean"] == 0.7123456789012345
    assert document["kpis"][1]["mean"] is None
