"""Calendar time: profiles' multipliers per step, intervention shapes' weights per step,
dates of days.

A profile (:class:`~sim.scenario._schema.Profile`) gives a multiplier for every day of
the run: the product of its month's, its weekday's and its curve's values. A step's
multiplier is the mean of the daily multipliers of the days it spans (the whole days
from the step's start up to the next step's start; a step shorter than a day takes
the day it starts in). A profile that is 1 everywhere gives exactly 1.0, so the run
is the run without it, bit for bit.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from sim.scenario._schema import (
    MONTHS,
    WEEKDAYS,
    Intervention,
    Profile,
    ProfileRef,
    ScenarioFields,
    Time,
)

__all__ = ["SHAPE_LEVELS", "dates", "resolve", "shape_levels", "step_days_spans",
           "step_multipliers"]

SHAPE_LEVELS = 32
"""An intervention's shaped effect is applied in steps of 1/32 of the full effect."""


def resolve(s: ScenarioFields, ref: ProfileRef | None) -> Profile | None:
    """The profile a field refers to (by name in ``profiles:``, or written in place)."""
    if ref is None or isinstance(ref, Profile):
        return ref
    return (s.profiles or {})[ref]


def step_days_spans(time: Time) -> list[np.ndarray]:
    """The whole days (offsets from day 0) each step spans."""
    out = []
    for t in range(time.steps):
        lo = t * time.step_days
        hi = (t + 1) * time.step_days
        first = math.floor(lo + 1e-9)
        last = max(first + 1, math.ceil(hi - 1e-9))
        out.append(np.arange(first, last, dtype=np.int64))
    return out


def _daily(profile: Profile, time: Time, days: np.ndarray) -> np.ndarray:
    out = np.ones(days.size)
    start = time.start
    if profile.by_month is not None or profile.by_weekday is not None:
        assert start is not None
        dates = [start + dt.timedelta(days=int(d)) for d in days]
        if profile.by_month is not None:
            by_month = {str(k): v for k, v in profile.by_month.items()}
            month = [by_month.get(MONTHS[x.month - 1], 1.0) for x in dates]
            out *= np.array(month)
        if profile.by_weekday is not None:
            by_weekday = {str(k): v for k, v in profile.by_weekday.items()}
            week = [by_weekday.get(WEEKDAYS[x.weekday()], 1.0) for x in dates]
            out *= np.array(week)
    if profile.curve is not None:
        at = np.array([time.day_of(p.date) if p.date is not None else float(p.day or 0.0)
                       for p in profile.curve])
        values = np.array([p.value for p in profile.curve])
        out *= np.interp(days.astype(float), at, values)
    return out


def step_multipliers(s: ScenarioFields, ref: ProfileRef | None) -> np.ndarray:
    """float64[steps]: a profile's multiplier at each step (ones without a profile)."""
    profile = resolve(s, ref)
    steps = s.time.steps
    if profile is None:
        return np.ones(steps)
    spans = step_days_spans(s.time)
    every = np.concatenate(spans)
    daily = _daily(profile, s.time, every)
    out = np.empty(steps)
    i = 0
    for t, span in enumerate(spans):
        chunk = daily[i:i + span.size]
        out[t] = chunk[0] if chunk.size == 1 else float(chunk.mean())
        i += span.size
    return out


def shape_levels(iv: Intervention, time: Time) -> np.ndarray:
    """int64[steps]: an enabled intervention's effect at each step in 1/32 steps (0: off,
    32: its full ``set`` values), from its window and shape.

    Without a shape it is 32 inside the window and 0 outside. With one, the weight at
    a step's middle day d is ``min(1, (d - start) / ramp_up_days)`` inside the window,
    and after it the weight at the end halved every ``half_life_days``.
    """
    steps = time.steps
    start, end = iv.window.days(time) if iv.window else (0.0, math.inf)
    day = np.arange(steps) * time.step_days
    inside = (day >= start) & (day < end)
    if iv.shape is None:
        return np.where(inside, SHAPE_LEVELS, 0).astype(np.int64)
    mid = day + time.step_days / 2

    def ramp(d: np.ndarray) -> np.ndarray:
        if iv.shape is None or iv.shape.ramp_up_days <= 0:
            return np.ones_like(d)
        return np.clip((d - start) / iv.shape.ramp_up_days, 0.0, 1.0)

    weight = np.where(inside, ramp(mid), 0.0)
    if iv.shape.half_life_days is not None and math.isfinite(end):
        at_end = float(ramp(np.array([end]))[0])
        after = day >= end
        weight = np.where(after, at_end * 0.5 ** ((mid - end) / iv.shape.half_life_days),
                          weight)
    return np.rint(weight * SHAPE_LEVELS).astype(np.int64)


def dates(time: Time, days: np.ndarray) -> np.ndarray | None:
    """``datetime64[D]`` of day offsets (whole days), or None without ``start_date``."""
    if time.start_date is None:
        return None
    return np.datetime64(time.start_date, "D") + np.floor(days).astype("timedelta64[D]")
