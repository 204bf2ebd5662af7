"""``discover()``: read the log, estimate, write the draft — a table of contents."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pyarrow as pa

import sim
from discover._estimate import Discovery, estimate
from discover._log import connect, open_log
from discover._mapping import Mapping, load_mapping
from discover._write import fit_table, scenario_text, write_discovery

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
        paths: files written (draft, fit table); empty without ``out``.
    """

    scenario: sim.Scenario
    text: str
    fit: pa.Table
    discovery: Discovery
    paths: list[str]

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
    for w in found.warnings:
        log.warning("%s", w)
    if out is not None:
        scenario, paths = write_discovery(found, out)
        text = scenario_text(found)
    else:
        text = scenario_text(found)
        scenario, paths = sim.load_scenario(text), []
    return DiscoverResult(
        scenario=scenario, text=text, fit=fit_table(found), discovery=found, paths=paths
    )
