"""What a run measures: the evaluated epochs' records, the smoothing's ratio over an epoch, and the summary.

An evaluated epoch (:meth:`~resmooth.lab.config.Config.evaluates`) records, from one pass over
each split in eval mode (:func:`evaluation`): test_loss and test_acc; the test set's calibration,
test_nll, test_brier and test_ece (:mod:`resmooth.lab.calibration`); val_acc where there is a
validation split, and at the last epoch the temperature fitted on it with test_nll_scaled,
test_brier_scaled and test_ece_scaled after it, and the test set's reliability diagram,
test_reliability (and test_reliability_scaled after the temperature); under label noise, the memorisation of the
training set (:func:`resmooth.lab.noise.memorisation`), from a third pass, over the training set in
eval mode. That pass is the clean measure: the images as they are, the network as it stands at the
epoch's end; the epoch's own forward passes saw a network that changed over the epoch, in train
mode, and augmented images where the dataset has augmentation. The methods with a smoothing map
record the annealing scale, the mean diffusivity and the rescaling ratio ``||W d||^2 / ||d||^2``
over the epoch (:class:`SmoothingMeter`). :func:`summarize` makes a finished run's summary of its
records.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .calibration import calibration, reliability, temperature_scaled
from .config import Config, last_tenth
from .data import DeviceData, batches
from .noise import MEMORISATION, memorisation
from .objectives import Objective
from .runfiles import environment

# The calibration record of an evaluated epoch (resmooth.lab.calibration); the last epoch adds the
# temperature fitted on the validation split and the test figures after it (``_scaled``).
CALIBRATION = tuple(f"test_{m}{scaled}" for scaled in ("", "_scaled") for m in ("nll", "brier", "ece"))
# The last epoch's reliability diagrams of the test set, before and after the temperature: per
# confidence bin, its count, mean confidence and accuracy (resmooth.lab.calibration.reliability).
RELIABILITY = ("test_reliability", "test_reliability_scaled")


@torch.no_grad()
def evaluate(model: nn.Module, objective: Objective, x: Tensor, y: Tensor, batch_size: int,
             amp: bool) -> tuple[float, float, Tensor]:
    """Mean data-term loss, accuracy (in %) and the float32 outputs of ``model`` on (x, y), in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    outputs = []
    for xb, yb in batches(x, y, batch_size, shuffle=False):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(xb)
        loss_sum += objective.data_term(logits, yb).sum()
        outputs.append(logits.float())
    model.train()
    logits = torch.cat(outputs)
    return float(loss_sum) / len(x), 100.0 * float((logits.argmax(1) == y).sum()) / len(x), logits


def evaluation(model: nn.Module, objective: Objective, data: DeviceData, config: Config, *, last: bool,
               amp: bool) -> dict[str, Any]:
    """The record of an evaluated epoch: one pass over the test set and one over the validation
    split (if any), and under label noise one over the training set; ``last``: the run's last epoch,
    which adds temperature scaling."""
    record: dict[str, Any] = {}
    record["test_loss"], record["test_acc"], test_logits = evaluate(
        model, objective, data.test_x, data.test_y, config.eval_batch_size, amp)
    record.update(calibration(test_logits, data.test_y, "test_"))
    if data.val_x is not None:
        _, record["val_acc"], val_logits = evaluate(model, objective, data.val_x, data.val_y, config.eval_batch_size, amp)
        if last:  # temperature scaling, fitted on the validation split
            record.update(temperature_scaled(test_logits, data.test_y, val_logits, data.val_y, "test_"))
    if last:
        record["test_reliability"] = reliability(test_logits, data.test_y)
    if data.train_true_y is not None:
        _, _, train_logits = evaluate(model, objective, data.train_x, data.train_y, config.eval_batch_size, amp)
        record.update(memorisation(train_logits.argmax(1), data.train_y, data.train_true_y))
    return record


