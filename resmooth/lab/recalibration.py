"""A noisy run's temperature refitted on the true labels of its validation split.

Under label noise a run fits its temperature on its validation split as it holds it, with noisy
labels (:mod:`resmooth.lab.metrics`). A softmax fitted to labels that a perfect classifier gets only
``1 - p`` of right is softened, and on the clean test set it turns underconfident: that fit measures
what a practitioner whose held-out labels are as noisy as the training labels gets. The bar of Guo
et al. (2017), a temperature fitted on clean held-out data, needs the true labels, which the run
keeps (``val_true_y``), and the network of its last epoch, which its checkpoint holds. So the clean
fit is made after the run, from the same files, and checked against the run's own record first: the
test set's calibration at T = 1 and the noisy fit must come out as the summary has them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from .calibration import calibration, temperature_scaled
from .config import Config
from .metrics import evaluate
from .models import build_model
from .objectives import Objective
from .runfiles import CHECKPOINT, CLEAN, atomic_write, resolve_device
from .train import load_run_data

# The summary's figures that the refit must reproduce before it is trusted (float64 on the same
# logits; the tolerance covers another thread count's kernels).
REPRODUCED = ("final_test_nll", "final_test_ece", "final_test_brier", "temperature")
TOLERANCE = 1e-5


@torch.no_grad()
def refit_clean(folder: str | Path, data_root: str | None = None) -> dict[str, Any]:
    """The temperature of the finished noisy run in ``folder`` fitted on the true labels of its
    validation split, and the test set's calibration after it, named as the summary names the noisy
    fit's with ``_clean`` added: ``temperature_clean``, ``final_test_nll_scaled_clean``,
    ``final_test_brier_scaled_clean``, ``final_test_ece_scaled_clean`` and the reliability diagram
    ``final_test_reliability_scaled_clean``.

    ``data_root``: where the dataset is, when not where the run read it. Raises ``ValueError`` for a
    run without label noise or a validation split, an unfinished one, or one whose checkpoint does
    not reproduce its summary.
    """
    folder = Path(folder)
    summary = json.loads((folder / "summary.json").read_text())
    checkpoint = torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=False)
    config = Config.from_dict({**checkpoint["config"], **({"data_root": data_root} if data_root else {})})
    if config.label_noise == 0 or not config.val_size:
        raise ValueError(f"{folder}: label_noise is {config.label_noise} and val_size {config.val_size}; a clean "
                         "temperature needs a run with label noise and a validation split")
    if checkpoint["epoch"] != config.epochs:
        raise ValueError(f"{folder}: the checkpoint is of epoch {checkpoint['epoch']} of {config.epochs}, not the last")
    data = load_run_data(config)
    model = build_model(config.model, data.num_classes, data.in_channels, shortcut=config.shortcut)
    model.load_state_dict(checkpoint["model"])
    model.to(resolve_device(config.device))
    objective = Objective(config, config.epochs * math.ceil(len(data.train_x) / config.batch_size))
    amp = config.amp and data.test_x.device.type == "cuda"
    _, _, test = evaluate(model, objective, data.test_x, data.test_y, config.eval_batch_size, amp)
    _, _, val = evaluate(model, objective, data.val_x, data.val_y, config.eval_batch_size, amp)
    again = {f"final_{k}": v for k, v in calibration(test, data.test_y, "test_").items()}
    again["temperature"] = temperature_scaled(test, data.test_y, val, data.val_y)["temperature"]
    off = {k: (again[k], summary[k]) for k in REPRODUCED if abs(again[k] - summary[k]) > TOLERANCE * abs(summary[k])}
    if off:
        raise ValueError(f"{folder}: the checkpoint does not reproduce the run's summary (refit, recorded): {off}")
    clean = temperature_scaled(test, data.test_y, val, data.val_true_y, "test_")
    return {("temperature_clean" if k == "temperature" else f"final_{k}_clean"): v for k, v in clean.items()}


def refit_folder(folder: str | Path, data_root: str | None = None, *, overwrite: bool = False,
                 quiet: bool = False) -> list[Path]:
    """:func:`refit_clean` for every finished noisy run under ``folder`` (a sweep's, ``<setting>/seed-<k>``),
    each written to ``<run>/clean_temperature.json``, atomically; a run that has one is skipped unless
    ``overwrite``. Returns the files written."""
    written, lacking = [], []
    for summary in sorted(Path(folder).glob("*/seed-*/summary.json")):
        run = summary.parent
        record = json.loads(summary.read_text())
        if not record["config"].get("label_noise"):
            continue
        if not (run / CHECKPOINT).exists():  # a copy of the results: the sweep's own folder has them
            lacking.append(run)
            continue
        if (run / CLEAN).exists() and not overwrite:
            continue
        values = refit_clean(run, data_root)
        atomic_write(run / CLEAN, lambda p: p.write_text(json.dumps(values, indent=1) + "\n"))
        written.append(run / CLEAN)
        if not quiet:
            print(f"{run}: T {record['temperature']:.3f} on the noisy labels, "
                  f"{values['temperature_clean']:.3f} on the true ones")
    if lacking and not quiet:
        print(f"{len(lacking)} noisy runs without their {CHECKPOINT} (a copy of the results?), not refitted: "
              + ", ".join(str(run) for run in lacking[:3]) + (" ..." if len(lacking) > 3 else ""))
    return written
