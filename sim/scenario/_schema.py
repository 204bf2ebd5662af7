"""The scenario schema: frozen pydantic models of a customer journey.

What the fields mean is fixed by DESIGN.md ("The model"). Structural rules
(types, ranges, one-of choices) live on the models; rules that relate fields
to each other (names that must exist, shares that must sum to one) live in
:mod:`sim.scenario._checks`. The models here are pure data: the public
:class:`~sim.scenario.Scenario` (:mod:`sim.scenario._scenario`) is
:class:`ScenarioFields` with those cross-field rules and its variants added.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sim.display import format_days

__all__ = [
    "Arrivals",
    "CalibrateParam",
    "Calibration",
    "Constraints",
    "Contagion",
    "CurvePoint",
    "Economics",
    "ExitRate",
    "FunnelTarget",
    "Heterogeneity",
    "Intervention",
    "Objective",
    "Observed",
    "Opening",
    "Optimise",
    "Patience",
    "Placement",
    "Population",
    "Prior",
    "Profile",
    "Referrals",
    "Reviews",
    "Satisfaction",
    "ScenarioFields",
    "SearchParam",
    "Segment",
    "ServiceTime",
    "Shape",
    "Stage",
    "SurvivalTarget",
    "Target",
    "Time",
    "Touchpoint",
    "Value",
    "Window",
    "WordOfMouth",
    "canonical_exit",
    "split_exit",
]

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_EXIT_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]{0,63})\s*->\s*([A-Za-z][A-Za-z0-9_]{0,63})\s*$")


def _name(value: Any) -> Any:
    if isinstance(value, str) and not _NAME_RE.match(value):
        raise PydanticCustomError(
            "name", "{value} is not a valid name: use letters, digits and _, starting "
                    "with a letter (at most 64 characters)", {"value": repr(value)})
    return value


def _exit_key(value: Any) -> Any:
    if isinstance(value, str):
        if not _EXIT_RE.match(value):
            raise PydanticCustomError(
                "exit_key", "{value} does not name an exit: write 'from_stage->to_stage'",
                {"value": repr(value)})
        return canonical_exit(value)
    return value


def canonical_exit(key: str) -> str:
    """An exit key as the schema stores it (``'aware -> use'`` -> ``'aware->use'``);
    text that does not name an exit is returned as it is."""
    m = _EXIT_RE.match(key)
    return f"{m.group(1)}->{m.group(2)}" if m else key


def split_exit(key: str) -> tuple[str, str]:
    """Split a canonical exit key ``'from->to'`` into its two stage names."""
    source, target = key.split("->")
    return source, target


Name = Annotated[str, BeforeValidator(_name)]
"""A user-chosen identifier: stage, segment, touchpoint or intervention."""
ExitKey = Annotated[str, BeforeValidator(_exit_key)]
"""An exit, written ``from_stage->to_stage``."""
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Positive = Annotated[float, Field(gt=0.0)]
Unit = Annotated[float, Field(ge=-1.0, le=1.0)]
"""A satisfaction level: -1 (furious) .. 0 (neutral) .. +1 (delighted)."""
LogOdds = Annotated[float, Field(ge=-20.0, le=20.0)]
"""A shift on the log-odds scale; |20| already moves any probability to 0 or 1."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True,
                              allow_inf_nan=False, validate_default=False)


# --------------------------------------------------------------------- time


def _iso_date(value: Any) -> Any:
    if isinstance(value, str):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError(
                "date", "{value} is not a date: write YYYY-MM-DD (2027-01-31)",
                {"value": repr(value)}) from None
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise PydanticCustomError(
                "date", "{value} is not a date: write YYYY-MM-DD (2027-01-31)",
                {"value": repr(value)})
    return value


IsoDate = Annotated[str, BeforeValidator(_iso_date)]
"""A calendar date, written ``YYYY-MM-DD``."""


