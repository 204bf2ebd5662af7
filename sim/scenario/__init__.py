"""Scenario files: schema, safe loading, validation and patches."""

from sim.scenario._load import check_scenario_file, load_scenario
from sim.scenario._schema import (
    Intervention,
    Scenario,
    Segment,
    Stage,
    Touchpoint,
    json_schema,
    split_exit,
)

__all__ = [
    "Intervention",
    "Scenario",
    "Segment",
    "Stage",
    "Touchpoint",
    "check_scenario_file",
    "json_schema",
    "load_scenario",
    "split_exit",
]
