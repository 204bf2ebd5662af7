"""Observed data for calibration: survival, funnel and occupancy files (CSV or Parquet).

Each file is read once and checked row by row; every problem names the file,
the line (CSV line, header = line 1; for Parquet, row number + 1), the column
and the rule it breaks, and all of them are raised together as one
:class:`~sim.DataError`.

Formats (README, "Calibration"):

* **survival** — ``period``, and ``active`` (customers still active) or
  ``share`` (their share); ``cohort_size`` (needed with ``share`` for the
  binomial likelihood; with ``active`` it defaults to the period-0 count);
  optional ``segment`` and ``sd`` (standard error of the share, for ``wls``).
* **funnel** — ``stage``, ``count`` (entries into the stage during the
  target's window); optional ``segment``.
* **occupancy** — ``step``, ``stage``, ``count`` (agents in the stage at the
  end of the step); optional ``segment`` and ``sd``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from sim import DataError, Problem, Scenario, SimError, closest, unknown_name

__all__ = ["KINDS", "ObservedData", "infer_kind", "kind_of", "read_observed",
           "resolve_observed"]

KINDS = ("survival", "funnel", "occupancy")

_COLUMNS: dict[str, tuple[set[str], set[str]]] = {
    # kind: (required, optional)
    "survival": ({"period"}, {"active", "share", "cohort_size", "segment", "sd"}),
    "funnel": ({"stage", "count"}, {"segment"}),
    "occupancy": ({"step", "stage", "count"}, {"segment", "sd"}),
}
_MAX_ROWS = 1_000_000


@dataclass
class ObservedData:
    """One checked observed file.

    ``values`` holds the numeric columns as float arrays (NaN where a row
    leaves an optional column empty), ``labels`` the text columns
    (``segment``: None means all segments together), ``lines`` each row's line.
    """

    kind: str
    source: str
    lines: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, list[str | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.lines.size)

    def has(self, column: str) -> bool:
        """Whether the column was given (in any row)."""
        if column in self.values:
            return bool(np.isfinite(self.values[column]).any())
        return column in self.labels and any(v is not None for v in self.labels[column])


def read_rows(path: Path, what: str = "observed data"
              ) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Header and (line, row) pairs of a CSV or Parquet file (``what`` it holds, for
    the message of a file of another type)."""
    source = str(path)
    if not path.is_file():
        raise DataError([Problem(source, 0, 0, "", "no such file")])
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise DataError([Problem(source, 0, 0, "", f"not a readable Parquet file: {exc}")]
                            ) from None
        header = [c.strip() for c in table.column_names]
        rows = [(i + 2, {k.strip(): v for k, v in row.items()})
                for i, row in enumerate(table.to_pylist())]
        return header, rows
    if suffix not in (".csv", ".txt"):
        raise DataError([Problem(source, 0, 0, "", f"unknown file type {suffix or '(none)'!r}: "
                                                   f"{what} are .csv or .parquet")])
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            out: list[tuple[int, dict[str, Any]]] = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                if len(out) >= _MAX_ROWS:
                    raise DataError([Problem(source, reader.line_num, 0, "",
                                             f"more than {_MAX_ROWS:,} rows")])
                if len(cells) != len(header):
                    raise DataError([Problem(source, reader.line_num, 0, "",
                                             f"{len(cells)} cells where the header has "
                                             f"{len(header)}")])
                out.append((reader.line_num, dict(zip(header, cells, strict=True))))
    except UnicodeDecodeError:
        raise DataError([Problem(source, 0, 0, "", "not UTF-8 text")]) from None
    except csv.Error as exc:
        raise DataError([Problem(source, 0, 0, "", f"not CSV: {exc}")]) from None
    return header, out


def infer_kind(header: Iterable[str]) -> str | None:
    """The kind a file's columns describe, or None."""
    cols = set(header)
    if "period" in cols:
        return "survival"
    if "step" in cols:
        return "occupancy"
    if {"stage", "count"} <= cols:
        return "funnel"
    return None


def kind_of(path: Path) -> str | None:
    """The kind an observed file's columns describe, or None."""
    header, _ = read_rows(path)
    return infer_kind(header)


