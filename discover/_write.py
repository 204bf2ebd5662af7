"""The draft scenario as commented YAML, and the fit table.

Every estimated number is written with its 95% interval and its sample size
in a comment on its line; what an event log cannot tell is named in the
header. The text is validated as a scenario before anything is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa

import sim
from discover._estimate import Discovery, Estimate
from sim.display import format_days, plural
from sim.results import discovery_fit_path, write_files

__all__ = ["LEFT_OUT", "fit_table", "scenario_text", "write_discovery"]

LEFT_OUT = (
    "satisfaction and its effects on exits (unless the exposures show them), reviews and "
    "the public rating, word of "
    "mouth (referrals, contagion), costs of touchpoints, values per day, "
    "capacity-limited touchpoints, calendar profiles other than the arrivals' by month "
    "(the estimates are averages over the log's days), interventions, optimise and "
    "calibrate sections"
)
"""What an event log cannot tell, named in every draft's header."""
FIT_COLUMNS = (
    "kind",
    "stage",
    "target",
    "segment",
    "touchpoint",
    "estimate",
    "low",
    "high",
    "n",
    "events",
    "note",
)


def _num(x: float) -> str:
    """A number as YAML reads it back to the digits shown (six significant ones)."""
    if x == 0:
        return "0.0"
    text = f"{x:.6g}"
    return text if any(c in text for c in ".en") else text + ".0"


def _ci(e: Estimate, unit: str = "") -> str:
    return f"[{e.low:.4g}, {e.high:.4g}]{unit}"


def _header(d: Discovery) -> list[str]:
    lines = [
        f"# Scenario discovered from {d.log.source} by journey discover "
        f"(journey-engine {sim.__version__}).",
        f"# {d.log.events:,} events over {plural(d.log.steps, 'step')} of "
        f"{format_days(d.log.step_days)}.",
        "# Each estimated number carries its 95% interval and its sample size in a comment:",
        "#   exits: per-step probability [interval], n = customer-steps at risk, k = exits;",
        "#   reach: exposures per customer-step [interval], n = customer-steps in the stage;",
        "#   offsets and lifts: log-odds shifts [Wald interval] from a binomial GLM per exit.",
        "# Base rates and reach are those of the reference segment "
        f"({d.log.segments[0]}); the other segments differ by their offsets and affinities.",
        "# Not estimable from an event log, so left out (add them by hand):",
        f"#   {LEFT_OUT}.",
    ]
    if d.find("satisfaction_decay"):
        lines += [
            "# Satisfaction is reconstructed from each customer's exposures (decayed counts as",
            "#   covariates of every exit's GLM); the exits' probabilities are those at baseline",
            "#   satisfaction. Only effect x kick is identified: the kicks are scaled so that the",
            "#   largest |satisfaction - baseline| in the log is 1 (baseline 0), the sign so that",
            "#   satisfied customers leave less; reviews and referrals read this scale, not yours.",
        ]
    for w in d.warnings:
        lines.append(f"# warning: {w}")
    return lines


def _exits_block(d: Discovery, stage: str) -> list[str]:
    out = []
    for t in d.exits.get(stage, []):
        found = d.find("exit", stage=stage, target=t)
        if not found:
            continue
        e = found[0]
        note = f"; {e.note}" if e.note else ""
        out.append(
            f"      {t}: {_num(e.estimate)}    # {_ci(e)} per step; n = {e.n:,}, "
            f"k = {e.events:,}{note}"
        )
    return out


def _stages(d: Discovery) -> list[str]:
    lines = ["stages:"]
    for s, kind in d.mapping.stages.items():
        lines.append(f"  {s}:")
        lines.append(f"    kind: {kind}")
        for e in d.find("min_dwell_days", stage=s):
            lines.append(
                f"    min_dwell_days: {_num(e.estimate)}    # {e.note}; {e.events:,} exits"
            )
        for e in d.find("value_on_entry", stage=s):
            lines.append(
                f"    value: {{on_entry: {_num(e.estimate)}}}    # {_ci(e)}; "
                f"n = {e.n:,} entries with a value"
            )
        exits = _exits_block(d, s)
        if exits:
            lines.append("    exits:")
            lines += exits
    return lines


