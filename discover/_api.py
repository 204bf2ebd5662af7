"""``discover()``: read the log, estimate, write the draft — a table of contents."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pyarrow as pa

import sim
from discover._check import check_table, curves
from discover._estimate import Discovery, estimate
from discover._log import connect, open_log
from discover._mapping import Mapping, load_mapping
from discover._satisfaction import add_satisfaction
from discover._write import fit_table, scenario_text, write_discovery
from sim.results import discovery_check_path, write_files

__all__ = ["DiscoverResult", "discover"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscoverResult:
    """A discovered draft.

    Attributes:
        scenario: the draft, validated.
        text: its commented YAML.
        fit: the fit table (one row per estimated number).
        discovery: the estimates and warnings behind it.
        paths: files written (draft, fit table, check); empty without ``out``.
        check: observed against simulated occupancy and survival (with ``check``).
    """

    scenario: sim.Scenario
    text: str
    fit: pa.Table
    discovery: Discovery
    paths: list[str]
    check: pa.Table | None = None

    @property
    def warnings(self) -> list[str]:
        """What a reader of the draft should know."""
        return self.discovery.warnings


def discover(
    log_path: str | os.PathLike[str],
    mapping: Mapping | str | os.PathLike[str],
    *,
    step_days: float | None = None,
    out: str | os.PathLike[str] | None = None,
    memory_limit: str = "2GB",
    threads: int | None = None,
    check: int = 0,
    satisfaction: bool = True,
) -> DiscoverResult:
    """Learn a draft scenario from an event log.

    Args:
        log_path: a Parquet or CSV file (or a folder of Parquet files, such as the
            ``events`` table of ``journey run --exposures``) with ``customer_id``,
            ``timestamp`` or ``day``, ``event`` and optionally ``segment`` and ``value``.
        mapping: the mapping file (or a :class:`Mapping`): stages and their kinds,
            touchpoints, event names, the step length.
        step_days: the step length, overriding the mapping's.
        out: write the draft here (and its fit table beside it), atomically.
        memory_limit: DuckDB's memory limit; past it DuckDB spills to a temporary folder.
        threads: DuckDB's threads (default: all cores).
        check: run the draft this many replicates and compare its occupancy and the
            initial cohort's survival with the log's (0: no check).
        satisfaction: reconstruct satisfaction from the exposure history (False: the
            exits, lifts and heterogeneity without it, faster on large logs; the draft
            then names satisfaction as not estimated).

    Raises:
        ScenarioError: the mapping file breaks a rule; DataError: the log does (one
            located line per problem).
    """
    if not isinstance(mapping, Mapping):
        mapping = load_mapping(mapping, step_days=step_days)
    elif step_days is not None:
        mapping = mapping.model_copy(update={"step_days": float(step_days)})
    with connect(memory_limit, threads) as con:
        checked = open_log(con, log_path, mapping)
        found = estimate(con, mapping, checked)
        if satisfaction:
            add_satisfaction(con, found)
        else:
            found.warnings.append("satisfaction was not reconstructed (satisfaction=False, "
                                  "--no-satisfaction): exits are averaged over it")
        observed = curves(con, mapping, checked.steps) if check > 0 else None
    for w in found.warnings:
        log.warning("%s", w)
    if out is not None:
        scenario, paths = write_discovery(found, out)
        text = scenario_text(found)
    else:
        text = scenario_text(found)
        scenario, paths = sim.load_scenario(text), []
    compared = None
    if observed is not None:
        compared = check_table(
            scenario, mapping, observed, replicates=check, memory_limit=memory_limit
        )
        if out is not None:
            written = discovery_check_path(out)
            write_files(written.parent, {written.name: compared})
            paths.append(str(written))
    return DiscoverResult(
        scenario=scenario,
        text=text,
        fit=fit_table(found),
        discovery=found,
        paths=paths,
        check=compared,
    )
