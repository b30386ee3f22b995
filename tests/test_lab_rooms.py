"""The lab's rooms: no module over 300 lines of code, and imports that run one way (no cycle)."""

import ast
import io
import tokenize
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[1] / "resmooth" / "lab"
MODULES = sorted(LAB.rglob("*.py"))
MAX_CODE_LINES = 300


def code_lines(text: str) -> int:
    """The lines that hold code: not blank, not only a comment, not part of a docstring (a module's,
    a class's or a function's first statement when it is a string)."""
    docstrings = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    layout = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    code = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type not in layout:
            code.update(range(token.start[0], token.end[0] + 1))
    return len(code - docstrings)


def test_code_lines_counts_code_only():
    text = '''"""A module.

With a long docstring.
"""

# a comment
import math  # a trailing comment


def f(x):
    """Its docstring."""
    # why
    return (x +
            math.pi)
'''
    assert code_lines(text) == 4  # the import, the def and the return's two lines


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(LAB).as_posix())
def test_no_lab_module_is_over_300_lines_of_code(path):
    assert code_lines(path.read_text()) <= MAX_CODE_LINES


def lab_imports(path: Path) -> set[str]:
    """The lab modules that ``path`` imports, at the top or inside a function, as dotted names."""
    package = ["resmooth", *path.relative_to(LAB.parent).with_suffix("").parts]
    if package[-1] == "__init__":
        package.pop()
    else:
        package = package[:-1]  # a module's relative imports start from its package
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in MODULE_NAMES}
    return found


def module_name(path: Path) -> str:
    parts = ["resmooth", *path.relative_to(LAB.parent).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULE_NAMES = {module_name(p) for p in MODULES}


def test_lab_imports_run_one_way():
    graph = {module_name(p): lab_imports(p) - {module_name(p)} for p in MODULES}
    # A package imports its own modules; the modules importing their package's names is what a cycle would be.
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    assert graph["resmooth.lab.sweep"] >= {"resmooth.lab.cluster"}  # the check sees imports inside functions
    cycles = []

    def visit(node, path):
        for dep in sorted(graph[node]):
            if dep in path:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(node)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not cycles, f"import cycles in the lab: {cycles}"
