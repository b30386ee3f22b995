"""Annealing of the diffusivity's scale over training (Eq. 13, 14, 16, 21).

Equation numbers are those of Cho, Kwon and Hong (2019), arXiv:1907.09750.

The paper draws the scale ``s^t`` from a probability density centred at ``mu`` and rescales it
to peak at 1 (its Figure 2). ``t`` is training progress in [0, 1]: iterations done over total
iterations (the book's appendix, Conventions and notation: annealing).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import check_choice, check_progress, check_real

DISTRIBUTIONS = ("laplace", "logistic")


def annealing_scale(
    t: float | Tensor, mu: float = 0.75, b: float = 0.5, distribution: str = "laplace"
) -> float | Tensor:
    """Peak-normalized annealing density ``s(t)``: Eq. 14 (Laplace) or Eq. 13 (Logistic).

    - Laplace: ``s(t) = exp(-|t - mu| / b)``
    - Logistic: ``s(t) = sech^2((t - mu) / (2 b))``

    Both equal 1 at ``t = mu`` and decay on either side at a rate set by ``b``.

    Args:
        t: training progress in [0, 1], a number or a tensor.
        mu: where the scale peaks (the paper: 75% of training). Any real number: outside [0, 1]
            the peak lies outside training, and the scale only rises (``mu > 1``, it ends at
            ``s(1) < 1``) or only falls (``mu < 0``) over the run.
        b: the density's scale, > 0; larger is flatter.
        distribution: ``"laplace"`` or ``"logistic"``.

    Returns:
        A float for a float ``t``, else a tensor shaped like ``t``.
    """
    t = check_progress("t", t)
    mu = check_real("mu", mu)
    b = check_real("b", b, minimum=0.0, strict=True)
    check_choice("distribution", distribution, DISTRIBUTIONS)
    return annealing_curve(t, mu, b, distribution)


def annealing_curve(t: float | Tensor, mu: float, b: float, distribution: str) -> float | Tensor:
    """:func:`annealing_scale` for checked arguments: no check reads a tensor ``t`` back from its device."""
    z = (t - mu) / b
    # Both densities depend on e = exp(-|z|) alone; sech^2(z / 2) = 4 e / (1 + e)^2 is the form
    # that cannot overflow (cosh does, for |z| > 1420).
    e = torch.exp(-z.abs()) if isinstance(z, Tensor) else math.exp(-abs(z))
    if distribution == "laplace":
        return e
    return 4.0 * e / (1.0 + e) ** 2
