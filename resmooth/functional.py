r"""The losses as functions, as :mod:`torch.nn.functional` is to :mod:`torch.nn`.

:func:`residual_smoothing_loss` is :class:`~resmooth.loss.ResidualSmoothingLoss` without the
progress schedule (the caller passes ``progress``); :func:`squared_error_loss` is
:class:`~resmooth.loss.SquaredErrorLoss`. Each criterion's ``forward`` is one call into its
function's pipeline, so that the two forms cannot drift apart (the criterion checks its
hyperparameters once, at construction; the function at every call). :func:`residual` (Eq. 9) and
:func:`diffusivity` (Eq. 15, 17, 19) are the loss's two maps, by their own names. Equation
numbers are those of Cho, Kwon and Hong (2019), "Adaptive Regularization via Residual Smoothing
in Deep Learning Optimization", arXiv:1907.09750.

Reductions follow torch's losses (``F.cross_entropy``, ``F.mse_loss``): ``"none"`` gives the
loss of each element of the non-class dims, the squared norm over dim 1 of the (smoothed)
residual: (N,) for (N, M) input, ``(N, *spatial)`` for ``(N, C, *spatial)`` input;
``"mean"`` is the mean of what ``"none"`` gives over the elements not ignored, ``"sum"`` its sum.
For (N, M) input ``"mean"`` is the paper's batch loss, the mean over samples of
``g_i = ||r_i||^2`` (Eq. 7), which is M times ``F.mse_loss``'s mean over all N M elements; for a
dense output it also averages over the spatial elements. An empty batch gives what torch's
losses give: nan (``"mean"``), 0 (``"sum"``), an empty tensor (``"none"``).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, overload

import torch
from torch import Tensor

from ._checks import check_choice, check_floating, check_int, check_progress, check_real
from .annealing import DISTRIBUTIONS
from .diffusion import TWO_LOGITS, _smooth, check_classes, explicit_euler, global_smoothed_norm, stable_steps
from .diffusivity import DEFAULTS, SCHEMES, DiffusivityMap, diffusivity
from .residual import ACTIVATIONS, difference, residual

__all__ = ["ResidualSmoothingOutput", "diffusivity", "residual", "residual_smoothing_loss", "squared_error_loss"]

REDUCTIONS = ("mean", "sum", "none")
OPERATORS = ("auto", "global", "grid")
# The grid operator's diffusion time tau (Eq. 8); the global operator is the paper's single
# smoothing layer (Eq. 22) and has none.
DIFFUSION_TIME = 1.0
# torch's default for the class index whose elements a loss leaves out (F.cross_entropy).
IGNORE_INDEX = -100


class ResidualSmoothingOutput(NamedTuple):
    """What :func:`residual_smoothing_loss` returns with ``return_diffusivity=True``."""

    loss: Tensor
    """The loss, reduced as ``reduction`` says."""
    kappa: Tensor
    """The diffusivity, detached, shaped like the input."""
    scale: Tensor
    """The scale it was computed at, ``s(t)`` (``s`` for the local scheme), a 0-d tensor."""


def squared_error_loss(
    input: Tensor,
    target: Tensor,
    activation: str = "softmax",
    *,
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
    validate_args: bool = True,
) -> Tensor:
    r"""The squared-error baseline, ``||phi(z) - y||^2`` over dim 1, per element of the other dims.

    See :class:`~resmooth.loss.SquaredErrorLoss` for the arguments (those after ``activation``
    are keyword-only). With ``reduction="mean"`` on (N, M) input this is
    ``F.mse_loss(phi(z), y, reduction="sum") / N``, M times ``F.mse_loss(phi(z), y)``.

    Examples::

        >>> import torch
        >>> from resmooth.functional import squared_error_loss
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
        >>> print(f"{squared_error_loss(logits, torch.tensor([0, 2])):.4f}")
        0.0453
    """
    activation, reduction, ignore_index, validate_args = _check_common(activation, reduction, ignore_index,
                                                                       validate_args)
    diff, keep = _masked_difference(input, target, activation, ignore_index, validate_args)
    # |x|^2 = x^2: the magnitude of Eq. 9 needs no computing here.
    return _reduce(diff.square().sum(dim=1), keep, reduction)


@overload
def residual_smoothing_loss(
    input: Tensor, target: Tensor, progress: float | Tensor | None = ..., scheme: str = ..., *,
    distribution: str = ..., mu: float = ..., b: float = ..., alpha: float = ..., s: float = ...,
    activation: str = ..., operator: str = ..., tau: float = ..., reduction: str = ..., ignore_index: int = ...,
    validate_args: bool = ..., return_diffusivity: Literal[False] = ...,
) -> Tensor: ...


@overload
def residual_smoothing_loss(
    input: Tensor, target: Tensor, progress: float | Tensor | None = ..., scheme: str = ..., *,
    distribution: str = ..., mu: float = ..., b: float = ..., alpha: float = ..., s: float = ...,
    activation: str = ..., operator: str = ..., tau: float = ..., reduction: str = ..., ignore_index: int = ...,
    validate_args: bool = ..., return_diffusivity: Literal[True],
) -> ResidualSmoothingOutput: ...


def residual_smoothing_loss(
    input: Tensor,
    target: Tensor,
    progress: float | Tensor | None = None,
    scheme: str = DEFAULTS.scheme,
    *,
    distribution: str = DEFAULTS.distribution,
    mu: float = DEFAULTS.mu,
    b: float = DEFAULTS.b,
    alpha: float = DEFAULTS.alpha,
    s: float = DEFAULTS.s,
    activation: str = "softmax",
    operator: str = "auto",
    tau: float = DIFFUSION_TIME,
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
    validate_args: bool = True,
    return_diffusivity: bool = False,
) -> Tensor | ResidualSmoothingOutput:
    r"""The residual-smoothing loss (Eq. 7, 11; Algorithm 1 of arXiv:1907.09750) at training
    progress ``progress``: per sample ``g = ||W |phi(z) - y| ||^2`` with the smoothing layer W of
    Eq. 22 at the diffusivity ``kappa = s(t) sigmoid(alpha d~)``.

    See :class:`~resmooth.loss.ResidualSmoothingLoss` for the formula and the arguments, with
    their defaults and the paper's settings; the hyperparameters after ``scheme`` are
    keyword-only. ``progress`` in [0, 1] (a number or a one-element tensor) is required by the
    ``"global"`` and ``"full"`` schemes; the ``"local"`` scheme ignores it (None).

    Args:
        return_diffusivity: also return the diffusivity and its scale, as a
            :class:`ResidualSmoothingOutput` ``(loss, kappa, scale)`` (as ``F.max_pool2d``'s
            ``return_indices``). Default: False, the loss alone.

    Examples::

        >>> import torch
        >>> from resmooth.functional import residual_smoothing_loss
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
        >>> target = torch.tensor([0, 2])
        >>> print(f"{residual_smoothing_loss(logits, target, 0.75):.4f}")
        0.0268
        >>> loss, kappa, scale = residual_smoothing_loss(logits, target, 0.75, return_diffusivity=True)
        >>> print(f"s(0.75) = {scale:.2f}; kappa of sample 0: {[round(k, 3) for k in kappa[0].tolist()]}")
        s(0.75) = 1.00; kappa of sample 0: [0.721, 0.606, 0.201]
    """
    kappa_map, operator, tau = _check_smoothing(scheme, distribution, mu, b, alpha, s, operator, tau)
    activation, reduction, ignore_index, validate_args = _check_common(activation, reduction, ignore_index,
                                                                       validate_args)
    scale = _scale(kappa_map, progress, validate_args)
    loss, kappa = _residual_smoothing(input, target, scale, kappa_map, activation, operator, tau, reduction,
                                      ignore_index, validate_args)
    return ResidualSmoothingOutput(loss, kappa, _as_tensor(scale)) if return_diffusivity else loss


def _residual_smoothing(
    input: Tensor, target: Tensor, scale: float | Tensor, kappa_map: DiffusivityMap, activation: str,
    operator: str, tau: float, reduction: str, ignore_index: int, validate_args: bool,
) -> tuple[Tensor, Tensor]:
    """The one pipeline of :func:`residual_smoothing_loss` at the scale ``scale`` (:func:`_scale`),
    for hyperparameters already checked (:func:`_check_smoothing`, :func:`_check_common`):
    ``(loss, kappa)``. The criterion, which checks its hyperparameters once at construction,
    calls it at every step; the function, after checking them at every call."""
    diff, keep = _masked_difference(input, target, activation, ignore_index, validate_args)
    g, kappa = _smoothed_squares(_without_ignored(diff, keep), kappa_map, scale, _resolve_operator(operator, diff, tau),
                                 tau)
    return _reduce(g, keep, reduction), kappa


# The checks of the arguments, each in one place: the criteria run them at construction, the
# functions at every call.


def _check_first(name: str, value: object, allowed: tuple[str, ...], others: dict[str, tuple[str, ...]]) -> str:
    """The first hyperparameter, the one that may be given by position: a value that belongs to
    one of the keyword-only ``others`` (``ResidualSmoothingLoss("mean")``) is told where it goes."""
    if isinstance(value, str) and value not in allowed:
        for other, values in others.items():
            if value in values:
                raise ValueError(
                    f"{name}={value!r} is not a {name} ({', '.join(map(repr, allowed))}); {value!r} is a value of "
                    f"{other}, which is keyword-only, as is every argument after {name}: pass {other}={value!r}"
                )
    return check_choice(name, value, allowed)


def _check_common(activation: str, reduction: str, ignore_index: int, validate_args: bool) -> tuple[str, str, int, bool]:
    """The arguments that both losses take, checked: activation, reduction, ignore_index, validate_args."""
    activation = _check_first("activation", activation, ACTIVATIONS, {"reduction": REDUCTIONS})
    reduction = check_choice("reduction", reduction, REDUCTIONS)
    ignore_index = check_int("ignore_index", ignore_index)
    if not isinstance(validate_args, bool):
        raise TypeError(f"validate_args must be True or False; got {type(validate_args).__name__}")
    return activation, reduction, ignore_index, validate_args


def _check_smoothing(
    scheme: str, distribution: str, mu: float, b: float, alpha: float, s: float, operator: str, tau: float
) -> tuple[DiffusivityMap, str, float]:
    """The smoothing's hyperparameters, checked: the diffusivity map (:class:`DiffusivityMap`
    checks its own), the operator and tau (refused under the global operator, which reads none)."""
    _check_first("scheme", scheme, SCHEMES, {"reduction": REDUCTIONS, "activation": ACTIVATIONS,
                                              "operator": OPERATORS, "distribution": DISTRIBUTIONS})
    kappa_map = DiffusivityMap(scheme, distribution=distribution, mu=mu, b=b, alpha=alpha, s=s)
    operator = check_choice("operator", operator, OPERATORS)
    tau = check_real("tau", tau, minimum=0.0)
    if operator == "global":
        _check_tau_is_read(tau, "operator='global'")
    return kappa_map, operator, tau


def _check_tau_is_read(tau: float, operator: str) -> None:
    if tau != DIFFUSION_TIME:
        raise ValueError(
            f"tau={tau!r} would be ignored: {operator} is the single smoothing layer of Eq. 22, with no "
            f"diffusion time; leave tau at its default {DIFFUSION_TIME!r}, or use operator='grid' on (N, C, *spatial) input"
        )


def _as_progress(t: float | Tensor, validate_args: bool = True) -> float | Tensor:
    """Training progress, checked: a number stays a number when the code runs eagerly (the scale
    is then computed in Python, with no tensor of one element to build); under torch.compile a
    number becomes a float64 tensor (the schedule's dtype), so that the graph takes it as an
    input instead of baking in its value; a tensor becomes a 0-dim tensor.

    Checked eagerly. Where it is not (a tensor with ``validate_args=False`` or under a torch.func
    transform, a tensor or a number under torch.compile, where a number may be symbolic), it is
    clamped to [0, 1] (:func:`~resmooth._checks.check_progress`): never used outside it.
    """
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(f"progress must be a single number in [0, 1]; got a tensor of shape {tuple(t.shape)}")
        return check_progress("progress", t.reshape(()), validate_args)
    if torch.compiler.is_compiling():
        return torch.tensor(t, dtype=torch.float64).clamp(0.0, 1.0)
    return check_progress("progress", t)


def _scale(kappa_map: DiffusivityMap, progress: float | Tensor | None, validate_args: bool = True) -> float | Tensor:
    """The sigmoid's scale ``s(t)`` (Eq. 13/14) at the progress checked by :func:`_as_progress`,
    or the local scheme's constant ``s`` (Eq. 17): a number or a 0-dim tensor, as the progress is."""
    return kappa_map.scale(None if progress is None else _as_progress(progress, validate_args), "progress")


def _as_tensor(scale: float | Tensor) -> Tensor:
    """A scale as what the losses report: a 0-dim tensor (float64 for a number)."""
    return scale if isinstance(scale, Tensor) else torch.tensor(scale, dtype=torch.float64)


def _masked_difference(
    input: Tensor, target: Tensor, activation: str, ignore_index: int, validate_args: bool
) -> tuple[Tensor, Tensor | None]:
    """``phi(z) - y`` (the signed residual of Eq. 9) and the mask (N, *spatial) of the elements
    kept (None for a float target, which ignores nothing); an ignored element's one-hot is class 0."""
    check_floating("input", input)
    # Half-precision logits (autocast) are upcast: the squared residuals of a confident
    # network are far below bf16's resolution around 1.
    if input.dtype in (torch.float16, torch.bfloat16):
        input = input.float()
    if not isinstance(target, Tensor) or target.is_floating_point():
        return difference(input, target, activation, validate_args), None
    # _reduce() drops the ignored elements' losses, and _without_ignored() their residuals where
    # the smoothing would spread them.
    return difference(input, target, activation, validate_args, ignore_index), target != ignore_index


def _without_ignored(diff: Tensor, keep: Tensor | None) -> Tensor:
    """``diff`` with a residual of 0 at the ignored elements, for an operator that mixes the
    elements of a sample's non-class dims (dense input). On (N, M) input a sample is smoothed on
    its own, and _reduce() dropping its loss leaves it out whole: no pass over (N, M) is needed."""
    if keep is None or diff.ndim == 2:
        return diff
    return torch.where(keep.unsqueeze(1), diff, 0.0)


def _reduce(g: Tensor, keep: Tensor | None, reduction: str) -> Tensor:
    """Reduce the per-element losses ``g``: an ignored element gives 0 and is left out of the mean.

    An empty batch gives torch's results: the mean of nothing is nan (0 / 0), the sum 0.
    """
    if keep is not None:
        g = torch.where(keep, g, 0.0)
    if reduction == "none":
        return g
    if reduction == "sum":
        return g.sum()
    return g.mean() if keep is None else g.sum() / keep.sum()


def _resolve_operator(operator: str, diff: Tensor, tau: float) -> str:
    """The operator that ``"auto"`` takes for this input, with the checks of each operator's input."""
    if operator == "auto":
        operator = "global" if diff.ndim == 2 else "grid"
        if operator == "global":
            _check_tau_is_read(tau, f"operator='auto' on input of shape {tuple(diff.shape)}")
    if operator == "grid" and not 1 <= diff.ndim - 2 <= 3:
        raise ValueError(
            f"operator='grid' needs input of shape (N, C, *spatial) with 1 to 3 spatial dims; "
            f"got shape {tuple(diff.shape)}"
        )
    if operator == "global":  # the elements of a sample, from its shape: an empty batch has them too
        check_classes(math.prod(diff.shape[1:]), "input", tuple(diff.shape), TWO_LOGITS)
    return operator


def _smoothed_squares(
    diff: Tensor, kappa_map: DiffusivityMap, scale: float | Tensor, operator: str, tau: float
) -> tuple[Tensor, Tensor]:
    """Per element of the non-class dims, ``||r||^2`` over dim 1 of the smoothed residual
    ``r = W |diff|``, and kappa (detached, shaped like ``diff``).

    kappa is computed from the detached residual and held constant in back-propagation
    (paper Sec. 5): the gradient is that of ``||W d||^2`` with W fixed at its value.
    """
    # |diff| once: with its gradient where the smoothing is written out, without where the
    # fused global node takes it as a constant input.
    fused = operator == "global" and diff.ndim == 2
    d = diff.detach().abs() if fused else diff.abs()
    kappa = kappa_map.kappa(d.detach(), scale)  # a number for the global scheme at a number scale
    if fused:
        g = global_smoothed_norm(diff, d, kappa)
    elif operator == "global":  # the C x spatial elements of a sample as one vector
        flat = d.flatten(1)
        k = kappa.flatten(1) if isinstance(kappa, Tensor) and kappa.ndim else kappa
        g = _smooth(flat, k).view_as(d).square().sum(dim=1)
    else:
        ndim = diff.ndim - 2
        # The fewest stable Euler steps for the run's largest kappa (DiffusivityMap.peak), with
        # no read-back of kappa: one bound for the whole run, so that a compiled graph never changes.
        steps = stable_steps(tau, kappa_map.peak, ndim)
        g = explicit_euler(d, kappa, tau / steps, steps, ndim).square().sum(dim=1)
    if not isinstance(kappa, Tensor):  # the global scheme's one value, at a number scale
        kappa = torch.tensor(kappa, dtype=diff.dtype, device=diff.device)
    return g, kappa.detach().expand_as(diff)
