"""The residual-smoothing loss (Eq. 7, 11; Algorithm 1) and its squared-error baseline, as criteria.

Equation numbers are those of Cho, Kwon and Hong (2019), "Adaptive Regularization via Residual
Smoothing in Deep Learning Optimization", arXiv:1907.09750.

Per sample, ``g_i = ||r_i||^2`` with ``r_i`` the residual ``d_i = |phi(z_i) - y_i|`` smoothed by
a heat step whose diffusivity is ``kappa_i`` (Eq. 19); the batch loss is the mean of ``g_i``.
With kappa = 0 this is the per-sample sum of squared errors averaged over the batch,
``F.mse_loss(phi(z), y, reduction="sum") / N``, which :class:`SquaredErrorLoss` computes, so
that a learning rate means the same for both (the book's appendix, Conventions and notation:
the loss). Each criterion's ``forward`` is one call into the pipeline of its function in
:mod:`resmooth.functional`, as ``torch.nn``'s losses call ``torch.nn.functional``, with the
hyperparameters checked once, at construction.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from ._checks import check_int, in_transform
from .diffusivity import DEFAULTS, IGNORED
from .functional import (
    DIFFUSION_TIME,
    IGNORE_INDEX,
    _as_tensor,
    _check_common,
    _check_smoothing,
    _residual_smoothing,
    _scale,
    squared_error_loss,
)

__all__ = ["DIFFUSION_TIME", "ResidualSmoothingLoss", "SquaredErrorLoss", "squared_error_loss"]

# What the criteria say about their targets, reductions and shapes, once for both docstrings.
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
    over images (the dense study's objective) takes ``"none"`` and reduces it itself. An empty
    batch gives what torch's losses give: nan (``"mean"``), 0 (``"sum"``), an empty tensor
    (``"none"``).
"""

_MSE = """\
    ``reduction="mean"`` on (N, M) input is **M times** ``nn.MSELoss()``: the squares are summed
    over the M classes and averaged over the N samples, as the paper's Algorithm 1 does, where
    ``MSELoss`` averages over all N M elements. Its gradient is M times larger, and the learning
    rate that suits it is that of ``MSELoss`` divided by M.
"""

_SHAPE = """\
    Shape:
        - Input: (N, M) class outputs, or ``(N, C, *)`` dense outputs, ``*`` 1 to 3 spatial dims.
        - Target: (N) or ``(N, *)`` class indices in [0, M - 1] (or ``ignore_index``), an integer
          dtype; or floats of the input's shape.{progress}
        - Output: a scalar; with ``reduction="none"``, (N) or ``(N, *)``.
"""

# The Args entries that both criteria share.
_ACTIVATION = """\
        activation (str, optional): the output activation phi, ``"softmax"`` (over dim 1),
            ``"sigmoid"`` or ``"identity"``. Default: ``"softmax"``, the paper's.
"""
_REDUCTION = """\
        reduction (str, optional): ``"mean"``, ``"sum"`` or ``"none"`` (above). Default:
            ``"mean"``, the paper's batch loss.
"""
_IGNORE_INDEX = """\
        ignore_index (int, optional): the class index whose elements are left out (class-index
            targets only). Default: -100, torch's.
"""
_VALIDATE_ARGS = """\
        validate_args (bool, optional): check that class indices lie in [0, M - 1]{progress},
            which reads back from the device (a host sync per call); False skips it. Skipped by
            itself while torch.compile traces and under torch.func transforms. Default: True.
"""


class _ResidualLoss(nn.Module):
    """What both losses share: the activation, the residual (Eq. 9), the ignored index and the reduction."""

    def __init__(self, activation: str, reduction: str, ignore_index: int, validate_args: bool) -> None:
        super().__init__()
        self.activation, self.reduction, self.ignore_index, self.validate_args = _check_common(
            activation, reduction, ignore_index, validate_args)

    def extra_repr(self) -> str:
        ignore = "" if self.ignore_index == IGNORE_INDEX else f", ignore_index={self.ignore_index}"
        checks = "" if self.validate_args else ", validate_args=False"
        return f"activation={self.activation!r}, reduction={self.reduction!r}{ignore}{checks}"


