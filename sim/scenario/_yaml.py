"""Safe YAML reading: plain data plus the source position of every node.

The tree is built from the parser's event stream (libyaml when available), so
nothing is ever constructed from a tag, nesting depth and alias expansion are
bounded while reading (an alias bomb or a 1,000-level document is refused at
the first offending event), duplicate keys are refused with both lines, and
scalars are resolved by the YAML 1.2 core schema with the YAML 1.1 traps
refused outright: a plain ``yes``/``no``/``on``/``off`` or a number with a
leading zero would mean something else to another YAML reader, so the author
must write ``true``/``false`` or quote the text.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from sim._errors import ScenarioError

__all__ = ["MAX_ALIAS_NODES", "MAX_BYTES", "MAX_DEPTH", "Located", "read_yaml"]

MAX_BYTES = 1 << 20
"""Largest scenario file accepted (1 MiB): real journeys are a few KiB."""
MAX_DEPTH = 32
"""Deepest nesting of mappings and sequences accepted."""
MAX_ALIAS_NODES = 10_000
"""Most nodes that aliases may add to the document once expanded."""

Path = tuple[str | int, ...]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True,
         "false": False, "False": False, "FALSE": False}
_YAML11_BOOL = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")
_INT = re.compile(r"^[-+]?[0-9]+$")
_INT_LEADING_ZERO = re.compile(r"^[-+]?0[0-9]+$")
_OCT = re.compile(r"^0o[0-7]+$")
_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")
_SEXAGESIMAL = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_TOO_DEEP = f"nesting deeper than {MAX_DEPTH} levels is refused"
_PARSER_NESTING = re.compile(r"nest|depth", re.IGNORECASE)
"""The parser's own depth limit, in libyaml's words ("exceeded maximum nesting depth")."""


@dataclass
class Located:
    """Plain data read from YAML and where each node stands in the source.

    Attributes:
        data: dicts, lists, str, int, float, bool and None only.
        positions: node path -> (line, column), both 1-based; for a mapping
            entry, the position of its key.
        source: the name used in messages.
    """

    data: Any
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    source: str = "<string>"

    def locate(self, path: Path) -> tuple[int, int]:
        """Position of ``path``, or of its nearest located ancestor."""
        for n in range(len(path), -1, -1):
            pos = self.positions.get(tuple(path[:n]))
            if pos is not None:
                return pos
        return (0, 0)


def _fail(source: str, mark: Any, message: str) -> ScenarioError:
    line = mark.line + 1 if mark is not None else 0
    col = mark.column + 1 if mark is not None else 0
    return ScenarioError.single(source, message, line=line, column=col)


def _resolve_plain(value: str, source: str, mark: Any) -> Any:
    """Resolve an unquoted scalar by the YAML 1.2 core schema."""
    if _NULL.match(value):
        return None
    if value in _BOOL:
        return _BOOL[value]
    if _YAML11_BOOL.match(value):
        raise _fail(source, mark, f"ambiguous value {value!r}: YAML 1.1 reads it as a boolean; "
                                  f"write true/false, or quote it for text")
    if _INT_LEADING_ZERO.match(value):
        raise _fail(source, mark, f"ambiguous number {value!r}: YAML 1.1 reads a leading zero "
                                  f"as octal; write {int(value, 10)}, or quote it for text")
    if _INT.match(value):
        return int(value, 10)
    if _OCT.match(value):
        return int(value[2:], 8)
    if _HEX.match(value):
        return int(value[2:], 16)
    if _FLOAT.match(value):
        return float(value)
    if _INF.match(value):
        return -math.inf if value.startswith("-") else math.inf
    if _NAN.match(value):
        return math.nan
    if _SEXAGESIMAL.match(value):
        raise _fail(source, mark, f"ambiguous value {value!r}: YAML 1.1 reads it as a "
                                  f"base-60 number; quote it for text")
    return value


def _size(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + sum(_size(v) for v in node.values())
    if isinstance(node, list):
        return 1 + sum(_size(v) for v in node)
    return 1


class _Builder:
    """Builds the tree from events with an explicit stack (no recursion)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.positions: dict[Path, tuple[int, int]] = {}
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.alias_nodes = 0
        # each frame: [container, path, pending_key, pending_key_mark, key_lines, anchor]
        self.stack: list[list[Any]] = []
        self.root: Any = None
        self.done = False

    def _child_path(self) -> Path:
        frame = self.stack[-1]
        container, path = frame[0], frame[1]
        if isinstance(container, list):
            return (*path, len(container))
        return (*path, frame[2])

    def _add(self, value: Any, mark: Any, is_key_allowed: bool = True) -> None:
        """Attach a finished node (scalar, alias or closed container)."""
        if not self.stack:
            self.root = value
            self.positions[()] = (mark.line + 1, mark.column + 1)
            self.done = True
            return
        frame = self.stack[-1]
        container = frame[0]
        if isinstance(container, list):
            container.append(value)
            return
        if frame[2] is _NO_KEY:
            if not is_key_allowed or isinstance(value, (dict, list)):
                raise _fail(self.source, mark, "mapping keys must be plain scalars")
            if value == "<<":
                raise _fail(self.source, mark, "merge keys (<<) are not supported; "
                                               "write the entries out")
            if value in container:
                first = frame[4][value]
                raise _fail(self.source, mark,
                            f"duplicate key {value!r} (first defined at line {first})")
            frame[2] = value
            frame[3] = mark
            line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
            self.positions[(*frame[1], value)] = (line, col)
            return
        key = frame[2]
        container[key] = value
        frame[4][key] = frame[3].line + 1
        frame[2] = _NO_KEY

    def _check_anchor_and_tag(self, event: Any) -> None:
        tag = getattr(event, "tag", None)
        implicit = getattr(event, "implicit", True)
        explicit = tag is not None and tag != "!" and not (
            implicit is True or (isinstance(implicit, tuple) and any(implicit)))
        if explicit:
            raise _fail(self.source, event.start_mark,
                        f"YAML tags are not allowed (found {tag!r}); scenarios are plain data")

    def feed(self, event: Any) -> None:
        if isinstance(event, (yaml.StreamStartEvent, yaml.StreamEndEvent,
                              yaml.DocumentEndEvent)):
            return
        if isinstance(event, yaml.DocumentStartEvent):
            if self.done:
                raise _fail(self.source, event.start_mark,
                            "a scenario file holds exactly one YAML document")
            return
        if self.done:
            raise _fail(self.source, event.start_mark,
                        "a scenario file holds exactly one YAML document")
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchors:
                raise _fail(self.source, event.start_mark, f"unknown alias *{event.anchor}")
            value, size = self.anchors[event.anchor]
            self.alias_nodes += size
            if self.alias_nodes > MAX_ALIAS_NODES:
                raise _fail(self.source, event.start_mark,
                            f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes "
                            f"(an alias bomb?); write the data out")
            self._place(copy.deepcopy(value), event.start_mark)
            return
        self._check_anchor_and_tag(event)
        if isinstance(event, yaml.ScalarEvent):
            if event.implicit[0]:  # plain (unquoted, untagged) scalar
                value = _resolve_plain(event.value, self.source, event.start_mark)
            else:
                value = event.value
            if event.anchor:
                self.anchors[event.anchor] = (value, 1)
            self._place(value, event.start_mark)
            return
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(self.stack) >= MAX_DEPTH:
                raise _fail(self.source, event.start_mark, _TOO_DEEP)
            is_map = isinstance(event, yaml.MappingStartEvent)
            path: Path = self._child_path() if self.stack else ()
            if self.stack and self.stack[-1][2] is _NO_KEY and not isinstance(
                    self.stack[-1][0], list):
                raise _fail(self.source, event.start_mark, "mapping keys must be plain scalars")
            mark = event.start_mark
            if self.stack and isinstance(self.stack[-1][0], list) and mark is not None:
                self.positions[path] = (mark.line + 1, mark.column + 1)
            container: Any = {} if is_map else []
            self.stack.append([container, path, _NO_KEY, None, {}, event.anchor,
                               event.start_mark])
            return
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            frame = self.stack.pop()
            container, anchor, mark = frame[0], frame[5], frame[6]
            if anchor:
                self.anchors[anchor] = (container, _size(container))
            self._add(container, mark)
            return
        raise _fail(self.source, getattr(event, "start_mark", None),
                    f"unsupported YAML construct {type(event).__name__}")

    def _place(self, value: Any, mark: Any) -> None:
        if self.stack and isinstance(self.stack[-1][0], list):
            path = self._child_path()
            self.positions[path] = (mark.line + 1, mark.column + 1)
        self._add(value, mark)


