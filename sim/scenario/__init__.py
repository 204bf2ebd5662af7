"""Scenario files: schema, safe loading, validation and patches."""

from sim.scenario._load import check_scenario_file, load_scenario, problems_from_validation
from sim.scenario._schema import (
    Intervention,
    Scenario,
    Segment,
    Stage,
    Touchpoint,
    json_schema,
    split_exit,
)
from sim.scenario._yaml import Located, read_yaml

__all__ = [
    "Intervention",
    "Located",
    "Scenario",
    "Segment",
    "Stage",
    "Touchpoint",
    "check_scenario_file",
    "json_schema",
    "load_scenario",
    "problems_from_validation",
    "read_yaml",
    "split_exit",
]
