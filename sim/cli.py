"""The ``journey`` command.

Thin by design: parse arguments, show progress, call the public API, choose
the exit code. Higher layers add subcommands through the ``journey.commands``
entry-point group: each entry point names a callable ``register(app)`` that
adds commands to the typer app (:func:`add_command`), so ``sim`` never imports
upward. Importing this module registers nothing of theirs: :func:`main` calls
:func:`load_commands` first, and so does whoever wants the complete app.

What every command shares lives here and is public for those layers: the
error and Ctrl-C handler (:func:`guarded`, :func:`on_interrupt`), the checks
that name a bad option by its flag (:func:`check`), ``--set`` and
``--intervention`` (:func:`apply_settings`), result tables in three formats
(:class:`Output`) and progress bars (:func:`progress_bar`). Numbers are
formatted by :mod:`sim.display`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table as RichTable
from rich.text import Text
from typer.core import TyperGroup

from sim._errors import ScenarioError, SimError, hint, is_interrupt
from sim._kpi_catalogue import KPI_NAMES, QUEUE_KPIS
from sim.display import (
    Table,
    format_days,
    format_interval,
    format_kpi,
    kpi_unit,
    plural,
    render_csv,
    render_json,
    render_plain,
)
from sim.scenario import (
    BASE_VARIANT,
    Scenario,
    check_scenario_file,
    is_variant_label,
    json_schema,
    kpi_kinds,
    kpi_names,
    load_scenario,
    parse_setting,
    variant_label,
)

__all__ = [
    "COUNT",
    "ENGINE",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "FORMATS",
    "KPI",
    "RUN_HOOKS",
    "SCALE",
    "SEED",
    "THREADS",
    "VARIANT",
    "FormatOption",
    "InterventionOption",
    "Output",
    "SetOption",
    "add_command",
    "app",
    "apply_settings",
    "check",
    "check_kpis",
    "console",
    "err_console",
    "few_replicates",
    "guarded",
    "kpi_table",
    "load_commands",
    "main",
    "on_interrupt",
    "progress_bar",
    "third_party_level",
]

EXIT_INVALID = 2
"""Exit code for input the engine refuses (bad scenario, bad option value)."""
EXIT_INTERRUPTED = 130
"""Exit code after Ctrl-C, as a shell gives a command that SIGINT stopped."""
FORMATS = ("table", "csv", "json")
"""What ``--format`` accepts: a table for people, or the data for scripts."""

F = TypeVar("F", bound=Callable[..., Any])
_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
"""The usage-error base class of the click that typer runs on (typer vendors its own)."""

_state: dict[str, Any] = {"debug": False, "verbose": False, "argv": [], "interrupt": None}


class _OptionError(typer.BadParameter):
    """A bad option value, reported as ``--flag VALUE: what is wrong``."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


def _written(opts: Sequence[str]) -> str | None:
    """What followed one of ``opts`` on the command line (its last occurrence)."""
    argv: list[str] = _state["argv"]
    found = None
    for i, token in enumerate(argv):
        for opt in opts:
            if token == opt and i + 1 < len(argv):
                found = argv[i + 1]
            elif token.startswith(opt + "="):
                found = token[len(opt) + 1:]
    return found


def _usage_line(exc: Exception) -> str:
    """One line for a usage error: the flag, what was written, what is wrong."""
    if isinstance(exc, _OptionError):
        return exc.line
    param = getattr(exc, "param", None)
    message = str(getattr(exc, "message", "") or "")
    opts = list(getattr(param, "opts", []) or [])
    if type(exc).__name__ == "BadParameter" and opts and opts[0].startswith("-") and message:
        text = message[0].lower() + message[1:].rstrip(".")
        written = _written(opts)
        return f"{opts[0]} {written}: {text}" if written is not None else f"{opts[0]}: {text}"
    format_message = getattr(exc, "format_message", None)
    text = (format_message() if callable(format_message) else str(exc)).strip()
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None)
    return f"{text} (see '{path} --help')" if path else text


class _Group(TyperGroup):
    """The ``journey`` group: remembers the command line and reports usage errors in one line."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        _state["argv"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _USAGE_ERROR as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":
                raise
            err_console.print(_usage_line(exc), markup=False, highlight=False)
            raise typer.Exit(EXIT_INVALID) from None


app = typer.Typer(
    name="journey",
    help="Simulate customer journeys and find the interventions that keep customers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=_Group,
)
console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

RUN_HOOKS: dict[str, Callable[[str, str, str, list[int]], str]] = {}
"""What higher layers do after `journey run`, registered by their ``register(app)``.

