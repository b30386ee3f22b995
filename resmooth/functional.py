"""The losses as functions, as :mod:`torch.nn.functional` is to :mod:`torch.nn`.

:func:`residual_smoothing_loss` is :class:`~resmooth.loss.ResidualSmoothingLoss` without the
progress schedule (the caller passes ``progress``); :func:`squared_error_loss` is
:class:`~resmooth.loss.SquaredErrorLoss`. The criteria call these functions' parts, so that the
two forms cannot drift apart. Equation numbers are those of Cho, Kwon and Hong (2019),
"Adaptive Regularization via Residual Smoothing in Deep Learning Optimization", arXiv:1907.09750.

Reductions follow torch's losses (``F.cross_entropy``, ``F.mse_loss``): ``"none"`` gives the
loss of each element of the non-class dims, the squared norm over dim 1 of the (smoothed)
residual: (N,) for (N, M) input, ``(N, *spatial)`` for ``(N, C, *spatial)`` input;
``"mean"`` is the mean of what ``"none"`` gives over the elements not ignored, ``"sum"`` its sum.
For (N, M) input ``"mean"`` is the paper's batch loss, the mean over samples of
``g_i = ||r_i||^2`` (Eq. 7); for a dense output it also averages over the spatial elements.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_choice, check_floating, check_int, check_progress, check_real, reads_back
from .diffusion import GlobalSmoothedNorm, explicit_euler, graph_laplacian, stable_steps
from .diffusivity import DEFAULTS, DiffusivityMap, diffusivity
from .residual import ACTIVATIONS, difference, residual

REDUCTIONS = ("mean", "sum", "none")
OPERATORS = ("auto", "global", "grid")
# The grid operator's diffusion time tau (Eq. 8); the global operator is the paper's single
# smoothing layer (Eq. 22) and has none.
DIFFUSION_TIME = 1.0
# torch's default for the class index whose elements a loss leaves out (F.cross_entropy).
IGNORE_INDEX = -100


def squared_error_loss(
    input: Tensor,
    target: Tensor,
    activation: str = "softmax",
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
    validate_args: bool = True,
) -> Tensor:
    """The squared-error baseline ``||phi(z) - y||^2`` over dim 1, per element of the other dims.

    See :class:`~resmooth.loss.SquaredErrorLoss` for the arguments; with ``reduction="mean"``
    on (N, M) input this is ``F.mse_loss(phi(z), y, reduction="sum") / N``.
    """
    check_choice("activation", activation, ACTIVATIONS)
    check_choice("reduction", reduction, REDUCTIONS)
    diff, keep = masked_difference(input, target, activation, ignore_index, validate_args)
    # |x|^2 = x^2: the magnitude of Eq. 9 needs no computing here.
    return reduce(diff.square().sum(dim=1), keep, reduction)


def residual_smoothing_loss(
    input: Tensor,
    target: Tensor,
    progress: float | Tensor | None,
    scheme: str = DEFAULTS.scheme,
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
) -> Tensor:
    """The residual-smoothing loss (Eq. 7, 11; Algorithm 1 of arXiv:1907.09750) at training
    progress ``progress``.

    See :class:`~resmooth.loss.ResidualSmoothingLoss` for the arguments; ``progress`` in [0, 1]
    (a number or a one-element tensor) is required by the ``"global"`` and ``"full"`` schemes,
    and the ``"local"`` scheme ignores it (pass None).
    """
    kappa_map = DiffusivityMap(scheme, distribution, mu, b, alpha, s)
    check_choice("activation", activation, ACTIVATIONS)
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("operator", operator, OPERATORS)
    tau = check_real("tau", tau, minimum=0.0)
    if progress is None and kappa_map.annealed:
        raise ValueError(f"progress (training progress in [0, 1]) is required by scheme={scheme!r}")
    scale = as_scale(kappa_map, None if progress is None else as_progress(progress, validate_args))
    diff, keep = masked_difference(input, target, activation, ignore_index, validate_args)
    g, _ = smoothed_squares(without_ignored(diff, keep), kappa_map, scale, resolve_operator(operator, diff, tau), tau)
    return reduce(g, keep, reduction)


def as_progress(t: float | Tensor, validate_args: bool = True) -> Tensor:
    """Training progress as a 0-dim tensor: a number becomes a float64 tensor (the schedule's
    dtype), so that a compiled graph takes it as an input instead of baking in its value.

    Checked eagerly; under torch.compile neither a number nor a tensor is checked (a number
    there may be symbolic, a tensor would be read back from the device, see
    :func:`~resmooth._checks.reads_back`).
    """
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(f"progress must be a single number in [0, 1]; got a tensor of shape {tuple(t.shape)}")
        return check_progress("progress", t.reshape(())) if validate_args else t.reshape(())
    if not torch.compiler.is_compiling():
        check_progress("progress", t)
    return torch.tensor(t, dtype=torch.float64)


def as_scale(kappa_map: DiffusivityMap, t: Tensor | None) -> Tensor:
    """The sigmoid's scale ``s(t)`` (Eq. 13/14), or the local scheme's constant ``s`` (Eq. 17),
    as a 0-dim tensor: one type whatever the scheme and the progress."""
    scale = kappa_map.scale(t)
    return scale if isinstance(scale, Tensor) else torch.tensor(scale, dtype=torch.float64)


def masked_difference(
    input: Tensor, target: Tensor, activation: str, ignore_index: int, validate_args: bool
) -> tuple[Tensor, Tensor | None]:
    """``phi(z) - y`` (the signed residual of Eq. 9) and the mask (N, *spatial) of the elements
    kept (None for a float target, which ignores nothing); an ignored element's one-hot is class 0."""
    check_int("ignore_index", ignore_index)
    check_floating("input", input)
    # Half-precision logits (autocast) are upcast: the squared residuals of a confident
    # network are far below bf16's resolution around 1.
    if input.dtype in (torch.float16, torch.bfloat16):
        input = input.float()
    if not isinstance(target, Tensor) or target.is_floating_point():
        return difference(input, target, activation, validate_args), None
    keep = target != ignore_index
    if target.numel() and reads_back(validate_args) and target.shape == input.shape[:1] + input.shape[2:]:
        num_classes = input.shape[1]
        if bool((keep & ((target < 0) | (target >= num_classes))).any()):
            raise ValueError(
                f"target holds class indices outside [0, {num_classes - 1}] (input has {num_classes} classes along "
                f"dim 1) that are not ignore_index={ignore_index}"
            )
    # The ignored elements take class 0 for the one-hot; reduce() drops their losses, and
    # without_ignored() their residuals where the smoothing would spread them. The one-hot
    # reads the target, not ~keep: under torch.compile, a one-hot that waits on the mask (a
    # loop of its own, over N) splits the sweep over each row into one loop nest per reduction.
    return difference(input, target.masked_fill(target == ignore_index, 0), activation, validate_args=False), keep


