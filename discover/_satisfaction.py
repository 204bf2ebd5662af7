"""Satisfaction reconstructed from the exposure history.

The engine's satisfaction (``sim/engines/_kernels.py``, ``advance``) is a
deterministic function of what a log shows: each step
``x += decay · (baseline − x)``, then ``+ kick_k`` per exposure to touchpoint
``k`` in that step (before the step's exit draw), starting at ``initial`` when
the customer is first seen, and an exit's log-odds gain ``effect_e · x``.
Without the clip to [-1, 1], and with ``initial = baseline``::

    effect_e · x_t = effect_e · baseline + Σ_k effect_e · kick_k · D_k(t),

``D_k(t) = Σ_{exposures to k at steps s ≤ t} (1 − decay)^(t − s)`` the decayed
count of the customer's exposures to ``k`` (in any stage). For a given decay
these are covariates of each exit's binomial GLM; their coefficients are the
products ``effect_e · kick_k``, the intercept is the exit's log-odds at
baseline satisfaction. ``initial`` is taken equal to ``baseline``: the term
``effect_e · (initial − baseline) · (1 − decay)^age`` would be confounded with a
hazard that changes with the dwell in the customer's first stage (age and
dwell are one there), and a log does not show the satisfaction of the
customers already present on its first day. The
decay is profiled on a grid by the log-likelihood summed over the exits, and a
likelihood-ratio test against the model without the covariates decides whether
the draft gets a satisfaction block.

The customer-steps at risk have a continuous covariate each, so they cannot be
aggregated into patterns like the exits' cells: they are **sampled** instead,
deterministically (a hash of the customer and the step): every exit kept (up to
:data:`CASES_MAX` per exit), the steps with exposures up to
:data:`EXPOSED_MAX`, the other steps at the rate that gives
:data:`CONTROLS_PER_CASE` per exit (at least :data:`CONTROLS_MIN`). A row's
inclusion depends only on its outcome and on its covariates (exposed or not),
so a logistic regression on the sample with the offset
``log(rate of the row as an exit / rate as a non-exit)`` estimates the same
coefficients (case-control sampling), with Wald intervals valid for the sample.

The products are one rank-1 matrix (exits × touchpoints). The per-exit
coefficients are reconciled into effects and kicks by weighted least squares
(alternating, each exit's coefficients weighted by the inverse of their
covariance); the scale is not identified (``effect · kick`` is), so it is fixed
by a stated normalisation: the largest ``|x − baseline|`` over the sampled
customer-steps is 1, with ``baseline`` 0 (the engine's clip then does not bind
on histories like the log's). The sign is fixed so that satisfaction lowers the
odds of the best-measured exit into a ``lost`` stage.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    import duckdb

    from discover._estimate import Discovery, Estimate

__all__ = ["SatisfactionFit", "add_satisfaction", "fit_satisfaction"]

log = logging.getLogger(__name__)

GRID = (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)
"""Decays per step on which the log-likelihood is profiled (then refined between the
best point's neighbours)."""
SAT_ALPHA = 0.01
"""Level of the likelihood-ratio test against no satisfaction."""
CASES_MAX = 10_000
"""Exits of one kind kept in the sample; more are sampled down."""
CONTROLS_MIN = 50_000
"""Customer-steps without the exit kept in a stage's sample, at least."""
CONTROLS_MAX = 60_000
"""… and at most (the sample's size, hence the fits' cost, is bounded whatever the log)."""
CONTROLS_PER_CASE = 20
"""Customer-steps without the exit kept per exit (variances about 1/20 larger than from
all the steps)."""
EXPOSED_MAX = 50_000
"""Customer-steps with exposures kept in a stage's sample, at most (all when fewer)."""
HET_CUSTOMERS = 10_000
"""Customers of a stage whose effective steps are summed for the heterogeneity test, at
most (a hash sample of them beyond: customers are independent, so the test stays valid
with less power, and its cost bounded)."""
EXP_LIMIT = 600.0
"""A decay is on the grid only if ``(1 − decay)^-steps`` stays below ``e^600``."""


@dataclass
class _Sample:
    """The sampled customer-steps at risk of one stage."""

    stage: str
    segment: np.ndarray  # int[P]
    mask: np.ndarray  # uint64[P]
    to: np.ndarray  # object[P]: exit target or None
    u: np.ndarray  # float[P]: the row's uniform (hash)
    rid: np.ndarray  # int[P]: row ids in the samp table
    r0: float  # rate of the steps without exposure and without exit
    rx: float  # rate of the steps with exposures and without exit
    rcase: dict[str, float]  # rate of each exit's rows

    def rows(self, target: str) -> tuple[np.ndarray, np.ndarray]:
        """The rows of the exit ``target``'s GLM and their offsets."""
        exposed = self.mask != 0
        r_ctrl = np.where(exposed, self.rx, self.r0)
        is_case = self.to == target
        keep = np.where(is_case, self.u < self.rcase[target], self.u < r_ctrl)
        offset = np.log(self.rcase[target] / r_ctrl)
        return keep, offset[keep]


@dataclass
class SatisfactionFit:
    """What the log says of satisfaction.

    Attributes:
        accepted: whether the likelihood-ratio test rejects no satisfaction.
        decay, decay_low, decay_high: the profiled decay per step and its interval.
        lr, df, p: the test (NaN when no exit's stocks differ from 0 by a Wald test at
            :data:`SAT_ALPHA` at the middle decay: then nothing is profiled).
        columns: the stock columns (the touchpoints seen).
        products: (stage, target) -> (coefficients, covariance, columns kept).
        kicks, kick_se: touchpoint (or AGE) -> reconciled kick and its s.e.
        effects, effect_se: (stage, target) -> reconciled effect and its s.e.
        exit_estimates: (stage, target) -> the exit's estimates with the stocks.
        scale: the largest |S| on the sampled rows before normalising.
    """

    accepted: bool
    decay: float
    decay_low: float
    decay_high: float
    lr: float
    df: int
    p: float
    columns: list[str]
    products: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, list[int]]]
    kicks: dict[str, float] = field(default_factory=dict)
    kick_se: dict[str, float] = field(default_factory=dict)
    effects: dict[tuple[str, str], float] = field(default_factory=dict)
    effect_se: dict[tuple[str, str], float] = field(default_factory=dict)
    exit_estimates: dict[tuple[str, str], list[Estimate]] = field(default_factory=dict)
    fits: dict[tuple[str, str], Any] = field(default_factory=dict)
    exit_rows: dict[tuple[str, str], int] = field(default_factory=dict)
    exit_cases: dict[tuple[str, str], int] = field(default_factory=dict)
    scale: float = 1.0


