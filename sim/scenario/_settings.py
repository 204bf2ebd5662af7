"""Scenario settings written on a command line, and the variant label they give.

``journey run --set PATH=VALUE`` and ``journey sweep --vary PATH=V1,V2`` read
their values the same way a scenario file does (YAML 1.2 core scalars, the
YAML 1.1 traps refused). :func:`variant_label` names the variant a set of
settings makes, so that two runs with different settings never share a folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sim._errors import ScenarioError, SimError
from sim.scenario._yaml import read_yaml

__all__ = ["BASE_VARIANT", "is_variant_label", "parse_assignment", "parse_setting", "parse_value",
           "variant_label"]

BASE_VARIANT = "base"
"""The label of a run of the scenario as written (nothing set on the command line)."""

_MAX_LABEL = 128
_HASH_CHARS = 10
_HASHED = re.compile(rf"-[0-9a-f]{{{_HASH_CHARS}}}$")
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)+$")
_PLAIN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_.-]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def is_variant_label(text: str) -> bool:
    """Whether ``text`` can label a variant: it names a folder of the dataset, so
    letters, digits, ``_``, ``.`` and ``-``, starting with a letter or digit, at
    most 128 characters."""
    return isinstance(text, str) and _LABEL.match(text) is not None


def parse_value(text: str, *, flag: str = "--set", spec: str | None = None) -> Any:
    """A value written on the command line, read as a YAML 1.2 scalar like a scenario's.

    ``0.2`` is a number, ``true`` a boolean, ``null`` nothing, ``'1'`` (quoted)
    text; ``yes``/``no``/``on``/``off`` and numbers with a leading zero are refused
    as ambiguous. Anything that is not a scalar (``[1, 2]``) stays text.

    Args:
        text: the value as written.
        flag: the option it came from, for the message (``--set``, ``--vary``).
        spec: the whole option value, for the message (default: ``text``).

    Raises:
        SimError: an ambiguous or unreadable value, as ``FLAG SPEC: message``.

    Example:
        >>> parse_value("0.2"), parse_value("true"), parse_value("'1'")
        (0.2, True, '1')
    """
    try:
        value = read_yaml(text, flag).data
    except ScenarioError as exc:
        raise SimError(f"{flag} {spec or text}: {exc.problems[0].message}") from None
    return value if value is None or isinstance(value, (int, float, str, bool)) else text


def parse_assignment(spec: str, *, flag: str = "--set", form: str = "PATH=VALUE",
                     example: str = "touchpoints.email.reach.use=0.2") -> tuple[str, str]:
    """Split ``PATH=TEXT`` at its first ``=`` into the dotted path and the text after it.

    Raises:
        SimError: no ``=``, an empty path or nothing after the ``=``.
    """
    path, sep, rest = spec.partition("=")
    path = path.strip()
    if not sep or not path or not rest.strip():
        raise SimError(f"{flag} {spec}: write {form} (e.g. {example})")
    return path, rest.strip()


def parse_setting(spec: str, *, flag: str = "--set") -> tuple[str, Any]:
    """``PATH=VALUE`` -> (dotted path, value read by :func:`parse_value`).

    Example:
        >>> parse_setting("touchpoints.email.reach.use=0.2")
        ('touchpoints.email.reach.use', 0.2)
    """
    path, text = parse_assignment(spec, flag=flag)
    return path, parse_value(text, flag=flag, spec=spec)


def _value_text(value: Any) -> str | None:
    """How ``value`` reads in a label, if that text reads back as the same value."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        return None
    if not _PLAIN_VALUE.match(text):
        return None
    try:
        back = parse_value(text)
    except SimError:
        return None
    return text if type(back) is type(value) and back == value else None


def _readable(names: list[str], settings: list[tuple[str, Any]]) -> str | None:
    """The label without a hash, when it cannot be mistaken for another one."""
    if settings and not names and len(settings) == 1:
        path, value = settings[0]
        text = _value_text(value)
        if text is None or not _PLAIN_PATH.match(path):
            return None
        label = f"{path}-{text}"       # a path holds no '-': the first '-' ends it
    elif names and not settings and all(_PLAIN_NAME.match(n) for n in names):
        label = "-".join(names)        # names hold no '.' or '-', every path a '.'
    else:
        return None
    if len(label) > _MAX_LABEL or label == BASE_VARIANT or _HASHED.search(label):
        return None
    return label


def variant_label(interventions: Iterable[str] = (),
                  overrides: Mapping[str, Any] | Sequence[tuple[str, Any]] = ()) -> str:
    """A folder-safe, deterministic label for a scenario with these settings.

    ``base`` when nothing is set; the intervention names (``a-b``) or the one
    setting (``touchpoints.email.reach.use-0.2``) when that is short and plain;
    otherwise a readable prefix and a hash of the settings
    (``recall_reminders-touchpoints.email.reach.use-0.2-3f9a0c1b2d``). Different
    settings never get the same label: the plain forms cannot be read two ways
    and never end like a hash. The order of interventions does not matter; the
    order of overrides does (a later one may replace an earlier one).

    Args:
        interventions: names of the interventions enabled.
        overrides: dotted path -> value, in the order applied.

    Returns:
        Letters, digits, ``_``, ``.`` and ``-``, starting with a letter or digit,
        at most 128 characters.

    Example:
        >>> variant_label(), variant_label(["winback", "recall"])
        ('base', 'recall-winback')
        >>> variant_label(overrides={"touchpoints.email.reach.use": 0.2})
        'touchpoints.email.reach.use-0.2'
    """
    names = sorted(set(interventions))
    settings = list(overrides.items()) if isinstance(overrides, Mapping) else list(overrides)
    if not names and not settings:
        return BASE_VARIANT
    readable = _readable(names, settings)
    if readable is not None:
        return readable
    canonical = json.dumps({"interventions": names, "set": settings}, sort_keys=True,
                           default=repr)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:_HASH_CHARS]
    parts = [*names, *(f"{p}-{v}" for p, v in settings)]
    prefix = _UNSAFE.sub("_", "-".join(parts))[:_MAX_LABEL - _HASH_CHARS - 1].rstrip("-_.")
    if not prefix[:1].isalnum():
        prefix = "v" + prefix[:_MAX_LABEL - _HASH_CHARS - 2]
    return f"{prefix}-{digest}"
