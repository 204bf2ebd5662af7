"""Data-driven attribution from paths, as the industry computes it: Markov-chain removal
effects (exact, from the absorbing chain), last touch and first touch.

A *path* is the sequence of touchpoints (channels) one customer met before converting
or giving up; a path set counts, per distinct path, the customers who converted
(``total_conversions``) and those who did not (``total_null``) — the format
ChannelAttribution reads: ``path`` such as ``search > review_site > consult``.

The Markov model of order K has a state per sequence of the last (up to) K channels,
plus ``start``, ``conversion`` and ``null`` (both absorbing). Its transition
probabilities are the observed transition counts, normalised per state. The
conversion probability from ``start`` solves ``(I - Q) x = r`` with ``Q`` the
transient part and ``r`` the one-step conversion probabilities (the fundamental
matrix ``(I - Q)^-1`` applied to ``r``): linear algebra, no simulation, so the same
paths give the same numbers every time. Removing a channel sends every customer who
would reach a state that holds it to ``null``; its *removal effect* is
``1 - P(conversion without it) / P(conversion)``. Attributed conversions split the
total conversions in proportion to the removal effects.

Repeated consecutive channels (``a > a > b``) are kept as written by default; with
``collapse=True`` they count once. For the first-order chain this changes nothing (a
self-loop only delays absorption, it does not change where a customer is absorbed);
for higher orders it does.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from optimise._calibrate._observed import read_rows
from sim import DataError, Problem

__all__ = ["PathSet", "first_touch", "last_touch", "markov", "path_attribution",
           "path_tables", "read_paths"]

SEPARATOR = ">"


@dataclass
class PathSet:
    """Distinct paths with their conversion and null counts (floats: weights may be
    fractional, e.g. scaled to a full population)."""

    paths: list[tuple[str, ...]]
    conversions: np.ndarray
    nulls: np.ndarray

    @classmethod
    def from_counts(cls, counts: dict[tuple[str, ...], list[float]]) -> PathSet:
        paths = sorted(counts)
        return cls(paths, np.array([counts[p][0] for p in paths], dtype=float),
                   np.array([counts[p][1] for p in paths], dtype=float))

    @property
    def channels(self) -> list[str]:
        """Every channel, in order of first appearance."""
        seen: dict[str, None] = {}
        for path in self.paths:
            for channel in path:
                seen.setdefault(channel, None)
        return list(seen)

    @property
    def total_conversions(self) -> float:
        return float(self.conversions.sum())

    def collapsed(self) -> PathSet:
        """The same customers with repeated consecutive channels counted once."""
        counts: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for path, conv, null in zip(self.paths, self.conversions, self.nulls, strict=True):
            short = tuple(c for i, c in enumerate(path) if i == 0 or path[i - 1] != c)
            counts[short][0] += conv
            counts[short][1] += null
        return PathSet.from_counts(counts)

    def table(self) -> pa.Table:
        """The path set in ChannelAttribution's format: ``path``, ``total_conversions``,
        ``total_null``."""
        return pa.table({"path": [f" {SEPARATOR} ".join(p) for p in self.paths],
                         "total_conversions": self.conversions,
                         "total_null": self.nulls})


def _number(source: str, line: int, column: str, text: object) -> float | Problem:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return Problem(source, line, 0, column, f"{text!r} is not a number")
    if not math.isfinite(value) or value < 0:
        return Problem(source, line, 0, column, f"{text!r} is not a count (a number >= 0)")
    return value


def read_paths(file: str | os.PathLike[str]) -> PathSet:
    """Read a paths file: CSV or Parquet with columns ``path`` (channels separated by
    ``>``), ``total_conversions`` and, optionally, ``total_null``.

    Rows of the same path add up. Spaces around channel names are ignored.

    Raises:
        DataError: every problem, each as one line with the file, its line (CSV; the
            Parquet row + 1), the column and the rule.
    """
    source = str(file)
    header, rows = read_rows(Path(file), "paths files")
    missing = [c for c in ("path", "total_conversions") if c not in header]
    if missing:
        raise DataError([Problem(source, 1, 0, "", f"no column {c!r} (a paths file has "
                                                   f"path, total_conversions and optionally "
                                                   f"total_null)") for c in missing])
    has_null = "total_null" in header
    problems: list[Problem] = []
    counts: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for line, row in rows:
        text = row.get("path")
        if text is None or not str(text).strip():
            problems.append(Problem(source, line, 0, "path", "the path is empty"))
            continue
        channels = tuple(c.strip() for c in str(text).split(SEPARATOR))
        if any(not c for c in channels):
            problems.append(Problem(source, line, 0, "path",
                                    f"{text!r} has an empty channel name between "
                                    f"'{SEPARATOR}' separators"))
            continue
        conv = _number(source, line, "total_conversions", row.get("total_conversions"))
        null = _number(source, line, "total_null", row.get("total_null")) if has_null \
            else 0.0
        bad = [x for x in (conv, null) if isinstance(x, Problem)]
        if bad:
            problems.extend(bad)
            continue
        counts[channels][0] += float(conv)   # type: ignore[arg-type]
        counts[channels][1] += float(null)   # type: ignore[arg-type]
    if problems:
        raise DataError(problems)
    if not counts:
        raise DataError([Problem(source, 1, 0, "", "the file has no paths")])
    paths = PathSet.from_counts(counts)
    if paths.total_conversions <= 0:
        raise DataError([Problem(source, 1, 0, "total_conversions",
                                 "no path has a conversion: nothing to attribute")])
    return paths


def _chain(paths: PathSet, order: int) -> tuple[list[tuple[str, ...]], sp.csr_matrix,
                                                np.ndarray]:
    """Transient states (``()`` is start), the transient transition matrix Q and the
    one-step conversion probabilities r of the order-``order`` chain."""
    index: dict[tuple[str, ...], int] = {(): 0}
    flows: dict[tuple[int, int], float] = defaultdict(float)
    conv_out: dict[int, float] = defaultdict(float)
    total_out: dict[int, float] = defaultdict(float)
    for path, conv, null in zip(paths.paths, paths.conversions, paths.nulls, strict=True):
        weight = conv + null
        if weight <= 0:
            continue
        state = 0
        for i in range(len(path)):
            nxt = path[max(0, i + 1 - order): i + 1]
            j = index.setdefault(nxt, len(index))
            flows[state, j] += weight
            total_out[state] += weight
            state = j
        conv_out[state] += conv
        total_out[state] += weight
    n = len(index)
    if flows:
        rows, cols = zip(*flows, strict=True)
        data = np.array([flows[k] / total_out[k[0]] for k in flows])
        q = sp.csr_matrix((data, (np.array(rows), np.array(cols))), shape=(n, n))
    else:
        q = sp.csr_matrix((n, n))
    r = np.zeros(n)
    for i, c in conv_out.items():
        r[i] = c / total_out[i]
    states = [s for s, _ in sorted(index.items(), key=lambda kv: kv[1])]
    return states, q, r


def _conversion_probability(q: sp.csr_matrix, r: np.ndarray, dead: np.ndarray) -> float:
    """P(absorbed in conversion | start) with the ``dead`` states sent to null."""
    keep = sp.diags((~dead).astype(float))
    q_kept = keep @ q                    # rows of dead states: no way on
    r_kept = np.where(dead, 0.0, r)
    system = (sp.identity(q.shape[0], format="csc") - q_kept).tocsc()
    x = np.atleast_1d(spsolve(system, r_kept))
    return float(x[0])


def markov(paths: PathSet, order: int = 1, collapse: bool = False
           ) -> tuple[dict[str, float], float]:
    """Removal effect of every channel in the order-``order`` Markov chain of ``paths``.

    Returns:
        (channel -> removal effect in [0, 1], P(conversion) from start).
    """
    if order < 1:
        raise ValueError("the order of a Markov chain is at least 1")
    if collapse:
        paths = paths.collapsed()
    states, q, r = _chain(paths, order)
    base = _conversion_probability(q, r, np.zeros(len(states), dtype=bool))
    effects: dict[str, float] = {}
    for channel in paths.channels:
        dead = np.array([channel in s for s in states])
        p = _conversion_probability(q, r, dead)
        effects[channel] = 1.0 - p / base if base > 0 else 0.0
    return effects, base


def last_touch(paths: PathSet) -> dict[str, float]:
    """Conversions credited to the last channel of each converting path."""
    out: dict[str, float] = defaultdict(float)
    for path, conv in zip(paths.paths, paths.conversions, strict=True):
        if path:
            out[path[-1]] += conv
    return {c: out.get(c, 0.0) for c in paths.channels}


def first_touch(paths: PathSet) -> dict[str, float]:
    """Conversions credited to the first channel of each converting path."""
    out: dict[str, float] = defaultdict(float)
    for path, conv in zip(paths.paths, paths.conversions, strict=True):
        if path:
            out[path[0]] += conv
    return {c: out.get(c, 0.0) for c in paths.channels}


def path_attribution(paths: PathSet, order: int = 1, collapse: bool = False,
                     channels: Sequence[str] | None = None) -> pa.Table:
    """The table of :func:`path_tables` (see there)."""
    return path_tables(paths, order, collapse, channels)[0]


def path_tables(paths: PathSet, order: int = 1, collapse: bool = False,
                channels: Sequence[str] | None = None) -> tuple[pa.Table, float]:
    """Markov removal effects, their shares and attributed conversions, with last- and
    first-touch conversions, one row per channel.

    Args:
        paths: the path set.
        order: the Markov chain's order (memory in channels).
        collapse: count repeated consecutive channels once.
        channels: rows to give, in this order (a channel no path holds gets zeros);
            default: every channel of the paths.

    Returns:
        The table, with columns ``channel``, ``removal_effect``, ``share``,
        ``conversions`` (the total conversions split by the removal effects),
        ``last_touch``, ``first_touch``; and the chain's conversion probability.
    """
    effects, probability = markov(paths, order, collapse)
    total_effect = sum(effects.values())
    total = paths.total_conversions
    last, first = last_touch(paths), first_touch(paths)
    names: Iterable[str] = channels if channels is not None else paths.channels
    rows = []
    for channel in names:
        effect = effects.get(channel, 0.0)
        share = effect / total_effect if total_effect > 0 else 0.0
        rows.append({"channel": channel, "removal_effect": effect, "share": share,
                     "conversions": share * total, "last_touch": last.get(channel, 0.0),
                     "first_touch": first.get(channel, 0.0)})
    schema = pa.schema([("channel", pa.string()), ("removal_effect", pa.float64()),
                        ("share", pa.float64()), ("conversions", pa.float64()),
                        ("last_touch", pa.float64()), ("first_touch", pa.float64())])
    return pa.Table.from_pylist(rows, schema=schema), probability


def paths_from_events(events: pa.Table, stage_kinds: Mapping[str, str], touchpoints: Sequence[str],
                      weight: float = 1.0) -> tuple[PathSet, float, float]:
    """The path of every prospect in a run's events table (with exposure rows).

    A prospect is an agent that did not enter as a customer; its path is the
    touchpoints it was exposed to in prospect stages up to its first move into a
    customer stage (a conversion; an exposure in that step came before the move), in
    order of step and, within a step, of the scenario's touchpoints. Agents are told
    apart by replicate and agent id.

    Args:
        events: the ``events`` table of :func:`sim.run` with ``exposures=True``.
        stage_kinds: stage -> ``prospect`` / ``customer`` / ``lost``.
        touchpoints: the scenario's touchpoints, in order.
        weight: what each agent counts for (``1 / (replicates × population_scale)``
            gives the full population of one run).

    Returns:
        (the paths of prospects with at least one exposure, conversions and nulls of
        prospects without any).
    """
    rep = events.column("replicate").to_numpy().astype(np.int64)
    agent = events.column("agent").to_numpy().astype(np.int64)
    step = events.column("step").to_numpy().astype(np.int64)

    def mask(array: pa.Array) -> np.ndarray:
        return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)

    def of_kind(column: str, which: str) -> np.ndarray:
        names = pa.array([s for s, k in stage_kinds.items() if k == which], pa.string())
        return mask(pc.fill_null(pc.is_in(events.column(column), value_set=names), False))

    kind_col = events.column("kind")
    entry = mask(pc.equal(kind_col, "entry"))
    transition = mask(pc.equal(kind_col, "transition"))
    exposure = mask(pc.equal(kind_col, "exposure"))
    to_customer = of_kind("to_stage", "customer")
    from_prospect = of_kind("from_stage", "prospect")
    # one key per agent of the run: replicate and agent id
    span = int(agent.max()) + 1 if agent.size else 1
    key = rep * span + agent
    customers_at_entry = np.unique(key[entry & to_customer])
    prospects = np.unique(key[entry & ~to_customer])
    prospects = np.setdiff1d(prospects, customers_at_entry, assume_unique=True)
    moves = transition & to_customer & np.isin(key, prospects)
    order = np.lexsort((step[moves], key[moves]))
    mk, ms = key[moves][order], step[moves][order]
    first = np.r_[True, mk[1:] != mk[:-1]] if mk.size else np.zeros(0, dtype=bool)
    converted_key, converted_step = mk[first], ms[first]
    # exposures of prospects in prospect stages, up to the conversion step
    exp = exposure & from_prospect & np.isin(key, prospects)
    ek, es = key[exp], step[exp]
    codes = pc.index_in(events.column("touchpoint"), value_set=pa.array(list(touchpoints)))
    ec = np.asarray(pc.fill_null(codes, -1).to_numpy(zero_copy_only=False),
                    dtype=np.int64)[exp]
    limit = np.full(ek.size, np.iinfo(np.int64).max)
    if converted_key.size:
        pos = np.minimum(np.searchsorted(converted_key, ek), converted_key.size - 1)
        hit = converted_key[pos] == ek
        limit[hit] = converted_step[pos[hit]]
    keep = es <= limit
    ek, es, ec = ek[keep], es[keep], ec[keep]
    order = np.lexsort((ec, es, ek))
    ek, ec = ek[order], ec[order]
    counts: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
    converted = set(converted_key.tolist())
    starts = np.flatnonzero(np.r_[True, ek[1:] != ek[:-1]]) if ek.size else np.zeros(0, int)
    ends = np.r_[starts[1:], ek.size] if ek.size else np.zeros(0, int)
    touched = set()
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        agent_key = int(ek[a])
        touched.add(agent_key)
        path = tuple(touchpoints[i] for i in ec[a:b].tolist())
        counts[path][0 if agent_key in converted else 1] += weight
    untouched = np.setdiff1d(prospects, np.fromiter(touched, np.int64, len(touched)))
    untouched_conv = float(np.isin(untouched, converted_key).sum()) * weight
    untouched_null = float(untouched.size) * weight - untouched_conv
    return PathSet.from_counts(counts), untouched_conv, untouched_null
