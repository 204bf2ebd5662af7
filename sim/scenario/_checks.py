"""Cross-field rules of a scenario, each with its own message.

:func:`cross_check` runs after the structural validation of every model and
returns problems located by field path. Errors make the scenario invalid;
warnings (an unreachable stage, a scenario with nobody in it) are reported by
``journey validate`` but do not stop a run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sim._errors import ScenarioError, unknown_name
from sim._kpi_catalogue import KPI_NAMES
from sim.display import format_days
from sim.scenario._patch import apply_patches, materialise
from sim.scenario._paths import Loc, check_path
from sim.scenario._schema import ScenarioFields

__all__ = ["Check", "cross_check"]

_SHARE_TOLERANCE = 1e-6
_NOT_PATCHABLE = ("name", "seed", "time", "interventions", "optimise", "calibrate")
_NOT_IN_WINDOW = ("population.initial", "economics")


@dataclass(frozen=True)
class Check:
    """One cross-field problem: where (field path), what, and how bad."""

    loc: Loc
    message: str
    severity: str = "error"


class _Checker:
    def __init__(self, s: ScenarioFields) -> None:
        self.s = s
        self.out: list[Check] = []

    def error(self, loc: Loc, message: str) -> None:
        self.out.append(Check(loc, message))

    def warn(self, loc: Loc, message: str) -> None:
        self.out.append(Check(loc, message, "warning"))

    def n_errors(self) -> int:
        return sum(c.severity == "error" for c in self.out)

    # --- name helpers -------------------------------------------------

    def stage(self, loc: Loc, name: str) -> bool:
        if name in self.s.stages:
            return True
        self.error(loc, unknown_name("stage", name, self.s.stages))
        return False

    def stages(self, loc: Loc, names: list[str] | None) -> None:
        for i, name in enumerate(names or []):
            self.stage((*loc, i), name)

    def exit(self, loc: Loc, key: str) -> bool:
        source, target = key.split("->")
        if source not in self.s.stages:
            self.error(loc, unknown_name("stage", source, self.s.stages) + f" in exit {key!r}")
            return False
        exits = self.s.stages[source].exits
        if target not in exits:
            if target not in self.s.stages:
                self.error(loc, unknown_name("stage", target, self.s.stages) + f" in exit {key!r}")
            else:
                have = ", ".join(exits) or "none"
                self.error(loc, f"stage {source!r} has no exit to {target!r} "
                                f"(its exits go to: {have})")
            return False
        return True

    def exits(self, loc: Loc, keys: Iterable[str]) -> None:
        for key in keys:
            self.exit((*loc, key), key)

    # --- rules ----------------------------------------------------------

    def check_stages(self) -> None:
        s = self.s
        step = s.time.step_days
        if not s.stages_of_kind("customer"):
            self.error(("stages",), "no stage of kind 'customer': conversion and retention "
                                    "need at least one")
        for name, stage in s.stages.items():
            total = 0.0
            for target, rate in stage.exits.items():
                loc: Loc = ("stages", name, "exits", target)
                if target == name:
                    self.error(loc, "an exit to the stage itself; staying is what the exit "
                                    "probabilities leave over")
                    continue
                self.stage(loc, target)
                if rate.mean_days is not None and rate.mean_days < step:
                    self.error((*loc, "mean_days"),
                               f"a mean dwell of {format_days(rate.mean_days)} is shorter than "
                               f"one step ({format_days(step)})")
                total += rate.per_step(step)
            if total > 1.0 + 1e-12:
                self.error(("stages", name, "exits"),
                           f"exit probabilities sum to {total:.6g} per step; the sum must not "
                           f"pass 1")
            if stage.min_dwell_days >= s.time.horizon_days and stage.exits:
                self.warn(("stages", name, "min_dwell_days"),
                          "minimum dwell reaches the horizon: nobody leaves this stage")

    def check_segments(self) -> None:
        s = self.s
        shares = {n: seg.share for n, seg in s.segments.items()}
        given = [n for n, v in shares.items() if v is not None]
        if given and len(given) != len(shares):
            missing = [n for n, v in shares.items() if v is None]
            self.error(("segments", missing[0]),
                       f"segment shares are given for {', '.join(given)} but not for "
                       f"{', '.join(missing)}: give every segment a share, or none")
        elif given:
            total = sum(v for v in shares.values() if v is not None)
            if abs(total - 1.0) > _SHARE_TOLERANCE:
                self.error(("segments",), f"segment shares sum to {total:.6g}; they must sum to 1")
        elif s.population.arrivals.per_day > 0:
            self.error(("population", "arrivals", "per_day"),
                       "arrivals per_day is split by segment share, but no segment has a share")
        for name, seg in s.segments.items():
            loc: Loc = ("segments", name)
            self.exits((*loc, "offsets"), seg.offsets)
            self.exits((*loc, "heterogeneity"), seg.heterogeneity)
            for tp in seg.affinity:
                if tp not in s.touchpoints:
                    self.error((*loc, "affinity", tp),
                               unknown_name("touchpoint", tp, s.touchpoints))

    def check_population(self) -> None:
        s = self.s
        have_shares = all(seg.share is not None for seg in s.segments.values())
        for i, placement in enumerate(s.population.initial):
            loc: Loc = ("population", "initial", i)
            self.stage((*loc, "stage"), placement.stage)
            if placement.segment is not None:
                if placement.segment not in s.segments:
                    self.error((*loc, "segment"),
                               unknown_name("segment", placement.segment, s.segments))
            elif not have_shares and len(s.segments) > 1:
                self.error(loc, "a placement without a segment is split by segment share, "
                                "but the segments have no shares")
        if s.population.arrivals.stage is not None:
            self.stage(("population", "arrivals", "stage"), s.population.arrivals.stage)

    def check_touchpoints(self) -> None:
        for name, tp in self.s.touchpoints.items():
            loc: Loc = ("touchpoints", name)
            self.stages((*loc, "stages"), tp.stages)
            for key in tp.lift:
                if self.exit((*loc, "lift", key), key) and key.split("->")[0] not in tp.stages:
                    self.error((*loc, "lift", key),
                               f"lifts exit {key!r}, but the touchpoint is not active in stage "
                               f"{key.split('->')[0]!r}")

    def check_feedbacks(self) -> None:
        s = self.s
        self.exits(("satisfaction", "effects"), s.satisfaction.effects)
        ref = s.word_of_mouth.referrals
        if ref is not None:
            self.stages(("word_of_mouth", "referrals", "stages"), ref.stages)
            if ref.entry_stage is not None:
                self.stage(("word_of_mouth", "referrals", "entry_stage"), ref.entry_stage)
        con = s.word_of_mouth.contagion
        if con is not None:
            self.exit(("word_of_mouth", "contagion", "exit"), con.exit)
            self.stages(("word_of_mouth", "contagion", "adopter_stages"), con.adopter_stages)
            if con.market_size is None and not any(p.count for p in s.population.initial):
                self.error(("word_of_mouth", "contagion", "market_size"),
                           "no initial population to take the market size from: give "
                           "market_size")
        if s.reviews is not None:
            for stage in s.reviews.post:
                self.stage(("reviews", "post", stage), stage)
            self.exits(("reviews", "effects"), s.reviews.effects)

    def _profile(self, loc: Loc, ref: Any) -> None:
        """A profile reference: a known name, or a profile whose dates have a start date."""
        s = self.s
        if ref is None:
            return
        if isinstance(ref, str):
            if ref not in (s.profiles or {}):
                self.error(loc, unknown_name("profile", ref, s.profiles or {}))
            return
        self._profile_body(loc, ref)

    def _profile_body(self, loc: Loc, profile: Any) -> None:
        s = self.s
        if profile.needs_dates and s.time.start_date is None:
            part = ("by_month" if profile.by_month is not None else
                    "by_weekday" if profile.by_weekday is not None else "curve")
            self.error((*loc, part), "months, weekdays and dates need time.start_date "
                                     "(the date of day 0)")
            return
        if profile.curve is not None:
            at = [s.time.day_of(p.date) if p.date is not None else p.day
                  for p in profile.curve]
            for i in range(1, len(at)):
                if at[i] <= at[i - 1]:
                    self.error((*loc, "curve", i), "the curve's points must go forward in time")
                    return

    def check_calendar(self) -> None:
        s = self.s
        for name, profile in (s.profiles or {}).items():
            self._profile_body(("profiles", name), profile)
        self._profile(("population", "arrivals", "profile"), s.population.arrivals.profile)
        for name, tp in s.touchpoints.items():
            self._profile(("touchpoints", name, "profile"), tp.profile)
        for stage_name, stage in s.stages.items():
            for target, rate in stage.exits.items():
                self._profile(("stages", stage_name, "exits", target, "profile"), rate.profile)
        for name, iv in s.interventions.items():
            if iv.window is None:
                continue
            for field in ("start_date", "end_date"):
                if getattr(iv.window, field) is not None and s.time.start_date is None:
                    self.error(("interventions", name, "window", field),
                               "a window given as dates needs time.start_date (the date of "
                               "day 0)")

    def check_interventions(self, check_patches: bool) -> None:
        s = self.s
        data: dict[str, Any] | None = None
        found = self.n_errors()
        for name, iv in s.interventions.items():
            loc: Loc = ("interventions", name)
            dated = iv.window is not None and (
                iv.window.start_date is not None or iv.window.end_date is not None)
            if iv.window is not None and (s.time.start_date is not None or not dated):
                start, _ = iv.window.days(s.time)
                if start >= s.time.horizon_days:
                    field = "start_date" if iv.window.start_date else "start_day"
                    self.warn((*loc, "window", field),
                              f"the window opens on day {start:g}, at or after the "
                              f"horizon ({format_days(s.time.horizon_days)}): the "
                              f"intervention never acts")
            if iv.shape is not None:
                for path, value in iv.set.items():
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        self.error((*loc, "set", path),
                                   "a shaped intervention sets numbers only (its effect is "
                                   "weighted between the base value and this one)")
            if data is None:
                data = s.to_data()
            for path in iv.set:
                ploc: Loc = (*loc, "set", path)
                head = path.split(".")[0]
                if head in _NOT_PATCHABLE:
                    self.error(ploc, f"an intervention cannot change {head!r}")
                    continue
                if iv.window is not None and any(
                        path == p or path.startswith(p + ".") for p in _NOT_IN_WINDOW):
                    self.error(ploc, f"{path!r} cannot change inside a time window")
                    continue
                why = check_path(data, path, type(s))
                if why is not None:
                    self.error(ploc, f"patches a path that does not exist: {why}")
        # a materialised scenario carries every intervention along: an error in
        # any of them would be reported again under each one that is applied
        if not check_patches or self.n_errors() > found:
            return
        for name in s.interventions:
            self._check_result(s, [name], ("interventions", name, "set"))
        enabled = [n for n, iv in s.interventions.items() if iv.enabled]
        if len(enabled) > 1:
            self._check_result(s, enabled, ("interventions",))

    def _check_result(self, s: ScenarioFields, active: list[str], loc: Loc) -> None:
        try:
            materialise(s, active)
        except ScenarioError as exc:
            what = "applying it" if len(active) == 1 else f"applying {', '.join(active)} together"
            for p in exc.problems:
                self.error(loc, f"{what} breaks a rule: {p.path}: {p.message}")

    def check_optimise(self) -> None:
        s = self.s
        opt = s.optimise
        if opt is None:
            return
        for field, objective in (("objective", opt.objective),
                                 ("second_objective", opt.second_objective)):
            if objective is not None and objective.kpi not in KPI_NAMES:
                self.error(("optimise", field, "kpi"),
                           unknown_name("KPI", objective.kpi, KPI_NAMES))
        self._check_params("optimise", "search", opt.search, "search", "searches")

    def check_calibrate(self) -> None:
        cal = self.s.calibrate
        if cal is None:
            return
        self._check_params("calibrate", "parameters", cal.parameters, "fit", "fits")
        seen: dict[str, int] = {}
        for i, param in enumerate(cal.parameters):
            if param.path in seen:
                self.error(("calibrate", "parameters", i, "path"),
                           f"{param.path} is already fitted by parameter {seen[param.path]}")
            seen.setdefault(param.path, i)
            if param.prior is not None and param.prior.distribution in ("lognormal", "beta") \
                    and param.low is not None and param.low < 0:
                self.error(("calibrate", "parameters", i, "prior"),
                           f"a {param.prior.distribution} prior needs a range without "
                           f"negative values")
        if cal.period_days is not None:
            ratio = cal.period_days / self.s.time.step_days
            if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
                self.error(("calibrate", "period_days"),
                           f"a period ({format_days(cal.period_days)}) must be a whole number "
                           f"of steps of {format_days(self.s.time.step_days)}")

    def _check_params(self, block: str, field: str, params: Any, verb: str, verbs: str
                      ) -> None:
        """Paths of a search or fit block lead somewhere, and both ends of each range apply."""
        s = self.s
        data = s.to_data()
        for i, param in enumerate(params):
            loc: Loc = (block, field, i, "path")
            why = check_path(data, param.path, type(s))
            if why is not None:
                self.error(loc, f"{verbs} a path that does not exist: {why}")
                continue
            if param.path.split(".")[0] in ("name", "seed", "time", "optimise", "calibrate"):
                self.error(loc, f"cannot {verb} {param.path.split('.')[0]!r}")
                continue
            values: list[Any] = list(param.choices) if param.choices is not None else [
                param.low, param.high]
            if param.type == "int" and param.choices is None:
                values = [int(v) for v in values]
            for value in values:
                try:
                    apply_patches(s, {param.path: value}, patched=True)
                except ScenarioError as exc:
                    first = exc.problems[0]
                    self.error(loc, f"the value {value!r} breaks a rule: {first.path}: "
                                    f"{first.message}")
                    break

    def check_reachability(self) -> None:
        s = self.s
        entries = {p.stage for p in s.population.initial}
        arrivals = s.population.arrivals.per_day > 0 or any(
            (seg.arrivals_per_day or 0) > 0 for seg in s.segments.values())
        if arrivals:
            entries.add(s.entry_stage())
        ref = s.word_of_mouth.referrals
        if ref is not None:
            entries.add(ref.entry_stage or s.entry_stage())
        entries &= set(s.stages)
        if not entries:
            self.warn(("population",), "nobody is placed and nobody arrives: the run is empty")
            return
        seen = set(entries)
        todo = list(entries)
        while todo:
            for target in s.stages[todo.pop()].exits:
                if target in s.stages and target not in seen:
                    seen.add(target)
                    todo.append(target)
        for name in s.stages:
            if name not in seen:
                self.warn(("stages", name), "unreachable: no exit leads here from any entry stage")


def cross_check(s: ScenarioFields, *, check_patches: bool = True) -> list[Check]:
    """Every cross-field problem of ``s`` (errors and warnings).

    Args:
        s: a scenario whose fields are individually valid.
        check_patches: also validate the scenario each intervention produces.
    """
    c = _Checker(s)
    c.check_stages()
    c.check_segments()
    c.check_population()
    c.check_touchpoints()
    c.check_feedbacks()
    c.check_calendar()
    # what a patch produces is only worth checking on a base without errors
    clean = not any(p.severity == "error" for p in c.out)
    c.check_interventions(check_patches and clean)
    if check_patches and not any(p.severity == "error" for p in c.out):
        c.check_optimise()
        c.check_calibrate()
    c.check_reachability()
    return c.out