class _NoKey:
    def __repr__(self) -> str:
        return "<no key>"


_NO_KEY: Any = _NoKey()


def read_yaml(text: str | bytes, source: str = "<string>") -> Located:
    """Read one YAML document safely.

    Args:
        text: the document, at most :data:`MAX_BYTES` bytes once encoded.
        source: the name used in error messages.

    Returns:
        The plain data and the position of each node.

    Raises:
        ScenarioError: on a syntax error or any refused construct.

    Example:
        >>> read_yaml("a: [1, 2.5, true]").data
        {'a': [1, 2.5, True]}
    """
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if len(raw) > MAX_BYTES:
        raise ScenarioError.single(source, f"file is {len(raw):,} bytes; scenarios are limited "
                                           f"to {MAX_BYTES:,} bytes")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError.single(source, f"not UTF-8 text ({exc.reason} at byte "
                                           f"{exc.start})") from None
    builder = _Builder(source)
    try:
        for event in yaml.parse(decoded, Loader=_Loader):
            builder.feed(event)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if _PARSER_NESTING.search(str(exc.problem or "")):
            # libyaml refuses past its own limit (1,000 levels). Its scanner reads a
            # flow collection ahead of the events the builder sees, so on one long
            # line of brackets its refusal comes first: report it in our words.
            raise _fail(source, mark, _TOO_DEEP) from None
        message = " ".join(str(m) for m in (exc.context, exc.problem) if m)
        raise _fail(source, mark, f"YAML syntax: {message}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError.single(source, f"YAML syntax: {exc}") from None
    return Located(builder.root, builder.positions, source)
