"""``python -m resmooth.lab.verdict [results] [--readme README.md]``: print the verdict, or rewrite the README's copy."""

from __future__ import annotations

import argparse

from . import __doc__ as package_doc
from .rows import verdict_table
from .text import verdict_markdown, write_readme


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m resmooth.lab.verdict", description=package_doc.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results", help="the results folder (default: results)")
    parser.add_argument("--experiments", help="the sweep files' folder (default: the results folder's sibling experiments)")
    parser.add_argument("--readme", help="rewrite this README's verdict block instead of printing the full table")
    args = parser.parse_args(argv)
    rows = verdict_table(args.results, args.experiments)
    if args.readme:
        write_readme(args.readme, rows)
    else:
        print(verdict_markdown(rows))


if __name__ == "__main__":
    main()
