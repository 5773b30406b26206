"""Rules that keep the tests failing only for the code: no test module imports another (what they
share is in tests/support/), no clock read when a module is imported (a run across midnight would
see two "todays"), and the stand-ins read no data of the product they check."""

from __future__ import annotations

import ast
from pathlib import Path

from support.paths import ROOT

TESTS = ROOT / "tests"
CLOCK_CALLS = {"time", "time_ns", "now", "today", "utcnow", "monotonic", "localtime", "gmtime", "strftime"}


def modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "output" not in p.parts)


def test_no_test_module_imports_another():
    found = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names
                      if n.split(".")[-1].startswith(("test_", "conftest"))]
    assert found == []


def module_level(tree: ast.Module) -> list[ast.stmt]:
    """What runs at import: top-level statements, class bodies, default values and decorators."""
    out: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out += [ast.Expr(d) for d in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]
                    if d is not None]
        elif isinstance(node, ast.ClassDef):
            out += module_level(ast.Module(body=node.body, type_ignores=[]))
        elif not isinstance(node, ast.If) or "__main__" not in ast.unparse(node.test):
            out.append(node)
    return out


def test_no_clock_is_read_at_import():
    found = []
    for path in modules():
        for stmt in module_level(ast.parse(path.read_text())):
            for node in ast.walk(stmt):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr in CLOCK_CALLS:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_the_stand_ins_read_no_data_of_the_product():
    """tests/support/ keeps its own copies in tests/data/ (test_telegraf_options.py checks that the
    Telegraf option names agree with tigo_execd/data/)."""
    for path in sorted((TESTS / "support").glob("*.py")):
        text = path.read_text()
        assert '"tigo_execd" / "data"' not in text and "tigo_execd/data" not in text, path
