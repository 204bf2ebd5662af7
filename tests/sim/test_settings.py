"""Settings written on a command line (`--set`, `--vary`) and the variant labels they give."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim
from optimise import parse_vary
from sim.scenario import (
    BASE_VARIANT,
    is_variant_label,
    parse_setting,
    parse_value,
    read_yaml,
    variant_label,
)


@pytest.mark.parametrize("text", ["0.2", "-3", "1e-3", "0x1F", "true", "False", "null",
                                  "'1'", '"yes"', "text", "a b"])
def test_a_command_line_value_reads_as_in_a_scenario_file(text: str) -> None:
    assert parse_value(text) == read_yaml(text).data


@pytest.mark.parametrize("text", ["yes", "off", "007"])
def test_ambiguous_values_are_refused_naming_the_flag_and_what_was_written(text: str) -> None:
    with pytest.raises(sim.SimError, match=rf"^--set a\.b={text}: ambiguous"):
        parse_setting(f"a.b={text}")


def test_sweep_reads_its_values_with_the_same_parser() -> None:
    assert parse_vary("a.b=0.2,true,'1',null") == ("a.b", [0.2, True, "1", None])
    with pytest.raises(sim.SimError, match=r"^--vary a\.b=1,yes: ambiguous value 'yes'"):
        parse_vary("a.b=1,yes")


@pytest.mark.parametrize("spec", ["a.b", "=1", "a.b=", "a.b=  "])
def test_a_setting_needs_a_path_and_a_value(spec: str) -> None:
    with pytest.raises(sim.SimError, match=r"write PATH=VALUE"):
        parse_setting(spec)


def test_nothing_set_is_the_base_variant() -> None:
    assert variant_label() == BASE_VARIANT == "base"


def test_short_settings_give_readable_labels() -> None:
    assert variant_label(["winback", "recall"]) == "recall-winback"
    assert variant_label(["recall", "recall"]) == "recall"
    assert variant_label(overrides={"touchpoints.email.reach.use": 0.2}) == \
        "touchpoints.email.reach.use-0.2"
    assert variant_label(overrides={"stages.use.exits.churned.p": -0.5}) == \
        "stages.use.exits.churned.p--0.5"


@pytest.mark.parametrize(("interventions", "overrides"), [
    (["recall"], {"touchpoints.email.reach.use": 0.2}),
    ([], {"a.b": 1, "c.d": 2}),
    ([], {"touchpoints.email.lift.use->churned": 0.5}),
    ([], {"a.b": "two words"}),
    ([], {"a.b": 1e20}),
    (["base"], {}),
    (["a", "abcdef0123"], {}),
    ([], {"a.b": 1234567890}),
    (["x" * 64, "y" * 64], {}),
])
def test_other_settings_give_a_readable_prefix_and_a_hash(interventions: list[str],
                                                          overrides: dict[str, Any]) -> None:
    label = variant_label(interventions, overrides)
    assert is_variant_label(label)
    assert label[-11] == "-" and all(c in "0123456789abcdef" for c in label[-10:])
    assert label == variant_label(interventions, overrides)   # deterministic


names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
paths = st.lists(st.from_regex(r"[a-z][a-z_]{0,6}|[0-9]|[a-z]+->[a-z]+", fullmatch=True),
                 min_size=1, max_size=4).map(".".join)
values = st.one_of(st.booleans(), st.integers(-10**12, 10**12), st.none(),
                   st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
setups = st.tuples(st.lists(names, max_size=3),
                   st.dictionaries(paths, values, max_size=3))


def _canonical(setup: tuple[list[str], dict[str, Any]]) -> str:
    interventions, overrides = setup
    return json.dumps([sorted(set(interventions)), list(overrides.items())], default=repr)


@settings(max_examples=400, deadline=None)
@given(setups, setups)
def test_different_settings_never_share_a_folder(a: tuple[list[str], dict[str, Any]],
                                                 b: tuple[list[str], dict[str, Any]]) -> None:
    label_a, label_b = variant_label(*a), variant_label(*b)
    assert is_variant_label(label_a) and len(label_a) <= 128
    if _canonical(a) != _canonical(b):
        assert label_a != label_b, (a, b)
