"""The safe YAML reader: YAML 1.2 core scalars, positions, and every hazard bounded."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator

import pytest
import yaml

import sim
from sim.scenario._yaml import MAX_ALIAS_NODES, MAX_BYTES, MAX_DEPTH, Located, read_yaml


def _value(text: str) -> object:
    return read_yaml(f"v: {text}\n").data["v"]


def _refused(text: str | bytes) -> sim.Problem:
    with pytest.raises(sim.ScenarioError) as info:
        read_yaml(text)
    [problem] = info.value.problems
    return problem


# --------------------------------------------------------------- core schema


@pytest.mark.parametrize(("text", "expected"), [
    ("1e3", 1000.0),
    ("1E3", 1000.0),
    ("-1.5e-3", -0.0015),
    (".5", 0.5),
    ("1.", 1.0),
    ("0.012", 0.012),
    ("12", 12),
    ("+12", 12),
    ("-7", -7),
    ("0", 0),
    ("0o17", 15),
    ("0x1F", 31),
    ("true", True),
    ("True", True),
    ("FALSE", False),
    ("~", None),
    ("null", None),
    ("", None),
    ("'012'", "012"),
    ('"no"', "no"),
    ("'on'", "on"),
    ("'1:30'", "1:30"),
    ("'true'", "true"),
    ("'1e3'", "1e3"),
    ("hello world", "hello world"),
    ("1_000", "1_000"),  # not a number in YAML 1.2 core
    ("0b101", "0b101"),
    ("tRue", "tRue"),
])
def test_plain_scalars_resolve_by_the_yaml_1_2_core_schema(text: str, expected: object) -> None:
    value = _value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_special_floats_are_read_for_the_schema_to_refuse() -> None:
    assert _value(".inf") == math.inf
    assert _value("-.inf") == -math.inf
    assert math.isnan(_value(".nan"))  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["no", "No", "NO", "yes", "on", "ON", "off", "y", "n", "Off"])
def test_yaml_1_1_booleans_are_refused(text: str) -> None:
    problem = _refused(f"enabled: {text}\n")
    assert f"ambiguous value {text!r}" in problem.message
    assert "write true/false, or quote it" in problem.message
    assert (problem.line, problem.column) == (1, 10)


def test_yaml_1_1_boolean_keys_are_refused() -> None:
    problem = _refused("a: 1\non: 2\n")
    assert "ambiguous value 'on'" in problem.message
    assert problem.line == 2


@pytest.mark.parametrize(("text", "write"), [("012", "12"), ("00", "0"), ("-0012", "-12")])
def test_leading_zero_numbers_are_refused(text: str, write: str) -> None:
    problem = _refused(f"count: {text}\n")
    assert f"ambiguous number {text!r}" in problem.message
    assert f"write {write}, or quote it" in problem.message


@pytest.mark.parametrize("text", ["1:30", "12:30:00", "-1:20"])
def test_sexagesimal_numbers_are_refused(text: str) -> None:
    assert "base-60" in _refused(f"t: {text}\n").message


def test_reader_returns_plain_data_only() -> None:
    data = read_yaml("a: {b: [1, 2.5, true, null, x]}\n").data
    assert data == {"a": {"b": [1, 2.5, True, None, "x"]}}
    assert type(data) is dict
    assert type(data["a"]["b"]) is list


# ----------------------------------------------------------------- positions


def test_positions_are_one_based_line_and_column() -> None:
    located = read_yaml("a:\n  b: [1, {c: 2}]\n  d:\n    - x\n    - k: 1\n")
    assert located.positions[()] == (1, 1)
    assert located.positions[("a",)] == (1, 1)
    assert located.positions[("a", "b")] == (2, 3)
    assert located.positions[("a", "b", 0)] == (2, 7)
    assert located.positions[("a", "b", 1)] == (2, 10)
    assert located.positions[("a", "b", 1, "c")] == (2, 11)
    assert located.positions[("a", "d", 0)] == (4, 7)
    assert located.positions[("a", "d", 1, "k")] == (5, 7)


def test_locate_falls_back_to_the_nearest_located_ancestor() -> None:
    located = read_yaml("# comment\na:\n  b: 1\n")
    assert located.locate(("a", "b")) == (3, 3)
    assert located.locate(("a", "b", "missing", 3)) == (3, 3)
    assert located.locate(("nowhere",)) == (2, 1)
    assert Located(data=None).locate(("x",)) == (0, 0)


def test_source_name_is_used_in_problems() -> None:
    with pytest.raises(sim.ScenarioError) as info:
        read_yaml("a: no\n", source="my.yaml")
    assert str(info.value) == ("my.yaml:1:4: ambiguous value 'no': YAML 1.1 reads it as a "
                               "boolean; write true/false, or quote it for text")


def test_syntax_error_is_located_one_based() -> None:
    problem = _refused("a: 1\nb: [1, 2\nc: 3\n")
    assert problem.message.startswith("YAML syntax:")
    assert problem.line >= 2
    assert problem.column >= 1


# -------------------------------------------------------------- duplicate keys


def test_duplicate_key_names_both_lines() -> None:
    problem = _refused("a: 1\nb: 2\na: 3\n")
    assert problem.message == "duplicate key 'a' (first defined at line 1)"
    assert (problem.line, problem.column) == (3, 1)


def test_nested_duplicate_key_in_flow_mapping() -> None:
    problem = _refused("top:\n  inner: {x: 1, z: 2, x: 3}\n")
    assert "duplicate key 'x' (first defined at line 2)" in problem.message
    assert problem.line == 2


def test_same_key_in_different_mappings_is_fine() -> None:
    assert read_yaml("a: {x: 1}\nb: {x: 2}\n").data == {"a": {"x": 1}, "b": {"x": 2}}


@pytest.mark.parametrize("text", ["[a, b]: 1\n", "{a: 1}: 2\n", "x: &l [1]\n*l : 2\n"])
def test_keys_must_be_plain_scalars(text: str) -> None:
    assert "mapping keys must be plain scalars" in _refused(text).message


def test_merge_keys_are_refused() -> None:
    problem = _refused("base: &b {x: 1}\nother:\n  <<: *b\n")
    assert "merge keys (<<) are not supported" in problem.message
    assert problem.line == 3


# ------------------------------------------------------------------- nesting


def test_nesting_up_to_the_limit_is_read() -> None:
    data = read_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH).data
    for _ in range(MAX_DEPTH - 1):
        data = data[0]
    assert data == []


def test_nesting_past_the_limit_is_refused() -> None:
    problem = _refused("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert f"nesting deeper than {MAX_DEPTH} levels" in problem.message
    assert (problem.line, problem.column) == (1, MAX_DEPTH + 1)


def test_thousand_levels_of_block_mappings_are_refused_fast() -> None:
    text = "".join(f"{' ' * i}k{i}:\n" for i in range(1000)) + " " * 1000 + "leaf\n"
    start = time.perf_counter()
    problem = _refused(text)
    assert time.perf_counter() - start < 1.0
    assert "nesting deeper than" in problem.message


def test_the_parsers_own_nesting_limit_reads_as_the_engines_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """libyaml's refusal past 1,000 levels (PyYAML 6.0.4's words) becomes the engine's line."""
    mark = yaml.Mark("<string>", 1012, 1, 1012, None, 0)

    def refusing_parser(text: str, Loader: object) -> Iterator[object]:
        yield yaml.StreamStartEvent(mark, mark)
        raise yaml.scanner.ScannerError("while increasing flow level", mark,
                                        "exceeded maximum nesting depth", mark)

    monkeypatch.setattr(yaml, "parse", refusing_parser)
    problem = _refused("a: 1\nb: " + "[" * 1010 + "\n")
    assert problem.message == f"nesting deeper than {MAX_DEPTH} levels is refused"
    assert (problem.line, problem.column) == (2, 1013)


