"""Explicit heat steps on a grid and on the complete graph (Eq. 8 and Eq. 22).

Equation numbers are those of Cho, Kwon and Hong (2019), arXiv:1907.09750.

The paper smooths the residual with the heat equation ``du/dtau = kappa * Laplacian(u)``
(Eq. 8). On a grid (images, maps) the Laplacian is the finite-difference stencil with a
zero-flux (Neumann) boundary. For class outputs there is no grid, and the paper's smoothing
layer (Eq. 22) is one explicit Euler step on the complete graph over the M classes, whose
graph Laplacian is ``M I - 1 1^T``: every class touches every other. Eq. 22's product ``W d``
is written once, in O(M) (:func:`smooth_residual`, and the private ``_smooth`` that the loss
calls with its checks done); the dense matrix W (:func:`smoothing_matrix`) is the reference
that the tests and the book compare it with; :class:`GlobalSmoothedNorm` is the fused autograd
node of ``||W d||^2`` that the loss trains with.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ._checks import check_floating, check_int, check_real, in_transform

# What to tell the caller whose input has a single element along the class dim.
TWO_LOGITS = ("for a binary task output two logits, (N, 2), with activation='softmax' (a sigmoid of their "
              "difference), or use SquaredErrorLoss")


def check_classes(m: int, name: str, shape: tuple[int, ...], advice: str = "") -> int:
    """Refuse fewer than M = 2 elements to smooth between: Eq. 22 divides by M - 1.

    The one check of M for the global operator, whoever calls it (:func:`smoothing_matrix`,
    :func:`smooth_residual`, the loss); ``advice`` is added to the message.
    """
    if m < 2:
        raise ValueError(
            f"{name} must have at least M = 2 elements to smooth between for the global operator (Eq. 22 "
            f"divides by M - 1); got shape {shape}" + (f". {advice[0].upper()}{advice[1:]}" if advice else "")
        )
    return m


def smoothing_matrix(kappa: Tensor) -> Tensor:
    """The dense smoothing layer W of Eq. 22, shape (..., M, M), for kappa of shape (..., M).

    ``W[j, j] = 1 - kappa_j`` and ``W[j, k] = kappa_j / (M - 1)`` for ``k != j``; each row sums
    to 1. This is the paper's O(M^2) form, kept as the reference that the tests and the book
    compare the O(M) product with: use :func:`smooth_residual` to apply it.
    """
    check_floating("kappa", kappa)
    m = check_classes(kappa.shape[-1] if kappa.ndim else 0, "kappa", tuple(kappa.shape))
    off = (kappa / (m - 1)).unsqueeze(-1).expand(*kappa.shape, m)
    eye = torch.eye(m, dtype=torch.bool, device=kappa.device)
    return torch.where(eye, (1 - kappa).unsqueeze(-1), off)


def graph_laplacian(v: Tensor, out: Tensor | None = None) -> Tensor:
    """``(M I - 1 1^T) v`` over the last dim: the Laplacian of the complete graph on M nodes.

    ``out``: where to write it, which may be ``v`` itself (the sum is taken first).
    """
    return torch.add(v.sum(dim=-1, keepdim=True).neg_(), v, alpha=v.shape[-1], out=out)


# ``reuse`` below: build the result in the buffer of an intermediate, one new tensor of the
# input's size instead of two or three. Each new tensor costs more than its arithmetic once it
# outgrows the cache (the loss's eager time at (1024, 1000)); ``out=`` is not differentiable, so
# it is for a node's own forward and first-order backward, outside torch.func.


def _smooth(d: Tensor, kappa: Tensor | float, reuse: bool = False) -> Tensor:
    """``W d = d - h kappa L d`` over the last dim, ``h = 1 / (M - 1)``: Eq. 22 in O(M), unchecked.

    The one place that Eq. 22's product is written; its transpose is :func:`_smooth_transposed`.
    """
    value = -1.0 / (d.shape[-1] - 1)
    lap = graph_laplacian(d)
    out = lap if reuse else None
    # In one pass, for a tensor or a number kappa.
    if isinstance(kappa, Tensor):
        return torch.addcmul(d, kappa, lap, value=value, out=out)
    return torch.add(d, lap, alpha=value * kappa, out=out)


def _smooth_transposed(v: Tensor, kappa: Tensor | float, reuse: bool = False) -> Tensor:
    """``W^T v = v - h L (kappa v)`` over the last dim (L is symmetric): the products' transpose."""
    weighted = kappa * v
    lap = graph_laplacian(weighted, out=weighted if reuse else None)
    return torch.add(v, lap, alpha=-1.0 / (v.shape[-1] - 1), out=lap if reuse else None)


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
    check_classes(d.shape[-1] if d.ndim else 0, "d", tuple(d.shape))
    return _smooth(d, kappa)