class SquaredErrorLoss(_ResidualLoss):
    __doc__ = """The squared-error baseline: per sample, the squared residual summed over the classes.

    For raw outputs ``z`` (logits) and the target ``y`` of a sample, with the output activation
    ``phi`` (the book's appendix, Conventions and notation: the loss)::

        g = ||phi(z) - y||^2        (summed over dim 1)

    This is :class:`ResidualSmoothingLoss` with zero diffusivity. It has the residual-smoothing
    criterion's loop interface, so that the two swap in a training loop as they are:
    :meth:`step` does nothing, and :meth:`forward` accepts and ignores ``progress``. The
    arguments after ``activation`` are keyword-only.

""" + _MSE + "\n" + _TARGETS + """
    Args:
""" + _ACTIVATION + _REDUCTION + _IGNORE_INDEX + _VALIDATE_ARGS.format(progress="") + "\n" + _SHAPE.format(progress="") + """
    Examples::

        >>> import torch
        >>> from resmooth import SquaredErrorLoss
        >>> criterion = SquaredErrorLoss()
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]], requires_grad=True)
        >>> target = torch.tensor([0, 2])
        >>> loss = criterion(logits, target)
        >>> loss.backward()
        >>> print(f"{loss:.4f}")
        0.0453
        >>> # M = 3 times MSELoss of the softmax against the one-hot target:
        >>> mse = torch.nn.MSELoss()(logits.softmax(1), torch.nn.functional.one_hot(target, 3).float())
        >>> print(f"{3 * mse:.4f}")
        0.0453
        >>> bool(criterion(logits, target, progress=0.5) == loss)  # progress is ignored
        True
    """

    def __init__(
        self,
        activation: str = "softmax",
        *,
        reduction: str = "mean",
        ignore_index: int = IGNORE_INDEX,
        validate_args: bool = True,
    ) -> None:
        super().__init__(activation, reduction, ignore_index, validate_args)

    def forward(self, input: Tensor, target: Tensor, progress: float | Tensor | None = None) -> Tensor:
        """The loss of raw network outputs ``input`` (logits), (N, M) or ``(N, C, *spatial)``,
        against ``target`` (class indices or floats shaped like ``input``), reduced as
        ``reduction`` says.

        ``progress`` is accepted and ignored (the squared error has no schedule), so that a loop
        written for :class:`ResidualSmoothingLoss` runs with this criterion as it is.
        """
        return squared_error_loss(input, target, self.activation, reduction=self.reduction,
                                  ignore_index=self.ignore_index, validate_args=self.validate_args)

    def step(self) -> None:
        """Nothing: the squared error has no schedule. Here so that a training loop steps either criterion."""


