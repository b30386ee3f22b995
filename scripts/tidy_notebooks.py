"""Tidy executed chapters in place, so that re-executing one changes only what its code computes.

- Drops the per-cell execution timestamps that nbclient records (they change at every run).
- Joins consecutive stream outputs of one stream (stdout, stderr) into one output: a kernel
  flushes a long print in as many pieces as the machine's load makes, which would otherwise show
  as separate blocks and differ from run to run.

Usage: ``python scripts/tidy_notebooks.py book/*.ipynb`` (``make notebooks`` runs it).
"""

from __future__ import annotations

import sys

import nbformat


def tidy(path: str) -> None:
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.outputs:
            previous = outputs[-1] if outputs else None
            if (output.output_type == "stream" and previous is not None and previous.output_type == "stream"
                    and previous.name == output.name):
                previous.text += output.text
            else:
                outputs.append(output)
        cell.outputs = outputs
    nbformat.write(notebook, path)


if __name__ == "__main__":
    for notebook_path in sys.argv[1:]:
        tidy(notebook_path)