@dataclass
class _Light:
    """What is kept of one exit's fit."""

    params: np.ndarray
    cov: np.ndarray
    llf: float
    nobs: int
    cases: int

    def cov_params(self) -> np.ndarray:
        return self.cov


def _u_sql() -> str:
    return "CAST(hash(r.customer, r.step) >> 11 AS DOUBLE) / 9007199254740992.0"


def _sample(
    con: duckdb.DuckDBPyConnection, d: Discovery, stage: str, m: int, targets: list[str]
) -> _Sample | None:
    """Sample the stage's customer-steps at risk into the table ``samp``."""
    counts = con.execute(
        f"""
        SELECT sum(greatest(0, last - (first + {m} - 1) + 1)) FROM spells WHERE stage = ?""",
        [stage],
    ).fetchone()
    steps = int(counts[0] or 0) if counts else 0
    exposed = con.execute(
        f"SELECT count(*) FROM exposed WHERE stage = ? AND dwell >= {m} AND to_stage IS NULL",
        [stage],
    ).fetchone()
    n_exposed = int(exposed[0]) if exposed else 0
    exits = dict(
        con.execute(
            f"""
            SELECT to_stage, count(*) FROM spells
            WHERE stage = ? AND to_stage IS NOT NULL AND last - first + 1 >= {m}
            GROUP BY to_stage""",
            [stage],
        ).fetchall()
    )
    n_exits = sum(int(v) for v in exits.values())
    if steps == 0 or n_exits == 0:
        return None
    rcase = {t: min(1.0, CASES_MAX / max(1, int(exits.get(t, 0)))) for t in targets}
    kept_cases = max(min(CASES_MAX, int(exits.get(t, 0))) for t in targets)
    plain = max(1, steps - n_exits - n_exposed)
    want = min(CONTROLS_MAX, max(CONTROLS_MIN, CONTROLS_PER_CASE * kept_cases))
    r0 = min(1.0, want / plain)
    rx = min(1.0, max(r0, EXPOSED_MAX / max(1, n_exposed)))
    rates = ", ".join(f"({_q(t)}, {rcase[t]!r})" for t in targets)
    u = _u_sql()
    # the rows kept: any at-risk step with u < r0, an exposed one with u < rx, an exit with
    # u < its rate; the three are read apart (only the first enumerates every step, and
    # it is joined to nothing before it is sampled)
    con.execute(
        f"""
        INSERT INTO samp
        WITH picked AS (
            SELECT * FROM (
                SELECT customer, segment, stage, step,
                       CASE WHEN step = last THEN to_stage END AS y
                FROM (SELECT customer, segment, stage, last, to_stage,
                             unnest(range(first + {m} - 1, last + 1)) AS step
                      FROM spells WHERE stage = $1 AND last >= first + {m} - 1)) r
            WHERE {u} < {r0!r}
            UNION
            SELECT customer, segment, stage, step, to_stage AS y FROM exposed r
            WHERE stage = $1 AND dwell >= {m} AND {u} < {rx!r}
            UNION
            SELECT r.customer, r.segment, r.stage, r.last AS step, r.to_stage AS y
            FROM (SELECT customer, segment, stage, last AS step, last, to_stage FROM spells
                  WHERE stage = $1 AND to_stage IS NOT NULL AND last - first + 1 >= {m}) r
            JOIN (VALUES {rates}) AS rc(target, rate) ON rc.target = r.to_stage
            WHERE {u} < rc.rate)
        SELECT (SELECT count(*) FROM samp) + row_number() OVER (ORDER BY r.customer, r.step)
                   - 1,
               r.customer, r.stage, r.segment, r.step,
               coalesce(x.mask, CAST(0 AS UBIGINT)), r.y, {u} AS u
        FROM picked r
        LEFT JOIN (SELECT customer, step, mask FROM exposed WHERE stage = $1) x
          ON x.customer = r.customer AND x.step = r.step""",
        [stage],
    )
    got = con.execute(
        "SELECT id, segment, mask, y, u FROM samp WHERE stage = ? ORDER BY id", [stage]
    ).fetchnumpy()
    seg_no = {g: i for i, g in enumerate(d.log.segments)}
    return _Sample(
        stage=stage,
        segment=np.array([seg_no[str(g)] for g in got["segment"]], int),
        mask=np.asarray(got["mask"], np.uint64),
        to=np.array([None if v is None else str(v) for v in _as_list(got["y"])], object),
        u=np.asarray(got["u"], float),
        rid=np.asarray(got["id"], np.int64),
        r0=r0,
        rx=rx,
        rcase=rcase,
    )


