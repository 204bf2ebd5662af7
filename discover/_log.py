"""Reading an event log into DuckDB, checking it, and cutting it into spells.

Everything here is SQL run by DuckDB over the whole log (group-bys and window
functions, never a Python loop over rows), under a memory limit with spilling
to a temporary folder, so a log of tens of millions of events is read with
bounded memory.

Time is cut into steps as the engine counts them: an event on day ``d`` lies
in step ``ceil((d - start) / step_days)`` (step ``k`` covers the days
``((k-1)·step, k·step]``). A customer whose first event lies on the log's
first day is part of the initial population and takes steps 1, 2, … in its
stage; one first seen in step ``k >= 1`` arrived in that step and takes it
in its stage; a move recorded in step ``k`` is the exit of step ``k``, so
the new stage is at risk from step ``k + 1``. An exposure recorded in step
``k`` acts on the exit draw of step ``k``, in the stage the customer was in.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from discover._mapping import Mapping
from sim import DataError, Problem, SimError, hint

if TYPE_CHECKING:
    import duckdb

__all__ = ["LIMIT_LINES", "Log", "connect", "open_log"]

log = logging.getLogger(__name__)

LIMIT_LINES = 20
"""At most this many problem lines of one kind; a last line counts the rest."""
MISSING = (
    "journey discover needs DuckDB and statsmodels, which are not installed: "
    "pip install 'journey-engine[discover]'"
)
_NAME_RE = "[A-Za-z][A-Za-z0-9_]{0,63}"
"""What a segment name must look like (a scenario's names)."""
_JOURNEY_COLUMNS = {"agent", "kind", "to_stage", "touchpoint", "day"}


@dataclass(frozen=True)
class Log:
    """A checked log in DuckDB: the tables ``spells`` and ``exposed`` and what they span.

    Attributes:
        source: the path as the user wrote it.
        steps: steps from the log's first to its last day (the horizon).
        step_days: length of one step.
        segments: segment names, the largest first (the reference of the offsets).
        has_value: whether the log has a ``value`` column.
        events: rows read (after the mapping's ``ignore``).
        start_date: the calendar date of the log's first day (from a ``timestamp``
            column, or the mapping's ``start_date``), or None.
    """

    source: str
    steps: int
    step_days: float
    segments: list[str]
    has_value: bool
    events: int
    start_date: dt.date | None = None


@contextmanager
def connect(
    memory_limit: str = "2GB", threads: int | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection that spills to a temporary folder past ``memory_limit``."""
    try:
        import duckdb
    except ImportError as exc:
        raise SimError(f"{MISSING} ({exc})") from None
    with tempfile.TemporaryDirectory(prefix="journey-discover-") as tmp:
        config: dict[str, Any] = {
            "memory_limit": memory_limit,
            "temp_directory": tmp,
            "preserve_insertion_order": True,
        }
        if threads is not None:
            config["threads"] = threads
        con = duckdb.connect(config=config)
        con.execute("SET enable_progress_bar = false")
        try:
            yield con
        finally:
            con.close()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _scan(path: str) -> tuple[str, bool]:
    """The DuckDB table function reading ``path``, and whether rows are CSV lines."""
    if os.path.isdir(path):
        pattern = os.path.join(path, "**", "*.parquet")
        return (
            f"read_parquet({_quote(pattern)}, hive_partitioning = true, union_by_name = true)",
            False,
        )
    if path.lower().endswith((".csv", ".csv.gz", ".tsv")):
        return f"read_csv({_quote(path)}, header = true)", True
    return f"read_parquet({_quote(path)})", False


def _problems(
    source: str, rows: list[tuple[Any, ...]], total: int, field: str, say: Any
) -> list[Problem]:
    out = [Problem(source, int(r[0]), 0, field, say(r)) for r in rows[:LIMIT_LINES]]
    if total > LIMIT_LINES:
        out.append(Problem(source, 0, 0, field, f"… and {total - LIMIT_LINES:,} more such rows"))
    return out


def _columns(con: duckdb.DuckDBPyConnection, scan: str) -> list[str]:
    return [str(r[0]) for r in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()]


def _load(
    con: duckdb.DuckDBPyConnection, path: str, source: str
) -> tuple[bool, bool, bool, bool]:
    """Create the table ``raw`` (row, customer, day, event, segment, value); returns
    (CSV lines?, segment column?, value column?, days from a timestamp?)."""
    scan, csv = _scan(path)
    try:
        columns = _columns(con, scan)
    except Exception as exc:  # DuckDB's IO and parser errors have no common public base
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError([Problem(source, 0, 0, "", f"cannot read the log: {first}")]) from None
    have = set(columns)
    if have >= _JOURNEY_COLUMNS:  # an events table written by journey run --exposures
        runs = (
            con.execute(
                f"SELECT count(DISTINCT (scenario, variant, replicate, run_id)) FROM {scan}"
            ).fetchone()
            if {"replicate", "run_id"} <= have
            else (1,)
        )
        if runs is not None and int(runs[0]) > 1:
            raise DataError(
                [
                    Problem(
                        source,
                        0,
                        0,
                        "",
                        (
                            f"holds the events of {int(runs[0])} runs (replicates); discover "
                            "one at a time: give the folder of one replicate (…/replicate=0)"
                        ),
                    )
                ]
            )
        con.execute(f"""
            CREATE TEMP TABLE raw AS
            SELECT row_number() OVER () - 1 AS row, CAST(agent AS VARCHAR) AS customer,
                   CAST(day AS DOUBLE) AS day,
                   CASE WHEN kind = 'exposure' THEN touchpoint ELSE to_stage END AS event,
                   CAST(segment AS VARCHAR) AS segment, CAST(NULL AS DOUBLE) AS value
            FROM {scan}""")
        return False, True, False, False
    time_col = "timestamp" if "timestamp" in have else "day" if "day" in have else None
    missing = [c for c in ("customer_id", "event") if c not in have]
    if time_col is None:
        missing.append("timestamp (or day)")
    if missing:
        raise DataError(
            [
                Problem(
                    source,
                    1 if csv else 0,
                    0,
                    m,
                    (
                        f"column {m!r} is missing (a log has customer_id, timestamp or day, "
                        "event, and optionally segment and value; this one has "
                        f"{', '.join(columns)})"
                    ),
                )
                for m in missing
            ]
        )
    if time_col == "timestamp":
        day = "epoch(CAST(timestamp AS TIMESTAMP)) / 86400.0"
    else:
        day = "CAST(day AS DOUBLE)"
    segment = "CAST(segment AS VARCHAR)" if "segment" in have else "CAST(NULL AS VARCHAR)"
    value = "TRY_CAST(value AS DOUBLE)" if "value" in have else "CAST(NULL AS DOUBLE)"
    try:
        con.execute(f"""
            CREATE TEMP TABLE raw AS
            SELECT row_number() OVER () {"" if csv else "- 1"} AS row,
                   CAST(customer_id AS VARCHAR) AS customer, {day} AS day,
                   CAST(event AS VARCHAR) AS event, {segment} AS segment, {value} AS value
            FROM {scan}""")
    except Exception as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(
            [Problem(source, 0, 0, time_col or "", f"cannot read the column: {first}")]
        ) from None
    return csv, "segment" in have, "value" in have, time_col == "timestamp"


def _check(
    con: duckdb.DuckDBPyConnection,
    source: str,
    mapping: Mapping,
    mapped: dict[str, tuple[str, str]],
) -> list[Problem]:
    """Every problem of the log, one located line each (at most :data:`LIMIT_LINES` a kind)."""
    problems: list[Problem] = []
    for col, what in (("customer", "customer_id"), ("day", "timestamp/day"), ("event", "event")):
        rows = con.execute(
            f"SELECT row + 1 FROM raw WHERE {col} IS NULL ORDER BY row LIMIT {LIMIT_LINES + 1}"
        ).fetchall()
        total = con.execute(f"SELECT count(*) FROM raw WHERE {col} IS NULL").fetchone()
        problems += _problems(
            source, rows, int(total[0]) if total else 0, what, lambda r, w=what: f"{w} is empty"
        )
    rows = con.execute(
        f"""
        SELECT min(row) + 1, segment, count(*) FROM raw
        WHERE segment IS NOT NULL AND NOT regexp_full_match(segment, '{_NAME_RE}')
        GROUP BY segment ORDER BY min(row)"""
    ).fetchall()
    problems += _problems(
        source,
        rows,
        len(rows),
        "segment",
        lambda r: (
            f"segment {r[1]!r} ({r[2]:,} rows) is not a valid name: use letters, digits "
            "and _, starting with a letter (at most 64 characters)"
        ),
    )
    known = sorted(mapped) + sorted(mapping.ignore)
    rows = con.execute(
        """
        SELECT min(row) + 1, event, count(*) FROM raw
        WHERE event IS NOT NULL AND NOT list_contains(?, event)
        GROUP BY event ORDER BY min(row)""",
        [known],
    ).fetchall()
    problems += _problems(
        source,
        rows,
        len(rows),
        "event",
        lambda r: (
            f"unknown event {r[1]!r} ({r[2]:,} rows; {hint(r[1], known)}): map it to a stage "
            "or touchpoint under events:, or list it under ignore:"
        ),
    )
    dup = """SELECT min(row) + 1, max(row) + 1, customer, day, event, count(*) AS n FROM raw
             WHERE customer IS NOT NULL AND day IS NOT NULL AND event IS NOT NULL
             GROUP BY customer, day, event HAVING count(*) > 1"""
    rows = con.execute(f"{dup} ORDER BY 1 LIMIT {LIMIT_LINES + 1}").fetchall()
    total = con.execute(f"SELECT count(*) FROM ({dup})").fetchone()
    problems += _problems(
        source,
        rows,
        int(total[0]) if total else 0,
        "event",
        lambda r: (
            f"duplicate row: customer {r[2]!r}, day {r[3]:g}, event {r[4]!r} "
            f"appears {r[5]} times (also line {r[1]})"
        ),
    )
    back = """SELECT row + 1, customer, day, prev_day, prev_row + 1 FROM (
                SELECT row, customer, day, lag(day) OVER w AS prev_day,
                       lag(row) OVER w AS prev_row FROM raw
                WHERE customer IS NOT NULL AND day IS NOT NULL
                WINDOW w AS (PARTITION BY customer ORDER BY row))
              WHERE day < prev_day"""
    rows = con.execute(f"{back} ORDER BY 1 LIMIT {LIMIT_LINES + 1}").fetchall()
    total = con.execute(f"SELECT count(*) FROM ({back})").fetchone()
    problems += _problems(
        source,
        rows,
        int(total[0]) if total else 0,
        "timestamp",
        lambda r: (
            f"time goes backwards for customer {r[1]!r}: day {r[2]:g} after day {r[3]:g} "
            f"(line {r[4]}); sort the log by time within each customer"
        ),
    )
    return problems


def _map_table(
    con: duckdb.DuckDBPyConnection, mapping: Mapping, mapped: dict[str, tuple[str, str]]
) -> None:
    stage_no = {s: i for i, s in enumerate(mapping.stages)}
    tp_no = {t: i for i, t in enumerate(mapping.touchpoints)}
    con.execute(
        "CREATE TEMP TABLE emap (event VARCHAR, is_stage BOOLEAN, name VARCHAR, idx INTEGER)"
    )
    rows = [
        (e, k == "stage", n, stage_no[n] if k == "stage" else tp_no[n])
        for e, (k, n) in mapped.items()
    ]
    if rows:
        con.executemany("INSERT INTO emap VALUES (?, ?, ?, ?)", rows)


def open_log(con: duckdb.DuckDBPyConnection, path: str | os.PathLike[str], mapping: Mapping) -> Log:
    """Read, check and cut the log at ``path`` into the tables the estimators read.

    Tables made (temporary, in ``con``):

    * ``spells``: one row per stay of a customer in a stage: ``customer``,
      ``segment``, ``stage``, ``first`` (first step at risk), ``last`` (last step in
      the stage: the exit's step, or the horizon when censored), ``to_stage``
      (NULL when censored), ``initial`` (placed at the start), ``arrival`` (the
      customer's first stage after the start), ``value`` (of the entry event);
    * ``exposed``: one row per customer-step with exposures: ``customer``,
      ``segment``, ``stage``, ``step``, ``dwell`` (steps in the stage, 1 on the
      first; since the log's first day for a stay that began before it), ``mask``
      (bit i: touchpoint i of the mapping), ``to_stage`` (the exit taken in this
      step, NULL if none), ``initial`` (the stay began before the log).

    Raises:
        DataError: one located line per problem of the log.
    """
    source = os.fspath(path)
    if not os.path.exists(source):
        raise DataError([Problem(source, 0, 0, "", "no such file or folder")])
    _, has_segment, has_value, timestamp = _load(con, source, source)
    mapped = mapping.event_table()
    problems = _check(con, source, mapping, mapped)
    if problems:
        raise DataError(problems)
    _map_table(con, mapping, mapped)
    bounds = con.execute("SELECT min(day), max(day), count(*) FROM raw").fetchone()
    if bounds is None or bounds[0] is None:
        raise DataError([Problem(source, 0, 0, "", "the log holds no events")])
    start = mapping.start_day if mapping.start_day is not None else float(bounds[0])
    end = mapping.end_day if mapping.end_day is not None else float(bounds[1])
    sd = mapping.step_days
    steps = math.ceil((end - start) / sd - 1e-9)
    if steps < 1:
        raise DataError(
            [
                Problem(
                    source,
                    0,
                    0,
                    "",
                    (f"the log spans {end - start:g} days: less than one step of {sd:g} days"),
                )
            ]
        )
    step_sql = f"CAST(ceil((day - {start!r}) / {sd!r} - 1e-9) AS BIGINT)"
    con.execute(f"""
        CREATE TEMP TABLE ev AS
        SELECT r.row, r.customer, {step_sql} AS step, m.is_stage, m.name, m.idx,
               r.segment, r.value
        FROM raw r JOIN emap m USING (event)
        WHERE r.day >= {start!r} AND r.day <= {end!r}""")
    con.execute("DROP TABLE raw")
    # one segment per customer: the first one its rows name
    con.execute("""
        CREATE TEMP TABLE customers AS
        SELECT customer, coalesce(arg_min(segment, row) FILTER (segment IS NOT NULL),
                                  'all') AS segment,
               min(step) AS first_step
        FROM ev GROUP BY customer""")
    if not has_segment:
        con.execute("UPDATE customers SET segment = 'all'")
    # stage entries: a customer's first entry after the start (its arrival, which takes its
    # own step), then the last stage of each customer-step; repeats of a stage dropped
    con.execute("""
        CREATE TEMP TABLE entries AS
        WITH numbered AS (
            SELECT *, row_number() OVER (PARTITION BY customer ORDER BY row) AS rn
            FROM ev WHERE is_stage),
        births AS (
            SELECT customer, step, name AS stage, value, true AS birth
            FROM numbered WHERE rn = 1 AND step > 0),
        moves AS (
            SELECT customer, step, arg_max(name, row) AS stage, arg_max(value, row) AS value,
                   false AS birth
            FROM numbered WHERE NOT (rn = 1 AND step > 0) GROUP BY customer, step),
        ordered AS (
            SELECT *, 2 * step + CASE WHEN birth THEN 0 ELSE 1 END AS ord FROM births
            UNION ALL
            SELECT *, 2 * step + CASE WHEN birth THEN 0 ELSE 1 END AS ord FROM moves),
        marked AS (
            SELECT *, lag(stage) OVER (PARTITION BY customer ORDER BY ord) AS prev
            FROM ordered)
        SELECT customer, step, stage, value, birth, ord FROM marked
        WHERE prev IS NULL OR prev <> stage""")
    con.execute(f"""
        CREATE TEMP TABLE spells AS
        SELECT e.customer, c.segment, e.stage, e.value,
               e.step AS entered,
               CASE WHEN e.birth THEN e.step ELSE e.step + 1 END AS first,
               coalesce(lead(e.step) OVER w, {steps}) AS last,
               lead(e.stage) OVER w AS to_stage,
               e.step = 0 AS initial,
               e.birth AS arrival
        FROM entries e JOIN customers c USING (customer)
        WINDOW w AS (PARTITION BY e.customer ORDER BY e.ord)""")
    con.execute("DROP TABLE entries")
    con.execute("""
        CREATE TEMP TABLE exposed AS
        WITH seen AS (
            SELECT customer, step, bit_or(CAST(1 AS UBIGINT) << CAST(idx AS UBIGINT)) AS mask
            FROM ev WHERE NOT is_stage GROUP BY customer, step)
        SELECT x.customer, s.segment, s.stage, x.step, x.step - s.first + 1 AS dwell,
               x.mask, CASE WHEN x.step = s.last THEN s.to_stage END AS to_stage,
               s.initial
        FROM seen x ASOF JOIN spells s
             ON x.customer = s.customer AND x.step >= s.first
        WHERE x.step <= s.last""")
    orphans = con.execute("""
        SELECT count(*) FROM (SELECT DISTINCT customer, step FROM ev WHERE NOT is_stage)
        """).fetchone()
    kept = con.execute("SELECT count(*) FROM exposed").fetchone()
    lost = (int(orphans[0]) if orphans else 0) - (int(kept[0]) if kept else 0)
    if lost:
        log.warning(
            "%s: %d customer-steps with exposures before the customer's first stage "
            "entry were left out",
            source,
            lost,
        )
    events = con.execute("SELECT count(*) FROM ev").fetchone()
    con.execute("DROP TABLE ev")
    segments = [
        str(r[0])
        for r in con.execute(
            "SELECT segment FROM customers GROUP BY segment ORDER BY count(*) DESC, segment"
        ).fetchall()
    ]
    if timestamp:  # a timestamp's day counts from 1970-01-01
        day0: dt.date | None = dt.date(1970, 1, 1)
    else:
        day0 = dt.date.fromisoformat(mapping.start_date) if mapping.start_date else None
    return Log(
        start_date=None if day0 is None else day0 + dt.timedelta(days=math.floor(start)),
        source=source,
        steps=steps,
        step_days=sd,
        segments=segments,
        has_value=has_value,
        events=int(events[0]) if events else 0,
    )
