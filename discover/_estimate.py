"""The estimators: exits, dwell, reach, lifts, offsets, heterogeneity, population.

Each reads small aggregates that DuckDB computes from the ``spells`` and
``exposed`` tables (:mod:`discover._log`) and estimates exactly what the
engine simulates (``sim/engines/_kernels.py``, ``advance``):

* An agent in stage ``s`` takes exit ``j`` in a step with probability
  ``p_j = sigmoid(logit(base_j) + offset_gj + Σ lift_tj · exposed_t)`` (the
  competing exits share one uniform draw, so the event "left by ``j``" has
  exactly this probability). Each exit is therefore one binomial GLM with a
  logit link on the customer-steps at risk, with the segment and the
  exposure indicators as covariates: its coefficients are the base rate,
  the segment offsets and the lifts, its Wald intervals theirs. The
  customer-steps are aggregated by covariate pattern (segment × exposure
  mask) into successes and trials, so the fit costs the same for any log size.
* Exposure to touchpoint ``t`` happens each step in an active stage with
  probability ``reach_s · affinity_g``: a binomial proportion per stage and
  segment (Wilson interval).
* Heterogeneity: within a segment, the per-customer counts (steps at risk,
  exits by ``j``) are binomial under a homogeneous hazard and beta-binomial
  when each customer draws its own rate from Beta(a, b); a likelihood-ratio
  test (half a χ²₁: the null lies on the boundary) decides.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import optimize, special, stats

from discover._log import Log
from discover._mapping import Mapping

if TYPE_CHECKING:
    import duckdb

__all__ = ["Discovery", "Estimate", "estimate"]

log = logging.getLogger(__name__)

Z95 = float(stats.norm.ppf(0.975))
HET_MIN_EXITS = 30
"""Exits of a segment below which heterogeneity is not tested."""
HET_ALPHA = 0.01
"""Level of the likelihood-ratio test that rejects a homogeneous hazard."""
DWELL_EXPECTED = 3.0
"""A minimum dwell is declared when a constant hazard would have given at least this many
exits before it (none seen has probability exp(-3) < 5%)."""
STOCK_MATERIAL = 0.05
STOCK_MIN_EXITS = 10
"""A touchpoint's decayed exposure count enters an exit's model only when at least this many
exits (and steps without) have it at :data:`STOCK_MATERIAL` or more (a kick of 0.05 of one
exposure): otherwise its coefficient is not estimable."""
CONFOUND_P = 1e-3
"""Exposure rates across dwell bins that differ at this level earn a warning."""


@dataclass(frozen=True)
class Estimate:
    """One estimated number: a row of the fit table.

    Attributes:
        kind: ``exit`` (base per-step probability), ``exit_segment`` (the probability in
            one segment), ``offset``, ``lift``, ``reach`` (per stage and segment),
            ``affinity``, ``min_dwell_days``, ``beta_a`` / ``beta_b`` (heterogeneity),
            ``arrivals_per_day``, ``share``, ``initial``, ``value_on_entry``.
        estimate, low, high: the value and its 95% interval.
        n: sample size (customer-steps at risk, customers, …; see ``note``).
        events: the events counted (exits, exposures, arrivals).
    """

    kind: str
    stage: str | None
    target: str | None
    segment: str | None
    touchpoint: str | None
    estimate: float
    low: float
    high: float
    n: int
    events: int
    note: str = ""


@dataclass
class Discovery:
    """What a log says about a scenario: the estimates and the structure they fill.

    Attributes:
        mapping: the mapping file.
        log: the log that was read.
        estimates: every number, with its interval and sample size.
        exits: stage -> exit targets seen, in the mapping's stage order.
        entry_stage: the stage arrivals enter (None without arrivals).
        warnings: what a reader of the draft should know (confounding, left-out data).
        dwell: stage -> the minimum dwell in steps the exits' models start at.
        satisfaction: the satisfaction reconstructed from the exposures
            (:mod:`discover._satisfaction`), when it was fitted.
    """

    mapping: Mapping
    log: Log
    estimates: list[Estimate] = field(default_factory=list)
    exits: dict[str, list[str]] = field(default_factory=dict)
    entry_stage: str | None = None
    warnings: list[str] = field(default_factory=list)
    dwell: dict[str, int] = field(default_factory=dict)
    satisfaction: Any = None

    def find(self, kind: str, **keys: str | None) -> list[Estimate]:
        """The estimates of one kind whose fields match ``keys``."""
        return [
            e
            for e in self.estimates
            if e.kind == kind and all(getattr(e, k) == v for k, v in keys.items())
        ]


def wilson(k: float, n: float) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion ``k / n`` (within [0, 1])."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def poisson_interval(k: int) -> tuple[float, float]:
    """Exact (Garwood) 95% interval of a Poisson mean from one count ``k``."""
    low = 0.0 if k == 0 else float(stats.chi2.ppf(0.025, 2 * k)) / 2
    high = float(stats.chi2.ppf(0.975, 2 * k + 2)) / 2
    return low, high


def _rows(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
) -> list[tuple[Any, ...]]:
    return con.execute(sql, params or []).fetchall()


# ------------------------------------------------------------------ dwell


def _min_dwell(con: duckdb.DuckDBPyConnection, d: Discovery) -> dict[str, int]:
    """Minimum dwell in steps per stage (1: none): the shortest stay that ended in an
    exit, kept when a constant hazard would have shown exits before it."""
    out = {s: 1 for s in d.mapping.stages}
    rows = _rows(
        con,
        """
        SELECT stage, min(last - first + 1), count(*) FROM spells
        WHERE to_stage IS NOT NULL AND NOT initial AND last >= first GROUP BY stage""",
    )
    sd = d.log.step_days
    for stage, m, exits in rows:
        m = int(m)
        if m < 2:
            continue
        after, before = _rows(
            con,
            f"""
            SELECT sum(greatest(0, last - (first + {m} - 1) + 1)),
                   sum(least(greatest(0, last - first + 1), {m} - 1))
            FROM spells WHERE stage = ? AND NOT initial""",
            [stage],
        )[0]
        hazard = int(exits) / max(1, int(after or 0))
        expected = hazard * int(before or 0)
        if expected >= DWELL_EXPECTED:
            out[stage] = m
            d.estimates.append(
                Estimate(
                    "min_dwell_days",
                    stage,
                    None,
                    None,
                    None,
                    m * sd,
                    m * sd,
                    m * sd,
                    int(exits),
                    int(exits),
                    f"shortest stay ending in an exit; a constant hazard would have given "
                    f"{expected:.0f} exits before it",
                )
            )
    return out


# ------------------------------------------------------------------ reach


def _reach(con: duckdb.DuckDBPyConnection, d: Discovery) -> dict[str, list[str]]:
    """Reach per stage and segment, affinities; returns touchpoint -> active stages."""
    tps = d.mapping.touchpoints
    if not tps:
        return {}
    steps = {
        (s, g): int(n)
        for s, g, n in _rows(
            con,
            """
        SELECT stage, segment, sum(greatest(0, last - first + 1)) FROM spells
        GROUP BY stage, segment""",
        )
    }
    hits = _rows(
        con,
        f"""
        SELECT stage, segment, i, count(*) FROM exposed, range({len(tps)}) t(i)
        WHERE (mask >> CAST(i AS UBIGINT)) & CAST(1 AS UBIGINT) = 1
        GROUP BY stage, segment, i""",
    )
    x: dict[tuple[str, str, str], int] = {(s, g, tps[int(i)]): int(k) for s, g, i, k in hits}
    active: dict[str, list[str]] = {}
    for s in d.mapping.stages:
        for t in tps:
            if any(x.get((s, g, t), 0) for g in d.log.segments):
                active.setdefault(t, []).append(s)
    ref = d.log.segments[0]
    for t, stages in active.items():
        base: dict[str, float] = {}
        for s in stages:
            for g in d.log.segments:
                k, n = x.get((s, g, t), 0), steps.get((s, g), 0)
                if n == 0:
                    continue
                lo, hi = wilson(k, n)
                d.estimates.append(
                    Estimate(
                        "reach",
                        s,
                        None,
                        g,
                        t,
                        k / n,
                        lo,
                        hi,
                        n,
                        k,
                        "exposures per customer-step in the stage",
                    )
                )
            k0, n0 = x.get((s, ref, t), 0), steps.get((s, ref), 0)
            if n0 == 0:  # the reference segment never was here: pool the segments
                k0 = sum(x.get((s, g, t), 0) for g in d.log.segments)
                n0 = sum(steps.get((s, g), 0) for g in d.log.segments)
            lo, hi = wilson(k0, n0)
            base[s] = k0 / n0 if n0 else 0.0
            d.estimates.append(
                Estimate(
                    "reach", s, None, None, t, base[s], lo, hi, n0, k0, f"reference segment {ref}"
                )
            )
        for g in d.log.segments[1:]:
            k = sum(x.get((s, g, t), 0) for s in stages)
            expected = sum(steps.get((s, g), 0) * base[s] for s in stages)
            if expected <= 0:
                continue
            lo, hi = poisson_interval(k)
            d.estimates.append(
                Estimate(
                    "affinity",
                    None,
                    None,
                    g,
                    t,
                    k / expected,
                    lo / expected,
                    hi / expected,
                    int(sum(steps.get((s, g), 0) for s in stages)),
                    k,
                    f"exposures over those at the reference segment's reach ({ref})",
                )
            )
    return active


def _confounding(
    con: duckdb.DuckDBPyConnection, d: Discovery, active: dict[str, list[str]]
) -> None:
    """Warn where a touchpoint's exposure rate changes with the dwell in its stage: its
    lift would then take up the hazard's own change with dwell. Stays under way on the
    log's first day are left out: their dwell is unknown (left-truncated)."""
    tps = d.mapping.touchpoints
    for s in d.mapping.stages:
        here = [t for t, stages in active.items() if s in stages]
        if not here:
            continue
        q = _rows(
            con,
            """
            SELECT quantile_disc(last - first + 1, [0.25, 0.5, 0.75]) FROM spells
            WHERE stage = ? AND last >= first AND NOT initial""",
            [s],
        )[0][0]
        edges = sorted({1, *(int(v) + 1 for v in q or [] if v is not None and v >= 1)})
        if len(edges) < 2:
            continue
        bounds = [(lo, hi - 1) for lo, hi in zip(edges, [*edges[1:], 10**9], strict=True)]
        cols = ", ".join(
            f"sum(greatest(0, least(last - first + 1, {hi}) - {lo} + 1))" for lo, hi in bounds
        )
        totals = [
            int(v or 0)
            for v in _rows(
                con, f"SELECT {cols} FROM spells WHERE stage = ? AND NOT initial", [s]
            )[0]
        ]
        case = " ".join(f"WHEN dwell <= {hi} THEN {b}" for b, (_, hi) in enumerate(bounds))
        hits = _rows(
            con,
            f"""
            SELECT i, CASE {case} END AS bin, count(*) FROM exposed, range({len(tps)}) t(i)
            WHERE stage = ? AND NOT initial
              AND (mask >> CAST(i AS UBIGINT)) & CAST(1 AS UBIGINT) = 1
            GROUP BY i, bin""",
            [s],
        )
        for t in here:
            ti = tps.index(t)
            k = np.zeros(len(bounds))
            for i, b, c in hits:
                if int(i) == ti:
                    k[int(b)] = c
            n = np.array(totals, float)
            keep = n > 0
            if keep.sum() < 2 or k.sum() == 0:
                continue
            table = np.stack([k[keep], n[keep] - k[keep]])
            p = float(stats.chi2_contingency(table, correction=False)[1])
            rates = k[keep] / n[keep]
            if p < CONFOUND_P and rates.max() > 1.5 * max(rates.min(), 1e-12):
                shown = ", ".join(f"{r:.3g}" for r in rates)
                d.warnings.append(
                    f"exposure to {t} in {s} depends on the dwell (rates {shown} by dwell "
                    f"quartile, p = {p:.1e}): its lifts on {s}'s exits may take up the "
                    "hazard's own change with dwell"
                )