class SmoothingMeter:
    """The smoothing's logs over an epoch, kept on the device (no read-back per step): the annealing
    scale and the mean diffusivity per optimizer step, and the rescaling ratio ``||W d||^2 / ||d||^2``
    per sample. :meth:`add` after each step of an objective with a smoothing map; :meth:`record`."""

    def __init__(self, device: torch.device) -> None:
        self.scale: Tensor | float = 0.0
        self.kappa: Tensor | float = 0.0
        self.ratio_sum = torch.zeros((), device=device)
        self.ratio_min = torch.full((), math.inf, device=device)
        self.ratio_max = torch.full((), -math.inf, device=device)

    def add(self, objective: Objective) -> None:
        smoothing, ratio = objective.smoothing, objective.last_ratio
        assert smoothing is not None and ratio is not None, "SmoothingMeter reads an objective with a smoothing map"
        self.scale += smoothing.last_scale  # a tensor from the schedule
        kappa = smoothing.last_kappa
        self.kappa += kappa.mean() if isinstance(kappa, Tensor) else kappa
        self.ratio_sum += ratio.sum()
        self.ratio_min = torch.minimum(self.ratio_min, ratio.min())
        self.ratio_max = torch.maximum(self.ratio_max, ratio.max())

    def record(self, steps: int, samples: int) -> dict[str, float]:
        """mean_kappa and smoothing_scale, the means over ``steps``; ratio_mean over ``samples``, ratio_min, ratio_max."""
        return {"mean_kappa": float(self.kappa) / steps, "smoothing_scale": float(self.scale) / steps,
                "ratio_mean": float(self.ratio_sum) / samples, "ratio_min": float(self.ratio_min),
                "ratio_max": float(self.ratio_max)}


def summarize(config: Config, metrics: list[dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """The paper's two figures of merit (Sec. 6): the best test accuracy over the evaluated epochs
    ("max") and the mean over the last 10% of epochs ("mean"), plus the clean protocol's final
    accuracy. The last 10% are always evaluated (:meth:`Config.evaluates`). With a validation split,
    also its final and best accuracy and the test accuracy at its best epoch (early stopping on it);
    the last epoch's calibration and, under label noise, memorisation.

    With them, the config as the run on ``device`` read it (:meth:`Config.used`, and ``amp`` None off
    CUDA, where the trainer never autocasts) and where it ran (:func:`resmooth.lab.runfiles.environment`)."""
    evaluated = [m for m in metrics if "test_acc" in m]
    accs = [m["test_acc"] for m in evaluated]
    last = last_tenth(len(metrics))
    summary: dict[str, Any] = {
        "config": {**config.used(), "amp": config.amp if device.type == "cuda" else None},
        "max_test_acc": max(accs),
        "best_epoch": max(evaluated, key=lambda m: m["test_acc"])["epoch"],
        "last10_mean_test_acc": sum(accs[-last:]) / last,
        "final_test_acc": accs[-1],
        "evaluated_epochs": len(evaluated),
        "epochs": len(metrics),
        "seconds": metrics[-1]["seconds"],
        "seed": config.seed,
        **environment(device),
    }
    # Calibration at the last epoch (runs from before it was measured lack it).
    summary.update({f"final_{k}": metrics[-1][k] for k in (*CALIBRATION, *RELIABILITY) if k in metrics[-1]})
    if "temperature" in metrics[-1]:
        summary["temperature"] = metrics[-1]["temperature"]
    # Memorisation at the last epoch (runs with label noise).
    summary.update({f"final_{k}": metrics[-1][k] for k in MEMORISATION if k in metrics[-1]})
    if "val_acc" in metrics[-1]:
        summary["final_val_acc"] = metrics[-1]["val_acc"]
        summary["max_val_acc"] = max(m["val_acc"] for m in evaluated)
        # Early stopping on the validation split: the first evaluated epoch of the best validation accuracy.
        chosen = max(evaluated, key=lambda m: m["val_acc"])
        summary["val_best_epoch"], summary["test_acc_at_best_val"] = chosen["epoch"], chosen["test_acc"]
    return summary
