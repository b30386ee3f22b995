"""The lowest torch the loss works on, said once (issue 32, item 1).

pyproject.toml's requirement on torch and README.md's "Which torch" agree: the floor it states,
and the table of the releases that scripts/check_torch.py was run against, where the floor is the
lowest release that passes every check and each release below it fails one. And the script's
test files are the loss room's: those that need torch and ``resmooth`` alone. No network.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("check_torch", ROOT / "scripts" / "check_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_requirement() -> Requirement:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (requirement,) = [r for r in map(Requirement, dependencies) if r.name == "torch"]
    return requirement


def which_torch() -> str:
    """README.md's subsection "Which torch", up to the next heading."""
    section = (ROOT / "README.md").read_text().split("### Which torch\n", 1)[1]
    return re.split(r"\n#{2,3} ", section, maxsplit=1)[0]


def test_pyproject_and_the_readme_state_the_same_floor_and_the_runs_bear_it_out():
    requirement = torch_requirement()
    (bound,) = requirement.specifier
    assert bound.operator == ">=", requirement
    section = which_torch()
    assert re.search(r"torch (\S+) or later", section).group(1) == bound.version
    assert f"`torch>={bound.version}`" in section
    rows = re.findall(r"^\| (\d[\w.+]*) +\|(.*)\|$", section, re.M)
    results = {Version(version): cells.split("|") for version, cells in rows}
    checks = ["eager", *load_script().CHECKS]
    assert len(results) == len(rows) and all(len(cells) == len(checks) for cells in results.values())
    passing = {v for v, cells in results.items() if all(c.strip() == "PASS" for c in cells)}
    assert passing and all(c.strip() in ("PASS", "FAIL") for cells in results.values() for c in cells)
    # Every release run at or above the floor passes, every one below fails a check, and the
    # floor itself was run.
    assert {v for v in results if requirement.specifier.contains(v)} == passing
    assert min(passing).release[:len(Version(bound.version).release)] == Version(bound.version).release


def imports(path: Path, leave_out: set[str]) -> set[str]:
    """The packages that ``path`` imports, or asks pytest to import (``importorskip``), anywhere
    but in the test functions ``leave_out``; the lab by its own name, ``resmooth.lab``."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef) and node.name in leave_out:
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "importorskip"
              and isinstance(node.args[0], ast.Constant)):
            names.add(node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {"resmooth.lab" if name.startswith("resmooth.lab") else name.split(".")[0] for name in names}


def test_the_script_runs_the_loss_rooms_test_files():
    script = load_script()
    allowed = {"torch", "resmooth", "conftest", *script.TEST_REQUIREMENTS, *sys.stdlib_module_names}
    leave_out: dict[str, set[str]] = {}
    for test in script.LAB_TESTS:
        path, name = test.split("::")
        leave_out.setdefault(path, set()).add(name)
    loss_room = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        relative = path.relative_to(ROOT).as_posix()
        names = imports(path, leave_out.get(relative, set()))
        if "resmooth" in names and names <= allowed:
            loss_room.append(relative)
    assert sorted(script.TESTS) == loss_room
