"""Scenario files: schema, safe loading, validation and patches."""

from sim.scenario._calendar import SHAPE_LEVELS, dates, shape_levels, step_multipliers
from sim.scenario._load import check_scenario_file, load_scenario
from sim.scenario._problems import problems_from_validation
from sim.scenario._scenario import Scenario, json_schema
from sim.scenario._schema import Intervention, Segment, Stage, Touchpoint, split_exit
from sim.scenario._settings import (
    BASE_VARIANT,
    is_variant_label,
    parse_assignment,
    parse_setting,
    parse_value,
    variant_label,
)
from sim.scenario._yaml import Located, read_yaml

__all__ = [
    "BASE_VARIANT",
    "SHAPE_LEVELS",
    "Intervention",
    "Located",
    "Scenario",
    "Segment",
    "Stage",
    "Touchpoint",
    "check_scenario_file",
    "dates",
    "is_variant_label",
    "json_schema",
    "load_scenario",
    "parse_assignment",
    "parse_setting",
    "parse_value",
    "problems_from_validation",
    "read_yaml",
    "shape_levels",
    "split_exit",
    "step_multipliers",
    "variant_label",
]
