"""What each method minimizes, and with which optimizer: one place per method of :data:`~resmooth.lab.config.METHODS`.

:class:`Objective` is the training loss per sample and the data term that evaluation reports;
:func:`make_optimizer` the optimizer. The loop (:func:`resmooth.lab.train.train`) calls them and
never asks which method it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..loss import ResidualSmoothingLoss, SquaredErrorLoss
from ..regularization import adaptive_decay, add_weight_decay_
from .config import CROSS_ENTROPY, SMOOTHED, Config


class Objective(nn.Module):
    """The method's training loss, and the data term reported as the test loss.

    ``sgd``, ``adam``, ``adagrad`` and ``adaptive-wd`` minimize the squared error of the output
    activation (the paper's baseline objective; the book's appendix, Conventions and notation:
    the loss); ``label-smoothing-se`` the same against smoothed labels; ``resmooth`` its smoothed
    form; ``sgd-rescaled`` the squared error of each sample times the detached ratio
    ``||W d||^2 / ||d||^2`` of the smoothing map (:func:`smoothing_ratio`), whose value is the
    smoothed loss and whose gradient is the plain one scaled per sample by the ratio: the
    smoothing's rescaling without its redistribution between the classes (the book's mechanistic
    control); ``sgd-ce`` and ``label-smoothing`` the cross-entropy. ``forward`` returns
    per-sample losses; :meth:`step`, once per optimizer step, advances the smoothing's progress
    over ``total_steps``; :meth:`decay_` applies adaptive-wd's per-batch weight decay (Eq. 6).
    """

    def __init__(self, config: Config, total_steps: int) -> None:
        super().__init__()
        self.method = config.method
        self.label_smoothing = config.label_smoothing if config.method.startswith("label-smoothing") else 0.0
        self.weight_decay, self.nu = config.weight_decay, config.nu
        self.smoothing = None
        if config.method in SMOOTHED:
            self.smoothing = ResidualSmoothingLoss(**dataclasses.asdict(config.diffusivity), activation=config.activation,
                                                   reduction="none", total_steps=total_steps)
        self.squared_error = SquaredErrorLoss(config.activation, reduction="none")
        # The rescaling ratio ||W d||^2 / ||d||^2 of the last batch (methods with a smoothing map).
        self.last_ratio: Tensor | None = None

    @property
    def cross_entropy(self) -> bool:
        return self.method in CROSS_ENTROPY

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.smoothing is None:
            return self.data_term(logits, target, self.label_smoothing)
        plain = self.squared_error(logits, target)
        if self.method == "resmooth":
            smoothed = self.smoothing(logits, target)
        else:  # the control reads the map's ratio only: no gradient through the smoothing
            with torch.no_grad():
                smoothed = self.smoothing(logits.detach(), target)
        self.last_ratio = smoothing_ratio(smoothed.detach(), plain.detach())
        return smoothed if self.method == "resmooth" else self.last_ratio * plain

    def step(self) -> None:
        if self.smoothing is not None:
            self.smoothing.step()

    def decay_(self, parameters: Iterable[Tensor], losses: Tensor) -> None:
        """adaptive-wd: after ``backward``, add Eq. 6's decay, set by the batch's per-sample losses
        (its objective is the data term itself, so they are Eq. 5's l_i); nothing for the others,
        whose decay is the optimizer's."""
        if self.method == "adaptive-wd":
            add_weight_decay_(parameters, adaptive_decay(losses, self.weight_decay, self.nu))

    def data_term(self, logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
        if self.cross_entropy:
            return F.cross_entropy(logits.float(), target, reduction="none", label_smoothing=label_smoothing)
        if label_smoothing:
            target = smoothed_labels(target, logits.shape[1], label_smoothing)
        return self.squared_error(logits, target)


def smoothed_labels(target: Tensor, num_classes: int, eps: float) -> Tensor:
    """Class indices as the soft targets ``(1 - eps) one-hot + eps / M``, torch's label smoothing."""
    return F.one_hot(target, num_classes).float() * (1.0 - eps) + eps / num_classes


def smoothing_ratio(smoothed: Tensor, plain: Tensor) -> Tensor:
    """``||W d_i||^2 / ||d_i||^2`` per sample, from the smoothed and the plain squared norms.

    A sample fit exactly (``d_i = 0``, so ``W d_i = 0``) gets 1: its loss and gradient are zero
    whatever the ratio.
    """
    return torch.where(plain > 0, smoothed / plain.clamp_min(torch.finfo(plain.dtype).tiny), torch.ones_like(plain))


def make_optimizer(config: Config, model: nn.Module) -> torch.optim.Optimizer:
    """The method's optimizer over ``model``'s parameters, at the config's rate and decay."""
    # adaptive-wd applies its own, per-batch decay (Eq. 6, Objective.decay_) in place of the optimizer's.
    decay = 0.0 if config.method == "adaptive-wd" else config.weight_decay
    params, lr = model.parameters(), config.learning_rate
    if config.method == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    if config.method == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=decay)
    return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=decay)
