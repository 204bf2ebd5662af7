"""Every file in ``bad/`` is refused, at its line, quickly, and without a traceback.

Each bad file starts with ``# expect: LINE: TEXT``: a problem must be reported
on 1-based line LINE, and ``field.path: message`` must contain TEXT. TEXT is
the engine's own words, or only the field path where the rest would be a
library's words (pydantic's "input should be …"): the contract is the
located, named field, not a library release's phrasing. A file that the YAML
reader refuses (hostile or broken YAML) may give only ``# expect: LINE``: the
contract is one located line, whatever the parser under it says. An optional
second line ``# path: FIELD.PATH`` says the path it is reported at: the path
the author wrote, also where the schema expands a short form.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sim
from sim.cli import app
from sim.scenario._yaml import MAX_BYTES, read_yaml

HERE = Path(__file__).parent
BAD_FILES = sorted((HERE / "bad").glob("*.yaml"))
WARN_FILES = sorted((HERE / "warn").glob("*.yaml"))
_EXPECT = re.compile(r"^# expect: (\d+)(?:: (.+))?$")
_EXPECT_WARNING = re.compile(r"^# expect-warning: (\d+): (.+)$")
_PATH = re.compile(r"^# path: (\S+)$")

runner = CliRunner()


def _expectation(path: Path, pattern: re.Pattern[str] = _EXPECT) -> tuple[int, str]:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    m = pattern.match(first)
    assert m, f"{path.name}: first line must be '# expect: LINE: TEXT', not {first!r}"
    return int(m.group(1)), m.group(2) or ""


def _named(problem: sim.Problem) -> str:
    """``field.path: message``, as ``journey validate`` prints it after the location."""
    return f"{problem.path}: {problem.message}" if problem.path else problem.message


def _refused_by_the_yaml_reader(path: Path) -> bool:
    try:
        read_yaml(path.read_bytes(), source=str(path))
    except sim.ScenarioError:
        return True
    return False


def _listing(problems: list[sim.Problem]) -> str:
    return "\n".join(str(p) for p in problems) or "(no problems)"


def _expected_path(path: Path) -> str | None:
    lines = path.read_text(encoding="utf-8").splitlines()
    m = _PATH.match(lines[1]) if len(lines) > 1 else None
    return m.group(1) if m else None


PATH_FILES = [p for p in BAD_FILES if _expected_path(p) is not None]


def test_bad_folder_has_a_file_per_error_class() -> None:
    assert len(BAD_FILES) >= 24


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.stem)
def test_check_scenario_file_refuses_at_the_expected_line(path: Path) -> None:
    line, text = _expectation(path)

    start = time.perf_counter()
    scenario, problems = sim.check_scenario_file(path)
    elapsed = time.perf_counter() - start

    assert scenario is None
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert all(p.source == str(path) for p in problems)
    assert any(p.severity == "error" and p.line == line and text in _named(p)
               for p in problems), f"expected line {line}: {text!r}; got\n{_listing(problems)}"


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.stem)
def test_load_scenario_raises_scenario_error(path: Path) -> None:
    line, text = _expectation(path)
    with pytest.raises(sim.ScenarioError) as info:
        sim.load_scenario(path)
    assert isinstance(info.value, ValueError)
    assert any(p.line == line and text in _named(p) for p in info.value.problems)


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.stem)
def test_journey_validate_exits_2_with_located_problems(path: Path) -> None:
    line, text = _expectation(path)

    result = runner.invoke(app, ["validate", str(path)])

    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    located = [s for s in result.stderr.splitlines() if s.startswith(f"{path}:{line}:")]
    assert any(text in s for s in located), result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.mark.parametrize("path", [p for p in BAD_FILES if _refused_by_the_yaml_reader(p)],
                         ids=lambda p: p.stem)
def test_a_file_the_yaml_reader_refuses_is_one_located_line(path: Path) -> None:
    """Hostile or broken YAML: one line naming the file and line, exit 2, fast, no traceback."""
    line, _ = _expectation(path)

    start = time.perf_counter()
    result = runner.invoke(app, ["validate", str(path)])
    elapsed = time.perf_counter() - start

    assert result.exit_code == 2, result.output
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    [only] = result.stderr.splitlines()
    assert re.match(rf"{re.escape(str(path))}:{line}:\d+: \S", only), only
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_file_over_one_mebibyte_is_refused_unread(tmp_path: Path,
                                                  tiny_scenario_text: str) -> None:
    path = tmp_path / "huge.yaml"
    padding = "# " + "x" * 98 + "\n"
    path.write_text(tiny_scenario_text + padding * (MAX_BYTES // len(padding) + 1))
    assert path.stat().st_size > MAX_BYTES

    start = time.perf_counter()
    scenario, problems = sim.check_scenario_file(path)
    elapsed = time.perf_counter() - start

    assert scenario is None
    assert elapsed < 1.0
    [problem] = problems
    assert f"scenarios are limited to {MAX_BYTES:,} bytes" in problem.message

    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}: file is" in result.stderr
    assert "Traceback" not in result.output


def test_warn_folder_is_not_empty() -> None:
    assert WARN_FILES


@pytest.mark.parametrize("path", WARN_FILES, ids=lambda p: p.stem)
def test_warning_only_scenario_validates_and_warns(path: Path) -> None:
    line, text = _expectation(path, _EXPECT_WARNING)

    scenario, problems = sim.check_scenario_file(path)

    assert scenario is not None
    assert problems, "expected a warning"
    assert all(p.severity == "warning" for p in problems)
    assert any(p.line == line and text in p.message for p in problems), _listing(problems)

    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{path}: ok" in result.stdout
    assert f"{path}:{line}:" in result.stderr
    assert "warning:" in result.stderr


def test_some_bad_files_say_where_the_problem_is_reported() -> None:
    assert {p.stem for p in PATH_FILES} >= {"scalar_reach_above_one",
                                             "exit_shorthand_above_one"}


@pytest.mark.parametrize("path", PATH_FILES, ids=lambda p: p.stem)
def test_a_problem_is_reported_at_the_path_the_author_wrote(path: Path) -> None:
    """A short form the schema expands (one reach for every stage, a bare exit
    probability) is reported where it was written, once, not at a synthesised path."""
    line, text = _expectation(path)
    expected = _expected_path(path)

    scenario, problems = sim.check_scenario_file(path)

    assert scenario is None
    matching = [p for p in problems if p.line == line and text in p.message]
    assert [p.path for p in matching] == [expected], _listing(problems)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.stderr.splitlines() == [f"{path}:{line}:{matching[0].column}: {expected}: "
                                          f"{matching[0].message}"]
