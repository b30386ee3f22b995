"""The loss type-checks (issue 32, item 7): ``mypy resmooth --exclude resmooth/lab`` reports no error,
nor does it in a user's script that calls the public names as the README and the book do.

It needs mypy, which the ``test`` extra installs (``pip install '.[test]'``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                                reason="mypy is not importable: it comes with the test extra, pip install '.[test]'")

# A user's code: the criteria, the functions by their own names, the output of return_diffusivity.
USER = '''
import numpy as np
import torch

import resmooth
from resmooth import ResidualSmoothingLoss, SquaredErrorLoss
from resmooth.functional import diffusivity, residual, residual_smoothing_loss, squared_error_loss

z, y = torch.randn(4, 3), torch.randint(0, 3, (4,))
criterion = ResidualSmoothingLoss(b=np.float64(0.2), total_steps=10)
value: torch.Tensor = criterion(z, y)
criterion.step()
scale: torch.Tensor = criterion.progress()
loss: torch.Tensor = residual_smoothing_loss(z, y, 0.5, distribution="logistic", b=0.25)
out = residual_smoothing_loss(z, y, 0.5, return_diffusivity=True)
kappa: torch.Tensor = out.kappa
d: torch.Tensor = residual(z, y)
k: torch.Tensor = diffusivity(d, 0.5, "full", alpha=1.0)
plain: torch.Tensor = squared_error_loss(z, y) + SquaredErrorLoss()(z, y, progress=0.5)
smoothed: torch.Tensor = resmooth.smooth_residual(d, k) + resmooth.functional.residual(z, y)
'''


def test_mypy_finds_no_error(tmp_path):
    user = tmp_path / "user.py"
    user.write_text(USER)
    # The cache beside the checkout (git-ignored): a cold run reads all of torch's stubs.
    command = [sys.executable, "-m", "mypy", "--cache-dir", str(ROOT / ".mypy_cache"), "--exclude", "resmooth/lab",
               "resmooth", str(user)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and "Success: no issues found" in result.stdout, result.stdout + result.stderr
