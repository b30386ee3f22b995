"""The diffusivity map: a sigmoid of the residual, scaled over training (Eq. 10, 15, 17, 19).

Equation numbers are those of Cho, Kwon and Hong (2019), arXiv:1907.09750.

Three schemes (the book's appendix, Conventions and notation: the diffusivity schemes):

========  ==================================  ===================
scheme    kappa                               paper
========  ==================================  ===================
global    ``S(0; s(t), 0) = s(t) / 2``        Sec. 4.3.1, Eq. 15
local     ``S(dn; s, alpha)``, constant s     Sec. 4.3.2, Eq. 17
full      ``S(dn; s(t), alpha)``              Sec. 4.3.3, Eq. 19
========  ==================================  ===================

``dn`` is the normalized residual (Eq. 18) and ``s(t)`` the annealing scale (Eq. 13/14).

The hyperparameters (scheme, distribution, mu, b, alpha, s) are defined, defaulted and checked
once, by :class:`DiffusivityMap`, which the loss and the trainers' configs share. The paper's
settings (its Table 1 and Table 3): Laplace annealing with b = 0.2 or 0.5, Logistic with b = 0.25
or 0.5, alpha = 1, the peak mu at 75% of training; the global scheme's grid b = 0.1 to 0.9.
"""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY, dataclass
from typing import Any

import torch
from torch import Tensor

from ._checks import check_choice, check_floating, check_progress, check_real, spelled
from .annealing import DISTRIBUTIONS, annealing_curve
from .residual import scaled_normalized

SCHEMES = ("global", "local", "full")

# The hyperparameters each scheme does not read, and why (Eq. 15, 17, 19): a value other than
# the default would change nothing, so it is refused rather than dropped.
_ANNEALED = "takes its scale from the annealing s(t), not from s"
IGNORED: dict[str, dict[str, str]] = {
    "global": {"alpha": "fixes alpha = 0 (Eq. 15)", "s": f"{_ANNEALED} (Eq. 15)"},
    "local": {name: "has the constant scale s and no annealing (Eq. 17)" for name in ("distribution", "mu", "b")},
    "full": {"s": f"{_ANNEALED} (Eq. 19)"},
}


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


@dataclass(frozen=True)
class DiffusivityMap:
    """The diffusivity map kappa's hyperparameters (Eq. 10, 13-19), checked once, with their defaults.

    The one definition that :func:`diffusivity`, :class:`~resmooth.loss.ResidualSmoothingLoss`
    and the trainers' configs (:class:`~resmooth.lab.train.Config`,
    :class:`~resmooth.lab.dense.DenseConfig`) share; the command line's help for each field is
    the lab's. The fields after ``scheme`` are keyword-only.

    Attributes:
        scheme: ``"global"`` (Eq. 15), ``"local"`` (Eq. 17) or ``"full"`` (Eq. 19). Default
            ``"full"``, the paper's method (its Table 3).
        distribution: the annealing density of the scale s(t), ``"laplace"`` (Eq. 14) or
            ``"logistic"`` (Eq. 13). Default ``"laplace"``.
        mu: where s(t) peaks, as a fraction of training. Default 0.75, the paper's. Outside
            [0, 1] the peak lies outside the run, and s(t) only rises (``mu > 1``) or only falls
            (``mu < 0``).
        b: the density's scale, > 0, in units of training progress; larger is flatter. Default
            0.5; the paper's Table 3 uses 0.2 and 0.5 (Laplace), 0.25 and 0.5 (Logistic).
        alpha: the steepness, >= 0, of the sigmoid of the normalized residual (Eq. 10; 0 makes
            kappa constant). Default 1, the paper's Table 3.
        s: the constant scale, >= 0, of the local scheme (Eq. 17). Default 1.

    A hyperparameter that the scheme does not read must keep its default (``alpha`` under
    ``"global"``, which may also be the 0 that the scheme fixes; ``s`` outside ``"local"``;
    ``distribution``, ``mu`` and ``b`` under ``"local"``): another value would change nothing,
    and is refused with a ValueError that names it, the scheme and why (:data:`IGNORED`).

    Raises:
        ValueError, TypeError: a value out of range, of the wrong type, or ignored by the scheme.
    """

    scheme: str = "full"
    _: KW_ONLY
    distribution: str = "laplace"
    mu: float = 0.75
    b: float = 0.5
    alpha: float = 1.0
    s: float = 1.0

    def __post_init__(self) -> None:
        check_choice("scheme", self.scheme, SCHEMES)
        check_choice("distribution", self.distribution, DISTRIBUTIONS)
        # Stored as floats, so that an int, a float, a NumPy number and a 0-d tensor of one
        # value are one map.
        for name, minimum, strict in (("mu", None, False), ("b", 0.0, True), ("alpha", 0.0, False), ("s", 0.0, False)):
            object.__setattr__(self, name, check_real(name, getattr(self, name), minimum=minimum, strict=strict))
        for name, why in IGNORED[self.scheme].items():
            value = getattr(self, name)
            if value == _DEFAULTS[name] or (self.scheme, name, value) == ("global", "alpha", 0.0):
                continue  # at its default, or the global scheme's own alpha, said out loud
            # The message is built for a refused value only: torch<2.14 cannot compile ContextVar.get.
            check_default(name, value, f"{spelled('scheme', self.scheme)} {why}")

    @classmethod
    def of(cls, owner: object, **values: Any) -> DiffusivityMap:
        """The map whose fields ``owner`` (a config) holds as attributes of the same names; ``values`` set the others."""
        return cls(**{f.name: getattr(owner, f.name) for f in dataclasses.fields(cls) if f.name not in values}, **values)

    @property
    def annealed(self) -> bool:
        """Whether the scale is the annealing ``s(t)`` (global, full), which needs the training progress."""
        return self.scheme != "local"

    @property
    def peak(self) -> float:
        """The largest kappa of a run: ``s(t) <= 1`` peaks at 1, halved by the global scheme; ``s`` (local)."""
        return {"global": 0.5, "local": self.s, "full": 1.0}[self.scheme]

    def scale(self, t: float | Tensor | None, name: str = "t") -> float | Tensor:
        """The sigmoid's scale: ``s(t)`` (Eq. 13/14) at a checked progress ``t``, or the constant ``s`` (local).

        The one check that a scheme with an annealed scale has its progress; ``name`` is what the
        caller calls it.
        """
        if not self.annealed:
            return self.s
        if t is None:
            raise ValueError(
                f"{name} (training progress in [0, 1]) is required by scheme={self.scheme!r}, whose scale s(t) is "
                f"annealed over training (scheme='local' reads none): pass {name}=t, or construct "
                "ResidualSmoothingLoss(..., total_steps=N) and call its step() once per optimizer step"
            )
        return annealing_curve(t, self.mu, self.b, self.distribution)

    def kappa(self, d: Tensor, scale: float | Tensor) -> float | Tensor:
        """kappa of residuals ``d`` (N, ...) at a known scale (:meth:`scale`), without a check.

        The global scheme's kappa is the same for every element, ``scale / 2``, and is returned
        as such (a number for a number scale) so that callers need not build a tensor of it.
        """
        if self.scheme == "global":
            return scale * 0.5
        return scaled_normalized(d, self.alpha).sigmoid_().mul_(scale)


