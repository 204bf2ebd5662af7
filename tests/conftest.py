"""Fixtures shared by every test module: one small, valid scenario, and the whole
`journey` command."""

from __future__ import annotations

import pytest

import sim

TINY_SCENARIO_TEXT = """\
name: tiny
description: a small journey that touches every part of the scenario layer
seed: 7
time: {step_days: 1, horizon_days: 365}
population:
  initial:
    - {stage: aware, count: 1000}
  arrivals: {per_day: 10}
segments:
  young:
    share: 0.6
    affinity: {email: 1.5}
    heterogeneity:
      use->churned: {distribution: beta, a: 2, b: 50}
  old:
    share: 0.4
    offsets: {aware->use: 0.2}
stages:
  aware:
    kind: prospect
    exits:
      use: 0.05
      lost: {mean_days: 60}
  use:
    kind: customer
    value: {on_entry: 100, per_day: 1}
    exits:
      churned: 0.01
  churned:
    kind: lost
    exits:
      use: {mean_days: 200}
  lost:
    kind: lost
touchpoints:
  email:
    stages: [use]
    reach: 0.1
    lift: {use->churned: -0.3}
    satisfaction: 0.1
    cost_per_exposure: 0.05
interventions:
  more_email:
    window: {start_day: 100, end_day: 200}
    cost: {fixed: 1000}
    set:
      touchpoints.email.reach.use: 0.5
optimise:
  objective: {kpi: retention_365}
  search:
    - {path: interventions.more_email.enabled, choices: [true, false]}
    - {path: touchpoints.email.reach.use, low: 0.0, high: 0.9}
"""


@pytest.fixture(scope="session")
def tiny_scenario_text() -> str:
    """YAML text of a small valid scenario.

    Four stages (prospect ``aware``, customer ``use``, lost ``churned`` and
    ``lost``), segments ``young``/``old`` with shares, touchpoint ``email``,
    windowed intervention ``more_email`` and an ``optimise`` block; daily
    steps over 365 days.
    """
    return TINY_SCENARIO_TEXT


@pytest.fixture(scope="session")
def tiny_scenario(tiny_scenario_text: str) -> sim.Scenario:
    """The loaded :class:`sim.Scenario` of ``tiny_scenario_text`` (immutable, so shared)."""
    return sim.load_scenario(tiny_scenario_text)


@pytest.fixture(scope="session", autouse=True)
def journey_commands() -> None:
    """Every installed layer's subcommands on ``sim.cli.app`` (``optimise``, ``sweep``,
    ``report``…), as the `journey` console script has them: tests invoke that app with
    typer's CliRunner. Importing ``sim.cli`` registers nothing by itself."""
    from sim.cli import load_commands

    load_commands()