``RUN_HOOKS["report"](out, scenario, variant, seeds)`` writes the run's report
and returns its path (`journey run --report`; the ``report`` package adds it).
"""

# ------------------------------------------------------------ errors, Ctrl-C


def on_interrupt(kept: str, *, extra: Sequence[str] = (), again: bool = True) -> None:
    """Say what Ctrl-C keeps, for the one line :func:`guarded` prints if it comes.

    Args:
        kept: what stays on disk (``finished trials are stored in results``).
        extra: options to add to the command line to continue (``--resume``),
            unless they are already on it.
        again: give the command to continue with (False: there is nothing to
            continue).
    """
    _state["interrupt"] = (kept, list(extra), again)


def _command_line(extra: Sequence[str]) -> str:
    argv = list(_state["argv"])
    argv += [e for e in extra if e not in argv]
    return shlex.join(["journey", *argv])


def _interrupted() -> str:
    kept, extra, again = _state["interrupt"] or ("nothing was written", [], False)
    line = f"interrupted: {kept}"
    return f"{line}; continue with: {_command_line(extra)}" if again else line


def guarded(fn: F) -> F:
    """Run a command so that the engine's errors print one line each and exit 2, and
    Ctrl-C prints one line (what is kept, how to go on) and exits 130.

    With ``--debug`` the traceback is shown instead.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            if _state["debug"] or isinstance(exc, (typer.Exit, SystemExit)):
                raise
            if is_interrupt(exc):  # also an error a library raised while it stopped
                err_console.print(_interrupted(), markup=False)
                raise typer.Exit(EXIT_INTERRUPTED) from None
            if not isinstance(exc, SimError):
                raise
            for line in str(exc).splitlines():
                if line.strip():
                    err_console.print(line, markup=False)
            raise typer.Exit(EXIT_INVALID) from None

    return wrapper  # type: ignore[return-value]


def third_party_level() -> int:
    """The logging level of other libraries (Optuna, Dask, warnings): off (CRITICAL)
    unless ``--verbose`` (INFO) or ``--debug`` (DEBUG)."""
    if _state["debug"]:
        return logging.DEBUG
    return logging.INFO if _state["verbose"] else logging.CRITICAL


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")
                     ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show what the engine and the "
                                                            "libraries it drives (Optuna, "
                                                            "Dask) log.")] = False,
) -> None:
    _state.update(debug=debug, verbose=verbose, interrupt=None)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(third_party_level())


# ------------------------------------------------------------ option checks


def _fail(param: Any, value: Any, why: str) -> typer.BadParameter:
    flag = param.opts[0] if param.opts else param.name
    shown = f"{value:g}" if isinstance(value, float) else shlex.quote(str(value))
    return _OptionError(f"{flag} {shown}: {why}")


def check(*, low: float | None = None, high: float | None = None, whole: bool = False,
          choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
          rule: Callable[[Any], str | None] | None = None) -> Callable[..., Any]:
    """A typer callback that refuses a bad option value in one line naming the flag.

    ``--replicates 0: must be a whole number ≥ 1``. None (an option not given)
    passes; a list option is checked item by item.

    Args:
        low: the least allowed value (for numbers).
        high: the greatest allowed value.
        whole: the value is a count (the message says "whole number").
        choices: the allowed values (or a function giving them, imported late).
        rule: any other check: returns what is wrong, or None.
    """

    def one(param: Any, value: Any) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(param, value, "must be a finite number")
        what = "a whole number" if whole else "a number"
        if low is not None and high is not None and not low <= value <= high:
            raise _fail(param, value, f"must lie in {low:g}..{high:g}")
        if low is not None and value < low:
            raise _fail(param, value, f"must be {what} ≥ {low:g}")
        if high is not None and value > high:
            raise _fail(param, value, f"must be {what} ≤ {high:g}")
        if choices is not None:
            allowed = list(choices() if callable(choices) else choices)
            if value not in allowed:
                said = hint(str(value), allowed, listed=None)
                raise _fail(param, value, f"must be one of {', '.join(allowed)}"
                                          + (f" ({said})" if said else ""))
        if rule is not None:
            why = rule(value)
            if why is not None:
                raise _fail(param, value, why)

    def callback(param: typer.CallbackParam, value: Any) -> Any:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None:
                one(param, item)
        return value

    return callback


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be a finite number > 0"


