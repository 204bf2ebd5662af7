"""The scenario model: shipped files, canonical text, hashes, variants, derived facts."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest
from typer.testing import CliRunner

import sim
from sim.cli import app

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "scenarios"
SHIPPED = sorted(SCENARIO_DIR.glob("*.yaml"))


# ---------------------------------------------------------- shipped scenarios


def test_at_least_five_scenarios_are_shipped() -> None:
    assert len(SHIPPED) >= 5, f"{SCENARIO_DIR} holds {len(SHIPPED)} scenario files"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenario_validates(path: Path) -> None:
    scenario, problems = sim.check_scenario_file(path)
    errors = [str(p) for p in problems if p.severity == "error"]
    assert scenario is not None, "\n".join(errors)
    assert not errors


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenario_round_trips(path: Path) -> None:
    scenario = sim.load_scenario(path)
    again = sim.load_scenario(scenario.to_yaml())
    assert again == scenario
    assert again.content_hash == scenario.content_hash


# ------------------------------------------------------------ text and hash


def test_to_yaml_round_trips(tiny_scenario: sim.Scenario) -> None:
    again = sim.load_scenario(tiny_scenario.to_yaml())
    assert again == tiny_scenario
    assert again.content_hash == tiny_scenario.content_hash
    assert again.to_yaml() == tiny_scenario.to_yaml()


def test_load_scenario_reads_a_path_like_its_text(tmp_path: Path, tiny_scenario_text: str,
                                                  tiny_scenario: sim.Scenario) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_scenario_text)
    assert sim.load_scenario(path) == tiny_scenario
    assert sim.load_scenario(str(path)) == tiny_scenario


def test_content_hash_is_a_sha256_hex_digest(tiny_scenario: sim.Scenario) -> None:
    digest = tiny_scenario.content_hash
    assert len(digest) == 64
    int(digest, 16)


def test_hash_ignores_how_the_text_is_written(tiny_scenario_text: str,
                                              tiny_scenario: sim.Scenario) -> None:
    rewritten = (tiny_scenario_text
                 .replace("      use: 0.05\n", "      use: {p: 0.05}  # same exit\n")
                 .replace("    reach: 0.1\n", "    reach: {use: 0.1}\n")
                 .replace("time: {step_days: 1, horizon_days: 365}",
                          "time:\n  step_days: 1.0\n  horizon_days: 365"))
    assert rewritten != tiny_scenario_text
    again = sim.load_scenario(rewritten)
    assert again == tiny_scenario
    assert again.content_hash == tiny_scenario.content_hash


@pytest.mark.parametrize("path", [
    "seed",
    "stages.aware.exits.use.p",
    "touchpoints.email.reach.use",
    "segments.young.share",
])
def test_hash_changes_when_a_value_changes(tiny_scenario: sim.Scenario, path: str) -> None:
    new = {"seed": 8, "stages.aware.exits.use.p": 0.06, "touchpoints.email.reach.use": 0.2,
           "segments.young.share": 0.6000001}[path]
    other = tiny_scenario.apply(overrides={path: new})
    if path == "segments.young.share":
        other = other.apply(overrides={"segments.old.share": 0.3999999})
    assert other != tiny_scenario
    assert other.content_hash != tiny_scenario.content_hash


def test_hash_does_not_change_for_an_equal_value(tiny_scenario: sim.Scenario) -> None:
    same = tiny_scenario.apply(overrides={"stages.aware.exits.use.p": 0.05})
    assert same == tiny_scenario
    assert same.content_hash == tiny_scenario.content_hash


# ----------------------------------------------------------------- variants


def test_apply_enables_an_intervention(tiny_scenario: sim.Scenario) -> None:
    variant = tiny_scenario.apply(interventions=["more_email"])
    assert variant.interventions["more_email"].enabled
    assert not tiny_scenario.interventions["more_email"].enabled
    assert variant.touchpoints["email"].reach == {"use": 0.1}
    assert variant.materialise(["more_email"]).touchpoints["email"].reach == {"use": 0.5}


def test_materialise_nothing_is_the_scenario_itself(tiny_scenario: sim.Scenario) -> None:
    assert tiny_scenario.materialise([]) is tiny_scenario


def test_materialise_refuses_an_unknown_intervention(tiny_scenario: sim.Scenario) -> None:
    with pytest.raises(sim.ScenarioError) as info:
        tiny_scenario.materialise(["more_emial"])
    [problem] = info.value.problems
    assert problem.path == "interventions.more_emial"
    assert "did you mean 'more_email'?" in problem.message


def test_a_late_window_warns_but_its_patches_are_still_checked(tiny_scenario_text: str) -> None:
    late = tiny_scenario_text.replace("window: {start_day: 100, end_day: 200}",
                                      "window: {start_day: 400}")
    assert sim.load_scenario(late).interventions["more_email"].window is not None
    with pytest.raises(sim.ScenarioError) as info:
        sim.load_scenario(late.replace("touchpoints.email.reach.use: 0.5",
                                       "touchpoints.email.reach.use: 1.5"))
    [problem] = info.value.problems
    assert problem.path == "interventions.more_email.set"
    assert "applying it breaks a rule" in problem.message


def test_apply_overrides_a_value(tiny_scenario: sim.Scenario) -> None:
    variant = tiny_scenario.apply(overrides={"touchpoints.email.reach.use": 0.3})
    assert variant.touchpoints["email"].reach == {"use": 0.3}
    assert tiny_scenario.touchpoints["email"].reach == {"use": 0.1}


def test_apply_adds_a_new_lift(tiny_scenario: sim.Scenario) -> None:
    variant = tiny_scenario.apply(overrides={"stages.use.exits.lost": 0.002,
                                             "touchpoints.email.lift.use->lost": -0.5})
    assert variant.touchpoints["email"].lift == {"use->churned": -0.3, "use->lost": -0.5}
    assert variant.stage_exit_p("use", "lost") == 0.002


def test_apply_adds_a_new_touchpoint(tiny_scenario: sim.Scenario) -> None:
    variant = tiny_scenario.apply(overrides={
        "touchpoints.sms": {"stages": ["aware", "use"], "reach": 0.2}})
    assert variant.touchpoints["sms"].reach == {"aware": 0.2, "use": 0.2}


def test_apply_switches_an_exit_from_mean_days_to_p(tiny_scenario: sim.Scenario) -> None:
    assert tiny_scenario.stages["aware"].exits["lost"].mean_days == 60
    variant = tiny_scenario.apply(overrides={"stages.aware.exits.lost.p": 0.03})
    rate = variant.stages["aware"].exits["lost"]
    assert (rate.p, rate.mean_days) == (0.03, None)


def test_apply_switches_an_exit_from_p_to_mean_days(tiny_scenario: sim.Scenario) -> None:
    variant = tiny_scenario.apply(overrides={"stages.aware.exits.use.mean_days": 40})
    rate = variant.stages["aware"].exits["use"]
    assert (rate.p, rate.mean_days) == (None, 40)
    assert variant.stage_exit_p("aware", "use") == pytest.approx(1 / 40)


def test_apply_replaces_an_exit_with_a_bare_probability(tiny_scenario: sim.Scenario) -> None:
    variant = tiny_scenario.apply(overrides={"stages.aware.exits.lost": 0.02})
    assert variant.stages["aware"].exits["lost"].p == 0.02


def test_apply_follows_list_indices(tiny_scenario: sim.Scenario) -> None:
    variant = tiny_scenario.apply(overrides={"population.initial.0.count": 5,
                                             "optimise.search.1.high": 0.8})
    assert variant.population.initial[0].count == 5
    assert variant.optimise is not None
    assert variant.optimise.search[1].high == 0.8


@pytest.mark.parametrize(("overrides", "path", "text"), [
    ({"touchpoints.emial.reach.use": 0.3}, "touchpoints.emial.reach.use",
     "touchpoints has no entry 'emial' (did you mean 'email'?)"),
    ({"stages.aware.exit.use": 0.3}, "stages.aware.exit.use",
     "stages.aware has no field 'exit' (did you mean 'exits'?)"),
    ({"stages.aware.exits.uze.p": 0.3}, "stages.aware.exits.uze.p",
     "stages.aware.exits has no entry 'uze' (did you mean 'use'?)"),
    ({"tuochpoints.email.reach.use": 0.3}, "tuochpoints.email.reach.use",
     "the scenario has no field 'tuochpoints' (did you mean 'touchpoints'?)"),
    ({"population.initial.1.count": 5}, "population.initial.1.count",
     "population.initial has no item '1'"),
    ({"population.initial.².count": 5}, "population.initial.².count",
     "population.initial has no item '²'"),
    ({"seed.value": 1}, "seed.value", "seed is a value, not a collection"),
])
def test_apply_refuses_a_path_that_leads_nowhere(tiny_scenario: sim.Scenario,
                                                 overrides: dict[str, object], path: str,
                                                 text: str) -> None:
    with pytest.raises(sim.ScenarioError) as info:
        tiny_scenario.apply(overrides=overrides)
    [problem] = info.value.problems
    assert problem.path == path
    assert text in problem.message
    assert f"{path}: " in str(info.value)


@pytest.mark.parametrize("path", ["", "a..b", ".seed", "seed."])
def test_apply_refuses_a_malformed_path(tiny_scenario: sim.Scenario, path: str) -> None:
    with pytest.raises(sim.ScenarioError, match="is not a dotted path"):
        tiny_scenario.apply(overrides={path: 1})


def test_apply_refuses_an_unknown_intervention(tiny_scenario: sim.Scenario) -> None:
    with pytest.raises(sim.ScenarioError) as info:
        tiny_scenario.apply(interventions=["more_emial"])
    assert info.value.problems[0].path == "interventions.more_emial.enabled"
    assert "did you mean 'more_email'?" in str(info.value)


@pytest.mark.parametrize(("overrides", "path", "text"), [
    ({"touchpoints.email.reach.use": 1.5}, "touchpoints.email.reach.use",
     ""),  # the path is the contract; the rule's words are pydantic's
    ({"stages.aware.exits.use": 0.99}, "stages.aware.exits",
     "exit probabilities sum to"),
    ({"touchpoints.email.lift.use->use": 0.1}, "touchpoints.email.lift.use->use",
     "stage 'use' has no exit to 'use'"),
    ({"segments.young.share": 0.7}, "segments", "segment shares sum to 1.1"),
    ({"stages.use.kind": "prospect"}, "stages", "no stage of kind 'customer'"),
])
def test_apply_refuses_an_invalid_result(tiny_scenario: sim.Scenario,
                                         overrides: dict[str, object], path: str,
                                         text: str) -> None:
    with pytest.raises(sim.ScenarioError) as info:
        tiny_scenario.apply(overrides=overrides)
    assert any(p.path == path and text in p.message for p in info.value.problems), \
        str(info.value)


def test_scenario_error_belongs_to_the_family() -> None:
    assert issubclass(sim.ScenarioError, sim.SimError)
    assert issubclass(sim.ScenarioError, ValueError)
    with pytest.raises(ValueError, match="at least one problem"):
        sim.ScenarioError([])


# -------------------------------------------------------------- immutability


def test_scenario_is_frozen(tiny_scenario: sim.Scenario) -> None:
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        tiny_scenario.name = "other"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        tiny_scenario.time.horizon_days = 30  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        tiny_scenario.stages["use"].kind = "lost"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        tiny_scenario.stages["aware"].exits["use"].p = 0.5  # type: ignore[misc]
    assert tiny_scenario.name == "tiny"


def test_equal_parts_compare_equal(tiny_scenario: sim.Scenario) -> None:
    assert tiny_scenario.time == tiny_scenario.apply(overrides={"seed": 1}).time


# ------------------------------------------------------------- derived facts


def test_mean_days_is_step_days_over_mean_days(tiny_scenario: sim.Scenario) -> None:
    assert tiny_scenario.stage_exit_p("aware", "lost") == pytest.approx(1 / 60)
    assert tiny_scenario.stage_exit_p("churned", "use") == pytest.approx(1 / 200)
    weekly = tiny_scenario.apply(overrides={"time.step_days": 7, "time.horizon_days": 364})
    assert weekly.steps == 52
    assert weekly.stage_exit_p("aware", "lost") == pytest.approx(7 / 60)
    assert weekly.stage_exit_p("churned", "use") == pytest.approx(7 / 200)
    assert weekly.stage_exit_p("aware", "use") == 0.05  # p is per step whatever the step


def test_a_bare_number_is_a_per_step_probability(tiny_scenario: sim.Scenario) -> None:
    rate = tiny_scenario.stages["aware"].exits["use"]
    assert (rate.p, rate.mean_days) == (0.05, None)


def test_scalar_reach_is_expanded_to_every_active_stage(tiny_scenario_text: str) -> None:
    text = tiny_scenario_text.replace("    stages: [use]\n", "    stages: [aware, use]\n")
    scenario = sim.load_scenario(text)
    assert scenario.touchpoints["email"].reach == {"aware": 0.1, "use": 0.1}


def test_steps_and_stage_kinds(tiny_scenario: sim.Scenario) -> None:
    assert tiny_scenario.steps == 365
    assert tiny_scenario.entry_stage() == "aware"
    assert tiny_scenario.stages_of_kind("lost") == ["churned", "lost"]
    assert sim.scenario.split_exit("use->churned") == ("use", "churned")


def test_exit_keys_are_canonical(tiny_scenario_text: str) -> None:
    text = tiny_scenario_text.replace("offsets: {aware->use: 0.2}",
                                      "offsets: {'aware -> use': 0.2}")
    scenario = sim.load_scenario(text)
    assert scenario.segments["old"].offsets == {"aware->use": 0.2}


def test_spaced_exit_key_problem_is_reported_as_spelled_on_its_own_line(
        tiny_scenario_text: str) -> None:
    text = tiny_scenario_text.replace(
        "    offsets: {aware->use: 0.2}\n",
        "    offsets:\n      aware -> use: 0.2\n      aware -> usee: 0.1\n")
    with pytest.raises(sim.ScenarioError) as info:
        sim.load_scenario(text)
    [problem] = info.value.problems
    line = text.splitlines().index("      aware -> usee: 0.1") + 1
    assert (problem.path, problem.line) == ("segments.old.offsets.aware -> usee", line)


def test_problems_are_all_reported_in_one_pass(tiny_scenario_text: str) -> None:
    text = (tiny_scenario_text
            .replace("    reach: 0.1\n", "    reach: 1.5\n")
            .replace("    cost_per_exposure: 0.05\n", "    cost_per_exposure: -1\n"))
    with pytest.raises(sim.ScenarioError) as info:
        sim.load_scenario(text)
    paths = [p.path for p in info.value.problems]
    assert paths == ["touchpoints.email.reach", "touchpoints.email.cost_per_exposure"]
    lines = [p.line for p in info.value.problems]
    assert lines == sorted(lines)


# -------------------------------------------------------------------- schema


def test_journey_schema_is_json_with_the_scenario_properties() -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["type"] == "object"
    assert set(sim.Scenario.model_fields) == set(document["properties"])
    assert {"name", "time", "stages"} <= set(document["required"])
    assert document["additionalProperties"] is False


def test_canonical_data_satisfies_the_json_schema(tiny_scenario: sim.Scenario) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    document = json.loads(CliRunner().invoke(app, ["schema"]).stdout)
    jsonschema.validate(tiny_scenario.to_data(), document)


def test_json_schema_accepts_every_shipped_scenario_as_written() -> None:
    """Editors check files against `journey schema`: it must accept the short forms too."""
    import jsonschema

    from sim.scenario import json_schema
    from sim.scenario._yaml import read_yaml

    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    paths = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.yaml"))
    assert paths
    for path in paths:
        data = read_yaml(path.read_text(), str(path)).data
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(data)]
        assert not errors, (path.name, errors[:5])
    short = read_yaml("name: s\ntime: {horizon_days: 5}\nstages:\n  a: {kind: prospect, "
                      "exits: {b: 0.1}}\n  b: {kind: customer}\ntouchpoints:\n"
                      "  t: {stages: [a], reach: 0.2}\n").data
    assert not list(validator.iter_errors(short))
    bad = {**short, "stages": {"a": {"kind": "prospect", "exits": {"b": 1.5}}}}
    assert list(validator.iter_errors(bad))


def test_structural_and_cross_field_problems_in_one_pass(tmp_path: Path) -> None:
    """An unknown field and a bad value do not hide an unknown stage name elsewhere."""
    path = tmp_path / "both.yaml"
    path.write_text(
        "name: both\n"
        "time: {horizon_days: 100}\n"
        "population:\n"
        "  initial: [{stage: awre, count: 10}]\n"
        "stages:\n"
        "  aware:\n"
        "    kind: prospect\n"
        "    min_dwel_days: 3\n"
        "    exits: {use: 0.5}\n"
        "  use: {kind: customer}\n"
        "touchpoints:\n"
        "  email: {stages: [use], reach: 0.1, cost_per_exposure: -1}\n")
    scenario, problems = sim.check_scenario_file(path)
    assert scenario is None
    found = {(p.line, p.path) for p in problems}
    assert found == {(4, "population.initial.0.stage"), (8, "stages.aware.min_dwel_days"),
                     (12, "touchpoints.email.cost_per_exposure")}


def test_repair_never_invents_problems(tmp_path: Path) -> None:
    """A dropped optional value is not reported again as a cross-field problem."""
    path = tmp_path / "share.yaml"
    path.write_text(
        "name: s\n"
        "time: {horizon_days: 10}\n"
        "segments:\n"
        "  a: {share: 0.5}\n"
        "  b: {share: 1.5}\n"
        "stages: {p: {kind: prospect, exits: {c: 0.1}}, c: {kind: customer}}\n")
    _, problems = sim.check_scenario_file(path)
    assert [p.path for p in problems] == ["segments.b.share"]
