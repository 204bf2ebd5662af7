"""The mapping file: which events of a log are stage entries and which are exposures.

A small YAML file, read by :func:`load_mapping` into the frozen pydantic model
:class:`Mapping`; its problems are reported at their file line and field, as a
scenario's are.

Example (``map.yaml``)::

    name: clinic_discovered
    step_days: 1
    stages: {discover: prospect, order: customer, use: customer, churned: lost}
    touchpoints: [search_ads, checkup]
    events: {enquiry: discover, first_visit: order}   # event -> stage or touchpoint
    ignore: [page_view]
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sim import ScenarioError
from sim.scenario import problems_from_validation, read_yaml

__all__ = ["Mapping", "load_mapping"]

_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
Name = Annotated[str, Field(pattern=_NAME)]


class Mapping(BaseModel):
    """How the events of a log map onto a scenario.

    Attributes:
        name: the discovered scenario's name.
        step_days: length of one step in days (the log's days are cut into steps).
        stages: stage -> kind (``prospect``, ``customer`` or ``lost``), in journey order.
        touchpoints: touchpoints whose events are exposures (at most 64: a customer-step's
            exposures are kept as the bits of one integer).
        events: an event name of the log -> the stage or touchpoint it means, where they
            differ (an event named like a stage or touchpoint means it without this).
        ignore: events of the log that are neither (read and dropped).
        start_day: the log's first day (customers seen on it are the initial
            population); default: its earliest event.
        end_day: the log's last day (customers still in a stage then are censored);
            default: its latest event.
        start_date: the calendar date of day 0 of a numeric ``day`` column
            (``YYYY-MM-DD``), for the arrivals' seasonality (a ``timestamp`` column
            carries its dates).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")] = "discovered"
    step_days: Annotated[float, Field(gt=0.0)] = 1.0
    stages: Annotated[dict[Name, Literal["prospect", "customer", "lost"]], Field(min_length=1)]
    touchpoints: Annotated[list[Name], Field(max_length=64)] = Field(default_factory=list)
    events: dict[str, Name] = Field(default_factory=dict)
    ignore: list[str] = Field(default_factory=list)
    start_day: float | None = None
    end_day: float | None = None
    start_date: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = None

    @model_validator(mode="after")
    def _names(self) -> Mapping:
        both = sorted(set(self.stages) & set(self.touchpoints))
        if both:
            raise PydanticCustomError(
                "names", "{n} named both a stage and a touchpoint", {"n": ", ".join(both)}
            )
        known = set(self.stages) | set(self.touchpoints)
        wrong = sorted(f"{e} -> {t}" for e, t in self.events.items() if t not in known)
        if wrong:
            raise PydanticCustomError(
                "events",
                "{w}: the target is neither a stage nor a touchpoint of this file",
                {"w": ", ".join(wrong)},
            )
        if (
            self.start_day is not None
            and self.end_day is not None
            and self.end_day <= self.start_day
        ):
            raise PydanticCustomError("days", "end_day must come after start_day")
        return self

    @field_validator("start_date")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                raise PydanticCustomError(
                    "date", "{d} is not a calendar date (YYYY-MM-DD)", {"d": value}
                ) from None
        return value

    def event_table(self) -> dict[str, tuple[str, str]]:
        """Event name -> (``stage`` or ``touchpoint``, its name); ignored events absent."""
        out: dict[str, tuple[str, str]] = {}
        for s in self.stages:
            out[s] = ("stage", s)
        for t in self.touchpoints:
            out[t] = ("touchpoint", t)
        for event, target in self.events.items():
            out[event] = ("stage", target) if target in self.stages else ("touchpoint", target)
        for event in self.ignore:
            out.pop(event, None)
        return out


def load_mapping(path: str | os.PathLike[str], *, step_days: float | None = None) -> Mapping:
    """Read and validate a mapping file; ``step_days`` (``--step-days``) overrides its own.

    Raises:
        ScenarioError: one located line per problem (``FILE:LINE:COL: field: rule``).
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise ScenarioError.single(
            source, f"cannot read the mapping file ({exc.strerror})"
        ) from None
    located = read_yaml(text, source)
    data = located.data
    if not isinstance(data, dict):
        raise ScenarioError.single(
            source, "a mapping file is a YAML mapping (stages:, touchpoints:, …)"
        )
    if step_days is not None:
        data = {**data, "step_days": float(step_days)}
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(problems_from_validation(exc, located, source, root=Mapping)) from None