def _heterogeneous(d: Discovery) -> set[tuple[str, str, str]]:
    """(segment, stage, target) of every exit with a Beta heterogeneity."""
    return {(e.segment or "", e.stage or "", e.target or "") for e in d.find("beta_a")}


def _segments(d: Discovery) -> list[str]:
    lines = ["segments:"]
    shares = {e.segment: e for e in d.find("share")}
    names = d.log.segments
    rounded = {g: float(_num(shares[g].estimate)) if g in shares else 0.0 for g in names}
    rest = 1.0 - sum(rounded[g] for g in names[1:])
    rounded[names[0]] = round(max(0.0, rest), 9)
    het = _heterogeneous(d)
    for g in names:
        lines.append(f"  {g}:")
        e = shares.get(g)
        ci = f"    # {_ci(e)}; {e.events:,} of {e.n:,} ({e.note})" if e else ""
        lines.append(f"    share: {rounded[g]!r}{ci}")
        aff = d.find("affinity", segment=g)
        if aff:
            lines.append("    affinity:")
            for a in aff:
                lines.append(
                    f"      {a.touchpoint}: {_num(a.estimate)}    # {_ci(a)}; "
                    f"n = {a.n:,}, {a.events:,} exposures"
                )
        offs = [
            o for o in d.find("offset", segment=g) if (g, o.stage or "", o.target or "") not in het
        ]
        if offs:
            lines.append("    offsets:")
            for o in offs:
                value = min(20.0, max(-20.0, o.estimate))
                lines.append(
                    f"      {o.stage}->{o.target}: {_num(value)}    # {_ci(o)}; "
                    f"n = {o.n:,}, k = {o.events:,}"
                )
        betas = [
            (a, b)
            for a in d.find("beta_a", segment=g)
            for b in d.find("beta_b", segment=g, stage=a.stage, target=a.target)
        ]
        if betas:
            lines.append("    heterogeneity:")
            for a, b in betas:
                lines.append(
                    f"      {a.stage}->{a.target}: {{distribution: beta, a: "
                    f"{_num(a.estimate)}, b: {_num(b.estimate)}}}    # a {_ci(a)}, "
                    f"b {_ci(b)}; {a.n:,} customers, {a.events:,} exits; {a.note} "
                    "(replaces the base rate and the offset in this segment)"
                )
    return lines


def _touchpoints(d: Discovery) -> list[str]:
    lines = ["touchpoints:"]
    any_tp = False
    for t in d.mapping.touchpoints:
        reach = [r for r in d.find("reach", touchpoint=t, segment=None)]
        if not reach:
            continue
        any_tp = True
        lines.append(f"  {t}:")
        lines.append(f"    stages: [{', '.join(r.stage or '' for r in reach)}]")
        lines.append("    reach:")
        for r in reach:
            lines.append(
                f"      {r.stage}: {_num(r.estimate)}    # {_ci(r)}; n = {r.n:,}, "
                f"{r.events:,} exposures ({r.note})"
            )
        for k in d.find("satisfaction_kick", touchpoint=t):
            lines.append(
                f"    satisfaction: {_num(min(2.0, max(-2.0, k.estimate)))}    # {_ci(k)}; "
                f"{k.note}"
            )
        lifts = d.find("lift", touchpoint=t)
        if lifts:
            lines.append("    lift:")
            for lift in lifts:
                zero = " (interval holds 0)" if lift.low <= 0 <= lift.high else ""
                value = min(20.0, max(-20.0, lift.estimate))
                lines.append(
                    f"      {lift.stage}->{lift.target}: {_num(value)}    # "
                    f"{_ci(lift)}{zero}; n = {lift.n:,} exposed steps at risk, "
                    f"k = {lift.events:,}"
                )
    return lines if any_tp else []


def _population(d: Discovery) -> list[str]:
    lines = ["population:"]
    initial = d.find("initial")
    if initial:
        lines.append("  initial:")
        for e in initial:
            lines.append(
                f"    - {{stage: {e.stage}, count: {int(e.estimate)}, segment: {e.segment}}}"
            )
    arr = d.find("arrivals_per_day")
    if arr:
        e = arr[0]
        lines += [
            "  arrivals:",
            f"    per_day: {_num(e.estimate)}    # {_ci(e)}; {e.events:,} {e.note}",
            f"    stage: {e.stage}",
        ]
        if d.find("arrivals_by_month"):
            lines.append(f"    profile: {SEASON}")
    return lines if len(lines) > 1 else []