def _threads(value: int) -> str | None:
    cores = int(os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count() or 1)
    return None if 1 <= value <= cores else f"must lie in 1..{cores} (the cores numba may use)"


def _variant(value: str) -> str | None:
    return None if is_variant_label(value) else (
        "not a valid label: letters, digits, _, . and -, starting with a letter or digit, "
        "at most 128 characters (it names a folder)")


def _engines() -> Sequence[str]:
    from sim.api import ENGINES

    return ENGINES


def _kpi(value: str) -> str | None:
    """A built-in KPI, a per-queue one (``served_within_target:consult``) or a name a
    scenario's ``kpis:`` block may define; :func:`check_kpis` checks it against the
    scenario once the command has loaded it."""
    base, _, touchpoint = value.partition(":")
    if value in KPI_NAMES or (base in QUEUE_KPIS and touchpoint) or (
            not touchpoint and _CUSTOM_NAME.match(value) and not value.startswith("retention_")):
        return None
    return f"unknown KPI ({hint(value, KPI_NAMES)})"


_CUSTOM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def check_kpis(scenario: Any, names: Sequence[str] | None, flag: str = "--kpi") -> None:
    """Refuse, in one line naming the flag, a KPI the scenario does not have.

    Raises:
        typer.BadParameter: ``--kpi NAME: unknown KPI (did you mean ...?)``, reported by
            the ``journey`` group with exit code 2.
    """
    known = kpi_names(scenario)
    for name in names or []:
        if name not in known:
            raise _OptionError(f"{flag} {shlex.quote(name)}: unknown KPI "
                               f"({hint(name, known)})")


SEED = check(rule=lambda v: None if 0 <= v < 2**63 else "must be a whole number in "
                                                        "0..2**63-1")
"""``--seed``: 0 .. 2**63-1."""
COUNT = check(low=1, whole=True)
"""A count of at least 1 (``--replicates``, ``--trials``, ``--workers``…)."""
SCALE = check(rule=_positive)
"""``--population-scale``: a finite number > 0."""
THREADS = check(rule=_threads)
ENGINE = check(choices=_engines)
VARIANT = check(rule=_variant)
KPI = check(rule=_kpi)
FORMAT = check(choices=FORMATS)

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", metavar="PATH=VALUE", show_default=False,
    help="Set a dotted scenario path (as in sweep --vary; the value is read like YAML); "
         "repeat for several.")]
"""``--set PATH=VALUE`` (repeatable), for any command that loads a scenario."""
InterventionOption = Annotated[list[str] | None, typer.Option(
    "--intervention", metavar="NAME", show_default=False,
    help="Enable the scenario's intervention NAME; repeat for several.")]
"""``--intervention NAME`` (repeatable)."""
FormatOption = Annotated[str, typer.Option(
    "--format", metavar="table|csv|json", callback=FORMAT,
    help="table (for people), or csv / json (the data, for scripts; messages go to stderr).")]


# ---------------------------------------------------- --set, --intervention


def _unknown_intervention(name: str, known: Sequence[str]) -> str:
    return f"unknown intervention ({hint(name, known, none='this scenario has none')})"


def _blame(path: str, message: str, written: dict[str, str], names: Sequence[str]) -> str:
    """Name the flag behind a problem of the patched scenario."""
    for name in names:
        if path == f"interventions.{name}" or path.startswith(f"interventions.{name}."):
            return f"--intervention {name}: {message}"
    exact = written.get(path)
    if exact is not None:
        return f"--set {exact}: {message}"
    wider = [p for p in written if path.startswith(p + ".")]
    if wider:  # inside what one --set wrote
        return f"--set {written[max(wider, key=len)]}: {path}: {message}"
    inside = [p for p in written if p.startswith(path + ".")]
    if inside:  # a rule over what one or more --set changed (exits that sum past 1)
        return ", ".join(f"--set {written[p]}" for p in inside) + f": {path}: {message}"
    flags = [f"--set {s}" for s in written.values()] + [f"--intervention {n}" for n in names]
    return f"with {', '.join(flags)}: {path}: {message}"


