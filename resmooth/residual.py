"""The residual and its per-sample normalization (Eq. 9, 18, 20).

Equation numbers are those of Cho, Kwon and Hong (2019), arXiv:1907.09750.

``d_i = |phi(z_i) - y_i|`` element-wise, with ``phi`` the output activation and ``y_i`` the
target (one-hot for class indices). Normalization is per sample, over all its elements.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_choice, check_floating, in_transform, reads_back
from .diffusion import TWO_LOGITS

ACTIVATIONS = ("softmax", "sigmoid", "identity")
NORMALIZE_EPS = 1e-8


def activate(z: Tensor, activation: str) -> Tensor:
    """``phi(z)``: softmax over dim 1 (the class dim), sigmoid, or the identity."""
    check_choice("activation", activation, ACTIVATIONS)
    if activation == "softmax":
        return torch.softmax(z, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(z)
    return z


def dense_target(target: Tensor, input: Tensor, validate_args: bool = True, ignore_index: int | None = None) -> Tensor:
    """The target as a tensor shaped like ``input``.

    Class indices, shaped like ``input`` without dim 1 ((N,) for (N, M) input, ``(N, *spatial)``
    for ``(N, C, *spatial)`` input), become one-hot along dim 1; an index equal to
    ``ignore_index`` takes class 0 (the caller drops that element's loss). A floating target must
    already have the input's shape. ``validate_args=False`` skips the check that the other
    indices lie in [0, M - 1], which reads back from the device (skipped while torch.compile
    traces and under torch.func transforms, see :func:`~resmooth._checks.reads_back`).
    """
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor; got {type(target).__name__}")
    expected = input.shape[:1] + input.shape[2:]
    if target.is_floating_point():
        if target.shape != input.shape and target.shape == expected:
            raise TypeError(
                f"target of shape {tuple(target.shape)} holds floats ({target.dtype}): class indices must have an "
                f"integer dtype (target.long()), and float targets (soft labels) must have the input's shape "
                f"{tuple(input.shape)}"
            )
        if target.shape != input.shape:
            raise ValueError(
                f"target must have the input's shape {tuple(input.shape)} when it is dense; "
                f"got {tuple(target.shape)}"
            )
        return target.to(input.dtype)
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"target must hold class indices (an integer dtype) or floats; got {target.dtype}")
    if target.shape != expected:
        raise ValueError(
            f"target of class indices must have shape {tuple(expected)} for input of shape "
            f"{tuple(input.shape)}; got {tuple(target.shape)}"
        )
    if ignore_index is not None:
        # The ignored elements take class 0, which the range check below then passes. The one-hot
        # reads the target, not the caller's mask of the elements kept: under torch.compile, a
        # one-hot that waits on the mask (a loop of its own, over N) splits the sweep over each
        # row into one loop nest per reduction.
        target = target.masked_fill(target == ignore_index, 0)
    num_classes = input.shape[1]
    # The one check of the class indices' range, for every caller.
    if target.numel() and reads_back(validate_args) and bool(((target < 0) | (target >= num_classes)).any()):
        raise ValueError(
            f"target holds class indices outside [0, {num_classes - 1}] (input has {num_classes} classes along "
            "dim 1)" + ("" if ignore_index is None else f" that are not ignore_index={ignore_index}")
        )
    # scatter_ builds the one-hot in the input's dtype directly (F.one_hot makes int64 first); in
    # place but under a torch.func transform, where only the out-of-place scatter has a batching rule.
    index, zeros = target.long().unsqueeze(1), torch.zeros_like(input)
    return zeros.scatter(1, index, 1.0) if in_transform() else zeros.scatter_(1, index, 1.0)


def difference(
    input: Tensor, target: Tensor, activation: str = "softmax", validate_args: bool = True,
    ignore_index: int | None = None,
) -> Tensor:
    """``phi(input) - target``, the signed residual, whose magnitude is Eq. 9's ``d``.

    ``validate_args`` and ``ignore_index``: as in :func:`dense_target`.
    """
    check_floating("input", input)
    if input.ndim < 2:
        raise ValueError(f"input must be (N, M) or (N, C, *spatial); got shape {tuple(input.shape)}")
    if activation == "softmax" and input.shape[1] == 1:
        # The advice must work where it is given: one class output cannot be smoothed between
        # classes (Eq. 22 divides by M - 1), while a one-channel map can be smoothed over space.
        advice = TWO_LOGITS if input.ndim == 2 else "use activation='sigmoid' or 'identity' for one-channel outputs"
        raise ValueError(
            "activation='softmax' over a single channel is 1 everywhere (the loss is constant and its "
            f"gradient 0); {advice}"
        )
    y = dense_target(target, input, validate_args, ignore_index)
    return activate(input, activation) - y


def residual(input: Tensor, target: Tensor, activation: str = "softmax") -> Tensor:
    """Eq. 9: ``d = |phi(input) - target|``, shaped like ``input``.

    Args:
        input: raw network outputs (logits), (N, M) or ``(N, C, *spatial)``, floating point.
        target: class indices or a dense tensor shaped like ``input`` (see :func:`dense_target`).
        activation: ``"softmax"`` (over dim 1), ``"sigmoid"`` or ``"identity"``.
    """
    return difference(input, target, activation).abs()


def normalize_residual(d: Tensor) -> Tensor:
    """Eq. 18: ``(d_i - mean(d_i)) / (std(d_i) + eps)`` per sample.

    Mean and population standard deviation (correction 0) run over all non-batch elements of
    each sample; ``eps = 1e-8``. A constant residual maps to exactly zero, never NaN.
    """
    check_floating("d", d)
    if d.ndim < 2:
        raise ValueError(f"d must have a batch dim and at least one more; got shape {tuple(d.shape)}")
    return scaled_normalized(d, 1.0)


def scaled_normalized(d: Tensor, gain: float) -> Tensor:
    """``gain * normalize_residual(d)``, unchecked, in as few passes over ``d`` as it takes."""
    flat = d.flatten(1)
    # Shifting by each sample's first element makes a constant residual centre to exactly 0
    # (its rounded mean need not equal the constant) and keeps the two-pass sums accurate.
    # Two passes rather than torch.std_mean, whose Welford kernel measured 2x (128 x 10) to
    # 6x (1024 x 1000) slower on the CPU.
    centred = flat - flat[:, :1]
    centred.sub_(centred.mean(dim=1, keepdim=True))
    # vector_norm is one fused reduction (measured 4x faster than vecdot on the CPU).
    std = torch.linalg.vector_norm(centred, dim=1, keepdim=True).mul_(flat.shape[1] ** -0.5)
    return centred.mul_(gain / (std + NORMALIZE_EPS)).view_as(d)