def _as_list(a: Any) -> list[Any]:
    if isinstance(a, np.ma.MaskedArray):
        return [None if m else v for v, m in zip(a.data, np.ma.getmaskarray(a), strict=True)]
    return list(a)


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class _Stocks:
    """The decayed exposure counts of the sampled customer-steps, for any decay.

    A row's count of touchpoint ``k`` is ``Σ (1 − decay)^lag`` over the customer's steps
    with an exposure to ``k`` that lie ``lag ≥ 0`` steps before the row's step (its own
    step's included). The pairs (row, touchpoint, lag) do not depend on the decay: DuckDB
    joins them once (each sampled row with its customer's earlier exposures; as many as
    the sample's rows times a customer's exposure steps, whatever the log's size) and
    they are read in record batches into two arrays. A decay's counts are then one
    weighted ``bincount`` of them, so the profile over the decays reads the log once.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, n_tp: int) -> None:
        self.rows = int(con.execute("SELECT count(*) FROM samp").fetchall()[0][0])
        self.n_tp = n_tp
        rel = con.sql(f"""
            SELECT s.id * {n_tp} + t.k AS cell, CAST(s.step - x.step AS INTEGER) AS lag
            FROM samp s
            JOIN (SELECT customer, step, bit_or(mask) AS mask FROM exposed
                  WHERE customer IN (SELECT customer FROM samp) GROUP BY customer, step) x
              ON x.customer = s.customer AND x.step <= s.step,
                 range({n_tp}) t(k)
            WHERE (x.mask >> CAST(t.k AS UBIGINT)) & CAST(1 AS UBIGINT) = 1""")
        # DuckDB 1.x names the streaming reader fetch_record_batch (deprecated since)
        stream = getattr(rel, "to_arrow_reader", None) or rel.fetch_record_batch
        reader = stream(1 << 20)
        cells, lags = [], []
        for batch in reader:
            cells.append(batch.column(0).to_numpy().astype(np.int64, copy=False))
            lags.append(batch.column(1).to_numpy().astype(np.int32, copy=False))
        self.cell = np.concatenate(cells) if cells else np.zeros(0, np.int64)
        self.lag = np.concatenate(lags) if lags else np.zeros(0, np.int32)
        self.max_lag = int(self.lag.max()) if self.lag.size else 0

    def __call__(self, decay: float) -> np.ndarray:
        """float[rows of samp (by id), n_tp]: the counts at ``decay``."""
        weight = np.power(1.0 - decay, np.arange(self.max_lag + 1, dtype=float))[self.lag]
        counts = np.bincount(self.cell, weights=weight, minlength=self.rows * self.n_tp)
        return counts.reshape(self.rows, self.n_tp)


def _fit_all(
    d: Discovery,
    samples: list[_Sample],
    rows_of: dict[str, np.ndarray],
    z: np.ndarray | None,
    only: set[tuple[str, str]] | None = None,
    start: dict[tuple[str, str], np.ndarray] | None = None,
) -> tuple[float, dict[tuple[str, str], Any]]:
    """Each exit's GLM on its sample (with the stocks ``z`` as covariates, or none), or
    those in ``only``, Newton started from ``start`` (an exit's coefficients at a
    neighbouring decay) where it has the model's width; the summed log-likelihood and
    the fits."""
    from discover._estimate import _one_exit, _sampled_cells

    total = 0.0
    fits: dict[tuple[str, str], Any] = {}
    for smp in samples:
        idx = rows_of[smp.stage]
        cells = _sampled_cells(smp)
        zz = None if z is None else z[idx]
        seen = [
            i
            for i in range(len(d.mapping.touchpoints))
            if (smp.mask >> np.uint64(i) & np.uint64(1)).any()
        ]
        for t in d.exits[smp.stage]:
            if only is not None and (smp.stage, t) not in only:
                continue
            keep, offset = smp.rows(t)
            res = _one_exit(
                d,
                smp.stage,
                t,
                cells,
                seen,
                extra=zz,
                offset=offset,
                keep=keep,
                start=None if start is None else start.get((smp.stage, t)),
            )
            if res is None:
                continue
            # keep the numbers, not statsmodels' results (each holds its design matrix)
            res.fit = _Light(
                params=np.asarray(res.fit.params),
                cov=np.asarray(res.fit.cov_params()),
                llf=float(res.fit.llf),
                nobs=int(res.fit.nobs),
                cases=int(np.asarray(res.fit.model.endog).sum()),
            )
            total += float(res.fit.llf)
            fits[(smp.stage, t)] = res
    return total, fits


def _wald_p(f: Any) -> float:
    """p-value of the Wald test that an exit's stock coefficients are all 0."""
    k = len(f.extra_cols)
    if k == 0:
        return 1.0
    idx = list(range(f.first_extra, f.first_extra + k))
    c = np.asarray(f.fit.params)[idx]
    cov = np.asarray(f.fit.cov_params())[np.ix_(idx, idx)]
    try:
        w = float(c @ np.linalg.solve(cov, c))
    except np.linalg.LinAlgError:
        return 1.0
    return float(stats.chi2.sf(w, k))