def _satisfaction(d: Discovery) -> list[str]:
    decay = d.find("satisfaction_decay")
    if not decay:
        return []
    e = decay[0]
    lines = [
        "satisfaction:",
        f"  decay: {_num(min(1.0, e.estimate))}    # {_ci(e)} per step; {e.note}",
        "  baseline: 0.0    # not identified apart from the exits' base rates: 0 by convention",
        "  initial: 0.0    # taken equal to the baseline (confounded with the first stage's dwell)",
    ]
    effects = d.find("satisfaction_effect")
    if effects:
        lines.append("  effects:")
        for f in effects:
            lines.append(
                f"    {f.stage}->{f.target}: {_num(min(20.0, max(-20.0, f.estimate)))}    "
                f"# {_ci(f)}; n = {f.n:,} sampled customer-steps, k = {f.events:,}"
            )
    return lines


SEASON = "arrivals_by_month"
"""The name of the arrivals' monthly profile in a draft."""


def _profiles(d: Discovery) -> list[str]:
    months = d.find("arrivals_by_month")
    if not months:
        return []
    lines = ["profiles:", f"  {SEASON}:    # {months[0].note.split('; ', 1)[1]}", "    by_month:"]
    for e in months:
        lines.append(
            f"      {e.target}: {_num(e.estimate)}    # {_ci(e)}; {e.events:,} arrivals "
            f"over {e.n:,} days"
        )
    return lines


def scenario_text(d: Discovery) -> str:
    """The draft scenario: commented YAML that ``journey validate`` accepts."""
    m = d.mapping
    sd = d.log.step_days
    lines = [
        *_header(d),
        "",
        f"name: {m.name}",
        f"description: {json.dumps(f'Discovered from the event log {d.log.source}.')}",
        "seed: 0",
        "time:",
        f"  step_days: {_num(sd)}",
        f"  horizon_days: {_num(d.log.steps * sd)}",
        *(
            [f"  start_date: {d.log.start_date.isoformat()}    # the log's first day"]
            if d.log.start_date is not None
            else []
        ),
        *_profiles(d),
        *_population(d),
        *_segments(d),
        *_stages(d),
        *_touchpoints(d),
        *_satisfaction(d),
    ]
    return "\n".join(lines) + "\n"


def fit_table(d: Discovery) -> pa.Table:
    """Every estimate as a row (the columns of :class:`~discover._estimate.Estimate`)."""
    rows = d.estimates
    return pa.table(
        {
            "kind": pa.array([e.kind for e in rows], pa.string()),
            "stage": pa.array([e.stage for e in rows], pa.string()),
            "target": pa.array([e.target for e in rows], pa.string()),
            "segment": pa.array([e.segment for e in rows], pa.string()),
            "touchpoint": pa.array([e.touchpoint for e in rows], pa.string()),
            "estimate": pa.array([e.estimate for e in rows], pa.float64()),
            "low": pa.array([e.low for e in rows], pa.float64()),
            "high": pa.array([e.high for e in rows], pa.float64()),
            "n": pa.array([e.n for e in rows], pa.int64()),
            "events": pa.array([e.events for e in rows], pa.int64()),
            "note": pa.array([e.note for e in rows], pa.string()),
        }
    )


def write_discovery(d: Discovery, out: str | os.PathLike[str]) -> tuple[sim.Scenario, list[str]]:
    """Validate the draft and write it and its fit table, each whole or not at all.

    Returns:
        The draft as a scenario, and the paths written (draft, fit table).
    """
    text = scenario_text(d)
    scenario = sim.load_scenario(text)
    path = Path(out)
    fit = discovery_fit_path(path)
    write_files(path.parent, {fit.name: fit_table(d)})
    write_files(path.parent, {path.name: text.encode("utf-8")})
    return scenario, [str(path), str(fit)]
