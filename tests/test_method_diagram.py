"""The method diagram of chapter 1 (book/figures/method_diagram.svg) is what its script draws.

The SVG is committed, so that the book shows it without running anything; this test regenerates it
in memory and compares the bytes, so that a change to the script without the SVG, or to the SVG by
hand, fails here rather than going stale. To update it: python book/figures/method_diagram.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "book" / "figures" / "method_diagram.py"


def load_script():
    spec = importlib.util.spec_from_file_location("method_diagram", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_method_diagram_is_what_the_script_draws():
    module = load_script()
    first = module.render()
    assert first == module.render(), "two renderings differ: the SVG is not byte-stable"
    assert b"<svg" in first and b"<dc:date>" not in first
    committed = module.OUT.read_bytes()
    assert committed == first, "book/figures/method_diagram.svg is stale: run python book/figures/method_diagram.py"
