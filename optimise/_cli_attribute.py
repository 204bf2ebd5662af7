"""`journey attribute`: what each touchpoint is worth, by counterfactual runs and by the
path methods, side by side; or the path methods on a user's paths file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from optimise._cli_common import scale_note, title, with_settings
from sim import SimError, load_scenario
from sim.cli import (
    COUNT,
    ENGINE,
    KPI,
    SCALE,
    SEED,
    THREADS,
    FormatOption,
    InterventionOption,
    Output,
    SetOption,
    check,
    few_replicates,
    on_interrupt,
    progress_bar,
)
from sim.display import (
    Table,
    format_kpi,
    format_money,
    format_number,
    format_share,
    plural,
)
from sim.results import ATTRIBUTIONS
from sim.scenario import BASE_VARIANT
from sim.stats import too_few

if TYPE_CHECKING:
    from optimise._attribute import Attribution, PathAttribution

__all__ = ["attribute_command"]

METHOD = check(choices=("removal", "shapley", "both"))


def _effect(kpi: str, mean: float, low: float, high: float, money: str) -> str:
    """An effect with its interval: ``+107.5 (4.9 … 210.1)``."""
    text = format_kpi(kpi, mean, money, delta=True)
    if any(isinstance(x, float) and math.isnan(x) for x in (low, high)):
        return text
    return (f"{text} ({format_kpi(kpi, low, money, delta=True)} … "
            f"{format_kpi(kpi, high, money, delta=True)})")


def attribute_command(
    file: Annotated[Path | None, typer.Argument(help="Scenario file (not with --paths).",
                                                show_default=False)] = None,
    paths: Annotated[Path | None, typer.Option(
        "--paths", help="A paths file (CSV or Parquet: path, total_conversions, "
                        "total_null) to attribute by the path methods, with no "
                        "scenario.")] = None,
    set_: SetOption = None,
    intervention: InterventionOption = None,
    kpi: Annotated[list[str] | None, typer.Option(help="KPI to attribute; repeat for "
                                                       "several (default: acquired, "
                                                       "revenue, retention_365, clv).",
                                                  callback=KPI)] = None,
    touchpoints: Annotated[str | None, typer.Option(help="Comma-separated touchpoints to "
                                                         "attribute (default: all).")
                           ] = None,
    method: Annotated[str, typer.Option(help="removal, shapley or both.", callback=METHOD)
                      ] = "both",
    orders: Annotated[int | None, typer.Option(help="Sample the Shapley values over this "
                                                    "many orders (default: exact up to "
                                                    "--exact-up-to touchpoints, else 20).",
                                               callback=check(low=2, whole=True))] = None,
    exact_up_to: Annotated[int, typer.Option(help="Most touchpoints for exact Shapley "
                                                  "values (2^n runs).",
                                             callback=check(low=1, high=16, whole=True))
                           ] = 10,
    replicates: Annotated[int, typer.Option(help="Replicates of every run (common "
                                                 "random numbers).", callback=COUNT)] = 4,
    population_scale: Annotated[float, typer.Option(help="Scale the population (> 0).",
                                                    callback=SCALE)] = 1.0,
    engine: Annotated[str, typer.Option(help="fast or des.", callback=ENGINE)] = "fast",
    seed: Annotated[int | None, typer.Option(help="Base seed (default: the scenario's).",
                                             callback=SEED)] = None,
    order: Annotated[int, typer.Option(help="Order of the Markov chain of the path "
                                            "methods.", callback=COUNT)] = 1,
    collapse: Annotated[bool, typer.Option("--collapse/--keep-repeats",
                                           help="Count repeated consecutive channels of a "
                                                "path once, or keep them as written.")
                        ] = False,
    segments: Annotated[bool, typer.Option("--segments", help="Also print the removal "
                                                              "effects per segment.")
                        ] = False,
    threads: Annotated[int | None, typer.Option(help="Numba threads.", callback=THREADS)
                       ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results"),
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    fmt: FormatOption = "table",
) -> None:
    """What each touchpoint is worth: removal effects and Shapley values from runs with
    touchpoints switched off (the truth), beside Markov, last- and first-touch estimates
    from the customers' paths."""
    from optimise._attribute import attribute, attribute_paths

    if paths is not None:
        if file is not None:
            raise SimError(f"--paths {paths}: give a scenario file or --paths, not both")
        given = [flag for flag, used in (
            ("--set", bool(set_)), ("--intervention", bool(intervention)), ("--kpi", bool(kpi)),
            ("--touchpoints", touchpoints is not None), ("--method", method != "both"),
            ("--orders", orders is not None), ("--exact-up-to", exact_up_to != 10),
            ("--replicates", replicates != 4), ("--population-scale", population_scale != 1.0),
            ("--engine", engine != "fast"), ("--seed", seed is not None),
            ("--segments", segments), ("--threads", threads is not None)) if used]
        if given:
            raise SimError(f"--paths {paths}: {given[0]} applies to a scenario's attribution, "
                           f"not to a paths file")
        _print_paths(attribute_paths(paths, order=order, collapse=collapse, out=out),
                     paths, order, collapse, Output(fmt, main="channels"))
        return
    if file is None:
        raise SimError("give a scenario file (journey attribute FILE) or a paths file "
                       "(journey attribute --paths FILE)")
    scenario, label = with_settings(file, set_, intervention) if (set_ or intervention) \
        else (load_scenario(file), BASE_VARIANT)
    chosen = None
    if touchpoints is not None:
        chosen = [t.strip() for t in touchpoints.split(",") if t.strip()]
        if not chosen:
            raise SimError("--touchpoints: name at least one touchpoint")
        unknown = [t for t in chosen if t not in scenario.touchpoints]
        if unknown:
            from sim import unknown_name

            raise SimError(f"--touchpoints {touchpoints}: "
                           f"{unknown_name('touchpoint', unknown[0], list(scenario.touchpoints))}")
    name = scenario.name if label == BASE_VARIANT else f"{scenario.name}-{label}"
    on_interrupt(f"finished runs are stored under {out / ATTRIBUTIONS / name}; the same "
                 f"command continues from them")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("runs"), TimeElapsedColumn())
    with progress_bar(*columns, quiet=quiet) as bar:
        task = bar.add_task(f"{title(scenario, label)}: attribution", total=None)
        result = attribute(scenario, kpis=kpi, touchpoints=chosen, replicates=replicates,
                           population_scale=population_scale, method=method, orders=orders,
                           exact_up_to=exact_up_to, engine=engine, seed=seed, order=order,
                           collapse=collapse, out=out, name=name, threads=threads,
                           progress=lambda d, t: bar.update(task, completed=d, total=t))
    _print_attribution(result, label, population_scale, segments, Output(fmt, main="attribution"))


