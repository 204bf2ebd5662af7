"""How numbers, units, counts and result tables read, the same in every command.

Pure string functions: the CLI modules print what these return. Numbers get
thousands separators and four significant digits; a KPI gets its unit from its
kind (:data:`sim._kpi_catalogue.KPI_KINDS`): shares as percentages, money in the
scenario's currency, durations in days. A result :class:`Table` carries both
the formatted cells a person reads and the full-precision records that
``--format csv`` and ``--format json`` print.

Example:
    >>> from sim.display import format_kpi, plural
    >>> format_kpi("conversion", 0.71234), format_kpi("revenue", 655008.4, "EUR")
    ('71.2%', '€655,008')
    >>> plural(1, "replicate"), plural(2, "replicate")
    ('1 replicate', '2 replicates')
"""

from __future__ import annotations

import csv
import io
import json
import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sim._kpi_catalogue import kpi_kind

__all__ = [
    "DASH",
    "Table",
    "format_days",
    "format_interval",
    "format_kpi",
    "format_money",
    "format_number",
    "format_pm",
    "format_share",
    "format_value",
    "kpi_unit",
    "plural",
    "render_csv",
    "render_json",
    "render_plain",
]

DASH = "–"
"""What a missing or undefined number (None, NaN) reads as."""

_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}
_LARGE = 1e15
"""From here on numbers are written in scientific notation (no 16-digit integers)."""


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_number(value: float | int | None, digits: int = 4, *, signed: bool = False) -> str:
    """A number as a person reads it: separators, ``digits`` significant digits.

    Whole numbers and numbers of 1,000 or more are written without decimals and
    with thousands separators; tiny and huge ones in scientific notation.

    Args:
        value: the number (None or NaN read as :data:`DASH`).
        digits: significant digits of a number below 1,000.
        signed: write ``+`` before a positive number (for differences).

    Example:
        >>> [format_number(v) for v in (655008.4, 12.3456, 0.0012346, 3.0, -0.5)]
        ['655,008', '12.35', '0.001235', '3', '-0.5']
    """
    if _missing(value):
        return DASH
    assert value is not None
    sign = "+" if signed and value > 0 else ""
    if math.isinf(value):
        return ("-" if value < 0 else sign) + "∞"
    magnitude = abs(value)
    if magnitude >= _LARGE or (0 < magnitude < 1e-4):
        return f"{value:{sign or '-'}.{digits}g}"
    if magnitude >= 1000 or float(value).is_integer():
        text = f"{value:{sign or '-'},.0f}"
    else:
        rounded = float(f"{value:.{digits}g}")
        text = (f"{rounded:{sign or '-'},.0f}" if rounded.is_integer()
                else f"{rounded:{sign or '-'},.{digits}g}")
    return "0" if text in ("-0", "+0") else text


def format_share(value: float | None, digits: int = 3, *, delta: bool = False) -> str:
    """A fraction as a percentage (``0.712 -> '71.2%'``); a difference of two
    shares in percentage points (``delta=True``: ``'+2.9 pp'``)."""
    if _missing(value):
        return DASH
    assert value is not None
    number = format_number(100.0 * value, digits, signed=delta)
    return f"{number} pp" if delta else f"{number}%"


def format_money(value: float | None, currency: str = "EUR", *, delta: bool = False,
                 digits: int = 4) -> str:
    """An amount in ``currency``: ``'€1,234'`` for EUR, USD, GBP and JPY, else ``'1,234 CHF'``."""
    if _missing(value):
        return DASH
    assert value is not None
    symbol = _SYMBOLS.get(currency.upper())
    if symbol is None:
        return f"{format_number(value, digits, signed=delta)} {currency}".rstrip()
    sign = "-" if value < 0 else ("+" if delta and value > 0 else "")
    return f"{sign}{symbol}{format_number(abs(value), digits)}"


def format_days(value: float | None, *, delta: bool = False, digits: int = 4) -> str:
    """A duration: ``'1 day'``, ``'2.5 days'``."""
    if _missing(value):
        return DASH
    assert value is not None
    return f"{format_number(value, digits, signed=delta)} {'day' if value == 1 else 'days'}"


def format_kpi(name: str, value: float | None, currency: str = "EUR", *,
               delta: bool = False, digits: int | None = None,
               kinds: dict[str, str] | None = None) -> str:
    """A KPI's value in its unit (see :func:`sim._kpi_catalogue.kpi_kind`).

    Args:
        name: the KPI (``conversion``, ``revenue``, ``retention_365``…).
        value: its value (None or NaN: :data:`DASH`).
        currency: the scenario's ``economics.currency``, for money KPIs.
        delta: the value is a difference (an uplift): a sign, and shares in
            percentage points.
        digits: significant digits (default: 3 for shares and points, else 4).
        kinds: the kinds of a scenario's custom KPIs (:func:`sim.kpi_kinds`).
    """
    kind = kpi_kind(name, kinds)
    if kind == "share":
        return format_share(value, digits or 3, delta=delta)
    if kind == "money":
        return format_money(value, currency, delta=delta, digits=digits or 4)
    if kind == "days":
        return format_days(value, delta=delta, digits=digits or 4)
    if kind == "points" and not _missing(value):
        return f"{format_number(value, digits or 3, signed=delta)} pts"
    return format_number(value, digits or 4, signed=delta)