class ResidualSmoothingLoss(_ResidualLoss):
    __doc__ = """The squared norm of the residual after an adaptive heat diffusion (Algorithm 1 of
    Cho, Kwon and Hong, 2019, arXiv:1907.09750).

    For raw outputs ``z`` (logits, M classes) and the target ``y`` of a sample, at training
    progress ``t`` in [0, 1], the loss is (Eq. 7, 9, 22)::

        g     = ||W |phi(z) - y| ||^2      W = I - kappa (M I - 1 1^T) / (M - 1)
        kappa = s(t) sigmoid(alpha d~)     d~ = (d - mean(d)) / (std(d) + 1e-8),  d = |phi(z) - y|
        s(t)  = exp(-|t - mu| / b)         (Laplace, Eq. 14)
              = sech^2((t - mu) / (2 b))   (Logistic, Eq. 13)

    W is the paper's smoothing layer (Eq. 22), one explicit heat step on the complete graph over
    the classes; kappa the diffusivity (Eq. 10, 18, 19), one per class; ``s(t)`` the annealing
    scale, which peaks at 1 at ``t = mu``. The scheme picks kappa: ``"full"`` as above (Eq. 19),
    ``"global"`` with ``alpha = 0``, ``kappa = s(t) / 2`` (Eq. 15), ``"local"`` with the constant
    ``s`` in place of ``s(t)`` (Eq. 17). With kappa = 0 the loss is :class:`SquaredErrorLoss`.

""" + _MSE + """
    A drop-in criterion with its own progress schedule, like a learning-rate scheduler: build it
    with ``total_steps=N``, the run's optimizer steps, call :meth:`step` once after each
    ``optimizer.step()``, and call ``loss = criterion(logits, target)``; the progress is then
    ``t = steps / total_steps`` (Sec. 4.3, Eq. 13/14), and stays at 1 past the end. With
    gradient accumulation the rule is the same: ``total_steps`` counts optimizer steps, not
    micro-batches, and :meth:`step` runs once per optimizer step, so the micro-batches of one
    step share one progress. An explicit ``criterion(logits, target, progress=t)`` takes
    precedence over the schedule. Without ``total_steps`` there is no schedule and :meth:`step`
    does nothing (the local scheme reads no progress; the others then need ``progress=t``).

    The state dict holds the step count, ``total_steps`` and the hyperparameters that define the
    loss (:attr:`hyperparameters`: those that the scheme and the operator read), so that a
    checkpoint carries the schedule and says which loss it trained. Loading a state into a
    criterion of another ``total_steps`` or other hyperparameters is refused with a
    RuntimeError that names what differs; a state saved before the hyperparameters were (the
    step count and the length only) loads into any criterion with its schedule.

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
    there; for the others compare with autograd through the dense layer of Eq. 22, the
    reference :func:`~resmooth.diffusion.smoothing_matrix`:
    ``(smoothing_matrix(criterion.last_kappa) @ d.unsqueeze(-1)).square().sum() / N`` with
    ``d = resmooth.functional.residual(z, y)`` (the tests do both). The same holds for
    ``torch.func``: ``grad``, ``vmap`` (per-sample gradients), ``jacrev``, ``jacfwd`` and
    ``hessian`` work for every scheme, with kappa held constant; under them the value checks
    are skipped (a value cannot be read back under ``vmap``, and a ``progress`` outside [0, 1]
    is clamped to it), and :attr:`last_kappa` and :attr:`last_scale` are not recorded (a
    transform's tensors cannot leave it).

    A hyperparameter that the scheme or the operator does not read must keep its default:
    :class:`~resmooth.diffusivity.DiffusivityMap` refuses the scheme's (``alpha`` under
    ``"global"``, ``s`` outside ``"local"``, the annealing's under ``"local"``), and a ``tau``
    other than 1 is refused with ``operator="global"`` at construction, and with
    ``operator="auto"`` at the first (N, M) input, which takes the global operator.

    Under ``torch.compile(criterion, fullgraph=True)`` the checks that read values back from
    the device are skipped by themselves (as ``validate_args=False`` does); a ``progress``
    outside [0, 1] is then clamped to it, never used as it is. The schedule or a tensor
    ``progress`` keeps one graph over the run, and a number ``progress`` is turned into a tensor
    (one recompilation, at the second value). :meth:`step` compiles too (in a ``fullgraph``
    region with the model and the loss), without its warning past ``total_steps``.

    Args:
        scheme (str, optional): the diffusivity scheme, ``"global"`` (Eq. 15), ``"local"``
            (Eq. 17) or ``"full"`` (Eq. 19). The only argument that may be given by position:
            the others are keyword-only. Default: ``"full"``, the paper's method (its Table 3).
        distribution (str, optional): the annealing density of ``s(t)``, ``"laplace"`` (Eq. 14)
            or ``"logistic"`` (Eq. 13); the paper reports both. Default: ``"laplace"``.
        mu (float, optional): where ``s(t)`` peaks, as a fraction of training. Outside [0, 1]
            the peak lies outside the run: the scale then only rises (``mu > 1``) or only falls
            (``mu < 0``). Default: 0.75, the paper's (75% of the epochs).
        b (float, optional): the annealing density's scale, > 0, in units of training progress;
            larger is flatter. Default: 0.5. The paper's Table 3: 0.2 and 0.5 for Laplace, 0.25
            and 0.5 for Logistic (its Table 1 searches 0.1 to 0.9).
        alpha (float, optional): the steepness, >= 0, of the sigmoid of the normalized residual
            (Eq. 10; 0 makes kappa constant over the classes). Read by ``"local"`` and
            ``"full"``; ``"global"`` fixes 0. Default: 1, the paper's Table 3.
        s (float, optional): the constant scale, >= 0, of the local scheme (Eq. 17); the others
            take the annealing ``s(t)``. Default: 1.
""" + _ACTIVATION + """\
        operator (str, optional): ``"auto"`` (the global operator on (N, M) input, the grid
            operator on dense input), ``"global"`` (Eq. 22) or ``"grid"`` (Eq. 8). Default:
            ``"auto"``.
        tau (float, optional): the grid operator's diffusion time, >= 0. The global operator is
            the paper's single smoothing layer (Eq. 22) and reads none; the paper has no grid
            operator. Default: 1.
""" + _REDUCTION + """\
        total_steps (int, optional): the optimizer steps of the run, >= 1, for the progress
            schedule. Default: None, no schedule: every call passes ``progress`` (schemes
            ``"global"`` and ``"full"``).
""" + _IGNORE_INDEX + _VALIDATE_ARGS.format(
        progress=" and a tensor ``progress`` in [0, 1] (else it is clamped to [0, 1])") + """
    The numbers take a Python or NumPy number or a 0-d tensor (stored as a Python number).

    Attributes:
        diffusivity: the :class:`~resmooth.diffusivity.DiffusivityMap` of the hyperparameters.
        steps_done: the optimizer steps counted by :meth:`step` (a 0-dim int64 buffer).
        last_kappa: the diffusivity of the last call, detached, a tensor shaped like its input.
        mean_kappa: its mean, as a float (for logging).
        last_scale: the scale of the last call, ``s(t)`` (``s`` for the local scheme), a detached
            0-dim tensor (float64, unless a tensor ``progress`` of another dtype was passed).

""" + _SHAPE.format(progress="\n        - progress: a number or a one-element tensor in [0, 1], or None.") + """
    Examples::

        >>> import torch
        >>> from resmooth import ResidualSmoothingLoss
        >>> criterion = ResidualSmoothingLoss(total_steps=4)  # the full scheme, Laplace, b = 0.5
        >>> criterion
        ResidualSmoothingLoss(scheme='full', distribution='laplace', mu=0.75, b=0.5, alpha=1.0, operator='auto', total_steps=4, activation='softmax', reduction='mean')
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]], requires_grad=True)
        >>> target = torch.tensor([0, 2])
        >>> for step in range(4):  # a training loop
        ...     loss = criterion(logits, target)  # at t = step / total_steps
        ...     loss.backward()  # and optimizer.step()
        ...     criterion.step()  # once per optimizer step, after it
        ...     print(f"t = {step / 4:.2f}: s(t) = {criterion.last_scale:.4f}, loss {loss:.4f}")
        t = 0.00: s(t) = 0.2231, loss 0.0403
        t = 0.25: s(t) = 0.3679, loss 0.0374
        t = 0.50: s(t) = 0.6065, loss 0.0329
        t = 0.75: s(t) = 1.0000, loss 0.0268
        >>> print(f"{criterion(logits, target, progress=0.0):.4f}")  # an explicit progress
        0.0403
        >>> ResidualSmoothingLoss(distribution="logistic", b=0.25)  # a setting of the paper's Table 3
        ResidualSmoothingLoss(scheme='full', distribution='logistic', mu=0.75, b=0.25, alpha=1.0, operator='auto', activation='softmax', reduction='mean')
    """

    steps_done: Tensor  # a buffer (register_buffer), typed for the checker

    def __init__(
        self,
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
        total_steps: int | None = None,
        ignore_index: int = IGNORE_INDEX,
        validate_args: bool = True,
    ) -> None:
        super().__init__(activation, reduction, ignore_index, validate_args)
        self.diffusivity, self.operator, self.tau = _check_smoothing(scheme, distribution, mu, b, alpha, s, operator,
                                                                     tau)
        self.total_steps = None if total_steps is None else check_int("total_steps", total_steps, 1)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._warned_past_end = False
        self._last_scale: float | Tensor | None = None
        self.last_kappa: Tensor | None = None

    @property
    def hyperparameters(self) -> dict[str, str | float]:
        """What defines the loss, by name: the scheme and the map's hyperparameters that it reads,
        the activation, the operator, and ``tau`` unless the operator is the global one, which
        reads none. What the state dict carries, and what a loaded state must match."""
        kappa_map = self.diffusivity
        read: dict[str, str | float] = {name: getattr(kappa_map, name) for name in _MAP_FIELDS
                                        if name not in IGNORED[kappa_map.scheme]}
        read.update(activation=self.activation, operator=self.operator)
        if self.operator != "global":
            read["tau"] = self.tau
        return read

    def step(self) -> None:
        """Advance the progress schedule by one optimizer step (call it after ``optimizer.step()``,
        once per optimizer step, whatever the number of micro-batches that the step accumulates).

        Without ``total_steps`` there is no schedule, and it does nothing. Past ``total_steps``
        the progress stays at 1, with one warning; the warning reads the count back from the
        buffer's device (free on the CPU, where the criterion stays unless moved), and is not
        given under torch.compile, where a read-back would break the graph.
        """
        if self.total_steps is None:
            return
        self.steps_done.add_(1)
        if torch.compiler.is_compiling() or self._warned_past_end:
            return
        if int(self.steps_done) > self.total_steps:
            warnings.warn(
                f"step() was called more than total_steps={self.total_steps} times; the progress stays at 1.0",
                stacklevel=2,
            )
            self._warned_past_end = True

    def progress(self) -> Tensor:
        """The schedule's progress ``min(steps_done, total_steps) / total_steps``, a 0-dim float64 tensor."""
        if self.total_steps is None:
            raise ValueError("this criterion has no progress schedule (total_steps=None): construct it with "
                             "total_steps=N, the run's optimizer steps, and call step() once per optimizer step")
        # float64, as the quotient of two integers in Python: the trainers' progress exactly.
        return self.steps_done.clamp(max=self.total_steps).to(torch.float64) / self.total_steps

    @property
    def last_scale(self) -> Tensor | None:
        # Made a tensor when read, not in every step: an explicit number progress gives a number scale.
        return None if self._last_scale is None else _as_tensor(self._last_scale)

    @property
    def mean_kappa(self) -> float | None:
        # Computed when read, not in every step: turning it into a float waits for the device.
        return None if self.last_kappa is None else float(self.last_kappa.mean())

    def scale(self, t: float | Tensor | None = None) -> Tensor:
        """The diffusivity's scale ``s(t)`` (Eq. 13/14) at progress ``t`` (None: the schedule's),
        or the constant ``s`` of the local scheme (Eq. 17), as a 0-dim tensor."""
        return _as_tensor(self._scale_at(t))

    def _scale_at(self, t: float | Tensor | None) -> float | Tensor:
        """The scale at the progress ``t``, checked, or at the schedule's (None), which needs no check."""
        if t is None and self.diffusivity.annealed and self.total_steps is not None:
            return self.diffusivity.scale(self.progress())
        return _scale(self.diffusivity, t, self.validate_args)

    def forward(self, input: Tensor, target: Tensor, progress: float | Tensor | None = None) -> Tensor:
        """The loss of raw network outputs ``input`` (logits), (N, M) or ``(N, C, *spatial)``,
        against ``target`` (class indices or floats shaped like ``input``), reduced as
        ``reduction`` says.

        ``progress``: the training progress in [0, 1] (a number or a one-element tensor) for this
        call; None takes the schedule's (:meth:`progress`). The local scheme reads none.
        """
        scale = self._scale_at(progress)
        loss, kappa = _residual_smoothing(input, target, scale, self.diffusivity, self.activation, self.operator,
                                          self.tau, self.reduction, self.ignore_index, self.validate_args)
        if not in_transform():
            self._last_scale, self.last_kappa = scale.detach() if isinstance(scale, Tensor) else scale, kappa
        return loss

    # The schedule's length and the loss's hyperparameters are saved beside steps_done (as
    # torch's OneCycleLR saves its total_steps), as tensors so that any checkpoint format holds
    # them (a string as its UTF-8 bytes): a count of steps means nothing without the length it
    # counts towards, nor a checkpoint without the loss that it trained.
    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.total_steps is not None:
            destination[prefix + "total_steps"] = torch.tensor(self.total_steps)
        for name, value in self.hyperparameters.items():
            destination[prefix + name] = _encode(value)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        errors = [error for error in (self._other_loss(state_dict, prefix), self._other_schedule(state_dict, prefix))
                  if error is not None]
        if errors:
            error_msgs.extend(errors)
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        for name in ("total_steps", *_DEFINING):
            if prefix + name in unexpected_keys:
                unexpected_keys.remove(prefix + name)

    def _other_loss(self, state_dict: dict[str, Any], prefix: str) -> str | None:
        """Why a state of other hyperparameters cannot load, naming each that differs; None if it can.

        A state that names none of them (saved before they were) is taken as this loss's.
        """
        saved = {name: _decode(state_dict[prefix + name]) for name in _DEFINING if prefix + name in state_dict}
        if not saved:
            return None
        own = self.hyperparameters
        differ = [name for name in _DEFINING if saved.get(name) != own.get(name)]
        if not differ:
            return None

        def said(values: dict[str, str | float], name: str) -> str:
            return repr(values[name]) if name in values else "not read"

        return ("the state is of another loss: " + "; ".join(
            f"{name} {said(saved, name)} in the state, {said(own, name)} here" for name in differ)
            + "; construct the criterion with the state's hyperparameters to resume it")

    def _other_schedule(self, state_dict: dict[str, Any], prefix: str) -> str | None:
        """Why a state of another schedule cannot load; None if it can."""
        key, steps_key = prefix + "total_steps", prefix + "steps_done"
        saved = state_dict.get(key)
        if saved is not None and int(saved) != self.total_steps:
            steps = int(state_dict[steps_key]) if steps_key in state_dict else 0
            if self.total_steps is None:
                why = (f"scheme={self.diffusivity.scheme!r} reads no progress, and " if not self.diffusivity.annealed
                       else "")
                return (f"the state is a schedule of total_steps={int(saved)}, but {why}this criterion has no schedule "
                        f"(total_steps=None); construct it with total_steps={int(saved)} to resume that schedule")
            return (f"the state is a schedule of total_steps={int(saved)} at step {steps}, but this criterion has "
                    f"total_steps={self.total_steps}, which would put the progress at {min(steps, self.total_steps)}/"
                    f"{self.total_steps} instead of {min(steps, int(saved))}/{int(saved)}; construct it with "
                    f"total_steps={int(saved)}")
        if saved is None and self.total_steps is None and steps_key in state_dict and int(state_dict[steps_key]):
            # A state saved before total_steps was (only steps_done): its length is unknown, and
            # accepted, unless there is no schedule to put its steps in.
            return (f"the state has steps_done={int(state_dict[steps_key])} of a schedule, but this criterion has "
                    "none (total_steps=None); construct it with the run's total_steps")
        return None

    def extra_repr(self) -> str:
        # What the loss uses: the scheme's hyperparameters, the operator, and tau where it is read
        # (the grid operator; under "auto" its default goes unsaid, as (N, M) input reads none).
        read = self.hyperparameters
        if self.operator == "auto" and self.tau == DIFFUSION_TIME:
            del read["tau"]
        fields = ", ".join(f"{name}={value!r}" for name, value in read.items() if name != "activation")
        schedule = "" if self.total_steps is None else f", total_steps={self.total_steps}"
        return f"{fields}{schedule}, " + super().extra_repr()


# The names that can define a loss, in the order that the state and the errors give them.
_MAP_FIELDS = ("scheme", "distribution", "mu", "b", "alpha", "s")
_DEFINING = (*_MAP_FIELDS, "activation", "operator", "tau")


def _encode(value: str | float) -> Tensor:
    """A hyperparameter as a tensor: a number as a float64 0-d tensor, a string as its UTF-8 bytes."""
    if isinstance(value, str):
        return torch.tensor(list(value.encode()), dtype=torch.uint8)
    return torch.tensor(value, dtype=torch.float64)


def _decode(saved: Tensor) -> str | float:
    """The inverse of :func:`_encode`."""
    if saved.dtype == torch.uint8:
        return bytes(saved.tolist()).decode()
    return float(saved)