def apply_settings(scenario: Scenario, sets: Sequence[str] | None,
                   interventions: Sequence[str] | None) -> tuple[Scenario, str]:
    """The scenario with ``--set`` and ``--intervention`` applied, and its variant label.

    Validated like a scenario (:meth:`Scenario.apply`); every problem is one line
    that names the flag and what was written.

    Returns:
        The variant, and :func:`sim.scenario.variant_label` of the settings
        (``base`` when nothing was set).

    Raises:
        SimError: one line per problem.
    """
    problems: list[str] = []
    overrides: dict[str, Any] = {}
    written: dict[str, str] = {}
    for spec in sets or []:
        try:
            path, value = parse_setting(spec)
        except SimError as exc:
            problems.append(str(exc))
            continue
        if path in written:
            problems.append(f"--set {spec}: {path} is already set by --set {written[path]}")
            continue
        overrides[path] = value
        written[path] = spec
    names = list(dict.fromkeys(interventions or []))
    known = list(scenario.interventions)
    problems += [f"--intervention {n}: {_unknown_intervention(n, known)}"
                 for n in names if n not in scenario.interventions]
    if problems:
        raise SimError("\n".join(problems))
    if not overrides and not names:
        return scenario, BASE_VARIANT
    try:
        variant = scenario.apply(interventions=names, overrides=overrides)
    except ScenarioError as exc:
        raise SimError("\n".join(dict.fromkeys(
            _blame(p.path, p.message, written, names) for p in exc.problems))) from None
    return variant, variant_label(names, list(overrides.items()))


# ------------------------------------------------------------------ output


def _rich(table: Table) -> RichTable:
    shown = RichTable(title=Text(table.title), title_justify="left")
    for header, align in zip(table.headers, table.alignment(), strict=True):
        shown.add_column(Text(header), justify="left" if align == "left" else "right",
                         overflow="fold")
    for row in table.cells:
        shown.add_row(*(Text(c) for c in row))
    return shown


class Output:
    """Where a command's results go: a table for people, or csv / json for scripts.

    ``table`` prints each table (box-drawn on a terminal, plain aligned text
    into a file or a pipe) and messages on stdout. ``csv`` prints the main
    table's records; ``json`` prints one document with every table and fact
    (:meth:`finish`). With csv and json every message goes to stderr, so
    stdout holds only the data.
    """

    def __init__(self, fmt: str = "table", *, main: str | None = None) -> None:
        """Args: fmt: ``table``, ``csv`` or ``json``; main: the table csv prints."""
        self.fmt = fmt
        self.main = main
        self.document: dict[str, Any] = {}

    def say(self, message: str) -> None:
        """A message for people (stdout with tables, stderr with csv or json)."""
        (console if self.fmt == "table" else err_console).print(message, markup=False)

    def fact(self, key: str, value: Any) -> None:
        """A fact for the json document (scenario, variant, seed, paths…)."""
        self.document[key] = value

    def table(self, table: Table) -> None:
        """Print a result table (or keep it for the json document)."""
        if self.fmt == "table":
            if console.is_terminal:
                console.print(_rich(table))
            else:
                console.file.write(render_plain(table))
                console.file.flush()
        elif self.fmt == "csv":
            if self.main in (None, table.name):
                console.file.write(render_csv(table.records))
                console.file.flush()
                self.main = table.name
        else:
            self.document[table.name] = table.records

    def finish(self) -> None:
        """Print the json document (nothing to do for the other formats)."""
        if self.fmt == "json":
            console.file.write(render_json(self.document))
            console.file.flush()


def kpi_table(summary: Any, title: str, currency: str = "EUR",
              kinds: dict[str, str] | None = None) -> Table:
    """The KPI table of a run summary (kpi, mean, 95% CI), each KPI in its unit
    (``kinds``: those of a scenario's custom KPIs)."""
    table = Table("kpis", title, ["KPI", "mean", "95% CI"])
    for row in summary.to_pylist():
        name = row["kpi"]
        table.add([name, format_kpi(name, row["mean"], currency, kinds=kinds),
                   format_interval(name, row["ci_low"], row["ci_high"], currency,
                                   kinds=kinds)],
                  {**row, "unit": kpi_unit(name, currency, kinds)})
    return table


def few_replicates(replicates: int) -> str:
    """What to tell a reader of intervals over too few replicates (``sim.stats.too_few``)."""
    from sim.stats import FEW_REPLICATES

    return (f"intervals over {plural(replicates, 'replicate')} are wide and say little: run "
            f"{FEW_REPLICATES} or more (--replicates) for intervals that mean much")