def _print_attribution(result: Attribution, label: str, population_scale: float,
                       segments: bool, output: Output) -> None:
    scenario = result.scenario
    money = scenario.economics.currency
    summary = result.summary
    output.fact("scenario", scenario.name)
    output.fact("summary", summary)
    output.say(f"{title(scenario, label)}: {plural(summary['replicates'], 'replicate')} per "
               f"run, {plural(summary['coalitions'] + 1, 'run')}"
               f"{scale_note(population_scale)}")
    side = Table("attribution", "acquired customers per touchpoint: the truth (runs without "
                 "it, Shapley) beside the path methods",
                 ["touchpoint", "removal effect (95% CI)", "Shapley (95% CI)", "Markov",
                  "last touch", "first touch"],
                 align=["left", "right", "right", "right", "right", "right"])
    for r in result.side_by_side.to_pylist():
        side.add([r["touchpoint"],
                  _effect("acquired", r["removal_effect"], r["removal_low"],
                          r["removal_high"], money),
                  _effect("acquired", r["shapley"], r["shapley_low"], r["shapley_high"],
                          money),
                  format_number(r["markov"]), format_number(r["last_touch"]),
                  format_number(r["first_touch"])], r)
    output.table(side)
    kpis = summary["kpis"]
    removal = [r for r in result.removal.to_pylist() if r["segment"] is None]
    first = kpis[0]
    headers = ["name", "kind", *[f"{k} (95% CI)" for k in kpis], "cost",
               f"cost per {first}"]
    table = Table("removal", "removal effect: the KPI with everything on minus the KPI with "
                  "it switched off (paired on common random numbers)", headers,
                  align=["left", "left", *["right"] * (len(kpis) + 2)])
    by_name: dict[str, dict[str, Any]] = {}
    for r in removal:
        by_name.setdefault(r["name"], {"kind": r["kind"]})[r["kpi"]] = r
    for name, rows in by_name.items():
        lead = rows[first]
        per_unit = lead["cost_per_unit"]
        unit = ("per point" if first.startswith("retention") or first == "conversion"
                else "")
        if unit:
            per_unit = per_unit / 100 if per_unit == per_unit else per_unit
        table.add([name, rows["kind"],
                   *[_effect(k, rows[k]["effect"], rows[k]["ci_low"], rows[k]["ci_high"],
                             money) for k in kpis],
                   format_money(lead["cost"], money),
                   format_money(per_unit, money) if per_unit == per_unit else "–"],
                  {"name": name, "kind": rows["kind"],
                   **{f"{k}_{c}": rows[k][c] for k in kpis
                      for c in ("effect", "ci_low", "ci_high", "share", "cost_per_unit")},
                   "cost": lead["cost"]})
    output.table(table)
    if segments:
        seg_rows = [r for r in result.removal.to_pylist() if r["segment"] is not None]
        seg = Table("removal_by_segment", "removal effect per segment",
                    ["name", "segment", "KPI", "effect (95% CI)"],
                    align=["left", "left", "left", "right"])
        for r in seg_rows:
            seg.add([r["name"], r["segment"], r["kpi"],
                     _effect(r["kpi"], r["effect"], r["ci_low"], r["ci_high"], money)], r)
        output.table(seg)
    if result.shapley is not None:
        shap: dict[str, dict[str, Any]] = {}
        totals: dict[str, float] = {}
        for r in result.shapley.to_pylist():
            if r["segment"] is None:
                shap.setdefault(r["name"], {})[r["kpi"]] = r
                totals[r["kpi"]] = r["total"]
        how = ("exact, over every subset" if summary["shapley"] == "exact" else
               f"sampled over {summary['orders']} orders")
        table = Table("shapley", f"Shapley values ({how})",
                      ["touchpoint", *[f"{k} (95% CI)" for k in kpis], f"share of {first}"],
                      align=["left", *["right"] * (len(kpis) + 1)])
        for name, rows in shap.items():
            table.add([name, *[_effect(k, rows[k]["value"], rows[k]["ci_low"],
                                       rows[k]["ci_high"], money) for k in kpis],
                       format_share(rows[first]["share"])],
                      {"name": name, **{f"{k}_{c}": rows[k][c] for k in kpis
                                        for c in ("value", "ci_low", "ci_high", "share")}})
        output.table(table)
        output.say("the Shapley values of each KPI add up to the effect of all these "
                   "touchpoints together: " + ", ".join(
                       f"{k} {format_kpi(k, totals[k], money, delta=True)}" for k in kpis))
    output.say("Markov, last touch and first touch credit conversions along the simulated "
               "customers' paths; the removal effect and Shapley value say what the "
               "touchpoint actually adds (a touchpoint that meets customers who would have "
               "converted anyway gets path credit but little effect)")
    if too_few(summary["replicates"]):
        output.say(few_replicates(summary["replicates"]))
    if summary["reused_coalitions"]:
        output.say(f"reused {plural(summary['reused_coalitions'], 'finished run')} of this "
                   f"attribution")
    if summary["replaced_coalitions"]:
        output.say(f"replaced {plural(summary['replaced_coalitions'], 'stored run')} of "
                   f"another attribution (other scenario, seed, scale, engine or "
                   f"replicates)")
    for path in result.written:
        output.say(f"wrote {path}")
    output.fact("paths", result.written)
    output.finish()


def _print_paths(result: PathAttribution, file: Path, order: int, collapse: bool,
                 output: Output) -> None:
    repeats = "repeats collapsed" if collapse else "repeats kept"
    table = Table("channels", f"{file}: Markov removal effects (order {order}, exact; "
                  f"{repeats}), last and first touch",
                  ["channel", "removal effect", "share", "conversions", "last touch",
                   "first touch"],
                  align=["left", "right", "right", "right", "right", "right"])
    for r in result.table.to_pylist():
        table.add([r["channel"], format_number(r["removal_effect"], 4),
                   format_share(r["share"]), format_number(r["conversions"]),
                   format_number(r["last_touch"]), format_number(r["first_touch"])], r)
    output.fact("conversion_probability", result.conversion_probability)
    output.table(table)
    output.say(f"{plural(len(result.paths.paths), 'path')}, "
               f"{format_number(result.paths.total_conversions)} conversions; conversion "
               f"probability from the start {format_number(result.conversion_probability, 4)}")
    for path in result.written:
        output.say(f"wrote {path}")
    output.fact("paths", result.written)
    output.finish()