def resolve_observed(scenario: Scenario, observed: Any, base_dir: Path
                     ) -> dict[str, tuple[Path, Any]]:
    """Kind -> (file, target settings) from the block and the ``observed`` argument."""
    block = scenario.calibrate
    assert block is not None
    settings = {k: getattr(block.observed, k) for k in KINDS}
    files: dict[str, Path] = {}
    for kind, target in settings.items():
        if target is not None and target.file is not None:
            files[kind] = Path(target.file) if Path(target.file).is_absolute() \
                else base_dir / target.file
    given: list[tuple[str | None, Path]] = []
    if isinstance(observed, Mapping):
        given = [(str(k), Path(v)) for k, v in observed.items()]
    elif isinstance(observed, (str, os.PathLike)):
        given = [(None, Path(observed))]
    elif observed is not None:
        given = [(None, Path(v)) for v in observed]
    if given:
        files = {}
        for given_kind, path in given:
            if given_kind is None:
                given_kind = kind_of(path)
                if given_kind is None:
                    raise DataError([Problem(str(path), 1, 0, "",
                                             "cannot tell what the file holds: survival files "
                                             "have a period column, occupancy files a step "
                                             "column, funnel files stage and count")])
            if given_kind not in KINDS:
                raise SimError(f"unknown observed kind {given_kind!r}: use {', '.join(KINDS)}")
            if given_kind in files:
                raise SimError(f"two observed {given_kind} files: {files[given_kind]} and "
                               f"{path}")
            files[given_kind] = path
    if not files:
        raise SimError("no observed data: give --observed FILE or calibrate.observed.<kind>.file")
    return {k: (p, settings[k]) for k, p in files.items()}


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value))


class _Rows:
    """Collects problems while parsing cells."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []

    def error(self, line: int, column: str, message: str) -> None:
        self.problems.append(Problem(self.source, line, 0, column, message))

    def number(self, line: int, column: str, value: Any, *, whole: bool = False,
               low: float | None = None, high: float | None = None,
               positive: bool = False) -> float:
        if _empty(value):
            return math.nan
        try:
            x = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            self.error(line, column, f"{value!r} is not a number")
            return math.nan
        if not math.isfinite(x):
            self.error(line, column, f"{value!r} is not a finite number")
            return math.nan
        if whole and x != round(x):
            self.error(line, column, f"{value!r} is not a whole number")
            return math.nan
        if low is not None and x < low:
            rule = "counts are whole numbers >= 0" if whole and low == 0 else f"must be >= {low:g}"
            self.error(line, column, f"{value!r} is negative; {rule}" if x < 0 <= low
                       else f"{value!r} is out of range: {rule}")
            return math.nan
        if high is not None and x > high:
            self.error(line, column, f"{value!r} is out of range: must be <= {high:g}")
            return math.nan
        if positive and x <= 0:
            self.error(line, column, f"{value!r} must be > 0")
            return math.nan
        return x


def read_observed(path: str | os.PathLike[str], scenario: Scenario,
                  kind: str | None = None) -> ObservedData:
    """Read and check one observed file against the scenario's stages and segments.

    Args:
        path: a ``.csv`` or ``.parquet`` file.
        scenario: the scenario the data are fitted to.
        kind: ``survival``, ``funnel`` or ``occupancy``; inferred from the columns
            when None.

    Raises:
        DataError: every problem of the file, each with its line and column.
    """
    path = Path(path)
    source = str(path)
    header, rows = read_rows(path)
    found = infer_kind(header)
    if kind is None:
        if found is None:
            raise DataError([Problem(source, 1, 0, "", "cannot tell what the file holds: "
                                                       "survival files have a period column, "
                                                       "occupancy files a step column, funnel "
                                                       "files stage and count")])
        kind = found
    _check_header(source, kind, header)
    if not rows:
        raise DataError([Problem(source, 1, 0, "", "the file has no data rows")])
    r = _Rows(source)
    data = ObservedData(kind, source, np.array([line for line, _ in rows], np.int64))
    _read_labels(data, rows, r, scenario)
    _read_values(data, rows, r)
    if r.problems:
        raise DataError(r.problems)
    _check_structure(data, r, scenario)
    if r.problems:
        raise DataError(r.problems)
    return data


def _check_header(source: str, kind: str, header: list[str]) -> None:
    """Unknown, missing (or misspelt) and repeated columns."""
    required, optional = _COLUMNS[kind]
    known = sorted(required | optional)
    r = _Rows(source)
    unknown = [col for col in header if col not in known]
    for col in unknown:
        r.error(1, col, unknown_name("column", col, known))
    # a missing column that an unknown one misspells is reported once, as the misspelling
    meant = {m for col in unknown if (m := closest(col, known)) is not None}
    for col in sorted(required - set(header) - meant):
        r.error(1, col, f"missing column {col!r} ({kind} files need "
                        f"{', '.join(sorted(required))})")
    if kind == "survival" and not {"active", "share"} & (set(header) | meant):
        r.error(1, "active", "missing column 'active' (survival files need active counts or "
                             "a share column)")
    if len(set(header)) != len(header):
        r.error(1, "", "a column name appears twice")
    if r.problems:
        raise DataError(r.problems)


def _read_labels(data: ObservedData, rows: list[tuple[int, dict[str, Any]]], r: _Rows,
                 scenario: Scenario) -> None:
    """The ``segment`` column (None: all segments) and, where required, ``stage``."""
    stages, segments = list(scenario.stages), list(scenario.segments)
    seg: list[str | None] = []
    for line, row in rows:
        value = row.get("segment")
        if _empty(value):
            seg.append(None)
        elif str(value).strip() not in segments:
            r.error(line, "segment", unknown_name("segment", str(value).strip(), segments))
            seg.append(None)
        else:
            seg.append(str(value).strip())
    data.labels["segment"] = seg
    if "stage" in _COLUMNS[data.kind][0]:
        names: list[str | None] = []
        for line, row in rows:
            value = row.get("stage")
            name = None if _empty(value) else str(value).strip()
            if name is None:
                r.error(line, "stage", "empty; every row names a stage")
            elif name not in stages:
                r.error(line, "stage", unknown_name("stage", name, stages))
            names.append(name)
        data.labels["stage"] = names


def _read_values(data: ObservedData, rows: list[tuple[int, dict[str, Any]]], r: _Rows
                 ) -> None:
    """The numeric columns of the file's kind, each cell checked; required ones given."""

    def column(name: str, **rule: Any) -> np.ndarray:
        return np.array([r.number(line, name, row.get(name), **rule) for line, row in rows])

    if data.kind == "survival":
        data.values["period"] = column("period", whole=True, low=0)
        data.values["active"] = column("active", whole=True, low=0)
        data.values["share"] = column("share", low=0, high=1)
        data.values["cohort_size"] = column("cohort_size", whole=True, low=0, positive=True)
        data.values["sd"] = column("sd", positive=True)
    elif data.kind == "funnel":
        data.values["count"] = column("count", whole=True, low=0)
    else:
        data.values["step"] = column("step", whole=True, low=0)
        data.values["count"] = column("count", low=0)
        data.values["sd"] = column("sd", positive=True)
    for name in sorted(_COLUMNS[data.kind][0] - {"stage"}):
        for line, row in rows:
            if _empty(row.get(name)):
                r.error(line, name, "empty; every row gives it")