# ------------------------------------------------------------------ exits


@dataclass
class _Cells:
    """Customer-steps at risk in one stage, by segment and exposure mask."""

    segment: np.ndarray  # int[P]
    mask: np.ndarray  # uint64[P]
    n: np.ndarray  # float[P]
    y: dict[str, np.ndarray]  # target -> exits[P]


def _cells(
    con: duckdb.DuckDBPyConnection, d: Discovery, stage: str, m: int, targets: list[str]
) -> _Cells:
    seg_no = {g: i for i, g in enumerate(d.log.segments)}
    at_risk = {
        g: int(n or 0)
        for g, n in _rows(
            con,
            f"""
        SELECT segment, sum(greatest(0, last - (first + {m} - 1) + 1)) FROM spells
        WHERE stage = ? GROUP BY segment""",
            [stage],
        )
    }
    exits = {
        (g, t): int(k)
        for g, t, k in _rows(
            con,
            f"""
        SELECT segment, to_stage, count(*) FROM spells
        WHERE stage = ? AND to_stage IS NOT NULL AND last - first + 1 >= {m}
        GROUP BY segment, to_stage""",
            [stage],
        )
    }
    rows = _rows(
        con,
        f"""
        SELECT segment, mask, to_stage, count(*) FROM exposed
        WHERE stage = ? AND dwell >= {m} GROUP BY segment, mask, to_stage""",
        [stage],
    )
    # (segment, mask) -> exit target (None: stayed) -> customer-steps
    cells: dict[tuple[str, int], dict[str | None, int]] = {}
    for g, mask, t, c in rows:
        cells.setdefault((g, int(mask)), {})[t] = int(c)
    trials = {k: sum(v.values()) for k, v in cells.items()}
    for g in d.log.segments:
        exposed = [v for (gg, _), v in cells.items() if gg == g]
        unexposed_n = at_risk.get(g, 0) - sum(sum(v.values()) for v in exposed)
        if unexposed_n > 0:
            cells[(g, 0)] = {
                t: exits.get((g, t), 0) - sum(v.get(t, 0) for v in exposed) for t in targets
            }
            trials[(g, 0)] = unexposed_n
    keys = list(cells)
    return _Cells(
        segment=np.array([seg_no[k[0]] for k in keys], int),
        mask=np.array([k[1] for k in keys], np.uint64),
        n=np.array([trials[k] for k in keys], float),
        y={t: np.array([cells[k].get(t, 0) for k in keys], float) for t in targets},
    )


