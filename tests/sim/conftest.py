"""Fixtures of the engine tests: one journey that exercises every mechanism."""

from __future__ import annotations

import pytest

JOURNEY_TEXT = """\
name: journey
description: every mechanism of the fast engine in one small journey
seed: 5
time: {step_days: 1, horizon_days: 120}
population:
  initial:
    - {stage: aware, count: 150}
    - {stage: use, count: 40}
    - {stage: churned, count: 10}
  arrivals: {per_day: 4}
segments:
  young:
    share: 0.6
    affinity: {ads: 1.5, survey: 2.0}
    offsets: {aware->trial: 0.4, use->churned: -0.3}
    heterogeneity:
      use->churned: {distribution: beta, a: 0.8, b: 6.0}
  old:
    share: 0.4
    value_multiplier: 1.5
    offsets: {trial->use: -0.2}
    heterogeneity:
      aware->trial: {distribution: logit_normal, sd: 0.9}
      use->churned: {distribution: beta, a: 2.5, b: 20.0}
stages:
  aware:
    kind: prospect
    exits: {trial: 0.08, gone: {mean_days: 30}}
  trial:
    kind: customer
    min_dwell_days: 3
    value: {on_entry: 20}
    exits: {use: 0.3, churned: 0.1}
  use:
    kind: customer
    value: {per_day: 1.5}
    exits: {churned: 0.02, loyal: 0.05}
  loyal:
    kind: customer
    value: {per_day: 2.0}
    exits: {churned: 0.01}
  churned:
    kind: lost
    exits: {trial: 0.04}
  gone:
    kind: lost
touchpoints:
  ads:
    stages: [aware]
    reach: 0.3
    lift: {aware->trial: 0.8, aware->gone: -0.4}
    satisfaction: 0.1
    cost_per_exposure: 0.5
  onboarding:
    stages: [trial]
    reach: 0.6
    lift: {trial->use: 2.5, trial->churned: 1.0}   # exposed: the two exits sum past 1
    satisfaction: 0.3
    cost_per_exposure: 2.0
  survey:
    stages: [use, loyal]
    reach: {use: 0.4, loyal: 0.6}                 # young: x2 affinity, capped at 1 in loyal
    lift: {use->churned: 0.5}
    satisfaction: -0.2
    cost_per_exposure: 0.1
    fixed_cost_per_day: 3.0
  noop:
    stages: [use]
    reach: 0.3
    cost_per_exposure: 1.0                        # no lift, no satisfaction: only a cost
satisfaction:
  initial: 0.2
  baseline: 0.1
  decay: 0.05
  effects: {use->churned: -1.5, churned->trial: 1.0, use->loyal: 0.8}
word_of_mouth:
  referrals: {per_day: 0.05, min_satisfaction: 0.2}
  contagion: {exit: aware->trial, q: 0.3, market_size: 400}
reviews:
  post: {use: 0.05, loyal: 0.08, churned: 0.1}
  prior_mean: 3.5
  prior_weight: 5
  effects: {aware->trial: 0.6, use->churned: -0.4}
interventions:
  push:
    enabled: true
    window: {start_day: 10, end_day: 25}
    cost: {fixed: 100, per_day: 5}
    set:
      touchpoints.ads.reach.aware: 0.7
      touchpoints.survey.lift.use->loyal: 0.5
  winback:
    enabled: true
    window: {start_day: 15}
    cost: {fixed: 50}
    set:
      touchpoints.winback_mail:
        stages: [churned]
        reach: {churned: 0.2}
        lift: {churned->trial: 1.5}
        cost_per_exposure: 0.8
  idle:
    window: {start_day: 5}
    cost: {fixed: 1000}
    set:
      touchpoints.ads.reach.aware: 1.0
"""


@pytest.fixture(scope="session")
def journey_text() -> str:
    """YAML of a journey with every mechanism of the fast engine.

    Prospect ``aware``; customer ``trial`` (min dwell 3 days, competing exits
    that pass 1 under ``onboarding``), ``use``, ``loyal``; lost ``churned``
    (win-back to ``trial``) and ``gone``. Two segments with offsets,
    affinities, beta and logit-normal heterogeneity; arrivals, referrals,
    contagion on ``aware->trial``, reviews with reputation effects,
    satisfaction effects, a zero-effect touchpoint ``noop``, windowed
    interventions ``push`` (days 10-25) and ``winback`` (from day 15, adds a
    touchpoint) and a disabled one (``idle``). 200 agents at step 0, 120 daily
    steps.
    """
    return JOURNEY_TEXT
