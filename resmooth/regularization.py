"""Explicit per-sample adaptive weight decay (Eq. 4-6), the paper's stepping stone.

``lambda_i = lambda_0 * (1 - exp(-l_i / nu))`` with ``l_i`` the per-sample data loss (Eq. 5);
the step adds ``mean_i(lambda_i) * grad gamma(w)`` with ``gamma(w) = ||w||^2 / 2`` (Eq. 6),
that is ``mean_i(lambda_i) * w`` (the book's appendix, Conventions and notation: explicit adaptive
regularization). Samples that the model fits badly ask
for more regularization; as the residual decays, so does the decay.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
import torch.distributed as dist
from torch import Tensor

from ._checks import check_real


def adaptive_decay(per_sample_loss: Tensor, lambda0: float, nu: float) -> Tensor:
    """Eq. 5 averaged over the batch: ``mean_i lambda_0 (1 - exp(-l_i / nu))``, detached.

    When ``torch.distributed`` is initialized (DistributedDataParallel), the batch is every
    rank's: the ranks' means are averaged (one all-reduce), so that every replica adds the same
    decay and the replicas stay equal. That is the global batch's mean when the ranks hold
    batches of equal size, as DistributedSampler makes them.

    Args:
        per_sample_loss: ``l_i``, shape (N,), >= 0.
        lambda0: the largest decay, >= 0 (reached for a large loss).
        nu: the loss scale at which the decay saturates, > 0.
    """
    lambda0 = check_real("lambda0", lambda0, minimum=0.0)
    nu = check_real("nu", nu, minimum=0.0, strict=True)
    decay = lambda0 * (-torch.expm1(-per_sample_loss.detach() / nu)).mean()
    if dist.is_available() and dist.is_initialized():
        # SUM then divide: gloo has no ReduceOp.AVG.
        dist.all_reduce(decay, op=dist.ReduceOp.SUM)
        decay /= dist.get_world_size()
    return decay


@torch.no_grad()
def add_weight_decay_(params: Iterable[torch.nn.Parameter], strength: Tensor | float) -> None:
    """``p.grad += strength * p`` for every parameter with a gradient (Eq. 6's second term).

    ``strength`` may be a 0-dim tensor on the device: no read-back to the host.
    """
    with_grad: list[Tensor] = [p for p in params if p.grad is not None]
    if with_grad:
        grads = [cast(Tensor, p.grad) for p in with_grad]  # not None: those are the ones kept
        torch._foreach_add_(grads, torch._foreach_mul(with_grad, strength))
