"""Install in any order, any way: ``pip install .`` and ``pip install -e .`` after each other.

One throwaway virtual environment, one copy of this checkout and an empty
per-user cache; every step runs the real ``journey`` command from a folder
outside the copy, as a user would:

1. ``pip install COPY``, ``journey run`` (compiles the kernels);
2. ``pip install -e COPY``: ``journey --help`` and ``import sim; sim.run`` work,
   and the installed ``sim/`` folder is gone, not left as a namespace package
   that shadows the editable install;
3. ``pip install COPY`` again (editable → regular, the reverse order): the same;
4. the copy's version raised and reinstalled: its kernels compile into a new
   cache folder, so a newer version never loads kernels cached by an older one.

No step may leave numba's cache files inside the package. The README's Quick
start (``pip install .`` then ``pip install -e '.[dev]'``) runs in ``.ci/run``
in a fresh environment too; this test adds the reverse order, the version
bump and the checks of where the cache goes. It takes a minute or two and
needs PyPI, so it runs only when asked: ``python -m pytest -m install``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.install,
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="XDG_CACHE_HOME names the user cache folder on Linux only"),
]

REPO = Path(__file__).resolve().parents[1]
CACHE_SUFFIXES = (".nbi", ".nbc")


class Sandbox:
    """A virtual environment, a copy of the checkout and a user cache, all under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.copy = root / "clone"
        self.venv = root / "venv"
        self.cache = root / "user-cache"
        self.outside = root / "elsewhere"
        self.outside.mkdir()
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("NUMBA_", "PYTHON", "VIRTUAL_ENV", "PIP_USER"))}
        self.env["PATH"] = os.pathsep.join([str(self.venv / "bin"), os.environ["PATH"]])
        self.env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def sh(self, *args: str | Path, cache: bool = False) -> str:
        """Run a command from the outside folder; fail the test with its output if it fails."""
        env = dict(self.env)
        if cache:  # only journey and Python see the test's user cache; pip keeps its own
            env["XDG_CACHE_HOME"] = str(self.cache)
        done = subprocess.run([str(a) for a in args], cwd=self.outside, env=env, text=True,
                              capture_output=True, timeout=900)
        assert done.returncode == 0, (f"{' '.join(map(str, args))} exited {done.returncode}\n"
                                      f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def pip_install(self, *args: str | Path) -> None:
        self.sh(self.python, "-m", "pip", "install", "-q", *args)

    def journey_run(self, name: str) -> None:
        self.sh("journey", "run", self.copy / "scenarios" / "dental_clinic.yaml",
                "--population-scale", "0.05", "--replicates", "1", "--quiet",
                "--out", self.root / f"results-{name}", cache=True)

    def sim_folder(self) -> Path:
        """Where ``import sim`` resolves from outside the copy; also checks ``sim.run``."""
        out = self.sh(self.python, "-c", "import sim; sim.run; print(sim.__file__)", cache=True)
        return Path(out.strip().splitlines()[-1]).parent

    def site_sim(self) -> Path:
        [site] = (self.venv / "lib").glob("python*/site-packages")
        return site / "sim"

    def version_cache(self, version: str) -> Path:
        return self.cache / "journey-engine" / version / "numba"


def _copy_checkout(dest: Path) -> None:
    """Copy the files git would commit (tracked and new, not ignored) from this checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _cache_files(root: Path) -> dict[Path, float]:
    if not root.exists():
        return {}
    return {p: p.stat().st_mtime for p in root.rglob("*") if p.suffix in CACHE_SUFFIXES}


def _version(copy: Path) -> str:
    m = re.search(r'^version = "([^"]+)"$', (copy / "pyproject.toml").read_text(), re.M)
    assert m, "pyproject.toml has no version line"
    return m.group(1)


def _raise_version(copy: Path) -> str:
    newer = _version(copy) + ".post1"
    path = copy / "pyproject.toml"
    path.write_text(re.sub(r'^version = "[^"]+"$', f'version = "{newer}"', path.read_text(),
                           count=1, flags=re.M))
    return newer


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to copy")
    box = Sandbox(tmp_path)
    _copy_checkout(box.copy)
    subprocess.run([sys.executable, "-m", "venv", str(box.venv)], check=True, timeout=300)
    return box


def test_regular_and_editable_installs_follow_each_other_in_any_order(sandbox: Sandbox) -> None:
    box = sandbox
    version = _version(box.copy)
    copy_sim = box.copy / "sim"

    # 1. a regular install runs, and caches its kernels in the user folder
    box.pip_install(box.copy)
    box.journey_run("regular")
    installed = box.site_sim()
    assert box.sim_folder() == installed
    assert not _cache_files(installed), "kernels were cached inside site-packages/sim"
    first = _cache_files(box.version_cache(version))
    assert {p.suffix for p in first} == set(CACHE_SUFFIXES)

    # 2. then an editable install: nothing of the regular one is left to shadow it
    box.pip_install("-e", box.copy)
    assert not installed.exists(), f"left behind: {sorted(installed.rglob('*'))[:5]}"
    assert "Usage: journey" in box.sh("journey", "--help", cache=True)
    assert box.sim_folder() == copy_sim
    box.journey_run("editable")
    assert not _cache_files(copy_sim), "kernels were cached inside the checkout's sim/"

    # 3. the reverse order: editable, then regular again
    box.pip_install(box.copy)
    assert "Usage: journey" in box.sh("journey", "--help", cache=True)
    assert box.sim_folder() == installed
    box.journey_run("regular-again")
    assert not _cache_files(installed)
    assert not _cache_files(copy_sim)

    # 4. a newer version compiles into its own folder; the older one's files stay as they were
    before = _cache_files(box.version_cache(version))
    newer = _raise_version(box.copy)
    box.pip_install(box.copy)
    box.journey_run("newer")
    assert {p.suffix for p in _cache_files(box.version_cache(newer))} == set(CACHE_SUFFIXES)
    assert _cache_files(box.version_cache(version)) == before
    assert not _cache_files(installed)