def test_nesting_past_the_parsers_own_limit_is_one_located_problem() -> None:
    """However the installed parser words it: one problem, on the line, in well under a second."""
    text = "a: 1\nb: " + "[" * 5000 + "]" * 5000 + "\n"
    start = time.perf_counter()
    problem = _refused(text)
    assert time.perf_counter() - start < 1.0
    assert problem.line == 2
    assert problem.message


# ------------------------------------------------------------------- aliases


def test_aliases_are_expanded_into_independent_copies() -> None:
    data = read_yaml("a: &x {k: [1, 2]}\nb: *x\nc: &s text\nd: *s\n").data
    assert data["b"] == {"k": [1, 2]}
    assert data["d"] == "text"
    data["b"]["k"].append(3)
    assert data["a"] == {"k": [1, 2]}


def test_aliases_up_to_the_bound_are_read() -> None:
    # the anchored list is 10 nodes (the list and 9 items)
    n = MAX_ALIAS_NODES // 10
    text = "a: &x [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [" + ", ".join(["*x"] * n) + "]\n"
    assert len(read_yaml(text).data["b"]) == n


def test_aliases_past_the_bound_are_refused() -> None:
    n = MAX_ALIAS_NODES // 10 + 1
    text = "a: &x [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [" + ", ".join(["*x"] * n) + "]\n"
    problem = _refused(text)
    assert f"more than {MAX_ALIAS_NODES:,} nodes" in problem.message
    assert problem.line == 2


