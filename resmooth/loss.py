"""The residual-smoothing loss (Eq. 7, 11; Algorithm 1) and its squared-error baseline, as criteria.

Equation numbers are those of Cho, Kwon and Hong (2019), "Adaptive Regularization via Residual
Smoothing in Deep Learning Optimization", arXiv:1907.09750.

Per sample, ``g_i = ||r_i||^2`` with ``r_i`` the residual ``d_i = |phi(z_i) - y_i|`` smoothed by
a heat step whose diffusivity is ``kappa_i`` (Eq. 19); the batch loss is the mean of ``g_i``.
With kappa = 0 this is the per-sample sum of squared errors averaged over the batch,
``F.mse_loss(phi(z), y, reduction="sum") / N``, which :class:`SquaredErrorLoss` computes, so
that a learning rate means the same for both (the book's appendix, Conventions and notation:
the loss). The functional forms are in :mod:`resmooth.functional`.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_int, check_real
from .diffusivity import DEFAULTS, IGNORED, DiffusivityMap
from .functional import (
    DIFFUSION_TIME,
    IGNORE_INDEX,
    OPERATORS,
    REDUCTIONS,
    as_progress,
    as_scale,
    check_tau_is_read,
    masked_difference,
    reduce,
    resolve_operator,
    smoothed_squares,
    without_ignored,
    squared_error_loss,
)
from .residual import ACTIVATIONS

__all__ = ["DIFFUSION_TIME", "ResidualSmoothingLoss", "SquaredErrorLoss", "squared_error_loss"]

# What the criteria say about their targets and reductions, once for both docstrings.
_TARGETS = """\
    Targets (the ``target`` of :meth:`forward`):

    - class indices of an integer dtype, shaped like the input without dim 1 ((N,) for (N, M)
      input, ``(N, *spatial)`` for ``(N, C, *spatial)`` input), one-hot along dim 1; an element
      whose index is ``ignore_index`` contributes 0 and is left out of the mean;
    - floats shaped like the input (soft labels, images), used as they are; ``ignore_index`` does
      not apply to them (as in ``F.cross_entropy``).

    A float target of shape (N,) is refused with a TypeError: class indices must be integers.

    Reductions follow torch's losses: ``"none"`` gives the loss of each element of the non-class
    dims, the squared norm over dim 1 ((N,) for (N, M) input, ``(N, *spatial)`` for dense
    input); ``"mean"`` is the mean of what ``"none"`` gives over the elements not ignored, and
    ``"sum"`` its sum. On (N, M) input ``"mean"`` is the paper's batch loss (Eq. 7); on a dense
    output it averages over the pixels too, so a trainer that wants the per-image sum averaged
    over images (the dense study's objective) takes ``"none"`` and reduces it itself.
"""


class _ResidualLoss(nn.Module):
    """What both losses share: the activation, the residual (Eq. 9), the ignored index and the reduction."""

    def __init__(self, activation: str, reduction: str, ignore_index: int, validate_args: bool) -> None:
        super().__init__()
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.ignore_index = check_int("ignore_index", ignore_index)
        if not isinstance(validate_args, bool):
            raise TypeError(f"validate_args must be True or False; got {type(validate_args).__name__}")
        self.validate_args = validate_args

    def _difference(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor | None]:
        return masked_difference(input, target, self.activation, self.ignore_index, self.validate_args)

    def extra_repr(self) -> str:
        ignore = "" if self.ignore_index == IGNORE_INDEX else f", ignore_index={self.ignore_index}"
        return f"activation={self.activation!r}, reduction={self.reduction!r}{ignore}, validate_args={self.validate_args}"


class SquaredErrorLoss(_ResidualLoss):
    __doc__ = """The squared-error baseline: ``||phi(z_i) - y_i||^2`` summed over dim 1, averaged over
    the rest (the book's appendix, Conventions and notation: the loss).

    The residual-smoothing loss with zero diffusivity; :meth:`step` does nothing, so that the two
    criteria swap in a training loop as they are.

""" + _TARGETS + """
    Args:
        activation: ``"softmax"`` (over dim 1), ``"sigmoid"`` or ``"identity"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (above).
        ignore_index: the class index whose elements are left out (class-index targets only).
        validate_args: check that class indices lie in [0, M - 1], which reads back from the
            device; False skips it. Skipped by itself while torch.compile traces.
    """

    def __init__(
        self,
        activation: str = "softmax",
        reduction: str = "mean",
        *,
        ignore_index: int = IGNORE_INDEX,
        validate_args: bool = True,
    ) -> None:
        super().__init__(activation, reduction, ignore_index, validate_args)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """The loss of raw network outputs ``input`` (logits), (N, M) or ``(N, C, *spatial)``,
        against ``target`` (class indices or floats shaped like ``input``), reduced as
        ``reduction`` says."""
        diff, keep = self._difference(input, target)
        # |x|^2 = x^2: the magnitude of Eq. 9 needs no computing here.
        return reduce(diff.square().sum(dim=1), keep, self.reduction)

    def step(self) -> None:
        """Nothing: the squared error has no schedule. Here so that a training loop steps either criterion."""


class ResidualSmoothingLoss(_ResidualLoss):
    __doc__ = """The squared norm of the residual after an adaptive heat diffusion (Algorithm 1 of
    Cho, Kwon and Hong, 2019, arXiv:1907.09750).

    A drop-in criterion with its own progress schedule, like a learning-rate scheduler: build it
    with ``total_steps=N``, the run's optimizer steps, call :meth:`step` once after each
    ``optimizer.step()``, and call ``loss = criterion(logits, target)``; the progress is then
    ``t = steps / total_steps`` (Sec. 4.3, Eq. 13/14). With gradient accumulation the rule is
    the same: ``total_steps`` counts optimizer steps, not micro-batches, and :meth:`step` runs
    once per optimizer step, so the micro-batches of one step share one progress. The step
    count and ``total_steps`` are in the criterion's ``state_dict()``, so checkpoints carry the
    schedule; loading a schedule of another length is refused. An explicit
    ``criterion(logits, target, progress=t)`` takes precedence over the schedule.

    The criterion has no parameters and only per-sample statistics (the normalization of Eq. 18,
    kappa and the smoothing all run within each sample): under DistributedDataParallel each rank's
    loss is that of its own samples and needs no communication.

    The operator depends on the input's shape (``operator="auto"``):

    - (N, M) class outputs: the global operator of Eq. 22, one heat step on the complete graph
      over the M classes (O(M) per sample). It needs M >= 2: a binary task outputs two logits.
    - ``(N, C, *spatial)`` dense outputs, 1 to 3 spatial dims: explicit Euler steps of Eq. 8 with
      the finite-difference Laplacian over the spatial dims (Neumann boundary), to diffusion
      time ``tau``, in the fewest steps that are stable for the largest diffusivity of the run
      (``s(t) <= 1`` peaks at 1; ``s`` for the local scheme), a number fixed at construction.
      Softmax runs over dim 1 (the channels).

    ``operator="global"`` on a dense output treats its C x spatial elements as one vector.

""" + _TARGETS + """
    On (N, M) input an ignored sample is left out whole. On a dense output an ignored element's
    residual is taken as 0, as if it were predicted exactly: it still counts in its sample's
    normalization (Eq. 18), and under the grid operator the heat flow runs through it, so that
    its neighbours' residuals spread into it (lowering their own smoothed residuals near a void
    region) while its own loss is dropped.

    kappa is computed from the detached residual and held constant in back-propagation (paper
    Sec. 5): the gradient is that of ``||W d||^2`` with the smoothing layer W fixed at its value,
    not the derivative of the whole map, so ``torch.autograd.gradcheck`` of the full or local
    scheme fails by design (finite differences also move kappa). To check the gradient, hold
    kappa fixed: the global scheme's kappa does not depend on the input, so gradcheck passes
    there; for the others compare with autograd through the dense layer of Eq. 22,
    ``(smoothing_matrix(criterion.last_kappa) @ d.unsqueeze(-1)).square().sum() / N`` with
    ``d = resmooth.functional.residual(z, y)`` (the tests do both).

    A hyperparameter that the scheme or the operator does not read must keep its default:
    :class:`~resmooth.diffusivity.DiffusivityMap` refuses the scheme's (``alpha`` under
    ``"global"``, ``s`` outside ``"local"``, the annealing's under ``"local"``), and a ``tau``
    other than 1 is refused with ``operator="global"`` at construction, and with
    ``operator="auto"`` at the first (N, M) input, which takes the global operator.

    Under ``torch.compile(criterion, fullgraph=True)`` the checks that read values back from
    the device are skipped by themselves (as ``validate_args=False`` does); the schedule or a
    tensor ``progress`` keeps one graph over the run, and a number ``progress`` is turned into
    a tensor (one recompilation, at the second value).

    Args:
        scheme, distribution, mu, b, alpha, s: the diffusivity map's hyperparameters
            (:class:`~resmooth.diffusivity.DiffusivityMap`: the scheme, Eq. 15, 17, 19; the
            annealing density and its peak and scale, Eq. 13, 14; the sigmoid's steepness, and
            the local scheme's constant scale, Eq. 10, 17). ``mu`` outside [0, 1] puts the
            peak outside training: the scale then only rises (``mu > 1``) or only falls (``mu < 0``).
        activation: ``"softmax"``, ``"sigmoid"`` or ``"identity"``.
        operator: ``"auto"``, ``"global"`` or ``"grid"``.
        tau: the grid operator's diffusion time, >= 0 (the global operator is the paper's single
            smoothing layer, Eq. 22).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (above).
        total_steps: the optimizer steps of the run, >= 1, for the progress schedule; None: every
            call passes ``progress`` (schemes ``"global"`` and ``"full"``).
        ignore_index: the class index whose elements are left out (class-index targets only).
        validate_args: check that class indices lie in [0, M - 1] and a tensor ``progress`` in
            [0, 1]; both checks read back from the device (a host sync per call). False skips
            them (for CUDA graphs); torch.compile skips them by itself.

    Attributes:
        diffusivity: the :class:`~resmooth.diffusivity.DiffusivityMap` of the hyperparameters.
        steps_done: the optimizer steps counted by :meth:`step` (a 0-dim int64 buffer).
        last_kappa: the diffusivity of the last call, detached, a tensor shaped like its input.
        mean_kappa: its mean, as a float (for logging).
        last_scale: the scale of the last call, ``s(t)`` (``s`` for the local scheme), a 0-dim
            tensor (float64, unless a tensor ``progress`` of another dtype was passed).
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
        ignore_index: int = IGNORE_INDEX,
        validate_args: bool = True,
    ) -> None:
        super().__init__(activation, reduction, ignore_index, validate_args)
        self.diffusivity = DiffusivityMap(scheme, distribution, mu, b, alpha, s)
        self.operator = check_choice("operator", operator, OPERATORS)
        self.tau = check_real("tau", tau, minimum=0.0)
        if operator == "global":
            check_tau_is_read(self.tau, "operator='global'")
        self.total_steps = None if total_steps is None else check_int("total_steps", total_steps, 1)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._warned_past_end = False
        self.last_scale: Tensor | None = None
        self.last_kappa: Tensor | None = None

    def step(self) -> None:
        """Advance the progress schedule by one optimizer step (call it after ``optimizer.step()``,
        once per optimizer step, whatever the number of micro-batches that the step accumulates).

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

    @property
    def mean_kappa(self) -> float | None:
        # Computed when read, not in every step: turning it into a float waits for the device.
        return None if self.last_kappa is None else float(self.last_kappa.mean())

    def scale(self, t: float | Tensor | None = None) -> Tensor:
        """The diffusivity's scale ``s(t)`` (Eq. 13/14) at progress ``t`` (None: the schedule's),
        or the constant ``s`` of the local scheme (Eq. 17), as a 0-dim tensor."""
        if t is not None:
            t = as_progress(t, self.validate_args)
        elif self.diffusivity.annealed:
            t = self.progress()
        return as_scale(self.diffusivity, t)

    def forward(self, input: Tensor, target: Tensor, progress: float | Tensor | None = None) -> Tensor:
        """The loss of raw network outputs ``input`` (logits), (N, M) or ``(N, C, *spatial)``,
        against ``target`` (class indices or floats shaped like ``input``), reduced as
        ``reduction`` says.

        ``progress``: the training progress in [0, 1] (a number or a one-element tensor) for this
        call; None takes the schedule's (:meth:`progress`). The local scheme reads none.
        """
        scale = self.scale(progress)
        diff, keep = self._difference(input, target)
        operator = resolve_operator(self.operator, diff, self.tau)
        g, kappa = smoothed_squares(without_ignored(diff, keep), self.diffusivity, scale, operator, self.tau)
        self.last_scale = scale
        self.last_kappa = kappa
        return reduce(g, keep, self.reduction)

    # The schedule's length is saved beside steps_done (as torch's OneCycleLR saves its
    # total_steps), as a tensor so that any checkpoint format holds it: a count of steps means
    # nothing without the length it counts towards.
    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.total_steps is not None:
            destination[prefix + "total_steps"] = torch.tensor(self.total_steps)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        key, steps_key = prefix + "total_steps", prefix + "steps_done"
        saved = state_dict.get(key)
        error = None
        if saved is not None and int(saved) != self.total_steps:
            steps = int(state_dict[steps_key]) if steps_key in state_dict else 0
            if self.total_steps is None:
                why = (f"scheme={self.diffusivity.scheme!r} reads no progress, and " if not self.diffusivity.annealed
                       else "")
                error = (f"the state is a schedule of total_steps={int(saved)}, but {why}this criterion has no schedule "
                         f"(total_steps=None); construct it with total_steps={int(saved)} to resume that schedule")
            else:
                error = (f"the state is a schedule of total_steps={int(saved)} at step {steps}, but this criterion has "
                         f"total_steps={self.total_steps}, which would put the progress at {min(steps, self.total_steps)}/"
                         f"{self.total_steps} instead of {min(steps, int(saved))}/{int(saved)}; construct it with "
                         f"total_steps={int(saved)}")
        elif saved is None and self.total_steps is None and steps_key in state_dict and int(state_dict[steps_key]):
            # A state saved before total_steps was (only steps_done): its length is unknown, and
            # accepted, unless there is no schedule to put its steps in.
            error = (f"the state has steps_done={int(state_dict[steps_key])} of a schedule, but this criterion has "
                     "none (total_steps=None); construct it with the run's total_steps")
        if error is not None:
            error_msgs.append(error)
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if key in unexpected_keys:
            unexpected_keys.remove(key)

    def extra_repr(self) -> str:
        # Only what the scheme and the operator read: the others are fixed at their defaults.
        ignored = IGNORED[self.diffusivity.scheme]
        fields = ", ".join(f"{name}={value!r}" for name, value in dataclasses.asdict(self.diffusivity).items()
                           if name not in ignored)
        tau = "" if self.operator == "global" else f", tau={self.tau}"
        return f"{fields}, operator={self.operator!r}{tau}, total_steps={self.total_steps}, " + super().extra_repr()
