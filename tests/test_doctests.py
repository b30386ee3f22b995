"""The examples in the loss's docstrings run and print what they say (issue 32, item 6).

Every module of :mod:`resmooth` outside the lab, as ``pytest --doctest-modules`` would run them,
here so that ``make test`` and a plain ``pytest tests`` both do. They print rounded values, so
that they hold on every CPU path (the Makefile's portable one too).
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import resmooth

LOSS_ROOM = sorted(module.name for module in pkgutil.iter_modules(resmooth.__path__, "resmooth.")
                   if module.name not in ("resmooth.lab", "resmooth.__main__"))


@pytest.mark.parametrize("name", LOSS_ROOM)
def test_the_examples_run(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()


def test_the_criteria_and_the_functions_have_examples():
    from resmooth import ResidualSmoothingLoss, SquaredErrorLoss
    from resmooth.functional import residual_smoothing_loss, squared_error_loss

    for obj in (ResidualSmoothingLoss, SquaredErrorLoss, residual_smoothing_loss, squared_error_loss):
        (test,) = doctest.DocTestFinder(recurse=False).find(obj)
        assert len(test.examples) >= 3, obj
