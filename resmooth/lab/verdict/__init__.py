"""The verdict: one row per claim of the paper, and per reading of it, from the studies in ``results/``.

:func:`verdict_table` reads the runs of each study (``results/<study>/<setting>/seed-<k>/``) and,
for each :class:`Claim` of :data:`CLAIMS`, pairs the method with its baseline seed by seed: the
paired 95% t interval, the seeds won and lost, the one-sided test of "the gain is at least the
paper's" (:meth:`resmooth.lab.stats.Paired.p_below`), the test that carries the paper's own
standard error (:func:`versus_paper`), and the smallest gain the comparison detects. Its status
says how far the study has got: the seeds it plans come from the sweep file,
``experiments/<study>.toml`` (else the copy in the results folder), the seeds done from the
runs. A study with neither is "not run yet". :func:`verdict_markdown` renders the rows, in full
or in the short form that the README carries; :func:`selection_effect` sizes what the paper's
choice of ``b`` on the test set manufactures. ``python -m resmooth.lab.verdict results`` prints
the table, and ``--readme README.md`` rewrites the README's copy of the short form.
"""

from .rows import (CLAIMS, CONTROL, Claim, LAPLACE, LOGISTIC, MEAN_OVER_M, NOISE, PAPER_TRIALS, Pick, Progress, R20, RAW, READING_C, RUN_FIELDS, SGD, SMALL, Selection, TABLE3_STUDY, VerdictRow, VersusPaper, paper_gain, progress, selection_effect, table3_gains, verdict_table, versus_paper)
from .text import (README_BEGIN, README_END, README_KEYS, readme_block, verdict_markdown, write_readme)
