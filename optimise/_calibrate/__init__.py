"""Calibrate a scenario to observed data: fit dotted-path parameters by likelihood.

An evaluation is the scenario with one set of parameter values, simulated with
R replicates on the same seeds for every evaluation (common random numbers),
so the loss is a deterministic function of the parameters. The loss is the
negative log-likelihood of the observed files, summed (each with its weight),
plus the negative log prior of each parameter that has one:

* survival counts — a chain of binomials: the customers active at one period
  survive to the next with the simulated conditional probability S(p_i)/S(p_i-1);
  this is the exact likelihood of a closed cohort's counts;
* funnel counts — multinomial over where the first stage's entrants stopped,
  with the simulated drop-offs: the funnel's shape (its conversions), not its
  level;
* occupancy, and survival given as shares only — weighted least squares,
  ½ Σ w (observed − simulated)², w = 1/sd² (the ``sd`` column) or, for counts,
  1/max(count, 1).

The search is Optuna's CMA-ES over continuous parameters (TPE when a parameter
is an integer or a choice, or when only one parameter is fitted), then a
bounded Nelder–Mead refinement from the best trial, then profile-likelihood
intervals: for each continuous parameter, the loss minimised over the others
along a walk outward from the optimum until it rises by χ²₁(0.95)/2.

The loss is a simulated likelihood, so the fit carries simulation noise: when the
block sets no ``population_scale`` it is chosen from the data (the simulation's
variance about 1% of the data's, within a time budget), and after the fit K other
seed sets repeat the search and refinement; the spread of their values is each
one's Monte Carlo standard error, reported beside its interval.

Rooms: ``_observed`` (the observed files), ``_likelihood``, ``_survival`` and
``_targets`` (targets and their likelihoods), ``_space`` (the parameters),
``_evaluator`` (the cached loss), ``_profile`` (refinement and profiles),
``_fit`` (the answer at the optimum), ``_noise`` (the automatic scale and the
Monte Carlo error), ``_result`` (what is returned and written) and ``_phases``
(:func:`calibrate`, the phases in order).
"""

from optimise._calibrate._fit import FittedParameter
from optimise._calibrate._phases import calibrate
from optimise._calibrate._result import CalibrationResult

__all__ = ["CalibrationResult", "FittedParameter", "calibrate"]
