"""One config, one loop: the paper's training protocol (Sec. 6).

The protocol, and the two ways of evaluating a run, are fixed in the book's appendix,
Conventions and notation: the training protocol, and the evaluation protocols.

``train(Config(...))`` loads the dataset onto the device as one tensor, builds the network,
and runs the method's optimizer on its objective (:mod:`resmooth.lab.objectives`), writing
after every epoch:

- ``OUT/metrics.jsonl``: one record per epoch (epoch, train_loss, train_acc, lr, mean_kappa,
  smoothing_scale, seconds; on the epochs that ``Config.evaluates``, the test and validation
  figures of :func:`resmooth.lab.metrics.evaluation`; the methods with a smoothing map also
  ratio_mean, ratio_min, ratio_max, :class:`resmooth.lab.metrics.SmoothingMeter`);
- ``OUT/checkpoint.pt``: model, optimizer and random state, so that ``resume=True`` after a
  kill continues to the same result as a run that never stopped;

and ``OUT/summary.json`` at the end (:func:`resmooth.lab.metrics.summarize`). Every file is
written atomically (a temporary file, then a rename), and a finished run is never overwritten
unless ``overwrite=True``. The run's fields are those of :class:`resmooth.lab.config.Config`,
which this module exports with the loop.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import spelled
from .config import Config
from .data import DeviceData, augment_batch, batches, load_data
from .metrics import SmoothingMeter, evaluation, summarize
from .models import build_model
from .noise import with_label_noise
from .objectives import Objective, make_optimizer, smoothed_labels
from .runfiles import CHECKPOINT, NonFiniteLossError, atomic_write, open_run, resolve_device, write_json, write_jsonl

# The loop, and what the book's chapters and the loss room's tests import from here: the config, the
# soft target of label-smoothing-se, the objective (resmooth.lab.config and .objectives are their homes).
__all__ = ["DATA_FIELDS", "Config", "Objective", "load_run_data", "smoothed_labels", "train"]

DATA_FIELDS = ("dataset", "data_root", "subset", "val_fraction", "val_size", "pad", "label_noise", "seed", "device")


def load_run_data(config: Config, *, download: bool = False) -> DeviceData:
    """The data a run of ``config`` trains on: they depend on :data:`DATA_FIELDS` only.

    ``download``: fetch the dataset into ``config.data_root`` first when its files are missing. With
    ``label_noise``, the training and validation labels are noisy and their true ones kept
    (:func:`resmooth.lab.noise.with_label_noise`).
    """
    data = load_data(config.dataset, config.data_root, subset=config.subset, val_fraction=config.val_fraction,
                     val_size=config.val_size, seed=config.seed, pad=config.pad, device=resolve_device(config.device),
                     download=download)
    return with_label_noise(data, config.label_noise, config.seed)


def _state(model: nn.Module, optimizer: torch.optim.Optimizer, objective: Objective, generator: torch.Generator,
           epoch: int, metrics: list[dict[str, Any]], config: Config) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "objective": objective.state_dict(),  # the smoothing's progress schedule
        "generator": generator.get_state(),
        "epoch": epoch,
        "metrics": metrics,
        "config": config.to_dict(),
    }


def train(
    config: Config,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    data: DeviceData | None = None,
) -> dict[str, Any]:
    """Run ``config`` and return its summary; with ``out``, write the run's files there.

    Args:
        config: the run.
        out: the folder for metrics.jsonl, checkpoint.pt and summary.json (None: keep nothing).
        resume: continue from ``out/checkpoint.pt`` if there is one.
        overwrite: replace a run (finished or not) already in ``out``.
        quiet: no progress bar (notebooks, CI).
        data: the dataset, already loaded (a sweep loads it once for many runs).
    """
    out = Path(out) if out is not None else None
    checkpoint = None
    if out is not None:
        checkpoint = open_run(out, resume=resume, overwrite=overwrite, started_by=(CHECKPOINT, "metrics.jsonl"))
        # from_dict fills in the fields that a checkpoint older than them lacks, at their defaults.
        if checkpoint is not None and Config.from_dict(checkpoint["config"]) != config:
            raise ValueError(f"{out}/{CHECKPOINT} was written by another config; use another {spelled('out')} or "
                             f"{spelled('overwrite', True)}")

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    if data is None:
        data = load_run_data(config)
    model = build_model(config.model, data.num_classes, data.in_channels, shortcut=config.shortcut).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model)
    steps_per_epoch = math.ceil(len(data.train_x) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    objective = Objective(config, total_steps)
    # One generator draws every batch order and augmentation: its state is the data's RNG state.
    generator = torch.Generator(device=device).manual_seed(config.seed)
    metrics: list[dict[str, Any]] = []
    start_epoch = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        # A checkpoint from before the schedule was saved holds whole epochs: its count follows
        # (the schedule's length is the run's, which the state then need not say).
        done = torch.tensor(checkpoint["epoch"] * steps_per_epoch)
        objective.load_state_dict(checkpoint.get("objective")
                                  or {k: done for k in objective.state_dict() if k.endswith("steps_done")})
        generator.set_state(checkpoint["generator"])
        metrics, start_epoch = checkpoint["metrics"], checkpoint["epoch"]
    step_model = torch.compile(model) if config.compile else model
    amp = config.amp and device.type == "cuda"

    bar = None
    if not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, unit="step",
                   desc=f"{config.method} {config.dataset} seed {config.seed}", dynamic_ncols=True)
    elapsed = metrics[-1]["seconds"] if metrics else 0.0
    for epoch in range(start_epoch, config.epochs):
        tic = time.perf_counter()
        lr = config.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        try:
            record = _epoch(epoch, step_model, model, optimizer, objective, data, config, generator, amp, bar)
        except NonFiniteLossError as error:
            if bar is not None:
                bar.close()
            kept = f"the checkpoint of epoch {epoch} in {out} is kept" if out is not None and epoch else "nothing was saved"
            raise NonFiniteLossError(f"{error}: the run stops, and {kept}. Lower the learning rate ({spelled('lr')}) "
                                     "or check the data.", epoch=error.epoch, loss=error.loss) from None
        if config.evaluates(epoch):
            record |= evaluation(model, objective, data, config, last=epoch + 1 == config.epochs, amp=amp)
        elapsed += time.perf_counter() - tic
        metrics.append({**record, "lr": lr, "seconds": elapsed})
        if out is not None:
            write_jsonl(out / "metrics.jsonl", metrics)
            state = _state(model, optimizer, objective, generator, epoch + 1, metrics, config)
            atomic_write(out / CHECKPOINT, lambda p: torch.save(state, p))
        if bar is not None:
            bar.set_postfix(test_acc=f"{metrics[-1].get('test_acc', float('nan')):.2f}",
                            loss=f"{metrics[-1]['train_loss']:.4f}")
    if bar is not None:
        bar.close()

    summary = summarize(config, metrics, device)
    if out is not None:
        write_json(out / "summary.json", summary)
    return summary


def _epoch(epoch: int, step_model: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, objective: Objective,
           data: DeviceData, config: Config, generator: torch.Generator, amp: bool, bar: Any) -> dict[str, Any]:
    """One epoch of optimizer steps over the training set: the record of its training figures and the
    smoothing's (:class:`~resmooth.lab.metrics.SmoothingMeter`; zeros for a method without a smoothing map).

    Raises:
        NonFiniteLossError: the epoch's training loss is NaN or infinite.
    """
    device = data.train_x.device
    fill = data.pad_fill if data.augment else None
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    meter = SmoothingMeter(device) if objective.smoothing is not None else None
    for xb, yb in batches(data.train_x, data.train_y, config.batch_size, shuffle=True, generator=generator):
        if data.augment:
            xb = augment_batch(xb, generator, fill=fill)
        if device.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = step_model(xb)
        losses = objective(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        losses.mean().backward()
        objective.decay_(model.parameters(), losses)
        optimizer.step()
        objective.step()
        loss_sum += losses.detach().sum()
        correct += (logits.detach().argmax(1) == yb).sum()
        if meter is not None:
            meter.add(objective)
        if bar is not None:
            bar.update()
    train_loss = float(loss_sum) / len(data.train_x)
    if not math.isfinite(train_loss):
        raise NonFiniteLossError(f"the training loss became {train_loss} in epoch {epoch + 1}", epoch=epoch + 1,
                                 loss=train_loss)
    steps = math.ceil(len(data.train_x) / config.batch_size)
    smoothing = (meter.record(steps, len(data.train_x)) if meter is not None
                 else {"mean_kappa": 0.0, "smoothing_scale": 0.0})
    return {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": 100.0 * float(correct) / len(data.train_x),
            **smoothing}
