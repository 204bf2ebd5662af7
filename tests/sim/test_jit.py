"""Where numba's on-disk cache of the kernels lives (``sim/_jit.py``).

Never inside the package: a cache written into an installed ``sim/`` outlives
``pip uninstall`` and, left behind as a bare folder, shadows a later editable
install. The default is a per-user folder keyed by the package version; an
explicit ``NUMBA_CACHE_DIR`` wins. ``tests/test_install.py`` checks the same
across real ``pip install`` / ``pip install -e`` sequences.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest

import sim
from sim import _jit
from sim._jit import cache_dir

REPO = Path(__file__).resolve().parents[2]
SIM_DIR = Path(sim.__file__).resolve().parent
CACHE_SUFFIXES = (".nbi", ".nbc")


def _cache_files(root: Path) -> dict[Path, float]:
    """numba's index and data files under ``root``, with their modification times."""
    return {p: p.stat().st_mtime for p in root.rglob("*") if p.suffix in CACHE_SUFFIXES}


def _clean_numba_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")


def test_the_default_cache_folder_is_per_user_and_keyed_by_the_package_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG_CACHE_HOME names the user cache folder on Linux only")
    _clean_numba_env(monkeypatch)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    assert cache_dir() == str(tmp_path / "journey-engine" / sim.__version__ / "numba")

    monkeypatch.setattr(sim, "__version__", "9.9.9")
    assert cache_dir() == str(tmp_path / "journey-engine" / "9.9.9" / "numba")


def test_an_explicit_numba_cache_dir_wins(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_numba_env(monkeypatch)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "env"))
    assert cache_dir() == str(tmp_path / "env")

    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "config"))
    assert cache_dir() == str(tmp_path / "config")


def _add_one(x: float) -> float:
    return x + 1.0


def _add_two(x: float) -> float:
    return x + 2.0


def _add_three(x: float) -> float:
    return x + 3.0


def _cached_beside_this_module(name: str) -> list[Path]:
    return [p for p in _cache_files(Path(__file__).parent) if f"._{name}-" in p.name]


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="XDG_CACHE_HOME names the user cache folder on Linux only")
def test_a_kernel_caches_in_the_user_folder_and_leaves_numbas_default_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if numba.config.DISABLE_JIT:  # type: ignore[attr-defined]
        pytest.skip("nothing is compiled under NUMBA_DISABLE_JIT")
    _clean_numba_env(monkeypatch)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    compiled = _jit.kernel(_add_one)

    assert compiled(1.0) == 2.0
    assert numba.config.CACHE_DIR == ""  # type: ignore[attr-defined]
    folder = tmp_path / "journey-engine" / sim.__version__ / "numba"
    assert any(p.name.startswith("test_jit._add_one-") for p in _cache_files(folder))
    assert not _cached_beside_this_module("add_one")


def test_a_kernel_caches_in_an_explicit_numba_cache_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if numba.config.DISABLE_JIT:  # type: ignore[attr-defined]
        pytest.skip("nothing is compiled under NUMBA_DISABLE_JIT")
    _clean_numba_env(monkeypatch)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))

    compiled = _jit.kernel(_add_three)

    assert compiled(1.0) == 4.0
    assert any(p.name.startswith("test_jit._add_three-") for p in _cache_files(tmp_path))
    assert not _cached_beside_this_module("add_three")


def test_an_unwritable_cache_folder_compiles_without_a_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    if numba.config.DISABLE_JIT:  # type: ignore[attr-defined]
        pytest.skip("nothing is compiled under NUMBA_DISABLE_JIT")
    _clean_numba_env(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker / "numba"))

    with caplog.at_level(logging.WARNING, logger="sim._jit"):
        compiled = _jit.kernel(_add_two)

    assert compiled(1.0) == 3.0
    assert "not writable" in caplog.text
    assert not _cached_beside_this_module("add_two")


