"""Optimisation: find the interventions that maximise a KPI within a budget.

Public API::

    import optimise
    result = optimise.optimise("scenarios/dental_clinic.yaml", trials=50)
    result.best, result.baseline

    fit = optimise.calibrate("scenarios/subscription_cohort.yaml")
    fit.parameters, fit.fit

    variants = optimise.design({"touchpoints.email.reach.use": [0.1, 0.2]})
    swept = optimise.sweep("scenarios/tiny.yaml", variants, replicates=4, out="results")
    swept.summary

    worth = optimise.attribute("scenarios/cosmetic_clinic.yaml", population_scale=0.1)
    worth.side_by_side, worth.removal, worth.shapley
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optimise._attribute import Attribution, PathAttribution, attribute, attribute_paths
    from optimise._calibrate import CalibrationResult, FittedParameter, calibrate
    from optimise._design import INTERVENTIONS, Variant, design, parse_vary, read_design
    from optimise._search import Evaluation, OptimisationResult, optimise
    from optimise._sensitivity import SensitivityResult, parse_range, sensitivity
    from optimise._sweep import SweepResult, sweep

_WHERE = {
    "Attribution": "_attribute", "PathAttribution": "_attribute", "attribute": "_attribute",
    "attribute_paths": "_attribute",
    "CalibrationResult": "_calibrate", "FittedParameter": "_calibrate", "calibrate": "_calibrate",
    "Evaluation": "_search", "OptimisationResult": "_search", "optimise": "_search",
    "SensitivityResult": "_sensitivity", "sensitivity": "_sensitivity",
    "parse_range": "_sensitivity",
    "SweepResult": "_sweep", "sweep": "_sweep",
    "Variant": "_design", "design": "_design", "INTERVENTIONS": "_design",
    "parse_vary": "_design", "read_design": "_design",
}


def __getattr__(name: str) -> Any:
    """Import a part (Optuna, SciPy, Dask) on first use, so `journey` starts fast."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'optimise' has no attribute {name!r}")
    return getattr(import_module(f"optimise.{module}"), name)


__all__ = ["INTERVENTIONS", "Attribution", "CalibrationResult", "Evaluation", "FittedParameter",
           "OptimisationResult", "PathAttribution", "SensitivityResult", "SweepResult",
           "Variant", "attribute", "attribute_paths", "calibrate",
           "design", "optimise", "parse_range", "parse_vary", "read_design", "sensitivity",
           "sweep"]