def test_billion_laughs_is_refused_fast() -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    start = time.perf_counter()
    problem = _refused("\n".join(lines) + "\n")
    assert time.perf_counter() - start < 1.0
    assert "alias bomb" in problem.message


def test_unknown_alias_is_refused() -> None:
    assert "unknown alias *nope" in _refused("a: *nope\n").message


# ---------------------------------------------------------------------- tags


@pytest.mark.parametrize("text", [
    "x: !!python/object/apply:os.system ['echo pwned']\n",
    "x: !!python/name:os.system\n",
    "x: !!str 12\n",
    "x: !!float '1'\n",
    "x: !!binary aGVsbG8=\n",
    "x: !custom 1\n",
    "x: !!map {a: 1}\n",
    "x: !!python/tuple [1, 2]\n",
    "!!str key: 1\n",
])
def test_tags_are_refused(text: str) -> None:
    problem = _refused(text)
    assert "YAML tags are not allowed" in problem.message
    assert problem.line == 1


def test_python_tags_are_never_executed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def system(*args: object) -> int:
        calls.append(args)
        return 0

    monkeypatch.setattr(os, "system", system)
    _refused("x: !!python/object/apply:os.system ['echo pwned']\n")
    assert calls == []


# ------------------------------------------------------------ size, documents


def test_text_of_exactly_the_size_limit_is_read() -> None:
    head = "a: 1\n"
    text = head + "#" * (MAX_BYTES - len(head) - 1) + "\n"
    assert len(text.encode()) == MAX_BYTES
    assert read_yaml(text).data == {"a": 1}


def test_text_over_the_size_limit_is_refused_before_parsing() -> None:
    text = "a: [" + "1, " * (MAX_BYTES // 3) + "]\n"
    start = time.perf_counter()
    problem = _refused(text)
    assert time.perf_counter() - start < 0.5
    assert f"limited to {MAX_BYTES:,} bytes" in problem.message


def test_size_limit_counts_utf8_bytes() -> None:
    text = "a: " + "é" * (MAX_BYTES // 2) + "\n"
    assert len(text) < MAX_BYTES < len(text.encode("utf-8"))
    assert "bytes" in _refused(text).message


def test_non_utf8_bytes_are_refused() -> None:
    assert "not UTF-8 text" in _refused(b"a: \xff\xfe\n").message


def test_bytes_are_read_like_text() -> None:
    assert read_yaml("a: ü\n".encode()).data == {"a": "ü"}


@pytest.mark.parametrize("text", ["a: 1\n---\nb: 2\n", "---\na: 1\n...\n---\nb: 2\n"])
def test_two_documents_are_refused(text: str) -> None:
    assert "exactly one YAML document" in _refused(text).message


def test_single_explicit_document_is_fine() -> None:
    assert read_yaml("---\na: 1\n...\n").data == {"a": 1}


def test_empty_text_is_none() -> None:
    assert read_yaml("").data is None
    assert read_yaml("# only a comment\n").data is None
