"""The residual-smoothing loss (Eq. 7, 11; Algorithm 1) and its squared-error baseline.

Per sample, ``g_i = ||r_i||^2`` with ``r_i`` the residual ``d_i = |phi(z_i) - y_i|`` smoothed by
a heat step whose diffusivity is ``kappa_i`` (Eq. 19); the batch loss is the mean of ``g_i``.
With kappa = 0 this is the per-sample sum of squared errors averaged over the batch,
``F.mse_loss(phi(z), y, reduction="sum") / N``, which :class:`SquaredErrorLoss` computes, so
that a learning rate means the same for both (the book's appendix, Conventions and notation:
the loss).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_progress, check_real
from .annealing import DISTRIBUTIONS, annealing_scale
from .diffusion import _check_classes, explicit_euler, graph_laplacian, stable_steps
from .diffusivity import SCHEMES, diffusivity_map
from .residual import ACTIVATIONS, difference

REDUCTIONS = ("mean", "sum", "none")
OPERATORS = ("auto", "global", "grid")


class _ResidualLoss(nn.Module):
    """What both losses share: the activation, the residual (Eq. 9) and the reduction."""

    def __init__(self, activation: str, reduction: str) -> None:
        super().__init__()
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)

    def _difference(self, input: Tensor, target: Tensor) -> Tensor:
        """``phi(z) - y``; the residual of Eq. 9 is its magnitude."""
        # Half-precision logits (autocast) are upcast: the squared residuals of a confident
        # network are far below bf16's resolution around 1.
        if isinstance(input, Tensor) and input.dtype in (torch.float16, torch.bfloat16):
            input = input.float()
        return difference(input, target, self.activation)

    def _reduce(self, g: Tensor) -> Tensor:
        """Reduce the per-sample losses ``g_i`` (Eq. 7)."""
        if self.reduction == "mean":
            return g.mean()
        if self.reduction == "sum":
            return g.sum()
        return g

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}, reduction={self.reduction!r}"


class SquaredErrorLoss(_ResidualLoss):
    """The squared-error baseline: ``mean_i ||phi(z_i) - y_i||^2`` (the book's
    appendix, Conventions and notation: the loss).

    Args:
        activation: ``"softmax"`` (over dim 1), ``"sigmoid"`` or ``"identity"``.
        reduction: ``"mean"`` over samples of the per-sample sum, ``"sum"``, or ``"none"`` (N,).
    """

    def __init__(self, activation: str = "softmax", reduction: str = "mean") -> None:
        super().__init__(activation, reduction)

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

    A drop-in criterion: ``loss = criterion(logits, target, progress)``, or call
    :meth:`set_progress` once per step and leave ``progress`` out.

    The operator depends on the input's shape (``operator="auto"``):

    - (N, M) class outputs: the global operator of Eq. 22, one heat step on the complete graph
      over the M classes (O(M) per sample).
    - ``(N, C, *spatial)`` dense outputs, 1 to 3 spatial dims: explicit Euler steps of Eq. 8 with
      the finite-difference Laplacian over the spatial dims (Neumann boundary), to diffusion
      time ``tau``, in the fewest stable steps. Softmax runs over dim 1 (the channels).

    ``operator="global"`` on a dense output treats its C x H x W elements as one vector.

    Args:
        scheme: the diffusivity scheme, ``"global"``, ``"local"`` or ``"full"`` (Eq. 15, 17, 19).
        distribution: the annealing density, ``"laplace"`` or ``"logistic"`` (Eq. 13, 14).
        mu: where the annealing scale peaks, as a fraction of training.
        b: the annealing density's scale, > 0.
        alpha: the sigmoid's steepness, >= 0.
        s: the constant scale of the ``"local"`` scheme, >= 0.
        activation: ``"softmax"``, ``"sigmoid"`` or ``"identity"``.
        operator: ``"auto"``, ``"global"`` or ``"grid"``.
        tau: the grid operator's diffusion time, >= 0 (the global operator is the paper's single
            smoothing layer, Eq. 22).
        reduction: ``"mean"`` over samples of ``g_i``, ``"sum"``, or ``"none"`` (N,).

    Attributes:
        progress: the training progress used when ``forward`` gets none.
        last_kappa: the diffusivity of the last call, detached (a tensor, or a number for the
            global scheme, whose kappa is the same everywhere).
        mean_kappa: its mean, as a float (for logging).
        last_scale: the annealing scale ``s(t)`` of the last call (``s`` for the local scheme).
    """

    def __init__(
        self,
        scheme: str = "full",
        distribution: str = "laplace",
        mu: float = 0.75,
        b: float = 0.5,
        alpha: float = 1.0,
        s: float = 1.0,
        activation: str = "softmax",
        operator: str = "auto",
        tau: float = 1.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(activation, reduction)
        self.scheme = check_choice("scheme", scheme, SCHEMES)
        self.distribution = check_choice("distribution", distribution, DISTRIBUTIONS)
        self.mu = check_real("mu", mu)
        self.b = check_real("b", b, minimum=0.0, strict=True)
        self.alpha = check_real("alpha", alpha, minimum=0.0)
        self.s = check_real("s", s, minimum=0.0)
        self.operator = check_choice("operator", operator, OPERATORS)
        self.tau = check_real("tau", tau, minimum=0.0)
        self.progress: float | None = None
        self.last_scale: float | None = None
        self.last_kappa: Tensor | float | None = None

    def set_progress(self, t: float) -> None:
        """Set the training progress in [0, 1] (iterations done / total iterations)."""
        self.progress = self._check_progress(t)

    @staticmethod
    def _check_progress(t: float | Tensor) -> float:
        if isinstance(t, Tensor):
            if t.numel() != 1:
                raise ValueError(f"progress must be a single number in [0, 1]; got a tensor of shape {tuple(t.shape)}")
            t = float(t)
        return float(check_progress("progress", t))

    @property
    def mean_kappa(self) -> float | None:
        # Computed when read, not in every step: turning it into a float waits for the device.
        kappa = self.last_kappa
        return float(kappa.mean()) if isinstance(kappa, Tensor) else kappa

    def scale(self, t: float | None) -> float:
        """The diffusivity's scale at progress ``t``: ``s(t)``, or the constant ``s`` (local)."""
        if self.scheme == "local":
            return self.s
        if t is None:
            raise ValueError(
                f"progress is required by scheme={self.scheme!r}: pass forward(..., progress=t) "
                "or call set_progress(t) with t in [0, 1]"
            )
        return float(annealing_scale(t, mu=self.mu, b=self.b, distribution=self.distribution))

    def forward(self, input: Tensor, target: Tensor, progress: float | Tensor | None = None) -> Tensor:
        t = self.progress if progress is None else self._check_progress(progress)
        scale = self.scale(t)
        diff = self._difference(input, target)
        operator = self.operator
        if operator == "auto":
            operator = "global" if diff.ndim == 2 else "grid"
        if operator == "grid" and not 1 <= diff.ndim - 2 <= 3:
            raise ValueError(
                f"operator='grid' needs input of shape (N, C, *spatial) with 1 to 3 spatial dims; "
                f"got shape {tuple(diff.shape)}"
            )
        # |diff| once: with its gradient where the grid steps use it, without where the fused
        # global node takes it as a constant input.
        d = diff.abs() if operator == "grid" else diff.detach().abs()
        kappa = diffusivity_map(d.detach(), scale, self.scheme, self.alpha)
        self.last_scale = scale
        self.last_kappa = kappa
        if operator == "global":
            _check_classes(diff.flatten(1), "input")
            flat = kappa.flatten(1) if isinstance(kappa, Tensor) else kappa
            g = _GlobalSmoothedNorm.apply(diff.flatten(1), d.flatten(1), flat)
        else:
            # kappa <= scale everywhere (and scale / 2 for the global scheme), so the step count
            # follows from the scale alone, with no read-back of kappa from the device.
            ndim = diff.ndim - 2
            bound = scale / 2 if self.scheme == "global" else scale
            steps = stable_steps(self.tau, bound, ndim)
            r = explicit_euler(d, kappa, self.tau / steps, steps, ndim)
            g = r.square().flatten(1).sum(dim=1)
        return self._reduce(g)

    def extra_repr(self) -> str:
        return (
            f"scheme={self.scheme!r}, distribution={self.distribution!r}, mu={self.mu}, b={self.b}, "
            f"alpha={self.alpha}, s={self.s}, operator={self.operator!r}, tau={self.tau}, "
            + super().extra_repr()
        )


class _GlobalSmoothedNorm(torch.autograd.Function):
    """``g_i = ||W_i d_i||^2``, ``d = |x|``, for the global operator (Eq. 22), kappa held constant.

    One autograd node in place of about ten. With ``h = 1 / (M - 1)`` and L the complete
    graph's Laplacian, ``W = I - h diag(kappa) L``; L is symmetric, so
    ``W^T = I - h L diag(kappa)``, and both products are O(M). This is :func:`~resmooth.smooth_residual` and the squared norm,
    fused; the tests check it against the dense matrix of Algorithm 1.
    """

    @staticmethod
    def forward(ctx, x: Tensor, d: Tensor, kappa: Tensor | float) -> Tensor:  # type: ignore[override]
        h = 1.0 / (x.shape[1] - 1)
        r = _add_product(d, kappa, graph_laplacian(d), -h)  # W d = d - h kappa L d
        ctx.h, ctx.kappa = h, kappa  # kappa needs no gradient: kept as it is, not saved
        ctx.save_for_backward(x, r)
        return torch.linalg.vector_norm(r, dim=1).square_()

    @staticmethod
    def backward(ctx, grad_g: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        x, r = ctx.saved_tensors
        grad_d = torch.add(r, graph_laplacian(ctx.kappa * r), alpha=-ctx.h)  # W^T r = r - h L (kappa r)
        # d|x|/dx = sign(x), 0 at 0 as in torch.abs's own backward.
        return grad_d.mul_(x.sign()).mul_(2 * grad_g.unsqueeze(1)), None, None


def _add_product(a: Tensor, kappa: Tensor | float, b: Tensor, value: float) -> Tensor:
    """``a + value * kappa * b`` in one pass, for a tensor or a number ``kappa``."""
    if isinstance(kappa, Tensor):
        return torch.addcmul(a, kappa, b, value=value)
    return torch.add(a, b, alpha=value * kappa)