def without_ignored(diff: Tensor, keep: Tensor | None) -> Tensor:
    """``diff`` with a residual of 0 at the ignored elements, for an operator that mixes the
    elements of a sample's non-class dims (dense input). On (N, M) input a sample is smoothed on
    its own, and reduce() dropping its loss leaves it out whole: no pass over (N, M) is needed."""
    if keep is None or diff.ndim == 2:
        return diff
    return torch.where(keep.unsqueeze(1), diff, 0.0)


def reduce(g: Tensor, keep: Tensor | None, reduction: str) -> Tensor:
    """Reduce the per-element losses ``g``: an ignored element gives 0 and is left out of the mean."""
    if keep is not None:
        g = torch.where(keep, g, 0.0)
    if reduction == "none":
        return g
    if reduction == "sum":
        return g.sum()
    return g.mean() if keep is None else g.sum() / keep.sum()


def resolve_operator(operator: str, diff: Tensor, tau: float) -> str:
    """The operator that ``"auto"`` takes for this input, with the checks of each operator's input."""
    if operator == "auto":
        operator = "global" if diff.ndim == 2 else "grid"
        if operator == "global":
            check_tau_is_read(tau, f"operator='auto' on input of shape {tuple(diff.shape)}")
    if operator == "grid" and not 1 <= diff.ndim - 2 <= 3:
        raise ValueError(
            f"operator='grid' needs input of shape (N, C, *spatial) with 1 to 3 spatial dims; "
            f"got shape {tuple(diff.shape)}"
        )
    if operator == "global" and diff[0].numel() < 2:
        raise ValueError(
            f"the global operator smooths between the elements of a sample (Eq. 22 divides by M - 1) and needs "
            f"M >= 2 of them; got input of shape {tuple(diff.shape)}. For a binary task output two logits, (N, 2), "
            "with activation='softmax' (a sigmoid of their difference), or use SquaredErrorLoss"
        )
    return operator


def check_tau_is_read(tau: float, operator: str) -> None:
    if tau != DIFFUSION_TIME:
        raise ValueError(
            f"tau={tau!r} would be ignored: {operator} is the single smoothing layer of Eq. 22, with no "
            f"diffusion time; leave tau at its default {DIFFUSION_TIME!r}, or use operator='grid' on (N, C, *spatial) input"
        )


def smoothed_squares(
    diff: Tensor, kappa_map: DiffusivityMap, scale: Tensor, operator: str, tau: float
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
    kappa = kappa_map.kappa(d.detach(), scale)
    if fused:
        g = GlobalSmoothedNorm.apply(diff, d, kappa)
    elif operator == "global":  # the C x spatial elements of a sample as one vector
        flat = d.flatten(1)
        k = kappa.flatten(1) if kappa.ndim else kappa
        r = flat - k * graph_laplacian(flat) / (flat.shape[1] - 1)  # Eq. 22, O(M)
        g = r.view_as(d).square().sum(dim=1)
    else:
        ndim = diff.ndim - 2
        # The fewest stable Euler steps for the run's largest kappa (DiffusivityMap.peak), with
        # no read-back of kappa: one bound for the whole run, so that a compiled graph never changes.
        steps = stable_steps(tau, kappa_map.peak, ndim)
        g = explicit_euler(d, kappa, tau / steps, steps, ndim).square().sum(dim=1)
    return g, kappa.expand_as(diff)
