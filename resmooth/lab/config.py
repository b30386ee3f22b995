"""Everything that defines a classification run: :class:`Config`, checked at construction.

The protocol that its defaults encode is fixed in the book's appendix, Conventions and notation:
the training protocol. :mod:`resmooth.lab.train` runs a config; a sweep file's values, and a
finished run's summary, are read back into one (:meth:`Config.from_dict`, :meth:`Config.from_record`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from .._checks import check_choice, check_int, check_real, spelled
from ._fields import from_record, from_values, inherited, option
from ..diffusivity import DiffusivityMap, refuse_unused, unread
from ..residual import ACTIVATIONS
from .data import DATASETS
from .models import MODELS, RESNETS, SHORTCUTS
from .noise import check_label_noise

METHODS = ("sgd", "sgd-ce", "label-smoothing", "label-smoothing-se", "adam", "adagrad", "resmooth", "sgd-rescaled",
           "adaptive-wd")
# The methods that read the diffusivity map: residual smoothing, and its mechanistic control.
SMOOTHED = ("resmooth", "sgd-rescaled")
CROSS_ENTROPY = ("sgd-ce", "label-smoothing")
# The optimizers' usual default learning rates; SGD's is the paper's 0.1.
DEFAULT_LR = {"adam": 1e-3, "adagrad": 1e-2}


def _fraction(name: str, value: float, interval: str, what: str = "") -> None:
    """Refuse ``value`` outside ``interval``, one of "[0, 1]", "[0, 1)", "(0, 1]", naming ``name``."""
    x = check_real(name, value)
    if not ((x > 0 if interval[0] == "(" else x >= 0) and (x < 1 if interval[-1] == ")" else x <= 1)):
        raise ValueError(f"{spelled(name)} must lie in {interval}{what}; got {value}")


@dataclass
class Config:
    """Everything that defines a run. The defaults are the paper's Fashion-MNIST protocol.

    The residual smoothing fields (``scheme`` to ``s``) are those of
    :class:`~resmooth.diffusivity.DiffusivityMap`, checked by it. Every field has a default, and a
    default is never refused; a field that the run would ignore must keep it: the smoothing
    fields when ``method`` is neither ``"resmooth"`` nor its control ``"sgd-rescaled"``,
    ``activation`` under the cross-entropy methods, ``shortcut`` outside the ResNets, and the ones
    that the scheme does not read (``alpha`` under ``"global"``, which may also be 0; ``s`` outside
    ``"local"``; ``distribution``, ``mu`` and ``b`` under ``"local"``). Another value is a
    ValueError that names the field and why.
    """

    dataset: str = option("fashion-mnist", "the dataset", DATASETS)
    data_root: str | None = option(None, "the folder that holds the datasets (default: $RESMOOTH_DATA, else ~/.cache/resmooth/data)")
    model: str = option("resnet20", "the network", tuple(MODELS))
    shortcut: str = option("A", "the ResNets' shortcut where a block changes the width or the stride: A (the "
                           "zero-padded identity, He et al.'s CIFAR networks) or B (a 1x1 convolution and batch norm)",
                           SHORTCUTS)
    method: str = option("resmooth", "the objective and optimizer: sgd (squared error of the softmax, SGD), sgd-ce "
                         "(cross-entropy), label-smoothing (cross-entropy with smoothed labels), label-smoothing-se "
                         "(squared error to smoothed labels), adam and adagrad (squared error), resmooth (residual "
                         "smoothing, Algorithm 1), sgd-rescaled (the squared error of each sample times the detached "
                         "ratio ||W d||^2 / ||d||^2 of the smoothing map: its rescaling without its redistribution "
                         "between the classes), adaptive-wd (squared error with per-sample adaptive weight decay, "
                         "Eq. 5-6)", METHODS)
    activation: str = option("softmax", "the output activation phi of the squared error (Eq. 9): softmax, sigmoid or "
                             "identity (the raw outputs); the cross-entropy methods take the softmax", ACTIVATIONS)
    # Residual smoothing (Eq. 13-22): DiffusivityMap's fields.
    scheme: str = inherited(DiffusivityMap, "scheme", "resmooth, sgd-rescaled")
    distribution: str = inherited(DiffusivityMap, "distribution", "resmooth, sgd-rescaled")
    b: float = inherited(DiffusivityMap, "b", "resmooth, sgd-rescaled")
    alpha: float = inherited(DiffusivityMap, "alpha", "resmooth, sgd-rescaled")
    mu: float = inherited(DiffusivityMap, "mu", "resmooth, sgd-rescaled")
    s: float = inherited(DiffusivityMap, "s", "resmooth, sgd-rescaled")
    # Optimization (Sec. 6): lr for the first lr_drop of the epochs, then lr * lr_factor.
    epochs: int = option(48, "training epochs")
    batch_size: int = option(128, "images per optimizer step")
    lr: float | None = option(None, "the learning rate (default: 0.1, or 1e-3 for adam, 1e-2 for adagrad)")
    lr_drop: float = option(0.75, "the fraction of the epochs after which the learning rate drops to lr * lr_factor")
    lr_factor: float = option(0.01, "the factor of the learning-rate drop")
    momentum: float = option(0.9, "SGD's momentum (every method but adam and adagrad)")
    weight_decay: float = option(1e-3, "the optimizer's L2 weight decay; adaptive-wd: the largest decay lambda_0 of Eq. 5")
    label_smoothing: float = option(0.1, "label-smoothing, label-smoothing-se: the mass eps in [0, 1) taken from the "
                                    "true class and spread evenly over all M classes (target (1 - eps) one-hot + eps / M)")
    nu: float = option(1.0, "adaptive-wd: the loss scale nu > 0 of Eq. 5 at which the decay saturates")
    # Data.
    subset: float = option(1.0, "the fraction in (0, 1] of each class of the training set kept")
    val_fraction: float = option(0.0, "the fraction in [0, 1) of the kept training images held out for validation")
    val_size: int = option(0, "validation images drawn from those that --subset leaves out (needs subset < 1; "
                           "instead of --val-fraction)")
    pad: int = option(0, "pixels added on each side of every image (training, validation and test), each the "
                      "normalized black pixel: 2 makes Fashion-MNIST's 28x28 the 32x32 of the CIFAR ResNets")
    label_noise: float = option(0.0, "the probability in [0, 1) that a training or validation label is replaced by "
                                "one of the other classes, drawn uniformly; the flips depend on --seed alone, the "
                                "test labels stay clean")
    seed: int = option(0, "the seed of the initialization, the subset, the batch order, the augmentation and the "
                       "label noise")
    # Execution.
    device: str = option("auto", "auto (cuda when available), cpu, cuda or cuda:N")
    compile: bool = option(False, "torch.compile the network")
    amp: bool = option(True, "bf16 autocast, on CUDA only")
    eval_batch_size: int = option(500, "images per evaluation batch")
    # Test and validation evaluation every eval_every epochs, and at every epoch of the final
    # window (from the learning-rate drop, or the last 10% if that is longer): what the paper's
    # "max" and "mean" figures and the clean protocol read. 1 evaluates every epoch.
    eval_every: int = option(1, "evaluate on the test (and validation) set every N epochs, and at every epoch of "
                             "the final window (from the learning-rate drop, at least the last 10%)")

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("model", self.model, MODELS)
        check_choice("shortcut", self.shortcut, SHORTCUTS)
        if self.model not in RESNETS and self.shortcut != "A":
            raise ValueError(f"{spelled('shortcut', self.shortcut)} would be ignored: {spelled('model', self.model)} is "
                             f"not a ResNet; leave {spelled('shortcut')} at its default 'A'")
        check_choice("method", self.method, METHODS)
        check_choice("activation", self.activation, ACTIVATIONS)
        if self.method in SMOOTHED:
            DiffusivityMap.of(self)  # its checks
        else:
            refuse_unused(self, f"{spelled('method', self.method)} has no residual smoothing")
        if self.method in CROSS_ENTROPY and self.activation != "softmax":
            raise ValueError(f"{spelled('activation', self.activation)} would be ignored: {spelled('method', self.method)} "
                             f"is the cross-entropy of the softmax; leave {spelled('activation')} at its default 'softmax'")
        for name in ("epochs", "batch_size", "eval_batch_size", "eval_every"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed)
        check_int("val_size", self.val_size, 0)
        check_int("pad", self.pad, 0)
        if self.lr is not None:
            check_real("lr", self.lr, minimum=0.0, strict=True)
        _fraction("lr_drop", self.lr_drop, "[0, 1]", " (a fraction of the epochs)")
        check_real("lr_factor", self.lr_factor, minimum=0.0)
        check_real("momentum", self.momentum, minimum=0.0)
        check_real("weight_decay", self.weight_decay, minimum=0.0)
        check_real("nu", self.nu, minimum=0.0, strict=True)
        _fraction("label_smoothing", self.label_smoothing, "[0, 1)")
        _fraction("subset", self.subset, "(0, 1]", " (a fraction of the training set)")
        _fraction("val_fraction", self.val_fraction, "[0, 1)")
        check_label_noise(self.label_noise)
        if self.val_size and self.val_fraction:
            raise ValueError(f"{spelled('val_size')} and {spelled('val_fraction')} both ask for a validation split; "
                             "set one of them")
        if self.val_size and self.subset == 1.0:
            raise ValueError(f"{spelled('val_size')} draws from the images a subset leaves out, so it needs "
                             f"{spelled('subset')} < 1; use {spelled('val_fraction')}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as error:
                raise ValueError(f"{spelled('device')} must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {self.device!r}") from error

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """A config from plain values (a sweep file's), refusing unknown fields by name."""
        return from_values(cls, values)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Config:
        """The config of a finished run from its summary's record (:meth:`used`, or an older
        summary's config as given), with ``lr`` the rate it trained with."""
        config = from_record(cls, record)
        # An older summary holds None for the method's default rate, as the run was given it.
        return dataclasses.replace(config, lr=config.learning_rate)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def used(self) -> dict[str, Any]:
        """The fields as a run of this config reads them, which its summary records: ``lr`` the rate
        it trains with, and None for each field that it does not read: the smoothing's outside
        resmooth and sgd-rescaled, and those that the scheme ignores; ``label_smoothing`` outside the
        label-smoothing methods; ``nu`` outside adaptive-wd; ``momentum`` under adam and adagrad;
        ``shortcut`` outside the ResNets. (``amp`` depends on the device as well:
        :func:`resmooth.lab.metrics.summarize` records it.)"""
        ignored = set(unread(self.diffusivity if self.method in SMOOTHED else None))
        ignored |= {name for name, read in (("label_smoothing", self.method.startswith("label-smoothing")),
                                            ("nu", self.method == "adaptive-wd"),
                                            ("momentum", self.method not in ("adam", "adagrad")),
                                            ("shortcut", self.model in RESNETS)) if not read}
        values = {**self.to_dict(), "lr": self.learning_rate}
        return {k: None if k in ignored else v for k, v in values.items()}

    @property
    def diffusivity(self) -> DiffusivityMap:
        """The residual smoothing's hyperparameters (those of ``method="resmooth"`` and ``"sgd-rescaled"``)."""
        return DiffusivityMap.of(self)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.method, 0.1)

    def lr_at(self, epoch: int) -> float:
        """The step schedule of Sec. 6: ``lr`` before ``lr_drop * epochs``, then ``lr * lr_factor``."""
        # Half rounds up (6 epochs drop after 5 = 4.5 rounded), as a reader counts by hand.
        drop = math.floor(self.lr_drop * self.epochs + 0.5)
        return self.learning_rate * (self.lr_factor if epoch >= drop else 1.0)

    def evaluates(self, epoch: int) -> bool:
        """Whether the 0-based ``epoch`` ends with a test (and validation) evaluation.

        Every epoch of the final window does: from the learning-rate drop on, and at least the
        last 10% of the epochs (the paper's "mean" figure). Before it, every ``eval_every``-th
        epoch, for the learning curves. "max over epochs" is then the maximum over the epochs
        evaluated, which is the paper's wherever the best epoch lies in the final window.
        """
        window = min(math.floor(self.lr_drop * self.epochs + 0.5), self.epochs - last_tenth(self.epochs))
        return epoch >= window or (epoch + 1) % self.eval_every == 0


def last_tenth(epochs: int) -> int:
    """How many final epochs the paper's "mean" figure averages: 10% of them, at least one."""
    return max(1, round(0.1 * epochs))