def _reconcile(
    products: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, list[int]]], width: int
) -> tuple[dict[tuple[str, str], tuple[float, float]], np.ndarray, np.ndarray]:
    """Effects (with s.e.) and kicks (with s.e.) from the per-exit products by alternating
    weighted least squares; the scale is left to the caller."""
    prec: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for key, (c, cov, kept) in products.items():
        full = np.zeros(width)
        w = np.zeros((width, width))
        try:
            inv = np.linalg.inv(cov)
        except np.linalg.LinAlgError:
            continue
        full[kept] = c
        w[np.ix_(kept, kept)] = inv
        prec[key] = (full, w)
    if not prec:
        return {}, np.zeros(width), np.full(width, np.inf)
    # the kicks are fitted on the exits whose products differ from 0 (Wald test at
    # SAT_ALPHA): the others carry no information on them, only noise
    wald = {k: float(c @ w @ c) for k, (c, w) in prec.items()}
    informative = {
        k: v
        for k, v in prec.items()
        if stats.chi2.sf(wald[k], max(1, int(np.count_nonzero(np.diag(v[1]))))) < SAT_ALPHA
    }
    if not informative:
        return {}, np.zeros(width), np.full(width, np.inf)
    best = max(informative, key=lambda k: wald[k])
    s = informative[best][0].copy()
    beta: dict[tuple[str, str], float] = {}
    for _ in range(500):
        for key, (c, w) in informative.items():
            den = float(s @ w @ s)
            beta[key] = float(s @ w @ c) / den if den > 0 else 0.0
        a = sum(beta[k] ** 2 * w for k, (c, w) in informative.items())
        b = sum(beta[k] * (w @ c) for k, (c, w) in informative.items())
        s_new = np.linalg.lstsq(a, b, rcond=None)[0]
        s_new = s_new / (float(np.max(np.abs(s_new))) or 1.0)
        done = np.allclose(s_new, s, atol=1e-9)
        s = s_new
        if done:
            break
    effects = {}
    for key, (c, w) in prec.items():
        den = float(s @ w @ s)
        beta[key] = float(s @ w @ c) / den if den > 0 else 0.0
        effects[key] = (beta[key], 1 / math.sqrt(den) if den > 0 else math.inf)
    a = sum(beta[k] ** 2 * w for k, (c, w) in informative.items())
    try:
        cov_s = np.linalg.pinv(a)
        se = np.sqrt(np.maximum(0.0, np.diag(cov_s)))
        se[np.diag(a) <= 0] = np.inf
    except np.linalg.LinAlgError:
        se = np.full(width, np.inf)
    return effects, s, se