class Time(_Model):
    """Clock of a run.

    Attributes:
        step_days: length of one step in days (1 = daily, 7 = weekly, 365 = annual).
        horizon_days: simulated span; a whole number of steps.
        start_date: the date of day 0 (``YYYY-MM-DD``): tables gain a ``date`` column,
            reports show dates, and profiles by month or weekday, curves over dates
            and windows given as dates become possible.
    """

    step_days: Positive = 1.0
    horizon_days: Positive
    start_date: IsoDate | None = None

    @property
    def start(self) -> dt.date | None:
        """The date of day 0, or None."""
        return dt.date.fromisoformat(self.start_date) if self.start_date else None

    def day_of(self, date: str) -> float:
        """Days from ``start_date`` to ``date`` (``YYYY-MM-DD``)."""
        start = self.start
        if start is None:
            raise ValueError("a date needs time.start_date")
        return float((dt.date.fromisoformat(date) - start).days)

    @model_validator(mode="after")
    def _whole_steps(self) -> Time:
        steps = self.horizon_days / self.step_days
        if (not math.isfinite(steps) or abs(steps - round(steps)) > 1e-9
                or round(steps) < 1):
            raise PydanticCustomError(
                "whole_steps", "horizon_days ({h}) must be a positive whole number of "
                               "steps of {s}",
                {"h": f"{self.horizon_days:g}", "s": format_days(self.step_days)})
        return self

    @property
    def steps(self) -> int:
        """Number of steps in the horizon."""
        return round(self.horizon_days / self.step_days)


MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Month = Literal["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                "dec"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class CurvePoint(_Model):
    """One point of a piecewise-linear profile: a ``date`` (or a ``day`` of the run) and
    the multiplier there."""

    date: IsoDate | None = None
    day: NonNegative | None = None
    value: NonNegative

    @model_validator(mode="after")
    def _when(self) -> CurvePoint:
        if (self.date is None) == (self.day is None):
            raise PydanticCustomError("one_of", "give exactly one of date or day")
        return self


class Profile(_Model):
    """Multipliers that vary over the calendar; the parts given multiply.

    Attributes:
        by_month: a multiplier per month (``jan`` … ``dec``; a month not named is 1).
        by_weekday: a multiplier per day of the week (``mon`` … ``sun``; default 1).
        curve: a piecewise-linear curve through points at dates or days, constant
            before the first point and after the last.

    A step's multiplier is the mean of the daily multipliers of the days it spans.
    ``by_month``, ``by_weekday`` and points at dates need ``time.start_date``.
    """

    by_month: dict[Month, NonNegative] | None = None
    by_weekday: dict[Weekday, NonNegative] | None = None
    curve: Annotated[list[CurvePoint], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _some(self) -> Profile:
        if self.by_month is None and self.by_weekday is None and self.curve is None:
            raise PydanticCustomError("profile", "give by_month, by_weekday or curve")
        return self

    @property
    def needs_dates(self) -> bool:
        return (self.by_month is not None or self.by_weekday is not None
                or any(p.date is not None for p in self.curve or []))


def _profile_kind(value: Any) -> str:
    return "[name]" if isinstance(value, str) else "[profile]"


ProfileRef = Annotated[
    Annotated[str, BeforeValidator(_name), Tag("[name]")] | Annotated[Profile, Tag("[profile]")],
    Discriminator(_profile_kind),
]
"""A profile: the name of one in ``profiles:``, or one written in place. (The tags are
pydantic's union markers, dropped from error locations.)"""


class Economics(_Model):
    """Money: currency label and the annual discount rate for CLV."""

    currency: str = "EUR"
    discount_rate_annual: Annotated[float, Field(ge=0.0, le=1.0)] = 0.08


# -------------------------------------------------------------------- stages


class ExitRate(_Model):
    """Base rate of one exit: a per-step probability ``p`` or a ``mean_days`` dwell.

    A bare number in the file is read as ``p``. ``mean_days: D`` means that,
    were this the only exit, the mean time to leave would be D days:
    ``p = step_days / D`` (a geometric dwell with mean D days).
    """

    p: Probability | None = None
    mean_days: Positive | None = None
    profile: ProfileRef | None = None
    """Multiplies the per-step probability over the calendar (capped at 1)."""

    @model_validator(mode="before")
    @classmethod
    def _bare_number(cls, data: Any) -> Any:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return {"p": data}
        return data

    @model_validator(mode="after")
    def _one_of(self) -> ExitRate:
        if (self.p is None) == (self.mean_days is None):
            raise PydanticCustomError("one_of", "give exactly one of p (per step) or mean_days")
        return self

    def per_step(self, step_days: float) -> float:
        """Per-step probability for steps of ``step_days`` days."""
        if self.p is not None:
            return self.p
        assert self.mean_days is not None
        return min(1.0, step_days / self.mean_days)


class Value(_Model):
    """Revenue an agent brings in a stage (before the segment's multiplier)."""

    on_entry: float = 0.0
    per_day: float = 0.0


class Stage(_Model):
    """One stage of the journey.

    Attributes:
        kind: what the KPIs read: ``prospect``, ``customer`` or ``lost``.
        exits: target stage -> base rate.
        min_dwell_days: no exit is taken before the agent has spent this long here.
        value: revenue on entry and per day.
    """

    kind: Literal["prospect", "customer", "lost"]
    description: str = ""
    exits: dict[Name, ExitRate] = Field(default_factory=dict)
    min_dwell_days: NonNegative = 0.0
    value: Value = Field(default_factory=Value)


# ------------------------------------------------------------------ segments


class Heterogeneity(_Model):
    """Per-agent variation of one exit inside a segment, drawn once at birth.

    * ``beta`` (``a``, ``b``): the agent's own per-step probability of the exit
      is drawn from Beta(a, b) and replaces the stage's base rate; a cohort then
      follows the shifted-beta-geometric survival curve.
    * ``logit_normal`` (``sd``): the agent's log-odds of the exit are shifted by
      a Normal(0, sd) draw.
    """

    distribution: Literal["beta", "logit_normal"]
    a: Positive | None = None
    b: Positive | None = None
    sd: Positive | None = None

    @model_validator(mode="after")
    def _parameters(self) -> Heterogeneity:
        needed = {"beta": ("a", "b"), "logit_normal": ("sd",)}[self.distribution]
        given = {k for k in ("a", "b", "sd") if getattr(self, k) is not None}
        if given != set(needed):
            raise PydanticCustomError(
                "distribution_parameters", "distribution {d} takes exactly {n}",
                {"d": self.distribution, "n": " and ".join(needed)})
        return self


class Segment(_Model):
    """A customer group with its own rates, affinities and value.

    Arrivals come either from ``share`` (of ``population.arrivals.per_day``)
    or from the segment's own ``arrivals_per_day`` — one style per scenario.

    Attributes:
        offsets: exit -> log-odds shift of the base rate for this segment.
        affinity: touchpoint -> multiplier of its reach (default 1).
        value_multiplier: scales every stage value.
        heterogeneity: exit -> per-agent distribution.
    """

    description: str = ""
    share: Probability | None = None
    arrivals_per_day: NonNegative | None = None
    offsets: dict[ExitKey, LogOdds] = Field(default_factory=dict)
    affinity: dict[Name, NonNegative] = Field(default_factory=dict)
    value_multiplier: NonNegative = 1.0
    heterogeneity: dict[ExitKey, Heterogeneity] = Field(default_factory=dict)


# ---------------------------------------------------------------- population


class Placement(_Model):
    """Agents present at step 0: ``count`` in ``stage`` (split by share without ``segment``)."""

    stage: Name
    count: Annotated[int, Field(ge=0, le=1_000_000_000)]
    segment: Name | None = None


class Arrivals(_Model):
    """New prospects per day (Poisson), entering ``stage`` (default: the first prospect stage)."""

    per_day: NonNegative = 0.0
    stage: Name | None = None
    profile: ProfileRef | None = None
    """Multiplies ``per_day`` over the calendar (a January surge, quiet weekends)."""


class Population(_Model):
    """Who is there at the start and who arrives."""

    initial: list[Placement] = Field(default_factory=list)
    arrivals: Arrivals = Field(default_factory=Arrivals)


# --------------------------------------------------------------- touchpoints


class ServiceTime(_Model):
    """A duration distribution of a capacity-limited touchpoint (event engine).

    ``exponential`` and ``fixed`` take ``mean_days``; ``lognormal`` also its
    coefficient of variation ``cv`` (sd / mean).
    """

    distribution: Literal["exponential", "fixed", "lognormal"] = "exponential"
    mean_days: Positive
    cv: NonNegative | None = None

    @model_validator(mode="after")
    def _cv(self) -> ServiceTime:
        if (self.distribution == "lognormal") != (self.cv is not None):
            raise PydanticCustomError("cv", "cv (coefficient of variation) is given for, and "
                                            "only for, the lognormal distribution")
        return self


class Patience(ServiceTime):
    """How long an agent waits in a touchpoint's queue before it abandons (event engine)."""


class Opening(_Model):
    """When a capacity-limited touchpoint serves (event engine).

    Days are counted from day 0 of the run; the first ``days_per_week`` days of
    every 7 are open, each from ``open_hour`` to ``close_hour``. Agents queue
    at any time; a service that runs past closing is finished (overtime).
    """

    open_hour: Annotated[float, Field(ge=0.0, lt=24.0)] = 0.0
    close_hour: Annotated[float, Field(gt=0.0, le=24.0)] = 24.0
    days_per_week: Annotated[int, Field(ge=1, le=7)] = 7

    @model_validator(mode="after")
    def _hours(self) -> Opening:
        if self.close_hour <= self.open_hour:
            raise PydanticCustomError("opening", "close_hour must come after open_hour")
        return self


class Touchpoint(_Model):
    """A point of contact that changes exit probabilities and satisfaction.

    Each step an agent in an active stage is exposed with probability
    ``reach[stage] * affinity[segment]`` (capped at 1). An exposure adds
    ``lift[exit]`` to the exit's log-odds, adds ``satisfaction`` to the
    agent's satisfaction and costs ``cost_per_exposure``.

    With ``capacity`` (event engine only) the touchpoint is a queue with that
    many servers: an exposure is a request at a uniform time within the step;
    the agent waits, is served for a ``service_time`` and receives the
    effects above in the step its service ends. While it waits or is served it
    does not request the touchpoint again; it leaves the queue unserved when
    its ``patience`` runs out (abandoned) or when it moves to a stage where the
    touchpoint is not active (withdrawn).

    Attributes:
        stages: stages where the touchpoint is active.
        reach: one probability for every active stage, or one per stage.
        capacity: servers (event engine only), with ``service_time``.
        service_time: duration of one service.
        patience: time an agent waits before it abandons (default: it never does).
        wait_satisfaction_per_day: change of satisfaction per day waited, applied
            when the wait ends (negative: waiting frustrates; default 0).
        target_wait_days: a wait up to this counts as served in time (KPI
            ``served_within_target``; default 0 = served at once).
        opening: opening hours and days (default: always open).
        server_cost_per_day: cost of each server per day (default 0).
    """

    description: str = ""
    channel: str = ""
    stages: Annotated[list[Name], Field(min_length=1)]
    reach: dict[Name, Probability]
    lift: dict[ExitKey, LogOdds] = Field(default_factory=dict)
    satisfaction: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    cost_per_exposure: NonNegative = 0.0
    fixed_cost_per_day: NonNegative = 0.0
    capacity: Annotated[int, Field(ge=1, le=100_000)] | None = None
    service_time: ServiceTime | None = None
    patience: Patience | None = None
    wait_satisfaction_per_day: Annotated[float, Field(ge=-2.0, le=0.0)] | None = None
    target_wait_days: NonNegative | None = None
    opening: Opening | None = None
    server_cost_per_day: NonNegative | None = None
    profile: ProfileRef | None = None
    """Multiplies the reach in every stage over the calendar (capped at 1)."""

    @model_validator(mode="before")
    @classmethod
    def _scalar_reach(cls, data: Any) -> Any:
        if isinstance(data, dict):
            reach = data.get("reach")
            stages = data.get("stages")
            if (isinstance(reach, (int, float)) and not isinstance(reach, bool)
                    and isinstance(stages, list)):
                return {**data, "reach": {s: reach for s in stages if isinstance(s, str)}}
        return data

    @model_validator(mode="after")
    def _reach_and_capacity(self) -> Touchpoint:
        extra = [s for s in self.reach if s not in self.stages]
        missing = [s for s in self.stages if s not in self.reach]
        if extra or missing:
            parts = []
            if extra:
                parts.append(f"reach names {', '.join(extra)} not listed in stages")
            if missing:
                parts.append(f"no reach for stage {', '.join(missing)}")
            raise PydanticCustomError("reach_stages", "{m}", {"m": "; ".join(parts)})
        if (self.capacity is None) != (self.service_time is None):
            raise PydanticCustomError("capacity", "capacity and service_time go together")
        if self.capacity is None:
            queue_only = [name for name in ("patience", "wait_satisfaction_per_day",
                                            "target_wait_days", "opening",
                                            "server_cost_per_day")
                          if getattr(self, name) is not None]
            if queue_only:
                raise PydanticCustomError(
                    "capacity", "without capacity there is no queue for {fields}",
                    {"fields": ", ".join(queue_only)})
        return self

    @property
    def queued(self) -> bool:
        """Whether the touchpoint is capacity-limited (a queue; event engine only)."""
        return self.capacity is not None


# ---------------------------------------------------------------- feedbacks


class Satisfaction(_Model):
    """Per-agent satisfaction in [-1, 1] and its effect on exits.

    Each step satisfaction moves ``decay`` of the way back to ``baseline``;
    exposures then add their effects (clipped to [-1, 1]). An exit's
    log-odds gain ``effects[exit] * satisfaction``. Customers above
    ``promoter_above`` are promoters, below ``detractor_below`` detractors.
    """

    initial: Unit = 0.0
    baseline: Unit = 0.0
    decay: Probability = 0.0
    effects: dict[ExitKey, LogOdds] = Field(default_factory=dict)
    promoter_above: Unit = 0.5
    detractor_below: Unit = 0.0

    @model_validator(mode="after")
    def _nps_bands(self) -> Satisfaction:
        if self.detractor_below > self.promoter_above:
            raise PydanticCustomError("nps_bands", "detractor_below must not exceed promoter_above")
        return self


class Referrals(_Model):
    """Customers above ``min_satisfaction`` in ``stages`` bring new prospects.

    Each eligible agent refers one prospect per step with probability
    ``per_day * step_days`` (capped at 1); the prospect joins the referrer's
    segment in ``entry_stage`` (default: the arrivals' stage) next step.
    """

    per_day: Annotated[float, Field(ge=0.0, le=1.0)]
    min_satisfaction: Unit = 0.5
    stages: list[Name] | None = None
    entry_stage: Name | None = None


class Contagion(_Model):
    """Imitation (Bass ``q``): an exit's per-step probability rises with adoption.

    The exit's base probability becomes ``p + q * adopters / market_size``,
    where adopters are agents in ``adopter_stages`` (default: the customer
    stages) and the market size defaults to the initial population.
    """

    exit: ExitKey
    q: Probability
    adopter_stages: list[Name] | None = None
    market_size: Annotated[int, Field(ge=1)] | None = None


class WordOfMouth(_Model):
    """Referrals (open market) and contagion (closed market)."""

    referrals: Referrals | None = None
    contagion: Contagion | None = None


class Reviews(_Model):
    """Reviews and the public rating.

    An agent in a stage of ``post`` writes a review that step with that
    probability; its score maps satisfaction [-1, 1] linearly onto
    [scale_min, scale_max], rounded. The public rating is the smoothed mean
    ``(prior_mean * prior_weight + sum(scores)) / (prior_weight + n)``;
    reputation = (rating - midpoint) / half-range in [-1, 1] shifts each
    exit's log-odds by ``effects[exit] * reputation``.
    """

    post: dict[Name, Probability]
    scale_min: Annotated[int, Field(ge=0)] = 1
    scale_max: Annotated[int, Field(ge=1)] = 5
    prior_mean: float = 4.0
    prior_weight: NonNegative = 10.0
    effects: dict[ExitKey, LogOdds] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _scale(self) -> Reviews:
        if self.scale_max <= self.scale_min:
            raise PydanticCustomError("scale", "scale_max must exceed scale_min")
        if not self.scale_min <= self.prior_mean <= self.scale_max:
            raise PydanticCustomError("prior", "prior_mean must lie on the rating scale")
        return self


# ------------------------------------------------------------- interventions


class Window(_Model):
    """Days [start_day, end_day) of the run in which an intervention is active; or the
    dates [start_date, end_date) (with ``time.start_date``)."""

    start_day: NonNegative = 0.0
    end_day: Positive | None = None
    start_date: IsoDate | None = None
    end_date: IsoDate | None = None

    @model_validator(mode="after")
    def _order(self) -> Window:
        if self.start_date is not None and self.start_day != 0.0:
            raise PydanticCustomError("one_of", "give start_day or start_date, not both")
        if self.end_date is not None and self.end_day is not None:
            raise PydanticCustomError("one_of", "give end_day or end_date, not both")
        if self.end_day is not None and self.end_day <= self.start_day:
            raise PydanticCustomError("window_order", "end_day must come after start_day")
        if (self.start_date is not None and self.end_date is not None
                and self.end_date <= self.start_date):
            raise PydanticCustomError("window_order", "end_date must come after start_date")
        return self

    def days(self, time: Time) -> tuple[float, float]:
        """[start, end) in days of the run (``inf`` for an open end)."""
        start = time.day_of(self.start_date) if self.start_date else self.start_day
        end = (time.day_of(self.end_date) if self.end_date else
               self.end_day if self.end_day is not None else math.inf)
        return start, end


class Shape(_Model):
    """How an intervention's effect comes and goes: it grows linearly over
    ``ramp_up_days`` from the window's start, and after the window's end decays with
    ``half_life_days`` (without it, it stops at the end). The effect at a step is the
    ``set`` values weighted, ``base + w (set - base)``, with w in 1/32 steps."""

    ramp_up_days: NonNegative = 0.0
    half_life_days: Positive | None = None


class InterventionCost(_Model):
    """Cost of running an intervention: once when it opens, and per active day."""

    fixed: NonNegative = 0.0
    per_day: NonNegative = 0.0


class Intervention(_Model):
    """A named, costed patch of the scenario with an optional time window.

    ``set`` maps dotted scenario paths to new values
    (``touchpoints.aftercare_call.reach.treatment: 0.6``); a path ending in a
    new name under a collection adds an entry (a new touchpoint, a new lift).
    Only ``enabled`` interventions act in a run; the optimiser switches them.
    """

    description: str = ""
    enabled: bool = False
    window: Window | None = None
    shape: Shape | None = None
    cost: InterventionCost = Field(default_factory=InterventionCost)
    set: Annotated[dict[str, Any], Field(min_length=1)]


# ------------------------------------------------------------------ optimise


class Objective(_Model):
    """A KPI to optimise and its direction."""

    kpi: str
    direction: Literal["maximize", "minimize"] = "maximize"


class Constraints(_Model):
    """Limits a design must respect (currency of the scenario)."""

    budget_total: NonNegative | None = None
    budget_per_day: NonNegative | None = None
    max_cost_per_acquired: NonNegative | None = None


class SearchParam(_Model):
    """One search dimension: a dotted path with a range or a list of choices.

    ``type`` ``float`` and ``int`` sample uniformly in [low, high], ``log``
    log-uniformly (low > 0); ``choices`` lists the values to try (e.g.
    ``[true, false]`` on ``interventions.NAME.enabled``).
    """

    path: str
    type: Literal["float", "int", "log"] = "float"
    low: float | None = None
    high: float | None = None
    choices: Annotated[list[Any], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _range(self) -> SearchParam:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise PydanticCustomError("search", "give either choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise PydanticCustomError("search", "give low and high, or choices")
        if self.high <= self.low:
            raise PydanticCustomError("search", "high must exceed low")
        if self.type == "log" and self.low <= 0:
            raise PydanticCustomError("search", "a log range needs low > 0")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise PydanticCustomError("search", "an int range needs whole-number bounds")
        return self


class Optimise(_Model):
    """What ``journey optimise`` searches (used by the optimisation layer)."""

    objective: Objective
    second_objective: Objective | None = None
    constraints: Constraints = Field(default_factory=Constraints)
    search: Annotated[list[SearchParam], Field(min_length=1)]
    trials: Annotated[int, Field(ge=1)] = 100
    replicates: Annotated[int, Field(ge=1)] = 4


# ----------------------------------------------------------------- calibrate


class Prior(_Model):
    """Prior belief about a calibrated parameter (its log density joins the loss).

    ``normal`` (``mean``, ``sd``) on the value; ``lognormal`` (``mu``,
    ``sigma``) on its natural log; ``beta`` (``a``, ``b``) for a value in (0, 1).
    """

    distribution: Literal["normal", "lognormal", "beta"]
    mean: float | None = None
    sd: Positive | None = None
    mu: float | None = None
    sigma: Positive | None = None
    a: Positive | None = None
    b: Positive | None = None

    @model_validator(mode="after")
    def _parameters(self) -> Prior:
        needed = {"normal": ("mean", "sd"), "lognormal": ("mu", "sigma"),
                  "beta": ("a", "b")}[self.distribution]
        given = {k for k in ("mean", "sd", "mu", "sigma", "a", "b") if getattr(self, k) is not None}
        if given != set(needed):
            raise PydanticCustomError(
                "distribution_parameters", "prior {d} takes exactly {n}",
                {"d": self.distribution, "n": " and ".join(needed)})
        return self


class CalibrateParam(SearchParam):
    """A parameter to fit: a dotted path, its range (or choices) and an optional prior."""

    prior: Prior | None = None

    @model_validator(mode="after")
    def _prior(self) -> CalibrateParam:
        if self.prior is not None and self.choices is not None:
            raise PydanticCustomError("prior", "a prior needs a numeric range, not choices")
        return self


class Target(_Model):
    """One observed file and how it is matched.

    ``file`` is relative to the scenario file (``journey calibrate --observed``
    may give it instead). ``loss`` defaults to the proper likelihood of the
    data: binomial for survival counts, multinomial for funnel counts, and
    weighted least squares for occupancy and for survival given as shares only.
    """

    file: str | None = None
    loss: Literal["binomial", "multinomial", "wls"] | None = None
    weight: Positive = 1.0


class SurvivalTarget(Target):
    """Cohort survival by period.

    ``cohort: initial`` matches the customers placed at step 0 (a closed
    cohort: no arrivals or referrals); ``acquired`` matches the retention
    curve of customers acquired during the run (all segments together).
    The default is ``initial`` when the scenario is a closed cohort.
    """

    cohort: Literal["initial", "acquired"] | None = None


class FunnelTarget(Target):
    """Entries into each listed stage during a window of days (default: the horizon)."""

    window: Window | None = None


class Observed(_Model):
    """The observed files, one per kind."""

    survival: SurvivalTarget | None = None
    funnel: FunnelTarget | None = None
    occupancy: Target | None = None


class Calibration(_Model):
    """What ``journey calibrate`` fits (used by the optimisation layer).

    Attributes:
        parameters: dotted paths with ranges and optional priors.
        observed: the observed files and their losses.
        period_days: length of one period of the observed data (default: one step).
        fit_periods: fit on the first K periods only; project the rest.
        trials: Optuna trials of the global search.
        replicates: replicates per evaluation, on the same seeds (common random numbers).
        population_scale: simulate this many times the scenario's population.
        intervals: ``profile`` likelihood intervals, or ``none``.
    """

    parameters: Annotated[list[CalibrateParam], Field(min_length=1)]
    observed: Observed = Field(default_factory=Observed)
    period_days: Positive | None = None
    fit_periods: Annotated[int, Field(ge=1)] | None = None
    trials: Annotated[int, Field(ge=1)] = 40
    replicates: Annotated[int, Field(ge=1)] = 4
    population_scale: Positive = 1.0
    intervals: Literal["profile", "none"] = "profile"


# ------------------------------------------------------------------ scenario


def _default_segments() -> dict[str, Segment]:
    return {"all": Segment(share=1.0)}


class ScenarioFields(_Model):
    """The fields of a scenario and the facts derived from them.

    Pure data: each field is valid on its own, but nothing here relates fields to
    each other. :class:`sim.scenario.Scenario` is this with the cross-field rules
    (:mod:`sim.scenario._checks`) and its variants (:mod:`sim.scenario._patch`);
    use that.
    """

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")]
    description: str = ""
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    time: Time
    economics: Economics = Field(default_factory=Economics)
    population: Population = Field(default_factory=Population)
    segments: Annotated[dict[Name, Segment], Field(min_length=1)] = Field(
        default_factory=_default_segments)
    stages: Annotated[dict[Name, Stage], Field(min_length=1)]
    profiles: dict[Name, Profile] | None = None
    touchpoints: dict[Name, Touchpoint] = Field(default_factory=dict)
    satisfaction: Satisfaction = Field(default_factory=Satisfaction)
    word_of_mouth: WordOfMouth = Field(default_factory=WordOfMouth)
    reviews: Reviews | None = None
    interventions: dict[Name, Intervention] = Field(default_factory=dict)
    optimise: Optimise | None = None
    calibrate: Calibration | None = None

    # --- derived facts -------------------------------------------------

    @property
    def steps(self) -> int:
        """Number of steps in the horizon."""
        return self.time.steps

    def stage_exit_p(self, source: str, target: str) -> float:
        """Base per-step probability of the exit ``source -> target``."""
        return self.stages[source].exits[target].per_step(self.time.step_days)

    def entry_stage(self) -> str:
        """Stage that arrivals enter: ``population.arrivals.stage`` or the first prospect stage."""
        if self.population.arrivals.stage is not None:
            return self.population.arrivals.stage
        for name, stage in self.stages.items():
            if stage.kind == "prospect":
                return name
        return next(iter(self.stages))

    def stages_of_kind(self, kind: str) -> list[str]:
        """Names of the stages of one kind, in file order."""
        return [n for n, s in self.stages.items() if s.kind == kind]

    # --- text and identity ---------------------------------------------

    def to_data(self) -> dict[str, Any]:
        """Plain data (dicts, lists, scalars) of the scenario, without unset optionals."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_yaml(self) -> str:
        """Canonical YAML text: every field explicit, a stable order, loadable again."""
        return yaml.safe_dump(self.to_data(), sort_keys=False, allow_unicode=True,
                              default_flow_style=False, width=100)

    @property
    def content_hash(self) -> str:
        """SHA-256 of the canonical YAML text (hex)."""
        return hashlib.sha256(self.to_yaml().encode("utf-8")).hexdigest()