class GlobalSmoothedNorm(torch.autograd.Function):
    """``(g, r)``, ``r = W d`` and ``g = ||r||^2`` over the last dim, for the global operator
    (Eq. 22), with ``d = |x|`` given and kappa held constant.

    The loss's form of Eq. 22 in training (:class:`~resmooth.ResidualSmoothingLoss`): one autograd
    node in place of about ten. With ``h = 1 / (M - 1)`` and L the complete graph's Laplacian,
    ``W = I - h diag(kappa) L``; L is symmetric, so ``W^T = I - h L diag(kappa)``, and both
    products are O(M). ``d`` is ``|x|`` detached (the loss computes it once for kappa too): the
    derivatives with respect to ``x`` are this node's, ``d|x|/dx = sign(x)``.

    ``r`` is an output, so that the backward's use of it is differentiable: second derivatives
    (``create_graph=True``, ``torch.autograd.gradgradcheck``, ``torch.func.hessian``) follow
    through it, and a gradient that reaches ``r`` itself is taken. It has the ``setup_context``
    form that torch.func needs: ``vmap`` runs it through its generated rule, ``grad`` and
    ``jacrev`` through :meth:`backward`, ``jvp``, ``jacfwd`` and ``hessian`` through :meth:`jvp`.
    Compiled code calls ``_GlobalSmoothedNormCompiled``, first derivatives only and faster there,
    and eager code outside torch.func this node's ``forward(ctx, ...)`` twin, cheaper to call
    (:func:`global_smoothed_norm` picks).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, d: Tensor, kappa: Tensor | float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        r = _smooth(d, kappa, reuse=not in_transform())
        return torch.linalg.vector_norm(r, dim=-1).square(), r

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        x, _, kappa = inputs
        _, r = output
        # kappa needs no gradient: a tensor is saved as one, a number kept as it is.
        tensor_kappa = isinstance(kappa, Tensor)
        ctx.kappa = None if tensor_kappa else kappa
        saved = (x, r, kappa if tensor_kappa else None)
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)
        ctx.set_materialize_grads(False)  # r's gradient is None unless r is used

    @staticmethod
    def backward(ctx: Any, grad_g: Tensor | None, grad_r: Tensor | None) -> tuple[Tensor | None, None, None]:  # type: ignore[override]
        x, r, saved_kappa = ctx.saved_tensors
        kappa = ctx.kappa if saved_kappa is None else saved_kappa
        # The gradient with respect to r: 2 grad_g r from g = ||r||^2, plus grad_r where r is used.
        if grad_g is None:
            if grad_r is None:
                return None, None, None
            v, scale = grad_r, None
        elif grad_r is None:
            v, scale = r, 2 * grad_g.unsqueeze(-1)  # applied after W^T, as it is a factor per row
        else:
            v, scale = torch.addcmul(grad_r, r, grad_g.unsqueeze(-1), value=2.0), None
        # In place but under a torch.func transform, where grad_d may be unbatched and x batched,
        # which in-place arithmetic refuses, and in a backward that is itself differentiated.
        transformed = in_transform()
        grad_d = _smooth_transposed(v, kappa, reuse=not (transformed or torch.is_grad_enabled()))
        # d|x|/dx = sign(x), 0 at 0 as in torch.abs's own backward.
        factors = (x.sign(),) if scale is None else (x.sign(), scale)
        for factor in factors:
            grad_d = grad_d * factor if transformed else grad_d.mul_(factor)
        return grad_d, None, None

    @staticmethod
    def jvp(ctx: Any, x_t: Tensor | None, d_t: Any, kappa_t: Any) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        x, r, saved_kappa = ctx.saved_tensors
        kappa = ctx.kappa if saved_kappa is None else saved_kappa
        if x_t is None:
            x_t = torch.zeros_like(x)
        r_t = _smooth(x_t * x.sign(), kappa)  # W d_t, d_t = sign(x) x_t
        return 2 * (r * r_t).sum(dim=-1), r_t


class _GlobalSmoothedNormCompiled(torch.autograd.Function):
    """What compiled code calls in place of :class:`GlobalSmoothedNorm`: ``g``, and as a constant
    second output the gradient's direction ``sign(x) W^T r``, made in the forward so that the
    backward is one product. (Compiled with ``r`` as an output, r's gradient is materialized as
    zeros and ``W^T`` runs in the backward: twice the time at M = 1000. Dynamo cannot trace a
    custom ``jvp`` either.) First derivatives only, as compiled code takes them."""

    @staticmethod
    def forward(x: Tensor, d: Tensor, kappa: Tensor | float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        r = _smooth(d, kappa)
        return torch.linalg.vector_norm(r, dim=-1).square(), _smooth_transposed(r, kappa) * x.sign()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])

    @staticmethod
    def backward(ctx: Any, grad_g: Tensor, _: Any) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (direction,) = ctx.saved_tensors
        return 2 * grad_g.unsqueeze(-1) * direction, None, None


class _GlobalSmoothedNormEager(torch.autograd.Function):
    """:class:`GlobalSmoothedNorm` in the ``forward(ctx, ...)`` form, which eager code calls
    outside torch.func: the same forward, saved context and derivatives. ``apply`` binds the
    arguments of a ``setup_context`` node to its forward's signature (``inspect.signature``) at
    every call, about a tenth of the loss's eager time at (128, 10); this form has no binding,
    and torch.func, which needs the other form, calls the other node."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, d: Tensor, kappa: Tensor | float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        output = GlobalSmoothedNorm.forward(x, d, kappa)
        GlobalSmoothedNorm.setup_context(ctx, (x, d, kappa), output)
        return output

    backward = GlobalSmoothedNorm.backward
    jvp = GlobalSmoothedNorm.jvp


def global_smoothed_norm(x: Tensor, d: Tensor, kappa: Tensor | float) -> Tensor:
    """``||W |x| ||^2`` over the last dim (:class:`GlobalSmoothedNorm`), ``d = |x|`` detached."""
    if torch.compiler.is_compiling():
        node: type[torch.autograd.Function] = _GlobalSmoothedNormCompiled
    else:
        node = GlobalSmoothedNorm if in_transform() else _GlobalSmoothedNormEager
    g, _ = node.apply(x, d, kappa)
    return g


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
    more steps approach the grid's own heat flow (exact in time), not the Gaussian: the
    Laplacian's spatial error stays, so the gap to the blur levels off (chapter 9).
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
