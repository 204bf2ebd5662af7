"""Search the interventions of a scenario's ``optimise:`` block with Optuna.

A trial is the scenario with the trial's parameters applied, simulated with R
replicates on the same seeds for every trial (common random numbers); its
value is the mean of the objective KPI over the replicates. Budget and
cost-per-acquisition limits go through Optuna's constraints mechanism. After
the search the best trials are re-evaluated on fresh seeds with more
replicates, beside the baseline (no interventions), and the answer is the best
re-evaluated feasible design.

Rooms: ``_objective`` (a trial: simulate, prune, constrain), ``_workers``
(worker processes of one study), ``_result`` (what is returned and written) and
``_phases`` (:func:`optimise`, the phases in order).
"""

from optimise._search._objective import FeasibleMedianPruner
from optimise._search._phases import optimise
from optimise._search._result import Evaluation, OptimisationResult

__all__ = ["Evaluation", "FeasibleMedianPruner", "OptimisationResult", "optimise"]