def fit_satisfaction(
    con: duckdb.DuckDBPyConnection, d: Discovery, dwell: dict[str, int]
) -> SatisfactionFit | None:
    """Profile the decay, test satisfaction against none, reconcile effects and kicks."""
    tps = d.mapping.touchpoints
    if not tps or not d.exits:
        return None
    con.execute("""
        CREATE OR REPLACE TEMP TABLE samp (id BIGINT, customer VARCHAR, stage VARCHAR,
            segment VARCHAR, step BIGINT, mask UBIGINT, y VARCHAR, u DOUBLE)""")
    samples = []
    for s, targets in d.exits.items():
        smp = _sample(con, d, s, dwell[s], targets)
        if smp is not None:
            samples.append(smp)
    if not samples:
        return None
    start = 0
    rows_of: dict[str, np.ndarray] = {}
    for smp in samples:  # the ids are consecutive per stage, in insertion order
        rows_of[smp.stage] = np.arange(start, start + smp.rid.size)
        start += smp.rid.size
    steps = d.log.steps
    grid = [g for g in GRID if -math.log1p(-g) * steps <= EXP_LIMIT]
    columns = list(tps)
    # the exits whose stocks matter (Wald test at SAT_ALPHA at a middle decay) carry the
    # decay's profile; the others' likelihood hardly depends on it. The stocks of one
    # decay at a time are held (the sample's rows times the touchpoints).
    mid = grid[len(grid) // 2]
    stocks = _Stocks(con, len(tps))
    z = stocks(mid)
    seen_any = np.abs(z).max(axis=0) > 0  # the same columns are 0 whatever the decay
    _, first = _fit_all(d, samples, rows_of, z[:, seen_any])
    chosen = {k for k, f in first.items() if _wald_p(f) < SAT_ALPHA}
    if not chosen:  # no exit's stocks differ from 0 (Wald tests): no satisfaction
        con.execute("DROP TABLE samp")
        return SatisfactionFit(
            accepted=False,
            decay=mid,
            decay_low=grid[0],
            decay_high=grid[-1],
            lr=math.nan,
            df=sum(len(f.extra_cols) for f in first.values()),
            p=math.nan,
            columns=[c for c, keep in zip(columns, seen_any, strict=True) if keep],
            products={},
        )
    prof = {mid: sum(float(first[k].fit.llf) for k in chosen)}
    ll0, _ = _fit_all(d, samples, rows_of, None)

    # each exit's coefficients at the decays evaluated: Newton starts from the nearest's
    coefs = {mid: {k: np.asarray(f.fit.params) for k, f in first.items()}}

    def started(x: float) -> dict[tuple[str, str], np.ndarray]:
        at = min(coefs, key=lambda v: abs(math.log(v / x)))
        return coefs[mid] | coefs[at]

    def profile(decays: list[float]) -> None:
        for x in decays:
            if x in prof or -math.log1p(-x) * steps > EXP_LIMIT:
                continue
            zx = stocks(x)[:, seen_any]
            prof[x], got = _fit_all(d, samples, rows_of, zx, chosen, started(x))
            coefs[x] = {k: np.asarray(f.fit.params) for k, f in got.items()}
            log.debug("satisfaction decay %g: log-likelihood %.2f", x, prof[x])

    profile(grid)
    best = max(prof, key=lambda k: prof[k])

    # refine: halfway (in log decay) to the best grid point's neighbours, then the top of a
    # parabola in log(decay) through the five points around it
    profile([best / math.sqrt(2), best * math.sqrt(2)])
    near = sorted(x for x in prof if best / 2.01 <= x <= best * 2.01)
    if len(near) >= 3:
        xs = np.log(near)
        a2, a1, _ = np.polyfit(xs, [prof[x] for x in near], 2)
        if a2 < 0:
            profile([float(np.exp(np.clip(-a1 / (2 * a2), xs[0], xs[-1])))])
    best = max(prof, key=lambda k: prof[k])
    # profile interval: the decays whose log-likelihood lies within chi2(1, 0.95)/2 of the
    # top, interpolated linearly in log(decay) between the points evaluated
    cut = prof[best] - float(stats.chi2.ppf(0.95, 1)) / 2
    decays = sorted(prof)
    lo_d, hi_d = decays[0], decays[-1]
    for a, b in itertools.pairwise(decays):
        la, lb = math.log(a), math.log(b)
        if prof[a] < cut <= prof[b] and b <= best:
            lo_d = math.exp(la + (lb - la) * (cut - prof[a]) / (prof[b] - prof[a]))
        if prof[a] >= cut > prof[b] and a >= best:
            hi_d = math.exp(la + (lb - la) * (prof[a] - cut) / (prof[a] - prof[b]))
    z = stocks(best)[:, seen_any]
    ll1, fits = _fit_all(d, samples, rows_of, z, start=started(best))
    n_extra = sum(len(f.extra_cols) for f in fits.values())
    lr = max(0.0, 2 * (ll1 - ll0))
    df = n_extra + 1
    p = float(stats.chi2.sf(lr, df))
    names = [c for c, keep in zip(columns, seen_any, strict=True) if keep]
    products = {}
    for key, f in fits.items():
        cols = f.extra_cols
        first = f.first_extra
        idx = list(range(first, first + len(cols)))
        params = np.asarray(f.fit.params)[idx]
        cov = np.asarray(f.fit.cov_params())[np.ix_(idx, idx)]
        products[key] = (params, cov, cols)
    out = SatisfactionFit(
        accepted=p < SAT_ALPHA,
        decay=best,
        decay_low=lo_d,
        decay_high=hi_d,
        lr=lr,
        df=df,
        p=p,
        columns=names,
        products=products,
        exit_estimates={key: f.estimates for key, f in fits.items()},
        fits=fits,
        exit_rows={key: int(f.fit.nobs) for key, f in fits.items()},
        exit_cases={key: int(f.fit.cases) for key, f in fits.items()},
    )
    effects, kicks, kick_se = _reconcile(products, len(names))
    # the scale: the largest |x - baseline| over the sampled customer-steps is 1
    scale = float(np.max(np.abs(z @ kicks))) if z.size else 0.0
    if scale <= 0 or not effects:
        out.accepted = False
        return out
    kicks, kick_se = kicks / scale, kick_se / scale
    effects = {k: (b * scale, se * scale) for k, (b, se) in effects.items()}
    # the sign: satisfied customers are less likely to take the best-measured exit into a
    # lost stage (or, without one, the kicks sum to a positive number)
    lost = [k for k in effects if d.mapping.stages.get(k[1]) == "lost"]
    if lost:
        ref = max(lost, key=lambda k: abs(effects[k][0]) / effects[k][1])
        flip = effects[ref][0] > 0
    else:
        flip = float(kicks.sum()) < 0
    if flip:
        kicks = -kicks
        effects = {k: (-b, se) for k, (b, se) in effects.items()}
    out.kicks = dict(zip(names, kicks.tolist(), strict=True))
    out.kick_se = dict(zip(names, kick_se.tolist(), strict=True))
    out.effects = {k: b for k, (b, _) in effects.items()}
    out.effect_se = {k: se for k, (_, se) in effects.items()}
    out.scale = scale
    con.execute("DROP TABLE samp")
    return out


def _xd(con: duckdb.DuckDBPyConnection, n_tp: int, decay: float) -> None:
    """The table ``xd``: at each step with exposures of a customer of ``het_customers``
    (by its number ``cid``), the step's exposures (``mask``) and each touchpoint's
    decayed count of the customer's exposures so far (``d_{k}``), as a cumulative sum
    relative to the customer's first exposure."""
    q = 1.0 - decay
    cols = []
    for k in range(n_tp):
        bit = f"CAST((mask >> CAST({k} AS UBIGINT)) & CAST(1 AS UBIGINT) AS DOUBLE)"
        cols.append(f"sum({bit} * pow({q!r}, f - step)) OVER w * pow({q!r}, step - f) AS d_{k}")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE xd AS
        SELECT cid, step, mask, {", ".join(cols)}
        FROM (SELECT cid, step, mask, min(step) OVER (PARTITION BY cid) AS f
              FROM (SELECT h.cid, x.step, bit_or(x.mask) AS mask
                    FROM exposed x JOIN het_customers h USING (customer)
                    GROUP BY h.cid, x.step))
        WINDOW w AS (PARTITION BY cid ORDER BY step ROWS UNBOUNDED PRECEDING)""")


def heterogeneity_with_satisfaction(
    con: duckdb.DuckDBPyConnection, d: Discovery, sat: SatisfactionFit
) -> None:
    """Test heterogeneity again with each customer's steps weighted by the odds
    multipliers of its exposures and satisfaction.

    Differences in satisfaction between customers look like heterogeneity to a test on
    raw counts (the satisfied leave less), and they bias a Beta fitted on them. For a rare
    exit the per-step probability is about ``q_i · m_t`` (``q_i`` the customer's base
    rate, ``m_t = exp(lifts + effect · satisfaction)`` the step's odds multiplier), so a
    customer's exits are those of ``Σ_t m_t`` baseline steps: the beta-binomial test of
    :func:`discover._estimate._het_test` runs on these effective steps, and its Beta is
    the base rate at baseline satisfaction without exposures, as the engine draws it.
    """
    from discover._estimate import HET_MIN_EXITS, _het_test

    tps = d.mapping.touchpoints
    q = 1.0 - sat.decay
    d.estimates = [e for e in d.estimates if e.kind not in ("beta_a", "beta_b")]
    before = len(d.estimates)
    for s, targets in d.exits.items():
        m = d.dwell[s]
        many = con.execute(
            "SELECT count(DISTINCT customer) FROM spells WHERE stage = ?", [s]
        ).fetchone()
        rate = min(1.0, HET_CUSTOMERS / max(1, int(many[0]) if many else 1))
        # the customers numbered: the joins and the sort of their steps on integers
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE het_customers AS
            SELECT customer, row_number() OVER (ORDER BY customer) AS cid FROM (
                SELECT DISTINCT customer FROM spells
                WHERE stage = ? AND CAST(hash(customer) >> 11 AS DOUBLE) / 9007199254740992.0
                                    < {rate!r})""",
            [s],
        )
        _xd(con, len(tps), sat.decay)
        sums, ys = [], []
        for j, t in enumerate(targets):
            f = sat.fits.get((s, t))
            terms = ["0.0"]
            if f is not None:
                params = np.asarray(f.fit.params)
                first_lift = f.first_extra - len(f.tp_cols)
                for i, tp in enumerate(f.tp_cols):
                    terms.append(
                        f"{float(params[first_lift + i])!r} * CAST((CASE WHEN xd.step = "
                        f"r.step THEN xd.mask ELSE CAST(0 AS UBIGINT) END >> CAST({tp} AS "
                        "UBIGINT)) & CAST(1 AS UBIGINT) AS DOUBLE)"
                    )
                for i, col in enumerate(f.extra_cols):
                    k = tps.index(sat.columns[col])
                    terms.append(
                        f"{float(params[f.first_extra + i])!r} * "
                        f"coalesce(xd.d_{k} * pow({q!r}, r.step - xd.step), 0.0)"
                    )
            sums.append(f"sum(exp({' + '.join(terms)})) AS n{j}")
            ys.append(f"count(*) FILTER (r.y = {_q(t)}) AS y{j}")
        got = con.execute(
            f"""
            SELECT r.segment, {", ".join(sums)}, {", ".join(ys)}
            FROM (SELECT cid, segment, step, CASE WHEN step = last THEN to_stage END AS y
                  FROM (SELECT h.cid, s.segment, s.last, s.to_stage,
                               unnest(range(s.first + {m} - 1, s.last + 1)) AS step
                        FROM spells s JOIN het_customers h USING (customer)
                        WHERE s.stage = ? AND s.last >= s.first + {m} - 1)) r
            ASOF LEFT JOIN xd ON r.cid = xd.cid AND r.step >= xd.step
            GROUP BY r.cid, r.segment ORDER BY r.cid""",
            [s],
        ).fetchall()
        if not got:
            continue
        seg = np.array([row[0] for row in got], object)
        for j, t in enumerate(targets):
            n = np.array([row[1 + j] for row in got], float)
            y = np.array([row[1 + len(targets) + j] for row in got], float)
            for g in d.log.segments:
                sel = seg == g
                if y[sel].sum() < HET_MIN_EXITS:
                    continue
                _het_test(d, s, t, g, n[sel], y[sel], np.ones(int(sel.sum())))
    con.execute("DROP TABLE IF EXISTS xd")
    con.execute("DROP TABLE IF EXISTS het_customers")
    for i in range(before, len(d.estimates)):
        e = d.estimates[i]
        d.estimates[i] = replace(
            e,
            note=f"{e.note}; each customer's steps weighted by its exposures' and "
            "satisfaction's odds multipliers (base rate at baseline satisfaction)",
        )


def add_satisfaction(con: duckdb.DuckDBPyConnection, d: Discovery) -> SatisfactionFit | None:
    """Fit satisfaction (:func:`fit_satisfaction`) and, when the test accepts it, put its
    exits, offsets and lifts (at baseline satisfaction) in place of those without it, and
    its decay, products, kicks and effects in the estimates."""
    from discover._estimate import Z95, Estimate

    sat = fit_satisfaction(con, d, d.dwell)
    d.satisfaction = sat
    if sat is None:
        return None
    test = (
        f"likelihood ratio {sat.lr:.1f} on {sat.df} degrees of freedom against no "
        f"satisfaction (p = {sat.p:.1e})"
    )
    if not sat.accepted:
        return sat
    heterogeneity_with_satisfaction(con, d, sat)
    by_key = {
        (e.kind, e.stage, e.target, e.segment, e.touchpoint): i for i, e in enumerate(d.estimates)
    }
    n_rows = 0
    n_exits = 0
    for (s, t), found in sat.exit_estimates.items():
        for e in found:
            key = (e.kind, e.stage, e.target, e.segment, e.touchpoint)
            i = by_key.get(key)
            note = "at baseline satisfaction, fitted on sampled customer-steps"
            if i is None:  # estimable only with the stocks: sample sizes are the sample's
                d.estimates.append(replace(e, note="; ".join(filter(None, [note, e.note]))))
                continue
            old = d.estimates[i]
            d.estimates[i] = replace(
                old,
                estimate=e.estimate,
                low=e.low,
                high=e.high,
                note="; ".join(filter(None, [note, e.note])),
            )
        coef, cov, kept = sat.products[(s, t)]
        sampled = int(sat.exit_rows.get((s, t), 0))
        exits = int(sat.exit_cases.get((s, t), 0))
        n_rows += sampled
        n_exits += exits
        for j, col in enumerate(kept):
            se = math.sqrt(max(0.0, float(cov[j, j])))
            d.estimates.append(
                Estimate(
                    "satisfaction_stock",
                    s,
                    t,
                    None,
                    sat.columns[col],
                    float(coef[j]),
                    float(coef[j]) - Z95 * se,
                    float(coef[j]) + Z95 * se,
                    sampled,
                    exits,
                    "coefficient of the decayed exposure count: effect times kick",
                )
            )
    d.estimates.append(
        Estimate(
            "satisfaction_decay",
            None,
            None,
            None,
            None,
            sat.decay,
            sat.decay_low,
            sat.decay_high,
            n_rows,
            n_exits,
            f"profile likelihood; {test}",
        )
    )
    scaled = "scaled so that the largest |satisfaction - baseline| in the sample is 1"
    for name, value in sat.kicks.items():
        se = sat.kick_se[name]
        d.estimates.append(
            Estimate(
                "satisfaction_kick",
                None,
                None,
                None,
                name,
                value,
                value - Z95 * se,
                value + Z95 * se,
                n_rows,
                n_exits,
                f"{scaled}; interval given the effects",
            )
        )
    for (s, t), value in sat.effects.items():
        se = sat.effect_se[(s, t)]
        d.estimates.append(
            Estimate(
                "satisfaction_effect",
                s,
                t,
                None,
                None,
                value,
                value - Z95 * se,
                value + Z95 * se,
                int(sat.exit_rows.get((s, t), 0)),
                int(sat.exit_cases.get((s, t), 0)),
                f"log-odds per unit of satisfaction ({scaled}); interval given the kicks",
            )
        )
    return sat
