"""The house's rules, read from the code: layers import downward, and no package (nor
any third-party library) is entered through a private name.

* ``sim`` imports neither ``optimise`` nor ``report``; ``optimise`` does not import
  ``report``; ``discover`` imports ``sim`` only.
* Across packages only public names travel: no ``from sim._x import …``, no
  ``from sim.scenario import _y``, no ``import optuna.storages._heartbeat``. Inside
  a package its private rooms import each other freely.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "optimise", "report", "discover")
BELOW = {"sim": set(), "optimise": {"sim"}, "report": {"sim", "optimise"}, "discover": {"sim"}}
"""What each package may import of the others."""


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, module, name or None) of every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            for alias in node.names:
                yield node.lineno, module, alias.name


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_crosses_a_package_and_layers_import_downward(path: Path) -> None:
    own = path.relative_to(ROOT).parts[0]
    problems = []
    for line, module, name in _imports(path):
        top = module.split(".")[0]
        where = f"{path.relative_to(ROOT)}:{line}: {module}" + (f".{name}" if name else "")
        if top in PACKAGES and top != own:
            if top not in BELOW[own]:
                problems.append(f"{where}: {own} must not import {top} (layers go downward)")
            if any(_private(p) for p in module.split(".")[1:]) or (name and _private(name)):
                problems.append(f"{where}: a private name of another package")
        elif top not in (*PACKAGES, "__future__") and (
                any(_private(p) for p in module.split(".")) or (name and _private(name))):
            problems.append(f"{where}: a private name of a third-party library")
    assert not problems, "\n".join(problems)
