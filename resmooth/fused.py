"""The loss of class outputs as one autograd node, from the logits to ``g_i`` (Eq. 7, 9, 22).

Equation numbers are those of Cho, Kwon and Hong (2019), arXiv:1907.09750.

:class:`~resmooth.diffusion.GlobalSmoothedNorm` is the smoothing layer's node, from the residual
``x = phi(z) - y`` to ``g``; autograd adds the activation's backward to it.
:class:`GlobalSmoothedLoss` goes from the logits ``z``, with the activation's Jacobian in its
closed form. :class:`~resmooth.ResidualSmoothingLoss` trains with it on (N, M) input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .diffusion import _add_product, graph_laplacian
from .residual import activate


class GlobalSmoothedLoss(torch.autograd.Function):
    """``g_i = ||W_i |phi(z_i) - y_i| ||^2`` per sample, for the global operator (Eq. 7, 9, 22),
    with kappa held constant (paper Sec. 5).

    ``GlobalSmoothedLoss.apply(z, p, x, d, kappa, activation)`` takes the logits ``z`` (N, M)
    and, without a graph, what the caller computed from them for kappa: the activation's output
    ``p = phi(z)``, the signed residual ``x = p - y`` and its magnitude ``d = |x|`` (Eq. 9);
    then kappa, (N, M) or a 0-dim tensor, and the activation's name (``"softmax"``,
    ``"sigmoid"`` or ``"identity"``). It returns g, (N,).

    The gradient of one sample's ``g``, with ``h = 1 / (M - 1)``, ``L = M I - 1 1^T`` the
    complete graph's Laplacian and ``s = sign(x)`` (0 at 0, as in ``torch.abs``'s backward):

    - ``r = W d = d - h kappa * (L d)`` (Eq. 22), ``g = ||r||^2`` (Eq. 7);
    - kappa is constant, so ``dg = 2 r^T W dd`` with ``dd = s * dx``: ``dg/dx = 2 s * (W^T r)``;
    - L is symmetric, so ``W^T r = r - h L (kappa * r) = c * r + h T``, with
      ``c = 1 - kappa M / (M - 1)`` and ``T = kappa^T r``, one number per sample;
    - through the activation, with ``v = dg/dx``: the identity gives ``v``, the sigmoid
      ``p (1 - p) * v``, the softmax, whose Jacobian ``diag(p) - p p^T`` is symmetric,
      ``p * (v - p^T v)``.

    None of it depends on the gradient that arrives from the reduction, ``grad_g``, so
    :meth:`forward` takes ``dg/dz`` while it has the rows at hand (``T`` and ``p^T v`` are two
    more sums over each row), and the backward is the product ``grad_g * dg/dz``. Autograd
    through the activation could not do this: the softmax's row sum ``p^T (grad_g v)`` waits
    for ``grad_g``, a sweep over the rows in the backward pass. Under ``create_graph=True`` the
    backward recomputes ``dg/dz`` from ``z``, so that second derivatives are right too
    (``torch.autograd.gradgradcheck``).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, z: Tensor, p: Tensor, x: Tensor, d: Tensor, kappa: Tensor, activation: str
    ) -> Tensor:
        r = smooth(d, kappa)
        ctx.activation = activation
        ctx.save_for_backward(z, p, x, kappa, loss_gradient(p, x, r, kappa, activation))
        return torch.linalg.vector_norm(r, dim=1).square_()

    @staticmethod
    def backward(ctx, grad_g: Tensor) -> tuple[Tensor, None, None, None, None, None]:  # type: ignore[override]
        z, p, x, kappa, grad = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: dg/dz as a function of z, for the second derivative
            target = p - x
            p = activate(z, ctx.activation)
            x = p - target
            grad = loss_gradient(p, x, smooth(x.abs(), kappa), kappa, ctx.activation)
        return grad_g.unsqueeze(1) * grad, None, None, None, None, None


def smooth(d: Tensor, kappa: Tensor) -> Tensor:
    """``r = W d = d - h kappa * (L d)`` over dim 1 (Eq. 22), as
    :class:`~resmooth.diffusion.GlobalSmoothedNorm` computes it."""
    return _add_product(d, kappa, graph_laplacian(d), -1.0 / (d.shape[1] - 1))


def loss_gradient(p: Tensor, x: Tensor, r: Tensor, kappa: Tensor, activation: str) -> Tensor:
    """``dg/dz`` per sample (:class:`GlobalSmoothedLoss`), from ``p = phi(z)``, ``x = p - y``,
    ``r = W |x|`` and kappa."""
    m = x.shape[1]
    h = 1.0 / (m - 1)
    total = (kappa * r).sum(dim=1, keepdim=True)  # T = kappa^T r
    w_t_r = torch.add(r * (1 - m * h * kappa), total, alpha=h)  # W^T r = c r + h T
    v = w_t_r.mul_(x.sign()).mul_(2)  # dg/dx
    # The activations' own backward kernels, which autograd would call: one pass each.
    if activation == "softmax":
        return torch._softmax_backward_data(v, p, 1, p.dtype)  # p * (v - p^T v)
    if activation == "sigmoid":
        return torch.ops.aten.sigmoid_backward(v, p)  # v * p (1 - p)
    return v
