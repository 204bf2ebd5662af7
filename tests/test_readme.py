"""The README runs: every ``bash`` and ``python`` block of README.md, in the README's order.

The blocks run one after the other in one scratch folder (with the repository's
``scenarios/``), as a reader would paste them, so a later block may read what an
earlier one wrote. What makes them fit a test run, and nothing else, is changed:

* simulations run at a tiny population (``--population-scale 0.1``, or
  ``population_scale=0.1`` as the default of the Python entry points), with at
  most 2 replicates, 3 trials and 4 design samples;
* ``pip install`` lines are checked, not run: they must name this project (and
  extras it declares) or a package the test environment has — CI itself runs
  the Quick start's installs;
* ``python -m pytest`` is this very suite, so it is not started again;
* a PostgreSQL URL points at a throwaway cluster (``tests/pgcluster.py``);
* ``--png`` is dropped where no Chromium is installed (``.ci/run`` installs it);
* ``optuna-dashboard``, a server, is started on a free port, asked for its studies
  over HTTP (the study must be there) and stopped.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SCALE = "0.1"
SIMULATING = ("run", "optimise", "sweep", "sensitivity", "attribute")
"""Commands that take --population-scale (calibrate's scale is its fit's own setting)."""

PRELUDE = f"""
import sim.api, optimise

def _tiny(fn, **defaults):
    def call(*args, **kwargs):
        for key, value in defaults.items():
            kwargs.setdefault(key, value)
        return fn(*args, **kwargs)
    return call

sim.api.run = _tiny(sim.api.run, population_scale={SCALE})
optimise.optimise = _tiny(optimise.optimise, population_scale={SCALE})
optimise.sweep = _tiny(optimise.sweep, population_scale={SCALE}, workers=1)
optimise.attribute = _tiny(optimise.attribute, population_scale={SCALE})
"""
"""Run before each Python block: the public entry points default to a tiny population."""


def blocks() -> list[tuple[int, str, str]]:
    """(line, language, code) of every bash and python block, dedented."""
    text = README.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"^([ \t]*)```(\w+)\n(.*?)^\1```", text, re.S | re.M):
        if m.group(2) not in ("bash", "python"):
            continue
        indent = len(m.group(1))
        code = "\n".join(line[indent:] for line in m.group(3).splitlines())
        out.append((text[:m.start()].count("\n") + 1, m.group(2), code))
    return out


def _tiny_numbers(code: str) -> str:
    code = re.sub(r"(--trials[ =])\d+", r"\g<1>3", code)
    code = re.sub(r"\btrials=\d+", "trials=3", code)
    code = re.sub(r"(--samples[ =])\d+", r"\g<1>4", code)
    code = re.sub(r"(--replicates[ =])\d+", r"\g<1>2", code)
    return re.sub(r"\breplicates=\d+", "replicates=2", code)


def _commands(code: str) -> Iterator[str]:
    """The commands of a bash block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            yield from (part.strip() for part in line.split("&&"))


def _extras() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(meta["project"]["optional-dependencies"])


def _check_install(command: str) -> None:
    """A README install line names this project with declared extras, or a package the
    test environment has."""
    from importlib.metadata import PackageNotFoundError, version

    for target in shlex.split(command)[2:]:
        if target == "-e":
            continue
        m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", target)
        if m:
            unknown = set((m.group(1) or "").split(",")) - _extras() - {""}
            assert not unknown, f"{command}: no extra {unknown} in pyproject.toml"
            continue
        try:
            version(target)
        except PackageNotFoundError:
            pytest.fail(f"{command}: {target} is not installed with the dev extra")


def _bash(command: str, pg_url: str | None, chromium: bool) -> str | None:
    """The command as the test runs it, or None to skip it."""
    if command.startswith("pip install"):
        _check_install(command)
        return None
    if command == "python -m pytest":
        return None                                   # this suite
    words = shlex.split(command)
    if words[0] == "journey":
        sub = words[1]
        if sub in SIMULATING and "--population-scale" not in words and "--paths" not in words:
            words += ["--population-scale", SCALE]
        if sub == "sweep" and "--workers" not in words and "--scheduler" not in words:
            words += ["--workers", "1"]
        if "--png" in words and not chromium:
            i = words.index("--png")
            del words[i:i + 2]
        words = [re.sub(r"^postgresql://.*", pg_url or "", w) for w in words]
        if any(w == "" for w in words):
            pytest.skip("PostgreSQL is not available here (.ci/run installs it)")
        words[0] = shutil.which("journey", path=_path()) or "journey"
    return shlex.join(words)


