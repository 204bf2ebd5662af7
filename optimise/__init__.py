"""Optimisation: find the interventions that maximise a KPI within a budget.

Public API::

    import optimise
    result = optimise.optimise("scenarios/dental_clinic.yaml", trials=50)
    result.best, result.baseline
"""

from optimise._search import Evaluation, OptimisationResult, optimise

__all__ = ["Evaluation", "OptimisationResult", "optimise"]
