"""``python -m resmooth`` and the ``resmooth`` command: the lab's command line (:mod:`resmooth.lab.cli`).

The command line trains and reports, so it needs the ``train`` extra; without it, it says what to
install and exits, rather than printing a traceback.
"""

from __future__ import annotations

import sys

from ._extras import MissingExtraError


def main(argv: list[str] | None = None) -> int:
    """Run the command line; without the ``train`` extra, print what to install and return 2."""
    try:
        from .lab.cli import main as lab_main
    except MissingExtraError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return lab_main(argv)


if __name__ == "__main__":
    sys.exit(main())