def progress_bar(*columns: str | ProgressColumn, quiet: bool = False) -> Progress:
    """A transient progress bar on stderr; off with ``quiet`` or when stderr is not a
    terminal (a log file gets no bar)."""
    return Progress(*columns, console=err_console, transient=True,
                    disable=quiet or not err_console.is_terminal)


# ---------------------------------------------------------------- commands


@app.command()
@guarded
def validate(
    files: Annotated[list[Path], typer.Argument(help="Scenario files to check.",
                                                show_default=False)],
    set_: SetOption = None,
    intervention: InterventionOption = None,
) -> None:
    """Check scenario files; print every problem as FILE:LINE:COL: field: message.

    With --set or --intervention, each file is also checked with them applied.
    Exits 0 when every file is valid (warnings allowed), 2 otherwise.
    """
    failed = 0
    for path in files:
        scenario, problems = check_scenario_file(path)
        for problem in problems:
            err_console.print(str(problem), markup=False)
        if scenario is None:
            failed += 1
            continue
        try:
            scenario, label = apply_settings(scenario, set_, intervention)
        except SimError as exc:
            for line in str(exc).splitlines():
                err_console.print(f"{path}: {line}", markup=False)
            failed += 1
            continue
        variant = "" if label == BASE_VARIANT else f" as variant {label}"
        console.print(
            f"{path}: ok{variant} ({plural(len(scenario.stages), 'stage')}, "
            f"{plural(len(scenario.segments), 'segment')}, "
            f"{plural(len(scenario.touchpoints), 'touchpoint')}, "
            f"{plural(len(scenario.interventions), 'intervention')}, "
            f"{plural(scenario.steps, 'step')})", markup=False, highlight=False)
    if failed:
        raise typer.Exit(EXIT_INVALID)


@app.command()
@guarded
def run(
    file: Annotated[Path, typer.Argument(help="Scenario file.", show_default=False)],
    set_: SetOption = None,
    intervention: InterventionOption = None,
    seed: Annotated[int | None, typer.Option(help="Base seed (default: the scenario's).",
                                             callback=SEED)] = None,
    replicates: Annotated[int, typer.Option(help="Independent replicates (≥ 1).",
                                            callback=COUNT)] = 1,
    out: Annotated[str, typer.Option(help="Dataset folder or URI for the Parquet tables.")] = (
        "results"),
    events: Annotated[bool, typer.Option("--events", help="Also write one row per agent "
                                                           "transition.")] = False,
    exposures: Annotated[bool, typer.Option("--exposures", help="Also write one events row "
                                                                "per touchpoint exposure "
                                                                "(implies --events).")
                         ] = False,
    threads: Annotated[int | None, typer.Option(help="numba threads (default: all cores).",
                                                callback=THREADS)] = None,
    population_scale: Annotated[float, typer.Option(help="Scale the population and arrivals "
                                                         "(> 0).", callback=SCALE)] = 1.0,
    variant: Annotated[str | None, typer.Option(
        help="Label stored with every row (default: base, or one derived from --set and "
             "--intervention).", callback=VARIANT, show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Reuse replicates already written "
                                                           "for the same scenario and seed.")
                      ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    engine: Annotated[str, typer.Option(help="fast (numba kernels) or des (SimPy events: "
                                             "capacity-limited touchpoints, queues).",
                                        callback=ENGINE)] = "fast",
    report: Annotated[bool, typer.Option("--report", help="Write the run's HTML report to "
                                                           "OUT/report-<scenario>.html.")
                      ] = False,
    fmt: FormatOption = "table",
) -> None:
    """Simulate a scenario; print KPIs with 95% CIs; write Parquet tables to --out."""
    from sim.api import run as run_api

    if report and "report" not in RUN_HOOKS:
        raise SimError("--report needs the report extra (plotly, kaleido): "
                       "pip install 'journey-engine[report]'")
    if report and "://" in out:
        raise SimError(f"--report {out}: needs a local --out folder")
    scenario, label = apply_settings(load_scenario(file), set_, intervention)
    label = variant or label
    on_interrupt(f"replicates that finished are stored in {out} (none partly)",
                 extra=["--resume"])
    output = Output(fmt, main="kpis")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("steps"), TimeElapsedColumn(), TimeRemainingColumn())
    with progress_bar(*columns, quiet=quiet) as bar:
        task = bar.add_task(f"{scenario.name} ({label})", total=None)
        result = run_api(scenario, seed=seed, replicates=replicates,
                         population_scale=population_scale, variant=label,
                         events=events, exposures=exposures, out=out, threads=threads,
                         resume=resume,
                         engine=engine, progress=lambda done, total: bar.update(
                             task, completed=done, total=total))
    for replaced in result.replaced:
        err_console.print(str(replaced), markup=False)
    currency = scenario.economics.currency
    scale = f", population scale {population_scale:g}" + (
        "" if population_scale == 1 else " (KPIs for the full population)")
    title = (f"{scenario.name}, variant {label}: {plural(replicates, 'replicate')}, seed "
             f"{result.seed}, {plural(scenario.steps, 'step')} of "
             f"{format_days(scenario.time.step_days)}, engine {engine}{scale}, "
             f"run {result.run_id}")
    for key, value in (("scenario", scenario.name), ("variant", label), ("seed", result.seed),
                       ("replicates", replicates), ("engine", engine),
                       ("population_scale", population_scale), ("run_id", result.run_id),
                       ("currency", currency)):
        output.fact(key, value)
    summary = result.summary()
    output.table(kpi_table(summary, title, currency, kpi_kinds(scenario)))
    if any(summary.column("few").to_pylist()):
        output.say(few_replicates(replicates))
    output.fact("paths", result.paths)
    output.say(f"wrote {plural(len(result.paths), 'file')} to {out}")
    if report:
        on_interrupt(f"the run is stored in {out}; the report was not written",
                     extra=["--resume"])
        path = RUN_HOOKS["report"](out, scenario.name, label, result.seeds)
        output.fact("report", path)
        output.say(f"wrote report {path}")
    output.finish()