_RUN_TINY = textwrap.dedent("""\
    import json, os, sys
    import numba  # the user's program imported numba before sim
    import sim
    from tests.conftest import TINY_SCENARIO_TEXT

    scenario = sim.load_scenario(TINY_SCENARIO_TEXT)
    result = sim.run(scenario, replicates=1, seed=3, out=sys.argv[1], population_scale=0.2)
    imported = "numba.np.arraymath" in sys.modules

    @numba.njit
    def total(values):  # compiled after the run: numba readies itself to compile
        return values.sum()

    import numpy as np
    print(json.dumps({"version": sim.__version__, "config": numba.config.CACHE_DIR,
                      "implementations_imported": imported,
                      "kpis": json.dumps(result.kpis.to_pylist()),  # NaN as text
                      "compiled_after": float(total(np.arange(4.0)))}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="XDG_CACHE_HOME names the user cache folder on Linux only")
def test_running_a_scenario_caches_kernels_under_the_user_folder_not_the_package(
        tmp_path: Path) -> None:
    """A fresh process with an empty per-user cache: it compiles, and writes there only.
    A second process loads the kernels from there, with the same results, without
    importing numba's library of implementations (``sim._jit._KernelCache``), and can
    still compile a function of its own afterwards."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    in_package_before = _cache_files(SIM_DIR)

    done = subprocess.run([sys.executable, "-c", _RUN_TINY, str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)

    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["config"] == ""
    assert _cache_files(SIM_DIR) == in_package_before, "kernels were cached inside sim/"
    folder = tmp_path / "cache" / "journey-engine" / facts["version"] / "numba"
    cached = {p.suffix for p in _cache_files(folder)}
    assert cached == set(CACHE_SUFFIXES), f"no index and data files under {folder}"
    assert facts["implementations_imported"], "a compiling process readies numba to compile"

    # a second process loads every kernel from that cache, without numba's implementations
    before = _cache_files(folder)
    again = subprocess.run([sys.executable, "-c", _RUN_TINY, str(tmp_path / "again")],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)

    assert again.returncode == 0, again.stderr
    loaded = json.loads(again.stdout.strip().splitlines()[-1])
    assert _cache_files(folder) == before, "the second process compiled a kernel"
    assert not loaded["implementations_imported"], "loading from the cache imported numba's " \
        "implementations (numba.np.arraymath)"
    assert loaded["kpis"] == facts["kpis"]
    assert loaded["compiled_after"] == facts["compiled_after"] == 6.0


def test_flags_compile_a_kernel_once_per_value_with_the_bits_as_a_constant() -> None:
    """A kernel taking :class:`sim._jit.Flags` is compiled for each value it is given, and
    a call with a value seen before compiles nothing (no failed typing first, as a plain
    int under numba's ``literally`` would cost)."""
    from sim._jit import Flags, flag_bits

    @numba.njit(cache=False)
    def pick(x: float, flags: Flags) -> float:
        if flag_bits(flags) & 1:
            return -x
        return x

    assert pick(2.0, Flags(0)) == 2.0 and pick(2.0, Flags(1)) == -2.0
    assert len(pick.signatures) == 2
    slow = []
    compile_for_args = pick._compile_for_args
    pick._compile_for_args = lambda *a, **k: slow.append(a) or compile_for_args(*a, **k)
    for _ in range(3):
        assert pick(3.0, Flags(1)) == -3.0
    assert slow == [] and len(pick.signatures) == 2
    # Flags(0): the negation's branch is left out of the code; Flags(1) has it
    assert "fneg" not in pick.inspect_llvm(pick.signatures[0])
    assert "fneg" in pick.inspect_llvm(pick.signatures[1])
    assert repr(Flags(5)) == "Flags(5)"


def _scaled_sum(a: np.ndarray, x: float) -> float:
    total = 0.0
    for i in range(a.shape[0]):
        a[i] += x
        total += a[i]
    return total


def _twice(a: np.ndarray, x: float) -> float:
    return _scaled(a, x) + _scaled(a, 2.0 * x)


_scaled = _jit.inner_kernel(_scaled_sum)
_nested = _jit.inner_kernel(_twice)


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="compiles kernels")
def test_inner_kernels_link_into_their_caller_without_machine_code_of_their_own() -> None:
    """An inner kernel, called directly and through another one, is compiled once, without
    reference counting, and its lowered code linked, unoptimised, into the caller, whose
    one finalization optimises and assembles it: the subroutines' own libraries are
    neither optimised nor finalized."""
    from numba.core.registry import cpu_target

    @numba.njit(cache=False)
    def top(a: np.ndarray, x: float) -> float:
        return _nested(a, x) + _scaled(a, 1.0)

    a = np.arange(5.0)
    # a + 1 (sum 15), then + 2 (sum 25), then + 1 (sum 30): every pass sees the last one's
    assert top(a, 1.0) == 70.0
    assert a.tolist() == [4.0, 5.0, 6.0, 7.0, 8.0]
    cached = {key[1].co_name: value for key, value in
              cpu_target.target_context.cached_internal_func.items()
              if isinstance(key, tuple) and key[0] == "journey-engine subroutine"}
    for name in ("_scaled_sum", "_twice"):
        compiled, lowered = cached[name]
        assert isinstance(lowered, _jit._Lowered), "numba's own path (finalize first) was taken"
        assert not compiled.library._finalized, f"{name} was given machine code of its own"
        assert compiled.target_context.enable_nrt is False, f"{name} counts references"
        # as lowered: numba's per-function simplification (which turns the lowering's
        # stack slots into registers) is left to the caller's optimisation
        assert " alloca " in str(compiled.library._final_module), f"{name} was optimised alone"
