"""The repository stands on its own: no tracked file names the project's old external contract,
or a path outside the checkout, other than the one allowed default data root.

The forbidden strings are built from pieces, so that this file does not match itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

DOTS = ".."
SHARED = "shared"
ALLOWED_DATA = "data"
# The old contract's file name, in any case.
CONTRACT = re.compile(re.escape("MATH" + ".md"), re.IGNORECASE)
# Absolute paths to the machines' work folder.
ABSOLUTE = re.compile(re.escape("/" + "work" + "/"))
# A sibling shared folder other than its data root, and a sibling paper folder: both live
# outside the repository.
SIBLING_SHARED = re.compile(re.escape(DOTS + "/" + SHARED + "/") + "(?!" + ALLOWED_DATA + r"\b)")
SIBLING_PAPER = re.compile(re.escape(DOTS + "/" + "paper"))
FORBIDDEN = {
    "the old contract file": CONTRACT,
    "an absolute work path": ABSOLUTE,
    "a sibling shared folder other than the data root": SIBLING_SHARED,
    "the paper beside the checkout": SIBLING_PAPER,
}


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (git ls-files is needed to list the tracked files)")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


# Machine-written provenance: each sweep invocation records the argv it ran with, wherever the
# checkout was. A record of where a command ran, not a reference that the repository needs.
PROVENANCE = "invocations.jsonl"


def offending_lines(text: str) -> list[tuple[int, str, str]]:
    hits = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in FORBIDDEN.items():
            if pattern.search(line):
                hits.append((number, what, line.strip()[:120]))
    return hits


def test_the_patterns_catch_what_they_should_and_only_that():
    contract = "MATH" + ".md"
    assert offending_lines(f"see `{contract}` section 4")
    assert offending_lines("/" + "work/main/x")
    assert offending_lines(DOTS + "/" + SHARED + "/paper/a.md")
    assert offending_lines(DOTS + "/" + "paper/a.md")
    assert not offending_lines("RESMOOTH_DATA ?= $(abspath " + DOTS + "/" + SHARED + "/" + ALLOWED_DATA + ")")
    assert not offending_lines("the book's appendix, Conventions and notation: the loss")


def test_no_tracked_file_points_outside_the_repository():
    problems = []
    for path in tracked_files():
        if not path.is_file() or (path.name == PROVENANCE and "results" in path.parts):
            continue  # a tracked file deleted in the working tree
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary files (images, archives)
        for number, what, line in offending_lines(text):
            problems.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line}")
    assert not problems, "tracked files refer outside the repository:\n" + "\n".join(problems)


def test_the_appendix_names_tests_that_exist():
    # The appendix's index from the paper's equations to the code names the tests that check
    # each equation; a renamed or removed test must not leave it pointing at nothing.
    appendix = (ROOT / "book" / "conventions.md").read_text()
    named = set(re.findall(r"`(test_\w+\.py)::(test_\w+)`", appendix))
    assert len(named) >= 10, "the appendix's equation index lists the tests"
    missing = [f"{module}::{name}" for module, name in sorted(named)
               if not re.search(rf"^def {name}\(", (ROOT / "tests" / module).read_text(), re.MULTILINE)]
    assert not missing, f"book/conventions.md names tests that do not exist: {', '.join(missing)}"