@app.command()
@guarded
def runs(
    folder: Annotated[str, typer.Argument(help="Results folder or URI (journey run --out).",
                                          show_default=False)] = "results",
    fmt: FormatOption = "table",
) -> None:
    """List the runs a results folder holds, from its files.

    One line per run: scenario, variant, run id, engine, population scale, base
    seed, replicates, when written and which tables. journey report picks a run by
    any of these (--run, --scenario, --variant, --seed, --engine, --population-scale).
    """
    from sim.results import list_runs, runs_table

    if "://" not in folder and not Path(folder).is_dir():
        raise SimError(f"{folder}: no such results folder")
    found = list_runs(folder)
    output = Output(fmt, main="runs")
    table = Table("runs", f"runs in {folder}",
                  ["scenario", "variant", "run", "engine", "scale", "base seed", "replicates",
                   "written", "tables"],
                  align=["left", "left", "left", "left", "right", "right", "right", "left",
                         "left"])
    for r, record in zip(found, runs_table(found).to_pylist(), strict=True):
        reps = str(len(r.replicates)) + (f" (+{len(r.incomplete)} incomplete)"
                                         if r.incomplete else "")
        record["written"] = r.written.isoformat() if r.written else None
        table.add([r.scenario, r.variant, r.run_id, r.engine, f"{r.population_scale:g}",
                   "?" if r.base_seed is None else str(r.base_seed), reps,
                   r.written.strftime("%Y-%m-%d %H:%M") if r.written else "?",
                   ", ".join(r.tables)], record)
    if found:
        output.table(table)
    else:
        output.say(f"{folder} holds no runs")
        output.fact("runs", [])
    output.finish()


@app.command()
def schema() -> None:
    """Print the JSON Schema of scenario files (for editors)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


# ----------------------------------------------------- commands of higher layers

_registered: set[str] = set()
"""The ``journey.commands`` entry points whose ``register(app)`` has run."""


def add_command(app: typer.Typer, name: str, command: Callable[..., Any]) -> None:
    """Add ``command`` to ``app`` as ``journey NAME`` (run by :func:`guarded`), unless
    ``app`` has a command of that name already: a higher layer's ``register(app)``
    calls this, and registering twice changes nothing."""
    if not any(c.name == name for c in app.registered_commands):
        app.command(name)(guarded(command))


def load_commands() -> typer.Typer:
    """Register the subcommands of the installed higher layers (the ``journey.commands``
    entry points: ``optimise``, ``report``…) on :data:`app`, once; returns the app.

    Example:
        >>> from sim.cli import load_commands
        >>> app = load_commands()  # the whole `journey` command, for typer's CliRunner
    """
    for ep in entry_points(group="journey.commands"):
        if ep.name not in _registered:
            ep.load()(app)
            _registered.add(ep.name)
    return app


def main() -> None:
    """Console-script entry point: the ``journey`` command with every installed layer's
    subcommands."""
    load_commands()(prog_name="journey")