def format_interval(name: str, low: float | None, high: float | None,
                    currency: str = "EUR", *, delta: bool = False,
                    kinds: dict[str, str] | None = None) -> str:
    """A confidence interval of a KPI, ``'70.1% … 72.3%'`` (:data:`DASH` when undefined)."""
    if _missing(low) or _missing(high):
        return DASH
    return (f"{format_kpi(name, low, currency, delta=delta, kinds=kinds)} … "
            f"{format_kpi(name, high, currency, delta=delta, kinds=kinds)}")


def format_pm(name: str, mean: float | None, low: float | None, high: float | None,
              currency: str = "EUR", kinds: dict[str, str] | None = None) -> str:
    """A KPI's mean and how far its interval reaches each way: ``'71.2% ± 1.1 pp'``,
    ``'€3,250 ± €47'``; ``'96.0% +2.1/−4.3 pp'`` where the interval is not symmetric (an
    interval inside the KPI's range narrows toward the range's end).

    Without an interval (one replicate) only the mean is written.
    """
    if _missing(mean):
        return DASH
    text = format_kpi(name, mean, currency, kinds=kinds)
    if _missing(low) or _missing(high):
        return text
    assert low is not None and high is not None and mean is not None
    kind = kpi_kind(name, kinds)

    def reach(width: float) -> str:
        if kind == "share":
            return format_number(100.0 * width, 2)
        if kind in ("money", "days", "points"):
            return format_kpi(name, width, currency, digits=2, kinds=kinds)
        return format_number(width, 2)

    up, down = reach(high - mean), reach(mean - low)
    unit = " pp" if kind == "share" else ""
    if up == down:
        return f"{text} ± {up}{unit}"
    return f"{text} +{up}/−{down}{unit}"


def kpi_unit(name: str, currency: str = "EUR", kinds: dict[str, str] | None = None) -> str:
    """The unit of a KPI for machine-readable output: the currency for money, else
    its kind (``share``, ``days``, ``count``, ``ratio``, ``points``, ``number``);
    ``kinds`` gives a scenario's custom KPIs theirs."""
    kind = kpi_kind(name, kinds)
    return currency if kind == "money" else kind


def format_value(value: Any) -> str:
    """A scenario value as a person writes it: numbers by :func:`format_number`,
    ``true``/``false``, ``null``, lists joined by ``+`` (a set of interventions;
    empty: ``none``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)) or value is None:
        return format_number(value)
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value) or "none"
    return str(value)


def plural(count: int | float, word: str, many: str | None = None) -> str:
    """A count with its noun: ``plural(1, 'day') == '1 day'``, ``plural(2, 'day') == '2 days'``.

    Args:
        count: how many.
        word: the singular noun.
        many: the plural when it is not ``word + 's'`` (``'entries'``).
    """
    return f"{format_number(count)} {word if count == 1 else (many or word + 's')}"


# --------------------------------------------------------------------- tables


@dataclass
class Table:
    """A result table: the cells a person reads and the records a script reads.

    Attributes:
        name: machine name (the key of the table in ``--format json``).
        title: one line above the table.
        headers: column headers of the human table.
        cells: formatted rows, one string per header.
        records: the same rows for ``csv``/``json``: column -> value at full
            precision (numbers stay numbers; a missing value is None).
        align: ``"left"`` or ``"right"`` per column (default: the first column
            left, the rest right).
    """

    name: str
    title: str
    headers: list[str]
    cells: list[list[str]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    align: list[str] | None = None

    def add(self, cells: Sequence[str], record: Mapping[str, Any]) -> None:
        """Append one row: its formatted cells and its full-precision record."""
        if len(cells) != len(self.headers):
            raise ValueError(f"{len(cells)} cells for {len(self.headers)} columns")
        self.cells.append(list(cells))
        self.records.append(dict(record))

    def alignment(self) -> list[str]:
        """The alignment of each column."""
        return self.align or ["left"] + ["right"] * (len(self.headers) - 1)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int, align: str) -> str:
    gap = " " * (width - _width(text))
    return gap + text if align == "right" else text + gap


def render_plain(table: Table) -> str:
    """The table as plain aligned text (no box drawing, no wrapping): for a file or a pipe.

    The title is the first line, then the headers and one line per row,
    columns two spaces apart.
    """
    align = table.alignment()
    widths = [max([_width(h), *(_width(row[i]) for row in table.cells)])
              for i, h in enumerate(table.headers)]
    lines = [table.title] if table.title else []
    for row in [table.headers, *table.cells]:
        cells = [_pad(c, w, a) for c, w, a in zip(row, widths, align, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _plain_value(value: Any) -> Any:
    """A record value as JSON data: NaN and infinities become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    return value


def render_json(data: Any) -> str:
    """``data`` as JSON text: NaN and infinities as null, full precision."""
    return json.dumps(_plain_value(data), indent=2, ensure_ascii=False, default=str) + "\n"


def _csv_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple, Mapping)):
        return json.dumps(_plain_value(value), ensure_ascii=False)
    return str(value)


def render_csv(records: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None
               ) -> str:
    """Records as CSV text with a header line; floats at full precision, missing values empty.

    Args:
        records: the rows.
        columns: the header (default: every key, in first-seen order).
    """
    rows = list(records)
    keys = list(columns) if columns is not None else list(
        dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keys)
    for r in rows:
        writer.writerow([_csv_cell(r.get(k)) for k in keys])
    return buffer.getvalue()