def _glm(
    y: np.ndarray,
    n: np.ndarray,
    X: np.ndarray,
    offset: np.ndarray | None = None,
    start: np.ndarray | None = None,
) -> Any:
    """A binomial GLM (logit link); on one-step rows with an offset (the sampled rows of
    :mod:`discover._satisfaction`) statsmodels' Logit, the same model fitted by Newton's
    method (several times faster on a tall design than iteratively reweighted least
    squares), with the GLM as the fallback when Newton's Hessian is singular.

    Newton starts from the intercept (``X``'s first column) at the logit of the rows' mean
    less their mean offset, the other coefficients at 0: from all zeros, the offsets of a
    case-control sample (log-odds of several units) make the first step overshoot, the
    probabilities overflow and the Hessian turn singular. ``start`` (of ``X``'s width),
    when given, is used instead: the coefficients of a neighbouring model.

    Each iteration of statsmodels' least squares leaves its weighted copy of the design in
    a self-referencing ``Bunch``, freed only by Python's cyclic garbage collector, whose
    full passes are rare: on the sampled rows (``tall``) the garbage is collected after
    the fallback, or a few fits hold gigabytes."""
    import statsmodels.api as sm

    tall = offset is not None and bool(np.all(n == 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if tall and offset is not None:
            if start is None or np.shape(start) != (X.shape[1],):
                start = np.zeros(X.shape[1])
                mean = float(np.clip(y.mean(), 1e-9, 1 - 1e-9))
                start[0] = math.log(mean / (1 - mean)) - float(np.mean(offset))
            try:
                # no rank check (a QR of the tall design; a deficient one leaves Newton's
                # Hessian singular, hence the fallback) and no check for perfect
                # prediction at each iteration (it only warns): half the fit's time
                return sm.Logit(y, X, offset=offset, check_rank=False).fit(
                    disp=0, maxiter=60, start_params=start, callback=lambda *_: None
                )
            except np.linalg.LinAlgError:
                pass
        fit = sm.GLM(
            np.column_stack([y, n - y]), X, family=sm.families.Binomial(), offset=offset
        ).fit()
    if tall:
        gc.collect()
    return fit


def _exits(con: duckdb.DuckDBPyConnection, d: Discovery, dwell: dict[str, int]) -> None:
    """Every exit's base rate, segment offsets and touchpoint lifts: one binomial GLM each."""
    tps = d.mapping.touchpoints
    for s in d.mapping.stages:
        targets = [
            str(t)
            for (t,) in _rows(
                con,
                """
            SELECT DISTINCT to_stage FROM spells WHERE stage = ? AND to_stage IS NOT NULL
            """,
                [s],
            )
        ]
        targets = [t for t in d.mapping.stages if t in targets]
        if not targets:
            continue
        d.exits[s] = targets
        c = _cells(con, d, s, dwell[s], targets)
        seen = [i for i in range(len(tps)) if (c.mask >> np.uint64(i) & np.uint64(1)).any()]
        under_way = _rows(con, "SELECT count(*) FROM spells WHERE stage = ? AND initial", [s])
        truncated = int(under_way[0][0]) if under_way else 0
        note = ""
        if truncated:  # left-truncated stays: at risk from the log's first day on
            note = (
                f"{truncated:,} stays under way on the log's first day (dwell unknown) "
                + (
                    f"enter as delayed entries from their step {dwell[s]} (a stay that "
                    "exits sooner is left out: its dwell may have been short)"
                    if dwell[s] > 1
                    else "enter as delayed entries (no minimum dwell: the hazard does not "
                    "depend on it)"
                )
            )
        for t in targets:
            res = _one_exit(d, s, t, c, seen)
            if res is not None:
                d.estimates += [
                    e if not note or e.kind not in ("exit", "exit_segment") else
                    replace(e, note="; ".join(filter(None, [e.note, note])))
                    for e in res.estimates
                ]


def _sampled_cells(smp: Any) -> _Cells:
    """The sampled customer-steps of :mod:`discover._satisfaction` as cells of one step."""
    targets = sorted({str(t) for t in smp.to if t is not None})
    return _Cells(
        segment=smp.segment,
        mask=smp.mask,
        n=np.ones(smp.segment.size),
        y={t: (smp.to == t).astype(float) for t in targets},
    )


@dataclass
class _ExitFit:
    """One exit's GLM and the estimates it gives."""

    fit: Any
    estimates: list[Estimate]
    extra_cols: list[int]
    """The columns of ``extra`` in the model (those not constant zero on its rows)."""
    first_extra: int
    """The index of the first of them among the coefficients."""
    tp_cols: list[int] = field(default_factory=list)
    """The touchpoints whose exposure indicators are in the model (their lifts precede
    the ``extra`` columns)."""


def _one_exit(
    d: Discovery,
    s: str,
    t: str,
    c: _Cells,
    seen: list[int],
    *,
    extra: np.ndarray | None = None,
    offset: np.ndarray | None = None,
    keep: np.ndarray | None = None,
    start: np.ndarray | None = None,
) -> _ExitFit | None:
    """The GLM of the exit ``s -> t`` on the cells ``c`` (restricted to ``keep``), with
    the covariates ``extra`` and the ``offset`` (of the kept rows) when given."""
    if keep is not None:
        c = _Cells(
            segment=c.segment[keep],
            mask=c.mask[keep],
            n=c.n[keep],
            y={k: v[keep] for k, v in c.y.items()},
        )
        if extra is not None:
            extra = extra[keep]
    tps, segs = d.mapping.touchpoints, d.log.segments
    y, n = c.y.get(t, np.zeros(c.n.size)), c.n
    notes = []
    seg_cols = [
        g
        for g in range(1, len(segs))
        if n[c.segment == g].sum() > 0 and y[c.segment == g].sum() > 0
    ]
    dropped = [
        segs[g] for g in range(1, len(segs)) if n[c.segment == g].sum() > 0 and g not in seg_cols
    ]
    if dropped:
        notes.append(f"no exits in segment {', '.join(dropped)}: its rows pooled with {segs[0]}")
    if n[c.segment == 0].sum() == 0 or y[c.segment == 0].sum() == 0:
        seg_cols = []
        notes.append("segments pooled (no exit in the reference segment)")
    tp_cols = []
    for i in seen:
        hit = (c.mask >> np.uint64(i) & np.uint64(1)).astype(bool)
        ye, ne = y[hit].sum(), n[hit].sum()
        if 0 < ye < ne:
            tp_cols.append(i)
        elif ne > 0:
            notes.append(
                f"{tps[i]}: {int(ye)} exits in {int(ne)} exposed steps, lift not estimable"
            )
    extra_cols: list[int] = []
    if extra is not None:  # a stock is estimable where it is material for enough exits
        material = np.abs(extra) >= STOCK_MATERIAL
        extra_cols = [
            j
            for j in range(extra.shape[1])
            if y[material[:, j]].sum() >= STOCK_MIN_EXITS
            and (n - y)[material[:, j]].sum() >= STOCK_MIN_EXITS
        ]
    X = np.column_stack(
        [np.ones(n.size)]
        + [(c.segment == g).astype(float) for g in seg_cols]
        + [(c.mask >> np.uint64(i) & np.uint64(1)).astype(float) for i in tp_cols]
        + ([] if extra is None else [extra[:, j] for j in extra_cols])
    )
    keep_n = n > 0
    total_y, total_n = int(y.sum()), int(n.sum())
    note = "; ".join(notes)
    if total_y == 0:
        return None
    fit = _glm(
        y[keep_n], n[keep_n], X[keep_n], None if offset is None else offset[keep_n], start
    )
    params, cov = np.asarray(fit.params), np.asarray(fit.cov_params())
    key = f"{s}->{t}"
    out: list[Estimate] = []

    def logit_row(kind: str, vec: np.ndarray, segment: str | None, nn: int, k: int) -> None:
        est = float(vec @ params)
        se = float(math.sqrt(max(0.0, vec @ cov @ vec)))
        out.append(
            Estimate(
                kind,
                s,
                t,
                segment,
                None,
                float(special.expit(est)),
                float(special.expit(est - Z95 * se)),
                float(special.expit(est + Z95 * se)),
                nn,
                k,
                note,
            )
        )

    ref_rows = c.segment == 0 if seg_cols else np.ones(n.size, bool)
    e0 = np.zeros(params.size)
    e0[0] = 1.0
    logit_row("exit", e0, None, int(n[ref_rows].sum()), int(y[ref_rows].sum()))
    for g, name in enumerate(segs):
        vec = e0.copy()
        if g in seg_cols:
            vec[1 + seg_cols.index(g)] = 1.0
        rows = c.segment == g
        if n[rows].sum() > 0:
            logit_row("exit_segment", vec, name, int(n[rows].sum()), int(y[rows].sum()))
    ci = np.asarray(fit.conf_int(0.05))
    for j, g in enumerate(seg_cols):
        rows = c.segment == g
        out.append(
            Estimate(
                "offset",
                s,
                t,
                segs[g],
                None,
                float(params[1 + j]),
                float(ci[1 + j, 0]),
                float(ci[1 + j, 1]),
                int(n[rows].sum()),
                int(y[rows].sum()),
                note,
            )
        )
    for j, i in enumerate(tp_cols):
        col = 1 + len(seg_cols) + j
        hit = (c.mask >> np.uint64(i) & np.uint64(1)).astype(bool)
        out.append(
            Estimate(
                "lift",
                s,
                t,
                None,
                tps[i],
                float(params[col]),
                float(ci[col, 0]),
                float(ci[col, 1]),
                int(n[hit].sum()),
                int(y[hit].sum()),
                note,
            )
        )
    log.debug("%s: %d exits in %d steps", key, total_y, total_n)
    return _ExitFit(fit, out, extra_cols, 1 + len(seg_cols) + len(tp_cols), tp_cols)


# ------------------------------------------------------------------ heterogeneity


def _betabinom_fit(
    n: np.ndarray, y: np.ndarray, w: np.ndarray
) -> tuple[float, float, float, np.ndarray]:
    """Maximum-likelihood Beta(a, b) of a beta-binomial with counts ``w``; returns
    (log-likelihood without the binomial coefficients, a, b, covariance of (log a, log b))."""
    from statsmodels.tools.numdiff import approx_hess3

    def nll(theta: np.ndarray) -> float:
        a, b = np.exp(theta)
        ll = special.betaln(y + a, n - y + b) - special.betaln(a, b)
        return -float(w @ ll)

    p = y @ w / (n @ w)
    start = np.log([p * 100.0, (1 - p) * 100.0])
    # log a, log b bounded: a homogeneous hazard sends both to infinity at a fixed ratio
    res = optimize.minimize(nll, start, method="L-BFGS-B", bounds=[(-7.0, 16.0), (-7.0, 25.0)])
    hess = approx_hess3(res.x, nll)
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        cov = np.full((2, 2), np.inf)
    a, b = np.exp(res.x)
    return -float(res.fun), float(a), float(b), cov


def _heterogeneity(con: duckdb.DuckDBPyConnection, d: Discovery, dwell: dict[str, int]) -> None:
    """Beta heterogeneity of an exit within a segment where a homogeneous hazard is rejected."""
    for s, targets in d.exits.items():
        m = dwell[s]
        ys = ", ".join(
            f"count(*) FILTER (to_stage = ? AND last - first + 1 >= {m}) AS y{j}"
            for j in range(len(targets))
        )
        rows = _rows(
            con,
            f"""
            SELECT segment, n, {", ".join(f"y{j}" for j in range(len(targets)))}, count(*)
            FROM (SELECT customer, segment,
                         sum(greatest(0, last - (first + {m} - 1) + 1)) AS n, {ys}
                  FROM spells WHERE stage = ? GROUP BY customer, segment)
            WHERE n > 0 GROUP BY ALL""",
            [*targets, s],
        )
        if not rows:
            continue
        seg = np.array([r[0] for r in rows], object)
        n = np.array([r[1] for r in rows], float)
        w = np.array([r[-1] for r in rows], float)
        for j, t in enumerate(targets):
            y = np.array([r[2 + j] for r in rows], float)
            for g in d.log.segments:
                sel = seg == g
                if y[sel] @ w[sel] < HET_MIN_EXITS:
                    continue
                _het_test(d, s, t, g, n[sel], y[sel], w[sel])


def _het_test(
    d: Discovery, s: str, t: str, g: str, n: np.ndarray, y: np.ndarray, w: np.ndarray
) -> None:
    p = float(y @ w / (n @ w))
    ll0 = float(w @ (special.xlogy(y, p) + special.xlog1py(n - y, -p)))
    ll1, a, b, cov = _betabinom_fit(n, y, w)
    lr = max(0.0, 2 * (ll1 - ll0))
    pval = 0.5 * float(stats.chi2.sf(lr, 1))
    if pval >= HET_ALPHA or not np.isfinite(cov).all():
        return
    customers = int(w.sum())
    note = (
        f"likelihood ratio {lr:.1f} against a homogeneous hazard (p = {pval:.1e}); "
        f"mean rate {a / (a + b):.3g} per step"
    )
    for kind, value, var in (("beta_a", a, cov[0, 0]), ("beta_b", b, cov[1, 1])):
        se = math.sqrt(max(0.0, var))
        d.estimates.append(
            Estimate(
                kind,
                s,
                t,
                g,
                None,
                value,
                value * math.exp(-Z95 * se),
                value * math.exp(Z95 * se),
                customers,
                int(y @ w),
                note,
            )
        )


# ------------------------------------------------------------------ population


def _population(con: duckdb.DuckDBPyConnection, d: Discovery) -> None:
    """Arrivals per day and by segment, the initial population, entry values."""
    span = d.log.steps * d.log.step_days
    arrivals = _rows(
        con,
        """
        SELECT stage, segment, count(*) FROM spells WHERE arrival GROUP BY stage, segment""",
    )
    by_stage: dict[str, int] = {}
    for s, _, k in arrivals:
        by_stage[s] = by_stage.get(s, 0) + int(k)
    if by_stage:
        entry = max(by_stage, key=lambda s: by_stage[s])
        d.entry_stage = entry
        others = {s: k for s, k in by_stage.items() if s != entry}
        if others:
            d.warnings.append(
                "arrivals enter one stage in a scenario; "
                + ", ".join(f"{k:,} customers first seen in {s}" for s, k in others.items())
                + f" after the start are counted as arrivals into {entry}"
            )
        total = sum(by_stage.values())
        lo, hi = poisson_interval(total)
        d.estimates.append(
            Estimate(
                "arrivals_per_day",
                entry,
                None,
                None,
                None,
                total / span,
                lo / span,
                hi / span,
                total,
                total,
                f"customers first seen after the start, over {span:g} days",
            )
        )
        per_seg: dict[str, int] = {}
        for _, g, k in arrivals:
            per_seg[g] = per_seg.get(g, 0) + int(k)
        for g in d.log.segments:
            k = per_seg.get(g, 0)
            lo, hi = wilson(k, total)
            d.estimates.append(
                Estimate(
                    "share", None, None, g, None, k / total, lo, hi, total, k, "share of arrivals"
                )
            )
    else:
        counts = dict(_rows(con, "SELECT segment, count(*) FROM customers GROUP BY segment"))
        total = sum(int(v) for v in counts.values())
        for g in d.log.segments:
            k = int(counts.get(g, 0))
            lo, hi = wilson(k, total)
            d.estimates.append(
                Estimate(
                    "share",
                    None,
                    None,
                    g,
                    None,
                    k / total,
                    lo,
                    hi,
                    total,
                    k,
                    "share of customers (no arrivals)",
                )
            )
    for s, g, k in _rows(
        con,
        """
            SELECT stage, segment, count(*) FROM spells WHERE initial GROUP BY stage, segment
            ORDER BY stage, segment""",
    ):
        d.estimates.append(
            Estimate(
                "initial",
                s,
                None,
                g,
                None,
                float(k),
                float(k),
                float(k),
                int(k),
                int(k),
                "customers in the stage on the first day",
            )
        )
    if d.log.has_value:
        for s, k, mean, sd in _rows(
            con,
            """
                SELECT stage, count(value), avg(value), stddev_samp(value) FROM spells
                WHERE value IS NOT NULL GROUP BY stage""",
        ):
            half = Z95 * float(sd or 0.0) / math.sqrt(int(k)) if k else 0.0
            d.estimates.append(
                Estimate(
                    "value_on_entry",
                    s,
                    None,
                    None,
                    None,
                    float(mean),
                    float(mean) - half,
                    float(mean) + half,
                    int(k),
                    int(k),
                    "mean value of the stage's entry events",
                )
            )


SEASON_ALPHA = 0.01
"""Level of the likelihood-ratio test of a monthly arrival rate against a constant one."""
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def _seasonality(con: duckdb.DuckDBPyConnection, d: Discovery) -> None:
    """A ``by_month`` profile on arrivals, where the log spans a year of known dates.

    Arrivals per (year, month) of the log are a Poisson GLM with the days as exposure
    (log link, statsmodels): a rate per calendar month against one constant rate, by a
    likelihood-ratio test (χ² with a degree per month seen, less one). A step ``k`` is
    dated as the engine dates it: ``start_date + (k − 1) · step_days``. Each month's
    multiplier is its rate over the log's mean rate, with the exact (Garwood) interval of
    its count (the mean rate, from all the arrivals, taken as known).
    """
    import statsmodels.api as sm

    start, sd = d.log.start_date, d.log.step_days
    if start is None or d.entry_stage is None or d.log.steps * sd < 365:
        return
    counts = dict(_rows(con, "SELECT first, count(*) FROM spells WHERE arrival GROUP BY first"))
    steps = np.arange(1, d.log.steps + 1)
    dates = [start + dt.timedelta(days=math.floor((k - 1) * sd)) for k in steps]
    bucket = np.array([x.year * 12 + x.month - 1 for x in dates])
    arrivals = np.array([int(counts.get(int(k), 0)) for k in steps], float)
    keys = np.unique(bucket)
    y = np.array([arrivals[bucket == b].sum() for b in keys])
    days = np.array([(bucket == b).sum() * sd for b in keys], float)
    month = keys % 12
    seen = np.unique(month)
    if seen.size < 2 or y.sum() == 0:
        return
    X0 = np.ones((keys.size, 1))
    X1 = np.column_stack([(month == m).astype(float) for m in seen])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fam = sm.families.Poisson()
        ll0 = sm.GLM(y, X0, family=fam, offset=np.log(days)).fit().llf
        ll1 = sm.GLM(y, X1, family=fam, offset=np.log(days)).fit().llf
    lr = max(0.0, 2 * (ll1 - ll0))
    df = int(seen.size - 1)
    p = float(stats.chi2.sf(lr, df))
    if p >= SEASON_ALPHA:
        return
    mean_rate = y.sum() / days.sum()
    for m in seen:
        k, n = int(y[month == m].sum()), float(days[month == m].sum())
        lo, hi = poisson_interval(k)
        d.estimates.append(
            Estimate(
                "arrivals_by_month",
                d.entry_stage,
                MONTHS[int(m)],
                None,
                None,
                k / n / mean_rate,
                lo / n / mean_rate,
                hi / n / mean_rate,
                int(n),
                k,
                f"arrivals per day in the month over the mean ({mean_rate:.4g}); likelihood "
                f"ratio {lr:.1f} on {df} degrees of freedom against a constant rate "
                f"(p = {p:.1e})",
            )
        )


def estimate(con: duckdb.DuckDBPyConnection, mapping: Mapping, log_: Log) -> Discovery:
    """Every estimate a checked log (:func:`discover._log.open_log`) gives."""
    d = Discovery(mapping=mapping, log=log_)
    dwell = _min_dwell(con, d)
    d.dwell = dwell
    active = _reach(con, d)
    _confounding(con, d, active)
    _exits(con, d, dwell)
    _heterogeneity(con, d, dwell)
    _population(con, d)
    _seasonality(con, d)
    return d
