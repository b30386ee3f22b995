"""Explicit heat steps on a grid and on the complete graph (Eq. 8 and Eq. 22).

Equation numbers are those of Cho, Kwon and Hong (2019), arXiv:1907.09750.

The paper smooths the residual with the heat equation ``du/dtau = kappa * Laplacian(u)``
(Eq. 8). On a grid (images, maps) the Laplacian is the finite-difference stencil with a
zero-flux (Neumann) boundary. For class outputs there is no grid, and the paper's smoothing
layer (Eq. 22) is one explicit Euler step on the complete graph over the M classes, whose
graph Laplacian is ``M I - 1 1^T``: every class touches every other. Eq. 22 is here in three
forms: the dense matrix W (:func:`smoothing_matrix`, for teaching and testing), its O(M)
product (:func:`smooth_residual`), and the fused autograd node of ``||W d||^2`` that the loss
trains with (:class:`GlobalSmoothedNorm`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import check_floating, check_int, check_real


def _check_classes(kappa_or_d: Tensor, name: str) -> int:
    if kappa_or_d.ndim < 1 or kappa_or_d.shape[-1] < 2:
        raise ValueError(
            f"{name} must have at least M = 2 elements along its last dim for the global operator "
            f"(Eq. 22 divides by M - 1); got shape {tuple(kappa_or_d.shape)}"
        )
    return kappa_or_d.shape[-1]


def smoothing_matrix(kappa: Tensor) -> Tensor:
    """The dense smoothing layer W of Eq. 22, shape (..., M, M), for kappa of shape (..., M).

    ``W[j, j] = 1 - kappa_j`` and ``W[j, k] = kappa_j / (M - 1)`` for ``k != j``; each row sums
    to 1. This is the paper's O(M^2) form, kept for teaching and testing: use
    :func:`smooth_residual` to apply it.
    """
    check_floating("kappa", kappa)
    m = _check_classes(kappa, "kappa")
    off = (kappa / (m - 1)).unsqueeze(-1).expand(*kappa.shape, m)
    eye = torch.eye(m, dtype=torch.bool, device=kappa.device)
    return torch.where(eye, (1 - kappa).unsqueeze(-1), off)


def graph_laplacian(v: Tensor) -> Tensor:
    """``(M I - 1 1^T) v`` over the last dim: the Laplacian of the complete graph on M nodes."""
    return torch.add(v.sum(dim=-1, keepdim=True).neg_(), v, alpha=v.shape[-1])


def smooth_residual(d: Tensor, kappa: Tensor | float) -> Tensor:
    """``W d`` over the last dim (Eq. 22) in O(M) time and memory.

    With ``mean(d)`` the mean of the M elements: ``r = d - kappa * M (d - mean(d)) / (M - 1)``
    (the book's appendix, Conventions and notation: the global operator), which is one explicit
    Euler step of the heat equation on the complete graph (Laplacian ``M I - 1 1^T``, see
    :func:`graph_laplacian`) with step ``kappa / (M - 1)``.

    Args:
        d: residuals (..., M), M >= 2.
        kappa: the diffusivity, a number or a tensor broadcastable to ``d``.
    """
    check_floating("d", d)
    m = _check_classes(d, "d")
    return d - kappa * graph_laplacian(d) / (m - 1)


class GlobalSmoothedNorm(torch.autograd.Function):
    """``g_i = ||W_i d_i||^2``, ``d = |x|``, for the global operator (Eq. 22), kappa held constant.

    The loss's form of Eq. 22 in training (:class:`~resmooth.ResidualSmoothingLoss`): one autograd
    node in place of about ten. With ``h = 1 / (M - 1)`` and L the complete
    graph's Laplacian, ``W = I - h diag(kappa) L``; L is symmetric, so
    ``W^T = I - h L diag(kappa)``, and both products are O(M). This is :func:`smooth_residual`
    and the squared norm, fused; the tests check it against the dense matrix of Algorithm 1.

    Its backward is made of differentiable operations, so second derivatives are right too
    (``torch.autograd.gradgradcheck``): under ``create_graph=True`` it recomputes ``r = W |x|``
    from ``x``, since the ``r`` saved by the forward carries no graph.
    """

    @staticmethod
    def forward(ctx, x: Tensor, d: Tensor, kappa: Tensor | float) -> Tensor:  # type: ignore[override]
        h = 1.0 / (x.shape[1] - 1)
        r = _add_product(d, kappa, graph_laplacian(d), -h)  # W d = d - h kappa L d
        # kappa needs no gradient: a tensor is saved as one, a number kept as it is.
        tensor_kappa = isinstance(kappa, Tensor)
        ctx.h, ctx.kappa = h, None if tensor_kappa else kappa
        ctx.save_for_backward(x, r, kappa if tensor_kappa else None)
        return torch.linalg.vector_norm(r, dim=1).square_()

    @staticmethod
    def backward(ctx, grad_g: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        x, r, saved_kappa = ctx.saved_tensors
        kappa = ctx.kappa if saved_kappa is None else saved_kappa
        if torch.is_grad_enabled():  # create_graph: r as a function of x, for the second derivative
            d = x.abs()
            r = _add_product(d, kappa, graph_laplacian(d), -ctx.h)
        grad_d = torch.add(r, graph_laplacian(kappa * r), alpha=-ctx.h)  # W^T r = r - h L (kappa r)
        # d|x|/dx = sign(x), 0 at 0 as in torch.abs's own backward.
        return grad_d.mul_(x.sign()).mul_(2 * grad_g.unsqueeze(1)), None, None


def _add_product(a: Tensor, kappa: Tensor | float, b: Tensor, value: float) -> Tensor:
    """``a + value * kappa * b`` in one pass, for a tensor or a number ``kappa``."""
    if isinstance(kappa, Tensor):
        return torch.addcmul(a, kappa, b, value=value)
    return torch.add(a, b, alpha=value * kappa)


def laplacian(u: Tensor, ndim: int) -> Tensor:
    """Finite-difference Laplacian over the last ``ndim`` dims (1, 2 or 3) of ``u``.

    The (2 ndim + 1)-point stencil with spacing 1 and a zero-flux (Neumann) boundary: the edge
    cell is replicated, so it equals ``scipy.ndimage.laplace(u, mode="nearest")`` over those dims.
    Written as a difference of fluxes, so that the boundary faces carry exactly zero flux.
    """
    check_floating("u", u)
    if check_int("ndim", ndim) not in (1, 2, 3):
        raise ValueError(f"ndim must be 1, 2 or 3 (the spatial dims); got {ndim!r}")
    if u.ndim < ndim:
        raise ValueError(f"u must have at least ndim={ndim} dims; got shape {tuple(u.shape)}")
    out = torch.zeros_like(u)
    for dim in range(u.ndim - ndim, u.ndim):
        flux = torch.diff(u, dim=dim)  # u[i+1] - u[i] on the n - 1 interior faces
        out.narrow(dim, 0, u.shape[dim] - 1).add_(flux)
        out.narrow(dim, 1, u.shape[dim] - 1).sub_(flux)
    return out


def stable_steps(tau: float, kappa_max: float, ndim: int) -> int:
    """The fewest equal explicit Euler steps that reach ``tau`` stably.

    Stability of ``u + dt * kappa * Laplacian(u)`` needs ``dt * max(kappa) <= 1 / (2 ndim)``.
    """
    return max(1, math.ceil(tau * kappa_max * 2 * ndim - 1e-9))


def heat_diffuse(
    u: Tensor, kappa: Tensor | float, tau: float, ndim: int, steps: int | None = None
) -> Tensor:
    """Explicit Euler integration of Eq. 8, ``du/dtau = kappa * Laplacian(u)``, to time ``tau``.

    Args:
        u: the initial state, diffused over its last ``ndim`` dims.
        kappa: the diffusivity, >= 0: a number or a map broadcastable to ``u`` (the paper's form,
            kappa times the Laplacian, not div(kappa grad u)).
        tau: the diffusion time, >= 0.
        ndim: 1, 2 or 3.
        steps: the number of equal steps; ``None`` takes the fewest stable ones. A number of
            steps with ``(tau / steps) * max(kappa) > 1 / (2 ndim)`` is refused: it would blow up.

    With constant kappa the result approximates a Gaussian blur of sigma = sqrt(2 kappa tau):
    ``scipy.ndimage.gaussian_filter(u, sigma, mode="reflect")``, the half-sample reflection that
    is the continuous form of the zero-flux boundary (``mode="nearest"`` agrees only farther
    than about 4 sigma from the edges).
    At the stability limit one step is a pure neighbour average (the centre weight is 0);
    more steps approach the continuous solution.
    """
    check_floating("u", u)
    tau = check_real("tau", tau, minimum=0.0)
    if isinstance(kappa, Tensor):
        kappa_max = float(kappa.max()) if kappa.numel() else 0.0
        kappa_min = float(kappa.min()) if kappa.numel() else 0.0
    else:
        kappa_max = kappa_min = check_real("kappa", kappa)
    if not (math.isfinite(kappa_min) and math.isfinite(kappa_max)):
        raise ValueError("kappa must be finite")
    if kappa_min < 0:
        raise ValueError(f"kappa must be >= 0 (a negative diffusivity runs the heat equation backwards); got min {kappa_min:g}")
    fewest = stable_steps(tau, kappa_max, ndim)
    if steps is None:
        steps = fewest
    elif check_int("steps", steps, 1) < fewest:
        raise ValueError(
            f"steps={steps} is unstable: dt * max(kappa) = {tau / steps * kappa_max:g} exceeds "
            f"1 / (2 ndim) = {1 / (2 * ndim):g}; use steps >= {fewest} or steps=None"
        )
    return explicit_euler(u, kappa, tau / steps, steps, ndim)


def explicit_euler(u: Tensor, kappa: Tensor | float, dt: float, steps: int, ndim: int) -> Tensor:
    """``steps`` unchecked Euler steps ``u <- u + dt * kappa * Laplacian(u)``.

    For callers that know a bound on kappa and must not read it back from the device (the
    loss, on a GPU); everyone else calls :func:`heat_diffuse`, which checks stability.
    """
    rate = dt * kappa  # once, not once per step
    for _ in range(steps):
        u = u + rate * laplacian(u, ndim)
    return u
