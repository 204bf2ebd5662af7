"""`journey optimise`, `calibrate`, `sweep`, `sensitivity` and `attribute`, added to the `journey`
command through the entry-point group (``journey.commands``).

Importing this module defines; :func:`register` adds the commands, once per app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from optimise._cli_attribute import attribute_command
from optimise._cli_studies import calibrate_command, optimise_command
from optimise._cli_sweeps import sensitivity_command, sweep_command
from sim.cli import add_command

__all__ = ["register"]

COMMANDS: dict[str, Callable[..., Any]] = {
    "optimise": optimise_command, "calibrate": calibrate_command, "sweep": sweep_command,
    "sensitivity": sensitivity_command, "attribute": attribute_command}


def register(app: typer.Typer) -> None:
    """Add `optimise`, `calibrate`, `sweep`, `sensitivity` and `attribute` to the `journey` command
    (a command the app has already is left as it is)."""
    for name, command in COMMANDS.items():
        add_command(app, name, command)
