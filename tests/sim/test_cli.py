"""``journey validate`` and ``journey schema``: in-process with CliRunner, once for real."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sim
from sim.cli import app

BAD = Path(__file__).parent / "bad"
runner = CliRunner()


@pytest.fixture
def good_file(tmp_path: Path, tiny_scenario_text: str) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_scenario_text)
    return path


@pytest.fixture
def two_problem_file(tmp_path: Path, tiny_scenario_text: str) -> Path:
    path = tmp_path / "two.yaml"
    path.write_text(tiny_scenario_text
                    .replace("    reach: 0.1\n", "    reach: 1.5\n")
                    .replace("    cost_per_exposure: 0.05\n", "    cost_per_exposure: -1\n"))
    return path


def _line_of(path: Path, text: str) -> int:
    return path.read_text().splitlines().index(text) + 1


# ------------------------------------------------------------------ validate


def test_validate_ok_counts_with_right_plurals(good_file: Path) -> None:
    result = runner.invoke(app, ["validate", str(good_file)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (f"{good_file}: ok (4 stages, 2 segments, 1 touchpoint, "
                                     f"1 intervention, 365 steps)")
    assert result.stderr == ""


def test_validate_bad_exits_2_with_one_line_per_problem(two_problem_file: Path) -> None:
    result = runner.invoke(app, ["validate", str(two_problem_file)])
    assert result.exit_code == 2
    assert result.stdout == ""
    reach = _line_of(two_problem_file, "    reach: 1.5")
    cost = _line_of(two_problem_file, "    cost_per_exposure: -1")
    # located and named by the engine at the path written; the rule's words are pydantic's
    first, second = result.stderr.splitlines()
    assert first.startswith(f"{two_problem_file}:{reach}:5: touchpoints.email.reach: ")
    assert second.startswith(f"{two_problem_file}:{cost}:5: touchpoints.email.cost_per_exposure: ")


def test_validate_several_files_reports_every_problem(good_file: Path,
                                                      two_problem_file: Path) -> None:
    dup = BAD / "duplicate_key.yaml"
    missing = good_file.parent / "missing.yaml"
    result = runner.invoke(app, ["validate", str(dup), str(good_file), str(two_problem_file),
                                 str(missing)])
    assert result.exit_code == 2
    assert f"{good_file}: ok" in result.stdout
    assert f"{dup}:16:3: duplicate key 'use' (first defined at line 13)" in result.stderr
    assert result.stderr.count(f"{two_problem_file}:") == 2
    assert f"{missing}: no such file" in result.stderr
    assert "Traceback" not in result.output


def test_validate_all_good_files_exit_0(good_file: Path, tmp_path: Path,
                                        tiny_scenario_text: str) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(tiny_scenario_text.replace("name: tiny", "name: other"))
    result = runner.invoke(app, ["validate", str(good_file), str(other)])
    assert result.exit_code == 0
    assert result.stdout.count(": ok (") == 2


@pytest.mark.parametrize("name", ["missing.yaml", ".", "tiny.yaml/below", "x" * 300])
def test_validate_unreadable_paths_are_problems_not_tracebacks(good_file: Path,
                                                               name: str) -> None:
    path = good_file.parent / name
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}: ")
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_validate_needs_a_file() -> None:
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 2  # click's usage error, naming the argument
    assert "files" in result.output.lower()
    assert "Traceback" not in result.output


def test_debug_validate_still_reports_problems(two_problem_file: Path) -> None:
    # validate reports problems rather than raising them, so --debug adds no traceback
    plain = runner.invoke(app, ["validate", str(two_problem_file)])
    debug = runner.invoke(app, ["--debug", "validate", str(two_problem_file)])
    assert debug.exit_code == plain.exit_code == 2
    assert debug.stderr == plain.stderr
    assert "Traceback" not in debug.output


def test_debug_lets_a_raised_sim_error_through(tmp_path: Path) -> None:
    # a command that raises (run cannot load its scenario) shows one line without
    # --debug and the exception with its traceback with --debug
    bad = BAD / "duplicate_key.yaml"
    args = ["run", str(bad), "--out", str(tmp_path / "out"), "--quiet"]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 2
    assert plain.stderr.strip() == f"{bad}:16:3: duplicate key 'use' (first defined at line 13)"

    debug = runner.invoke(app, ["--debug", *args])
    assert debug.exit_code == 1
    assert isinstance(debug.exception, sim.ScenarioError)
    assert debug.exc_info is not None and debug.exc_info[2] is not None
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------- schema


def test_schema_prints_the_json_schema() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["title"] == "Journey engine scenario"
    assert "stages" in document["properties"]
    assert "$defs" in document and "Stage" in document["$defs"]


# ------------------------------------------------------- a real subprocess


def _journey() -> list[str]:
    exe = shutil.which("journey")
    if exe is not None:
        return [exe]
    return [sys.executable, "-c", "from sim.cli import main; main()"]


def test_journey_runs_as_a_real_process(good_file: Path) -> None:
    bad = BAD / "exit_to_itself.yaml"
    done = subprocess.run([*_journey(), "validate", str(good_file), str(bad)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert f"{good_file}: ok" in done.stdout
    assert done.stderr.startswith(f"{bad}:17:7: stages.use.exits.use: an exit to the stage")
    assert "Traceback" not in done.stderr


def test_importing_registers_no_command_and_loading_them_twice_changes_nothing() -> None:
    """Nothing happens at import: a higher layer's CLI module imports on its own (it
    imports ``sim.cli``, which used to load it back half-made), and the commands of the
    ``journey.commands`` entry points arrive only through ``load_commands``, once."""
    code = """
import optimise.cli
import sim.cli
named = lambda: sorted(c.name for c in sim.cli.app.registered_commands if c.name)
assert named() == [], named()
sim.cli.load_commands()
once = named()
sim.cli.load_commands()
optimise.cli.register(sim.cli.app)
assert named() == once and {"optimise", "sweep", "report"} <= set(once), named()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
