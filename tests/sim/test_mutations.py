"""Random damage to a valid scenario is refused cleanly, never with a crash.

Each example takes the plain data of the tiny scenario (as written, or in
canonical form), applies one to three random mutations and feeds the result
back through every public door: YAML text into :func:`sim.load_scenario`
(only :class:`sim.ScenarioError` may come out), the data into
:meth:`sim.Scenario.model_validate` (pydantic's ``ValidationError`` or
``ScenarioError``), and a dotted override into :meth:`sim.Scenario.apply`
(only ``ScenarioError``).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import pydantic
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim
from sim.scenario._yaml import read_yaml

Path = tuple[str | int, ...]

STAGES = ["aware", "use", "churned", "lost"]
NAMES = [*STAGES, "young", "old", "email", "more_email", "p", "mean_days", "kind", "exits",
         "reach", "stages", "share", "window", "set", "enabled", "kpi", "path"]

_SPECIAL_NUMBERS = st.sampled_from([0, -1, 1, 0.5, -0.5, 1.5, 2**63, -(2**63), 10**400,
                                    -(10**400), 1e308, -1e308, 5e-324, 1e-9, 365, 7])
_EXTREME_NUMBERS = st.sampled_from([10**400, -(10**400), 1e308, -1e308, 5e-324, -5e-324])
NUMBERS = st.one_of(
    _EXTREME_NUMBERS,
    _SPECIAL_NUMBERS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e300, max_value=1e300),
    st.integers(),
)
_SPECIAL_TEXT = st.sampled_from(["", "aware->use", "use->use", "use -> lost", "no", "012",
                                 "1e3", "x.y", "touchpoints.email.reach.use", "a b", "<<",
                                 "retention_365", *NAMES])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    _SPECIAL_NUMBERS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e300, max_value=1e300),
    st.text(max_size=12),
    _SPECIAL_TEXT,
)
KEYS = st.one_of(_SPECIAL_TEXT, st.text(max_size=10), st.integers(-3, 3), st.none(),
                 st.booleans())
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=6,
)


# -------------------------------------------------------------- data walking


def _entries(node: Any, path: Path = ()) -> list[tuple[Path, Any]]:
    """(path, value) of every dict entry and list item under ``node``."""
    out: list[tuple[Path, Any]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, value in items:
        out.append(((*path, key), value))
        out.extend(_entries(value, (*path, key)))
    return out


def _containers(doc: dict[str, Any]) -> list[Path]:
    return [()] + [p for p, v in _entries(doc) if isinstance(v, (dict, list))]


def _get(doc: Any, path: Path) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _rename_key(parent: dict[Any, Any], old: Any, new: Any) -> None:
    items = [(new if k == old else k, v) for k, v in parent.items()]
    parent.clear()
    parent.update(items)


def _typo(word: str, draw: Any) -> str:
    if not word:
        return "x"
    i = draw(st.integers(0, len(word) - 1))
    how = draw(st.sampled_from(["drop", "double", "swap"]))
    if how == "drop":
        return word[:i] + word[i + 1:]
    if how == "double":
        return word[:i] + word[i] + word[i:]
    return word[:i] + word[i + 1:i + 2] + word[i] + word[i + 2:]


# ------------------------------------------------------------------ mutations


def _drop(doc: dict[str, Any], draw: Any) -> None:
    path, _ = draw(st.sampled_from(_entries(doc)))
    parent = _get(doc, path[:-1])
    del parent[path[-1]]


def _replace(doc: dict[str, Any], draw: Any) -> None:
    path, _ = draw(st.sampled_from(_entries(doc)))
    _get(doc, path[:-1])[path[-1]] = draw(VALUES)


def _renumber(doc: dict[str, Any], draw: Any) -> None:
    """Replace a number with a random one: negative, huge, tiny, NaN, infinite…"""
    numbers = [p for p, v in _entries(doc)
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if numbers:
        path = draw(st.sampled_from(numbers))
        _get(doc, path[:-1])[path[-1]] = draw(NUMBERS)


def _rename(doc: dict[str, Any], draw: Any) -> None:
    keyed = [p for p, _ in _entries(doc) if isinstance(_get(doc, p[:-1]), dict)]
    path = draw(st.sampled_from(keyed))
    parent = _get(doc, path[:-1])
    old = path[-1]
    new = draw(st.one_of(KEYS, st.just(_typo(str(old), draw))))
    if new not in parent:
        _rename_key(parent, old, new)


def _duplicate(doc: dict[str, Any], draw: Any) -> None:
    path, value = draw(st.sampled_from(_entries(doc)))
    target = _get(doc, draw(st.sampled_from(_containers(doc))))
    if isinstance(target, list):
        target.append(copy.deepcopy(value))
    elif isinstance(path[-1], str):
        target[path[-1]] = copy.deepcopy(value)
    else:
        target[draw(KEYS)] = copy.deepcopy(value)


def _rename_reference(doc: dict[str, Any], draw: Any) -> None:
    """Change one mention of a stage name (a value, a key, or half of an exit key)."""
    mentions: list[tuple[Path, bool]] = []  # (path, whether the key is the mention)
    for path, value in _entries(doc):
        if isinstance(path[-1], str) and any(s in path[-1] for s in STAGES):
            mentions.append((path, True))
        if isinstance(value, str) and any(s in value for s in STAGES):
            mentions.append((path, False))
    if not mentions:
        return
    path, is_key = draw(st.sampled_from(mentions))
    parent = _get(doc, path[:-1])
    text = path[-1] if is_key else parent[path[-1]]
    stage = draw(st.sampled_from([s for s in STAGES if s in text]))
    other = draw(st.one_of(st.text(max_size=10), st.just(_typo(stage, draw)),
                           st.sampled_from(STAGES)))
    new = text.replace(stage, other, 1)
    if not is_key:
        parent[path[-1]] = new
    elif new not in parent:
        _rename_key(parent, path[-1], new)


MUTATIONS = [_drop, _replace, _renumber, _rename, _duplicate, _rename_reference]


# ---------------------------------------------------------------------- tests


def _through_every_door(doc: dict[str, Any]) -> None:
    """Validate ``doc`` as Python data and as YAML text; only refusals may come out."""
    with contextlib.suppress(pydantic.ValidationError, sim.ScenarioError):
        sim.Scenario.model_validate(doc)

    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    try:
        scenario = sim.load_scenario(text)
    except sim.ScenarioError as exc:
        assert exc.problems
        assert all(p.message for p in exc.problems)
        return
    again = sim.load_scenario(scenario.to_yaml())
    assert again == scenario
    assert again.content_hash == scenario.content_hash


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_scenario_validates_or_raises_scenario_error(
        tiny_scenario_text: str, tiny_scenario: sim.Scenario, data: st.DataObject) -> None:
    written = read_yaml(tiny_scenario_text).data
    doc = copy.deepcopy(data.draw(st.sampled_from([written, tiny_scenario.to_data()]),
                                  label="base"))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        if not _entries(doc):
            break
        data.draw(st.sampled_from(MUTATIONS), label="mutation")(doc, data.draw)
    _through_every_door(doc)


# damage that once crashed with another exception (found by the test above)
@pytest.mark.parametrize(("path", "value"), [
    (("stages", "aware", "exits", "use"), 10**400),  # bare exit number -> float() overflow
    (("touchpoints", "email", "reach"), -(10**400)),  # scalar reach -> float() overflow
    (("time", "step_days"), 5e-324),  # horizon / step overflows to inf -> round(inf)
    (("time", "horizon_days"), 1e308),
])
def test_known_crashers_are_refused(tiny_scenario_text: str, path: Path, value: Any) -> None:
    doc = read_yaml(tiny_scenario_text).data
    _get(doc, path[:-1])[path[-1]] = value
    if path == ("time", "horizon_days"):
        doc["time"]["step_days"] = 1e-300
    _through_every_door(doc)
    with pytest.raises(sim.ScenarioError) as info:
        sim.load_scenario(yaml.safe_dump(doc))
    assert info.value.problems[0].path.split(".")[0] == path[0]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_override_applies_or_raises_scenario_error(
        tiny_scenario: sim.Scenario, data: st.DataObject) -> None:
    doc = tiny_scenario.to_data()
    addressable = [p for p, _ in _entries(doc)
                   if all(isinstance(k, int) or "." not in k for k in p)]
    path = ".".join(str(k) for k in data.draw(st.sampled_from(addressable), label="path"))
    path = data.draw(st.one_of(st.just(path), st.just(_typo(path, data.draw)),
                               st.just(path + "." + data.draw(st.text(max_size=6))),
                               st.text(max_size=20)), label="dotted")
    value = data.draw(VALUES, label="value")
    enable = data.draw(st.lists(st.sampled_from(["more_email", "less_email"]), max_size=2))
    try:
        variant = tiny_scenario.apply(interventions=enable, overrides={path: value})
    except sim.ScenarioError as exc:
        assert exc.problems
        return
    assert isinstance(variant, sim.Scenario)
    # a valid scenario's interventions were checked: each one materialises
    for name, iv in variant.interventions.items():
        if iv.enabled:
            assert isinstance(variant.materialise([name]), sim.Scenario)