def _path() -> str:
    """PATH with this interpreter's scripts first (``journey`` of the environment under test)."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dashboard(command: str, cwd: Path, env: dict[str, str], pg_url: str | None) -> None:
    """Serve a study with optuna-dashboard, as the README says, and see it listed."""
    import json
    import time
    import urllib.request

    words = shlex.split(command)
    if any(w.startswith("postgresql://") for w in words):
        if pg_url is None:
            pytest.skip("PostgreSQL is not available here (.ci/run installs it)")
        words = [pg_url if w.startswith("postgresql://") else w for w in words]
    port = _free_port()
    exe = shutil.which("optuna-dashboard", path=_path()) or "optuna-dashboard"
    server = subprocess.Popen([exe, *words[1:], "--port", str(port), "--host", "127.0.0.1"],
                              cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"{command}: {server.communicate()[1]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies",
                                            timeout=5) as answer:
                    studies = json.loads(answer.read())["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, f"{command}: no answer on port {port}"
                time.sleep(0.5)
        assert studies, f"{command}: the dashboard lists no study"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_every_readme_block_runs_in_order(tmp_path: Path) -> None:
    work = tmp_path / "reader"
    work.mkdir()
    (work / "scenarios").symlink_to(ROOT / "scenarios")
    env = {**os.environ, "PATH": _path()}
    chromium = any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome"))
    found = blocks()
    assert {lang for _, lang, _ in found} == {"bash", "python"}
    with ExitStack() as stack:
        pg_url = None
        if any("postgresql://" in code for _, _, code in found):
            from tests.pgcluster import Unavailable, throwaway_cluster

            try:
                pg_url = stack.enter_context(throwaway_cluster())
            except Unavailable:
                pg_url = None
        for line, lang, code in found:
            code = _tiny_numbers(code)
            if lang == "python":
                proc = subprocess.run([sys.executable, "-c", PRELUDE + code], cwd=work,
                                      env=env, capture_output=True, text=True, timeout=600)
                assert proc.returncode == 0, f"README.md:{line}: python block\n{proc.stderr}"
                continue
            for command in _commands(code):
                if command.startswith("optuna-dashboard "):
                    _dashboard(command, work, env, pg_url)
                    continue
                shell = _bash(command, pg_url, chromium)
                if shell is None:
                    continue
                proc = subprocess.run(shell, shell=True, cwd=work, env=env,
                                      capture_output=True, text=True, timeout=600)
                assert proc.returncode == 0, (f"README.md:{line}: {command}\n{proc.stdout}\n"
                                              f"{proc.stderr}")


def test_the_quick_start_has_exactly_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", quick, re.S)
    assert [c.strip() for c in commands] == [
        "pip install . && journey run scenarios/cosmetic_clinic.yaml --replicates 4",
        "pip install -e '.[dev]' && python -m pytest"]


def test_every_whole_scenario_and_sweep_file_in_the_readme_loads(tmp_path: Path) -> None:
    import sim
    from optimise import read_design

    text = README.read_text(encoding="utf-8")
    yaml_blocks = [m.group(2) for m in re.finditer(r"^([ \t]*)```yaml\n(.*?)^\1```", text,
                                                   re.S | re.M)]
    scenarios = [b for b in yaml_blocks if b.lstrip().startswith("name:")]
    sweeps = [b for b in yaml_blocks if b.lstrip().startswith("vary:")]
    assert scenarios and sweeps
    for block in scenarios:
        sim.load_scenario(block)
    for i, block in enumerate(sweeps):
        path = tmp_path / f"sweep{i}.yaml"
        path.write_text(textwrap.dedent(block))
        read_design(path)
