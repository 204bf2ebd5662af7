"""`journey run/validate --set PATH=VALUE --intervention NAME`: variants from the command line."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

import sim
from sim.cli import app

runner = CliRunner()


@pytest.fixture
def tiny_file(tmp_path: Path, tiny_scenario_text: str) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_scenario_text.replace("horizon_days: 365", "horizon_days: 120")
                    .replace("count: 1000", "count: 200"))
    return path


def _variants(out: Path) -> set[str]:
    return {p.name.removeprefix("variant=") for p in (out / "kpis" / "scenario=tiny").iterdir()}


def test_set_and_intervention_run_the_variant_they_describe(tiny_file: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(tiny_file), "--out", str(out), "--quiet",
                              "--set", "touchpoints.email.reach.use=0.4",
                              "--intervention", "more_email"])
    assert res.exit_code == 0, res.output
    [label] = _variants(out)
    assert sim.scenario.is_variant_label(label) and label != "base"
    assert f"variant {label}:" in res.stdout.splitlines()[0]     # the run header says it

    expected = sim.load_scenario(tiny_file).apply(
        interventions=["more_email"], overrides={"touchpoints.email.reach.use": 0.4})
    kpis = ds.dataset(out / "kpis", partitioning="hive").to_table().to_pylist()
    direct = sim.run(expected, seed=7).kpis.to_pylist()[0]
    assert kpis[0]["revenue"] == direct["revenue"] and kpis[0]["cost"] == direct["cost"]


def test_runs_with_different_settings_never_overwrite_each_other(tiny_file: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = [[], ["--set", "touchpoints.email.reach.use=0.2"],
                ["--set", "touchpoints.email.reach.use=0.3"], ["--intervention", "more_email"],
                ["--set", "touchpoints.email.reach.use=0.3", "--intervention", "more_email"]]
    for extra in settings:
        res = runner.invoke(app, ["run", str(tiny_file), "--out", str(out), "--quiet", *extra])
        assert res.exit_code == 0, res.output
    labels = _variants(out)
    assert len(labels) == len(settings)
    assert {"base", "touchpoints.email.reach.use-0.2", "more_email"} <= labels


def test_an_explicit_variant_label_wins(tiny_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(tiny_file), "--out", str(out), "--quiet",
                              "--set", "touchpoints.email.reach.use=0.2", "--variant", "mine"])
    assert res.exit_code == 0, res.output
    assert _variants(out) == {"mine"}


@pytest.mark.parametrize(("args", "lines"), [
    (["--set", "touchpoints.email.reach.use=1.5"],
     ["--set touchpoints.email.reach.use=1.5: input should be less than or equal to 1"]),
    (["--set", "touchpoints.email.reach=1.5"],
     ["--set touchpoints.email.reach=1.5: input should be less than or equal to 1"]),
    (["--intervention", "more_emial"],
     ["--intervention more_emial: unknown intervention (did you mean 'more_email'?)"]),
    (["--set", "touchpoints.emial.reach.use=0.2"],
     ["--set touchpoints.emial.reach.use=0.2: touchpoints has no entry 'emial' (did you mean "
      "'email'?)"]),
    (["--set", "stages.use.exits.churned=0.999", "--set", "stages.use.exits.lost=0.1"],
     ["--set stages.use.exits.churned=0.999, --set stages.use.exits.lost=0.1: stages.use.exits: "
      "exit probabilities sum to 1.099 per step; the sum must not pass 1"]),
    (["--set", "touchpoints.email.reach.use=yes", "--set", "seed"],
     ["--set touchpoints.email.reach.use=yes: ambiguous value 'yes': YAML 1.1 reads it as a "
      "boolean; write true/false, or quote it for text",
      "--set seed: write PATH=VALUE (e.g. touchpoints.email.reach.use=0.2)"]),
    (["--set", "seed=1", "--set", "seed=2"],
     ["--set seed=2: seed is already set by --set seed=1"]),
])
def test_bad_settings_are_one_line_each_naming_the_flag(tiny_file: Path, tmp_path: Path,
                                                        args: list[str],
                                                        lines: list[str]) -> None:
    res = runner.invoke(app, ["run", str(tiny_file), "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2
    assert res.stderr.splitlines() == lines
    assert not (tmp_path / "o").exists()


def test_validate_checks_the_settings_too(tiny_file: Path) -> None:
    ok = runner.invoke(app, ["validate", str(tiny_file), "--intervention", "more_email"])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith(f"{tiny_file}: ok as variant more_email (")
    bad = runner.invoke(app, ["validate", str(tiny_file), "--set", "time.horizon_days=120.5"])
    assert bad.exit_code == 2
    assert bad.stderr.splitlines() == [
        f"{tiny_file}: --set time.horizon_days=120.5: time: horizon_days (120.5) must be a "
        f"positive whole number of steps of 1 day"]
