"""How well a classifier's confidence matches its accuracy (Guo et al. 2017).

Every measure reads the predicted probabilities as the softmax of the network's outputs,
whatever the training objective (the squared error of the softmax, the cross-entropy, or the
squared error of the raw outputs, whose softmax is then a reading the network never trained):

- :func:`nll`: the mean negative log-likelihood of the true class;
- :func:`brier`: the mean over samples of ``sum_k (p_k - y_k)^2``, the multi-class Brier score;
- :func:`ece`: the expected calibration error over equal-width confidence bins, and
  :func:`reliability` the bins themselves (a reliability diagram);
- :func:`fit_temperature`: the scalar T that minimises the NLL of ``softmax(z / T)`` on held-out
  data (temperature scaling), and :func:`calibration` all of them at once.

ECE and the Brier score are fractions in [0, 1]; the NLL is in nats.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

BINS = 15  # Guo et al.'s equal-width confidence bins


def _checked(logits: Tensor, target: Tensor) -> Tensor:
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (N, M) and target (N,) class indices; got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    if len(logits) == 0:
        raise ValueError("logits must hold at least one sample")
    # float64: a mean over 10,000 samples in float32 would move the fifth digit.
    return logits.detach().double()


def nll(logits: Tensor, target: Tensor) -> float:
    """Mean ``-log softmax(z)_y`` over the samples."""
    return float(F.cross_entropy(_checked(logits, target), target))


def brier(logits: Tensor, target: Tensor) -> float:
    """Mean over samples of ``sum_k (softmax(z)_k - onehot(y)_k)^2`` (0 is perfect, 2 the worst)."""
    z = _checked(logits, target)
    p = z.softmax(1)
    return float((p - F.one_hot(target, z.shape[1]).double()).square().sum(1).mean())


def _binned(z: Tensor, target: Tensor, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per equal-width confidence bin, in float64: the samples, the sum of their confidences, the
    number of them correct. The confidence is the largest probability; bin ``b`` holds the
    confidences in ``(b / bins, (b + 1) / bins]`` (a confidence of exactly 0 cannot occur: it is
    at least 1/M)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1; got {bins}")
    confidence, predicted = z.softmax(1).max(1)
    # ceil(c * bins) - 1 puts c in the bin whose upper edge is the first one at or above it.
    index = (confidence * bins).ceil().long().clamp(1, bins) - 1

    def per_bin(values: Tensor) -> Tensor:
        return torch.zeros(bins, dtype=torch.float64).index_add_(0, index, values)

    return per_bin(torch.ones_like(confidence)), per_bin(confidence), per_bin((predicted == target).double())


def ece(logits: Tensor, target: Tensor, bins: int = BINS) -> float:
    """Expected calibration error: ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` over ``bins``
    equal-width confidence bins (:func:`reliability` gives each bin's figures)."""
    count, confidence, correct = _binned(_checked(logits, target), target, bins)
    # sum over bins of |sum of (conf - correct)| / N is |B|/N |conf(B) - acc(B)|.
    return float((confidence - correct).abs().sum() / count.sum())


def reliability(logits: Tensor, target: Tensor, bins: int = BINS) -> dict[str, list[Any]]:
    """A reliability diagram's data (Guo et al. 2017, Fig. 1): per equal-width confidence bin,
    ``count`` (samples), ``confidence`` (their mean confidence) and ``accuracy`` (the fraction of
    them correct), None for an empty bin. :func:`ece` is ``sum |count| / N |accuracy - confidence|``."""
    count, confidence, correct = _binned(_checked(logits, target), target, bins)

    def mean(sums: Tensor) -> list[float | None]:
        return [float(s / n) if n else None for s, n in zip(sums, count)]

    return {"count": [int(n) for n in count], "confidence": mean(confidence), "accuracy": mean(correct)}


def fit_temperature(logits: Tensor, target: Tensor) -> float:
    """The temperature T > 0 that minimises the NLL of ``softmax(z / T)`` (Guo et al. 2017, Sec. 4.2).

    The NLL is convex in the inverse temperature ``beta = 1 / T`` (a log-sum-exp of a linear
    function less a linear term), so Newton's method on beta from beta = 1 converges; a step that
    would leave beta > 0 is halved. All-constant logits carry no confidence to scale: T = 1.
    """
    z = _checked(logits, target)
    true = z.gather(1, target[:, None]).squeeze(1)
    beta = 1.0
    for _ in range(100):
        p = (beta * z).softmax(1)
        mean = (p * z).sum(1)  # E_p[z]
        gradient = float((mean - true).mean())  # d NLL / d beta
        curvature = float(((p * z * z).sum(1) - mean * mean).mean())  # Var_p[z], >= 0
        if curvature <= 1e-300:
            return 1.0
        step = gradient / curvature
        while beta - step <= 0:
            step /= 2
        beta -= step
        if abs(step) <= 1e-12 * beta:
            break
    return 1.0 / beta


def calibration(logits: Tensor, target: Tensor, prefix: str = "") -> dict[str, float]:
    """``{prefix}nll``, ``{prefix}brier`` and ``{prefix}ece`` of the logits against the class indices."""
    return {f"{prefix}nll": nll(logits, target), f"{prefix}brier": brier(logits, target),
            f"{prefix}ece": ece(logits, target)}


def temperature_scaled(logits: Tensor, target: Tensor, val_logits: Tensor, val_target: Tensor,
                       prefix: str = "") -> dict[str, Any]:
    """The temperature fitted on the validation logits, and the calibration of the test logits after it:
    ``temperature``, ``{prefix}nll_scaled``, ``{prefix}brier_scaled``, ``{prefix}ece_scaled``, and the
    reliability diagram ``{prefix}reliability_scaled`` (:func:`reliability`)."""
    temperature = fit_temperature(val_logits, val_target)
    scaled_logits = logits.double() / temperature
    scaled: dict[str, Any] = {**calibration(scaled_logits, target, prefix),
                              f"{prefix}reliability": reliability(scaled_logits, target)}
    return {"temperature": temperature, **{f"{k}_scaled": v for k, v in scaled.items()}}
