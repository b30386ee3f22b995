"""Symmetric label noise, and how much of it a network memorises (issue 33; Ghosh, Kumar and Sastry 2017).

:func:`noisy_labels` replaces each label, with probability p, by one of the other classes drawn
uniformly. The draws come from a generator seeded by the run's seed and a fixed salt
(:data:`SALT`), one stream per split, and from nothing else: every method on seed k sees the same
noisy labels, whatever else the run draws. Each sample's draws are made whatever p is, so the
flips at a smaller p are a subset of those at a larger one (the same uniform number falls below
both), with the same wrong class. :func:`with_label_noise` applies it to the training and
validation splits of a :class:`~resmooth.lab.data.DeviceData` and keeps their true labels; the
test split stays clean. :func:`memorisation` measures, on the training set, the accuracy on the
flipped samples against the labels they were given and against their true ones, and on the clean
samples.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int, check_real, spelled
from .data import DeviceData

SALT = 20_190_633  # fixed, and no other draw of a run uses it: the flips depend on the seed alone
# One stream per split: the training set's flips do not depend on whether a validation split is drawn, or its size.
STREAMS = {"train": 0, "val": 1}


def check_label_noise(p: float) -> float:
    """``p`` as a probability of a flipped label, refused outside [0, 1) (1 would flip every label)."""
    if not 0.0 <= check_real("label_noise", p) < 1.0:
        raise ValueError(f"{spelled('label_noise')} must lie in [0, 1) (the probability of a flipped label); got {p}")
    return float(p)


def noisy_labels(labels: Tensor, num_classes: int, p: float, seed: int, stream: int = 0) -> Tensor:
    """``labels`` with each one replaced, with probability ``p``, by one of the other ``num_classes - 1``
    classes drawn uniformly; from NumPy's PCG64 seeded with ``(SALT, seed, stream)``, the same on every machine."""
    check_int("num_classes", num_classes, 2)
    check_label_noise(p)
    # SeedSequence takes non-negative words: a negative seed (torch accepts one) as its two's complement.
    rng = np.random.default_rng((SALT, check_int("seed", seed) % 2**64, stream))
    n = len(labels)
    flip = torch.from_numpy(rng.random(n) < p)
    # An offset in 1..M-1 added modulo M lands on every other class with the same probability, never on the label.
    offset = torch.from_numpy(rng.integers(1, num_classes, n))
    flipped = (labels.cpu() + offset) % num_classes
    return torch.where(flip, flipped, labels.cpu()).to(labels.device)


def with_label_noise(data: DeviceData, p: float, seed: int) -> DeviceData:
    """``data`` with noisy training and validation labels (:func:`noisy_labels`), their true labels kept
    in ``train_true_y`` and ``val_true_y``; the test labels as they are. ``p = 0`` returns ``data``."""
    if p == 0:
        return data
    noisy = {f"{split}_y": noisy_labels(getattr(data, f"{split}_y"), data.num_classes, p, seed, stream)
             for split, stream in STREAMS.items() if getattr(data, f"{split}_y") is not None}
    true = {f"{split}_true_y": getattr(data, f"{split}_y") for split in STREAMS}
    return dataclasses.replace(data, **noisy, **true)


# memorisation's record: the flipped samples against their given and their true labels, the clean ones.
MEMORISATION = ("train_acc_flipped_given", "train_acc_flipped_true", "train_acc_clean")


def memorisation(predicted: Tensor, given: Tensor, true: Tensor) -> dict[str, float]:
    """Accuracy in % of the ``predicted`` classes on the flipped samples (``given != true``) against
    their ``given`` labels (what the network memorised) and against their ``true`` ones (what it
    still knows), and on the clean samples (:data:`MEMORISATION`). A group without samples is left out."""
    flipped = given != true
    record = {}
    for name, mask, labels in zip(MEMORISATION, (flipped, flipped, ~flipped), (given, true, true)):
        if mask.any():
            record[name] = 100.0 * float((predicted[mask] == labels[mask]).sum()) / int(mask.sum())
    return record