# Each field's default, by name (the fields are read once, not at every check).
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DiffusivityMap)}


def check_default(name: str, value: object, why: str) -> None:
    """Refuse a :class:`DiffusivityMap` field ``name`` that would be ignored, ``why`` says by what."""
    default = _DEFAULTS[name]
    if value != default:
        raise ValueError(f"{spelled(name, value)} would be ignored: {why}; leave {spelled(name)} at its default {default!r}")


def refuse_unused(owner: object, why: str) -> None:
    """Refuse each :class:`DiffusivityMap` field that ``owner`` (a config) holds, and not at its
    default: ``owner`` uses no diffusivity map, as ``why`` says."""
    for f in dataclasses.fields(DiffusivityMap):
        if hasattr(owner, f.name):
            check_default(f.name, getattr(owner, f.name), why)


def unread(kappa_map: DiffusivityMap | None) -> tuple[str, ...]:
    """The fields of a diffusivity map that a run does not read: every one without a map (None),
    else those that its scheme ignores (:data:`IGNORED`)."""
    if kappa_map is None:
        return tuple(f.name for f in dataclasses.fields(DiffusivityMap))
    return tuple(IGNORED[kappa_map.scheme])


DEFAULTS = DiffusivityMap()


def diffusivity(
    d: Tensor,
    t: float | Tensor | None = None,
    scheme: str = DEFAULTS.scheme,
    *,
    distribution: str = DEFAULTS.distribution,
    mu: float = DEFAULTS.mu,
    b: float = DEFAULTS.b,
    alpha: float = DEFAULTS.alpha,
    s: float = DEFAULTS.s,
) -> Tensor:
    """The diffusivity map kappa for a batch of residuals (Eq. 15, 17, 19).

    kappa is computed from ``d.detach()``: the smoothing layer's weights are deterministic and
    carry no gradient (paper Sec. 5).

    Args:
        d: residuals, (N, ...) floating point; normalized per sample over all non-batch dims.
        t: training progress in [0, 1]; required by the ``"global"`` and ``"full"`` schemes
            (a number, or a tensor broadcastable to ``d``); ``"local"`` does not read it.
        scheme, distribution, mu, b, alpha, s: the map's hyperparameters (:class:`DiffusivityMap`,
            which refuses one that the scheme ignores); those after ``scheme`` are keyword-only.

    Returns:
        kappa, shaped like ``d``, detached.
    """
    check_floating("d", d)
    kappa_map = DiffusivityMap(scheme, distribution=distribution, mu=mu, b=b, alpha=alpha, s=s)
    kappa = kappa_map.kappa(d.detach(), kappa_map.scale(None if t is None else check_progress("t", t)))
    return kappa.expand_as(d) if isinstance(kappa, Tensor) else torch.full_like(d, kappa)
