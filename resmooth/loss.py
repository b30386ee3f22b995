"""The residual-smoothing loss (Eq. 7, 11; Algorithm 1) and its squared-error baseline.

Per sample, ``g_i = ||r_i||^2`` with ``r_i`` the residual ``d_i = |phi(z_i) - y_i|`` smoothed by
a heat step whose diffusivity is ``kappa_i`` (Eq. 19); the batch loss is the mean of ``g_i``.
With kappa = 0 this is the per-sample sum of squared errors averaged over the batch,
``F.mse_loss(phi(z), y, reduction="sum") / N``, which :class:`SquaredErrorLoss` computes, so
that a learning rate means the same for both (the book's appendix, Conventions and notation:
the loss).
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_int, check_progress, check_real
from .diffusion import GlobalSmoothedNorm, _check_classes, explicit_euler, stable_steps
from .diffusivity import DEFAULTS, DiffusivityMap
from .residual import ACTIVATIONS, difference

REDUCTIONS = ("mean", "sum", "none")
OPERATORS = ("auto", "global", "grid")
# The grid operator's diffusion time tau (Eq. 8); the global operator is the paper's single
# smoothing layer (Eq. 22) and has none.
DIFFUSION_TIME = 1.0


class _ResidualLoss(nn.Module):
    """What both losses share: the activation, the residual (Eq. 9) and the reduction."""

    def __init__(self, activation: str, reduction: str, validate_args: bool) -> None:
        super().__init__()
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        if not isinstance(validate_args, bool):
            raise TypeError(f"validate_args must be True or False; got {type(validate_args).__name__}")
        self.validate_args = validate_args

    def _difference(self, input: Tensor, target: Tensor) -> Tensor:
        """``phi(z) - y``; the residual of Eq. 9 is its magnitude."""
        # Half-precision logits (autocast) are upcast: the squared residuals of a confident
        # network are far below bf16's resolution around 1.
        if isinstance(input, Tensor) and input.dtype in (torch.float16, torch.bfloat16):
            input = input.float()
        return difference(input, target, self.activation, self.validate_args)

    def _reduce(self, g: Tensor) -> Tensor:
        """Reduce the per-sample losses ``g_i`` (Eq. 7)."""
        if self.reduction == "mean":
            return g.mean()
        if self.reduction == "sum":
            return g.sum()
        return g

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}, reduction={self.reduction!r}, validate_args={self.validate_args}"


class SquaredErrorLoss(_ResidualLoss):
    """The squared-error baseline: ``mean_i ||phi(z_i) - y_i||^2`` (the book's
    appendix, Conventions and notation: the loss).

    Args:
        activation: ``"softmax"`` (over dim 1), ``"sigmoid"`` or ``"identity"``.
        reduction: ``"mean"`` over samples of the per-sample sum, ``"sum"``, or ``"none"`` (N,).
        validate_args: check that class indices lie in [0, M - 1], which reads back from the
            device; False skips it (for ``torch.compile(fullgraph=True)``).
    """

    def __init__(self, activation: str = "softmax", reduction: str = "mean", *, validate_args: bool = True) -> None:
        super().__init__(activation, reduction, validate_args)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        # |x|^2 = x^2: the magnitude of Eq. 9 needs no computing here.
        return self._reduce(self._difference(input, target).square().flatten(1).sum(dim=1))


def squared_error_loss(
    input: Tensor, target: Tensor, activation: str = "softmax", reduction: str = "mean"
) -> Tensor:
    """Functional form of :class:`SquaredErrorLoss`."""
    return SquaredErrorLoss(activation, reduction)(input, target)


class ResidualSmoothingLoss(_ResidualLoss):
    """The squared norm of the residual after an adaptive heat diffusion (Algorithm 1).

    A drop-in criterion with its own progress schedule, like a learning-rate scheduler: build it
    with ``total_steps=N`` (the run's optimizer steps), call :meth:`step` once after each
    ``optimizer.step()``, and call ``loss = criterion(logits, target)``; the progress is then
    ``t = steps / total_steps`` (Sec. 4.3, Eq. 13/14). The step count is a buffer, so the
    criterion's ``state_dict()`` carries it through checkpoints. An explicit
    ``criterion(logits, target, progress=t)`` takes precedence over the schedule.

    The criterion has no parameters and only per-sample statistics (the normalization of Eq. 18,
    kappa and the smoothing all run within each sample): under DistributedDataParallel each rank's
    loss is that of its own samples and needs no communication.

    The operator depends on the input's shape (``operator="auto"``):

    - (N, M) class outputs: the global operator of Eq. 22, one heat step on the complete graph
      over the M classes (O(M) per sample).
    - ``(N, C, *spatial)`` dense outputs, 1 to 3 spatial dims: explicit Euler steps of Eq. 8 with
      the finite-difference Laplacian over the spatial dims (Neumann boundary), to diffusion
      time ``tau``, in the fewest steps that are stable for the largest diffusivity of the run
      (``s(t) <= 1`` peaks at 1; ``s`` for the local scheme), a number fixed at construction.
      Softmax runs over dim 1 (the channels).

    ``operator="global"`` on a dense output treats its C x H x W elements as one vector.

    A hyperparameter that the scheme or the operator does not read must keep its default:
    :class:`~resmooth.diffusivity.DiffusivityMap` refuses the scheme's (``alpha`` under
    ``"global"``, ``s`` outside ``"local"``, the annealing's under ``"local"``), and a ``tau``
    other than 1 is refused with ``operator="global"`` at construction, and with
    ``operator="auto"`` at the first (N, M) input, which takes the global operator.

    Under ``torch.compile(criterion, fullgraph=True)``: use the schedule (or a tensor
    ``progress``), which keeps the graph the same over the run, and ``validate_args=False``,
    whose checks read values back from the device.

    Args:
        scheme, distribution, mu, b, alpha, s: the diffusivity map's hyperparameters
            (:class:`~resmooth.diffusivity.DiffusivityMap`: the scheme, Eq. 15, 17, 19; the
            annealing density and its peak and scale, Eq. 13, 14; the sigmoid's steepness, and
            the local scheme's constant scale, Eq. 10, 17).
        activation: ``"softmax"``, ``"sigmoid"`` or ``"identity"``.
        operator: ``"auto"``, ``"global"`` or ``"grid"``.
        tau: the grid operator's diffusion time, >= 0 (the global operator is the paper's single
            smoothing layer, Eq. 22).
        reduction: ``"mean"`` over samples of ``g_i``, ``"sum"``, or ``"none"`` (N,).
        total_steps: the optimizer steps of the run, >= 1, for the progress schedule; None: every
            call passes ``progress`` (schemes ``"global"`` and ``"full"``).
        validate_args: check that class indices lie in [0, M - 1] and a tensor ``progress`` in
            [0, 1]; both checks read back from the device (a host sync per call). False skips
            them, for ``torch.compile(fullgraph=True)`` and CUDA graphs.

    Attributes:
        diffusivity: the :class:`~resmooth.diffusivity.DiffusivityMap` of the hyperparameters.
        steps_done: the optimizer steps counted by :meth:`step` (a 0-dim int64 buffer).
        last_kappa: the diffusivity of the last call, detached (a tensor, or a number for the
            global scheme at a number ``progress``, whose kappa is the same everywhere).
        mean_kappa: its mean, as a float (for logging).
        last_scale: the annealing scale ``s(t)`` of the last call (``s`` for the local scheme):
            a 0-dim float64 tensor from the schedule or a tensor ``progress``, else a number.
    """

    def __init__(
        self,
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
        *,
        total_steps: int | None = None,
        validate_args: bool = True,
    ) -> None:
        super().__init__(activation, reduction, validate_args)
        self.diffusivity = DiffusivityMap(scheme, distribution, mu, b, alpha, s)
        self.operator = check_choice("operator", operator, OPERATORS)
        self.tau = check_real("tau", tau, minimum=0.0)
        if operator == "global":
            self._check_tau_is_read("operator='global'")
        self.total_steps = None if total_steps is None else check_int("total_steps", total_steps, 1)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._warned_past_end = False
        self.last_scale: Tensor | float | None = None
        self.last_kappa: Tensor | float | None = None

    def step(self) -> None:
        """Advance the progress schedule by one optimizer step (call it after ``optimizer.step()``).

        Past ``total_steps`` the progress stays at 1 (with one warning): the count reads back from
        the buffer's device, free on the CPU, where the criterion stays unless moved.
        """
        if self.total_steps is None:
            raise ValueError("step() needs the schedule's length: construct ResidualSmoothingLoss(..., total_steps=N)")
        self.steps_done.add_(1)
        if not self._warned_past_end and int(self.steps_done) > self.total_steps:
            warnings.warn(
                f"step() was called more than total_steps={self.total_steps} times; the progress stays at 1.0",
                stacklevel=2,
            )
            self._warned_past_end = True

    def progress(self) -> Tensor:
        """The schedule's progress ``min(steps_done, total_steps) / total_steps``, a 0-dim float64 tensor."""
        if self.total_steps is None:
            raise ValueError(
                f"progress is required by scheme={self.diffusivity.scheme!r}: pass forward(..., progress=t) with t in [0, 1], "
                "or construct with total_steps=N and call step() once per optimizer step"
            )
        # float64, as the quotient of two integers in Python: the trainers' progress exactly.
        return self.steps_done.clamp(max=self.total_steps).to(torch.float64) / self.total_steps

    def _check_progress(self, t: float | Tensor) -> float | Tensor:
        if isinstance(t, Tensor):
            if t.numel() != 1:
                raise ValueError(f"progress must be a single number in [0, 1]; got a tensor of shape {tuple(t.shape)}")
            return check_progress("progress", t) if self.validate_args else t.reshape(())
        return float(check_progress("progress", t))

    @property
    def mean_kappa(self) -> float | None:
        # Computed when read, not in every step: turning it into a float waits for the device.
        kappa = self.last_kappa
        return float(kappa.mean()) if isinstance(kappa, Tensor) else kappa

    def scale(self, t: float | Tensor | None = None) -> float | Tensor:
        """The diffusivity's scale ``s(t)`` at progress ``t`` (None: the schedule's), or the constant ``s`` (local)."""
        if t is not None:
            t = self._check_progress(t)
        elif self.diffusivity.annealed:
            t = self.progress()
        return self.diffusivity.scale(t)

    def _check_tau_is_read(self, operator: str) -> None:
        if self.tau != DIFFUSION_TIME:
            raise ValueError(
                f"tau={self.tau!r} would be ignored: {operator} is the single smoothing layer of Eq. 22, with no "
                f"diffusion time; leave tau at its default {DIFFUSION_TIME!r}, or use operator='grid' on (N, C, *spatial) input"
            )

    def forward(self, input: Tensor, target: Tensor, progress: float | Tensor | None = None) -> Tensor:
        scale = self.scale(progress)
        diff = self._difference(input, target)
        operator = self.operator
        if operator == "auto":
            operator = "global" if diff.ndim == 2 else "grid"
            if operator == "global":
                self._check_tau_is_read(f"operator='auto' on input of shape {tuple(diff.shape)}")
        if operator == "grid" and not 1 <= diff.ndim - 2 <= 3:
            raise ValueError(
                f"operator='grid' needs input of shape (N, C, *spatial) with 1 to 3 spatial dims; "
                f"got shape {tuple(diff.shape)}"
            )
        # |diff| once: with its gradient where the grid steps use it, without where the fused
        # global node takes it as a constant input.
        d = diff.abs() if operator == "grid" else diff.detach().abs()
        kappa = self.diffusivity.kappa(d.detach(), scale)
        self.last_scale = scale
        self.last_kappa = kappa
        if operator == "global":
            _check_classes(diff.flatten(1), "input")
            flat = kappa.flatten(1) if isinstance(kappa, Tensor) and kappa.ndim else kappa
            g = GlobalSmoothedNorm.apply(diff.flatten(1), d.flatten(1), flat)
        else:
            steps = self._grid_steps(diff.ndim - 2)
            r = explicit_euler(d, kappa, self.tau / steps, steps, diff.ndim - 2)
            g = r.square().flatten(1).sum(dim=1)
        return self._reduce(g)

    def _grid_steps(self, ndim: int) -> int:
        """The fewest stable Euler steps for the run's largest kappa, with no read-back of kappa.

        One bound for the whole run (:attr:`DiffusivityMap.peak <resmooth.diffusivity.DiffusivityMap.peak>`),
        so that a compiled graph never changes.
        """
        return stable_steps(self.tau, self.diffusivity.peak, ndim)

    def extra_repr(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in dataclasses.asdict(self.diffusivity).items())
        return (f"{fields}, operator={self.operator!r}, tau={self.tau}, total_steps={self.total_steps}, "
                + super().extra_repr())
