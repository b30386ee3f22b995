"""The verdict as Markdown: the book's full table and the README's short form."""

from __future__ import annotations

import math
from pathlib import Path

from ..runfiles import atomic_write
from .rows import Claim, VerdictRow, table3_gains

# --- Rendering --------------------------------------------------------------------------------

def _p(p: float) -> str:
    return "" if math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else "<0.001")


def _signed(x: float | None) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:+.2f}"


def _paper(claim: Claim) -> str:
    if claim.key == "table3":
        gains = table3_gains()
        return f"{min(gains):+.2f} to {max(gains):+.2f}"
    return _signed(claim.paper)


def verdict_markdown(rows: list[VerdictRow], *, short: bool = False) -> str:
    """The rows as a Markdown table: in full (every test, the status in short), or ``short`` (the
    difference and the status in words)."""
    if short:
        lines = ["| claim | paper | ours [95% t] | seeds | status |", "|---|---:|---:|---:|---|"]
        for row in rows:
            ours = str(row.paired) if row.paired else "—"
            lines.append(f"| {row.claim.text} | {_paper(row.claim)} | {ours} | {row.paired.n if row.paired else 0} | {row.status} |")
        return "\n".join(lines)
    lines = ["| claim | paper | ours [95% t] | won-lost | p (≥ paper) | p (paper's error) | detects | seeds |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        p = row.paired
        if p is None:
            cells = ["—"] * 5
        else:
            versus = row.versus_paper()
            cells = [str(p), f"{p.wins}-{p.losses}", _p(row.p_below_paper()) or "—", _p(versus.p) if versus else "—",
                     f"{row.detectable():.2f}" if p.n > 1 else "—"]
        lines.append(f"| {row.claim.text} | {_paper(row.claim)} | " + " | ".join(cells) + f" | {row.short_status} |")
    return "\n".join(lines)


README_KEYS = ("laplace-a", "logistic-a", "reading-c", "control", "small-0.125", "noise-0.4-A", "table3")
README_BEGIN = "<!-- verdict: begin (python -m resmooth.lab.verdict results --readme README.md) -->"
README_END = "<!-- verdict: end -->"


def readme_block(rows: list[VerdictRow]) -> str:
    """The README's short form of the verdict: the rows of :data:`README_KEYS`, between the markers."""
    shown = [row for key in README_KEYS for row in rows if row.claim.key == key]
    return "\n".join([README_BEGIN, verdict_markdown(shown, short=True), README_END])


def write_readme(path: str | Path, rows: list[VerdictRow]) -> None:
    """Replace the block between the markers in ``path`` by :func:`readme_block` (atomically)."""
    path = Path(path)
    text = path.read_text()
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no verdict block: add the lines {README_BEGIN!r} and {README_END!r} where it goes")
    new = text[:start] + readme_block(rows) + text[end + len(README_END):]
    atomic_write(path, lambda p: p.write_text(new))
