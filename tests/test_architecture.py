"""The architecture contract (pyproject.toml [tool.importlinter], checked by `lint-imports` in .ci/run)
covers the whole package: import-linter only checks the modules a contract names, so a new floor
module or a new wing left out of the contract would escape it silently."""

from __future__ import annotations

import ast
import tomllib

from support.paths import ROOT

PACKAGE = ROOT / "tigo_execd"
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _contract(name: str) -> dict[str, list[str]]:
    return next(c for c in CONTRACTS if c["name"] == name)


def test_every_floor_module_and_every_wing_is_in_the_floor_contract() -> None:
    floor = _contract("the shared floor imports no wing")
    modules = {f"tigo_execd.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    wings = {f"tigo_execd.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    assert set(floor["source_modules"]) == modules
    assert set(floor["forbidden_modules"]) == wings


def test_every_wing_says_what_lives_there_and_what_it_may_import() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "import" in doc.lower(), f"{init} needs a docstring saying what it may import"
