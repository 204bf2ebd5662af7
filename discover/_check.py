"""Observed against simulated: does the draft reproduce the log it came from?

The draft is run for a few replicates with events; each replicate's events are
read by the same reader as the log (:func:`discover._log.open_log`), so the
observed and the simulated curves are computed by one and the same query:

* occupancy: customers in each stage at the end of each step;
* survival: the share of the customers in a customer stage on the first day
  who are in a customer stage at the end of each step (the initial cohort).

Each observed point sits beside the simulated mean and a 95% prediction band
of one run (mean ± 1.96 standard deviations over the replicates).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

import sim
from discover._log import connect, open_log
from discover._mapping import Mapping

if TYPE_CHECKING:
    import duckdb

__all__ = ["check_table", "curves"]


def curves(con: duckdb.DuckDBPyConnection, mapping: Mapping, steps: int) -> dict[str, np.ndarray]:
    """Occupancy (stage -> float[steps + 1]) and ``survival`` (float[steps + 1]) of the
    log opened in ``con`` (its ``spells`` table)."""
    stages = list(mapping.stages)
    customer = [s for s, k in mapping.stages.items() if k == "customer"]
    out: dict[str, np.ndarray] = {}
    rows = con.execute(f"""
        SELECT stage, entered AS step, count(*) FROM spells GROUP BY ALL
        UNION ALL
        SELECT stage, CASE WHEN to_stage IS NULL THEN {steps} + 1 ELSE last END, -count(*)
        FROM spells GROUP BY ALL""").fetchall()
    delta = np.zeros((len(stages), steps + 2))
    for s, t, c in rows:
        if s in stages and 0 <= int(t) <= steps + 1:
            delta[stages.index(s), int(t)] += c
    occ = np.cumsum(delta, axis=1)[:, : steps + 1]
    for i, s in enumerate(stages):
        out[s] = occ[i]
    rows = con.execute(
        f"""
        WITH cohort AS (SELECT DISTINCT customer FROM spells
                        WHERE initial AND list_contains(?, stage))
        SELECT entered, count(*) FROM spells JOIN cohort USING (customer)
        WHERE list_contains(?, stage) GROUP BY ALL
        UNION ALL
        SELECT CASE WHEN to_stage IS NULL THEN {steps} + 1 ELSE last END, -count(*)
        FROM spells JOIN cohort USING (customer) WHERE list_contains(?, stage) GROUP BY ALL""",
        [customer, customer, customer],
    ).fetchall()
    d = np.zeros(steps + 2)
    for t, c in rows:
        if 0 <= int(t) <= steps + 1:
            d[int(t)] += c
    alive = np.cumsum(d)[: steps + 1]
    out["survival"] = alive / alive[0] if alive[0] > 0 else np.full(steps + 1, np.nan)
    return out


def check_table(
    scenario: sim.Scenario,
    mapping: Mapping,
    observed: dict[str, np.ndarray],
    *,
    replicates: int = 4,
    seed: int = 0,
    memory_limit: str = "2GB",
) -> pa.Table:
    """Observed against simulated occupancy and survival of the draft ``scenario``.

    Returns:
        One row per curve and step: ``curve`` (a stage's name for occupancy, or
        ``survival``), ``step``, ``day``, ``observed``, ``simulated`` (the mean over
        ``replicates`` runs), ``low``, ``high`` (one run's 95% band), ``inside``; the
        draft's name and the replicates in the schema metadata (``journey.scenario``,
        ``journey.replicates``), where the report finds them.
    """
    steps = scenario.steps
    sims: dict[str, list[np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="journey-discover-check-") as tmp:
        sim.run(scenario, replicates=replicates, seed=seed, events=True, out=tmp)
        base = Path(tmp) / "events" / f"scenario={scenario.name}" / "variant=base"
        for r in range(replicates):
            with connect(memory_limit) as con:
                opened = open_log(
                    con,
                    os.fspath(base / f"replicate={r}"),
                    mapping.model_copy(
                        update={"start_day": 0.0, "end_day": float(steps) * mapping.step_days}
                    ),
                )
                for name, curve in curves(con, mapping, opened.steps).items():
                    sims.setdefault(name, []).append(curve[: steps + 1])
    names, step_col, obs, mean, low, high = [], [], [], [], [], []
    for name, runs in sims.items():
        stack = np.vstack(runs)
        m = stack.mean(axis=0)
        sd = stack.std(axis=0, ddof=1) if replicates > 1 else np.zeros_like(m)
        o = observed.get(name)
        if o is None:
            continue
        n = min(len(o), steps + 1)
        top = 1.0 if name == "survival" else np.inf
        names += [name] * n
        step_col += list(range(n))
        obs += list(o[:n])
        mean += list(m[:n])
        low += list(np.clip(m[:n] - 1.96 * sd[:n], 0.0, top))
        high += list(np.clip(m[:n] + 1.96 * sd[:n], 0.0, top))
    lo, hi, ob = np.array(low), np.array(high), np.array(obs)
    meta = {"journey.scenario": scenario.name, "journey.replicates": str(replicates)}
    return pa.table(
        {
            "curve": pa.array(names, pa.string()),
            "step": pa.array(step_col, pa.int32()),
            "day": pa.array(np.array(step_col) * mapping.step_days, pa.float64()),
            "observed": pa.array(ob, pa.float64()),
            "simulated": pa.array(mean, pa.float64()),
            "low": pa.array(lo, pa.float64()),
            "high": pa.array(hi, pa.float64()),
            "inside": pa.array((lo <= ob) & (ob <= hi), pa.bool_()),
        },
        metadata=meta,
    )