def _check_structure(data: ObservedData, r: _Rows, scenario: Scenario) -> None:
    """Rules between rows: order, duplicates, cohort sizes, the horizon."""
    seg = data.labels["segment"]
    lines = data.lines
    if data.kind == "survival":
        period, active = data.values["period"], data.values["active"]
        share, size = data.values["share"], data.values["cohort_size"]
        for i in range(len(data)):
            if np.isnan(active[i]) and np.isnan(share[i]):
                r.error(int(lines[i]), "active", "empty; give active or share")
            elif not np.isnan(active[i]) and not np.isnan(share[i]):
                r.error(int(lines[i]), "share", "give active or share in a row, not both")
        last: dict[str | None, tuple[float, int]] = {}
        sizes: dict[str | None, tuple[float, int]] = {}
        for i in range(len(data)):
            g = seg[i]
            if g in last and period[i] <= last[g][0]:
                r.error(int(lines[i]), "period",
                        f"period {period[i]:g} comes after period {last[g][0]:g} "
                        f"(line {last[g][1]}); periods must increase"
                        + (f" within segment {g}" if g else ""))
            last[g] = (period[i], int(lines[i]))
            if not np.isnan(size[i]):
                if g in sizes and sizes[g][0] != size[i]:
                    r.error(int(lines[i]), "cohort_size",
                            f"{size[i]:g} differs from {sizes[g][0]:g} (line {sizes[g][1]}); "
                            f"a cohort has one size")
                sizes.setdefault(g, (size[i], int(lines[i])))
                if not np.isnan(active[i]) and active[i] > size[i]:
                    r.error(int(lines[i]), "active",
                            f"{active[i]:g} exceeds the cohort size {size[i]:g}")
        if (None in last) and len(last) > 1:
            r.error(int(lines[0]), "segment", "either every row names a segment or none does")
    elif data.kind == "funnel":
        seen: dict[tuple[str | None, str | None], int] = {}
        for i, stage in enumerate(data.labels["stage"]):
            key = (seg[i], stage)
            if key in seen:
                r.error(int(lines[i]), "stage", f"{stage} appears twice"
                        + (f" for segment {seg[i]}" if seg[i] else "")
                        + f" (line {seen[key]})")
            seen.setdefault(key, int(lines[i]))
    else:
        step = data.values["step"]
        seen_o: dict[tuple[str | None, str | None, float], int] = {}
        for i, stage in enumerate(data.labels["stage"]):
            key_o = (seg[i], stage, step[i])
            if key_o in seen_o:
                r.error(int(lines[i]), "step", f"step {step[i]:g} of {stage} appears twice "
                                               f"(line {seen_o[key_o]})")
            seen_o.setdefault(key_o, int(lines[i]))
            if step[i] > scenario.steps:
                r.error(int(lines[i]), "step", f"step {step[i]:g} lies past the horizon "
                                               f"({scenario.steps} steps)")
