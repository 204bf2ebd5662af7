"""Optimisation: find the interventions that maximise a KPI within a budget.

Public API::

    import optimise
    result = optimise.optimise("scenarios/dental_clinic.yaml", trials=50)
    result.best, result.baseline

    fit = optimise.calibrate("scenarios/insurer_cohort.yaml")
    fit.parameters, fit.fit
"""

from optimise._calibrate import CalibrationResult, FittedParameter, calibrate
from optimise._search import Evaluation, OptimisationResult, optimise

__all__ = ["CalibrationResult", "Evaluation", "FittedParameter", "OptimisationResult",
           "calibrate", "optimise"]
