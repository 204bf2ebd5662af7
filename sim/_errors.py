"""The one exception family of the engine.

Every error a user can cause derives from :class:`SimError`; the CLI catches
the family, prints one line per problem and exits non-zero.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DataError", "Problem", "ScenarioError", "SimError", "is_interrupt"]


class SimError(Exception):
    """Base class of every error the engine raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a scenario, located in its source.

    Attributes:
        source: file name, or ``"<string>"`` for text.
        line: 1-based line, or 0 when unknown.
        column: 1-based column, or 0 when unknown.
        path: dotted field path (``stages.use.exits.churned``), ``""`` for the file.
        message: what is wrong and which rule it breaks.
        severity: ``"error"`` or ``"warning"``.
    """

    source: str
    line: int
    column: int
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = self.source
        if self.line:
            where += f":{self.line}:{self.column}" if self.column else f":{self.line}"
        kind = "warning: " if self.severity == "warning" else ""
        field = f"{self.path}: " if self.path else ""
        return f"{where}: {kind}{field}{self.message}"


class ScenarioError(SimError, ValueError):
    """A scenario file or object breaks the schema or a cross-field rule.

    ``problems`` lists every error found in one pass; ``str()`` gives one line
    per problem as ``FILE:LINE:COL: field.path: message``.
    """

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("ScenarioError needs at least one problem")
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, source: str, message: str, *, line: int = 0, column: int = 0,
               path: str = "") -> ScenarioError:
        """Build an error that holds one problem."""
        return cls([Problem(source, line, column, path, message)])


class DataError(ScenarioError):
    """An observed-data file (calibration) breaks a rule of its format.

    Problems name the file, its line (the CSV line, or the Parquet row + 1
    counting the header as line 1), the column and the rule.
    """


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C, or an error raised while some code handled Ctrl-C.

    A library interrupted half-way may fail in its own cleanup (Optuna's journal
    storage, for one, then raises an ``UnboundLocalError`` whose context is the
    ``KeyboardInterrupt``); such an error is still the user's Ctrl-C.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__context__
    return False


def closest(word: str, options: Iterable[str]) -> str | None:
    """The option a misspelt ``word`` most likely meant, or None."""
    found = difflib.get_close_matches(word, list(options), n=1)
    return found[0] if found else None


def hint(word: str, options: Iterable[str], *, listed: str | None = "known",
         none: str = "none") -> str:
    """What to tell a user who wrote ``word`` where one of ``options`` belongs:
    ``did you mean 'x'?``, else the options (``known: a, b``; ``listed=None``: nothing).

    The one "did you mean" of the engine: every message that names an unknown
    thing words its hint here.
    """
    options = list(options)
    meant = closest(word, options)
    if meant is not None:
        return f"did you mean {meant!r}?"
    if listed is None:
        return ""
    return f"{listed}: {', '.join(options) or none}"


def unknown_name(kind: str, name: str, known: Iterable[str]) -> str:
    """``unknown stage 'x' (did you mean 'y'?)`` (or the known names)."""
    return f"unknown {kind} {name!r} ({hint(name, known)})"
