"""The diffusivity map: a sigmoid of the residual, scaled over training (Eq. 10, 15, 17, 19).

Three schemes (the book's appendix, Conventions and notation: the diffusivity schemes):

========  ==================================  ===================
scheme    kappa                               paper
========  ==================================  ===================
global    ``S(0; s(t), 0) = s(t) / 2``        Sec. 4.3.1, Eq. 15
local     ``S(dn; s, alpha)``, constant s     Sec. 4.3.2, Eq. 17
full      ``S(dn; s(t), alpha)``              Sec. 4.3.3, Eq. 19
========  ==================================  ===================

``dn`` is the normalized residual (Eq. 18) and ``s(t)`` the annealing scale (Eq. 13/14).
"""

from __future__ import annotations

from torch import Tensor

import torch

from ._checks import check_choice, check_floating, check_real
from .annealing import DISTRIBUTIONS, annealing_scale
from .residual import scaled_normalized

SCHEMES = ("global", "local", "full")


def scaled_sigmoid(x: float | Tensor, s: float, alpha: float) -> float | Tensor:
    """Eq. 10: ``S(x; s, alpha) = s / (1 + exp(-alpha x))``.

    Args:
        x: a number or a tensor.
        s: the vertical scale, >= 0 (the curve runs from 0 to s).
        alpha: the steepness, >= 0 (0 gives the constant s / 2).
    """
    s = check_real("s", s, minimum=0.0)
    alpha = check_real("alpha", alpha, minimum=0.0)
    if isinstance(x, Tensor):
        return s * torch.sigmoid(alpha * x)
    return s * float(torch.sigmoid(torch.tensor(alpha * float(x), dtype=torch.float64)))


def diffusivity(
    d: Tensor,
    t: float | Tensor | None = None,
    scheme: str = "full",
    distribution: str = "laplace",
    mu: float = 0.75,
    b: float = 0.5,
    alpha: float = 1.0,
    s: float = 1.0,
) -> Tensor:
    """The diffusivity map kappa for a batch of residuals (Eq. 15, 17, 19).

    kappa is computed from ``d.detach()``: the smoothing layer's weights are deterministic and
    carry no gradient (paper Sec. 5).

    Args:
        d: residuals, (N, ...) floating point; normalized per sample over all non-batch dims.
        t: training progress in [0, 1]; required by the ``"global"`` and ``"full"`` schemes
            (a number, or a tensor broadcastable to ``d``).
        scheme: ``"global"``, ``"local"`` or ``"full"``.
        distribution: the annealing density, ``"laplace"`` or ``"logistic"``.
        mu, b: the annealing density's peak location and scale (b > 0).
        alpha: the sigmoid's steepness (>= 0); unused by ``"global"``, whose alpha is 0.
        s: the constant scale of the ``"local"`` scheme (>= 0); the other schemes take their
            scale from the annealing schedule ``s(t)`` instead.

    Returns:
        kappa, shaped like ``d``, detached.
    """
    check_floating("d", d)
    check_choice("scheme", scheme, SCHEMES)
    check_choice("distribution", distribution, DISTRIBUTIONS)
    alpha = check_real("alpha", alpha, minimum=0.0)
    s = check_real("s", s, minimum=0.0)
    b = check_real("b", b, minimum=0.0, strict=True)
    if scheme == "local":
        scale: float | Tensor = s
    elif t is None:
        raise ValueError(f"t (training progress in [0, 1]) is required by scheme={scheme!r}")
    else:
        scale = annealing_scale(t, mu=mu, b=b, distribution=distribution)
    kappa = diffusivity_map(d.detach(), scale, scheme, alpha)
    return kappa.expand_as(d) if isinstance(kappa, Tensor) else torch.full_like(d, kappa)


def diffusivity_map(d: Tensor, scale: float | Tensor, scheme: str, alpha: float) -> float | Tensor:
    """kappa for checked arguments and a known scale (``s(t)``, or ``s`` for the local scheme).

    The global scheme's kappa is the same for every element, ``scale / 2``, and is returned as
    such (a number) so that callers need not build a tensor of it.
    """
    if scheme == "global":
        return scale * 0.5
    return scaled_normalized(d, alpha).sigmoid_().mul_(scale)
