"""One config, one loop: the paper's training protocol (Sec. 6).

The protocol, and the two ways of evaluating a run, are fixed in the book's appendix,
Conventions and notation: the training protocol, and the evaluation protocols.

``train(Config(...))`` loads the dataset onto the device as one tensor, builds the network,
and runs SGD (or Adam, AdaGrad) with the method's objective, writing after every epoch:

- ``OUT/metrics.jsonl``: one record per epoch (epoch, train_loss, train_acc, test_loss,
  test_acc, val_acc, lr, mean_kappa, smoothing_scale, seconds; the test and validation fields
  only on the epochs that ``Config.evaluates``, with the test set's calibration, test_nll,
  test_brier and test_ece (:mod:`resmooth.lab.calibration`), and at the last epoch, where there
  is a validation split, the temperature fitted on it and test_nll_scaled, test_brier_scaled,
  test_ece_scaled after it; the methods with a smoothing map also record the rescaling ratio
  ``||W d||^2 / ||d||^2`` over the epoch's samples: ratio_mean, ratio_min, ratio_max);
- ``OUT/checkpoint.pt``: model, optimizer and random state, so that ``resume=True`` after a
  kill continues to the same result as a run that never stopped;

and ``OUT/summary.json`` at the end. Every file is written atomically (a temporary file, then
a rename), and a finished run is never overwritten unless ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_int, check_real, spelled
from ._fields import from_record, from_values, inherited, option
from .calibration import calibration, temperature_scaled
from .data import DATASETS, DeviceData, augment_batch, batches, load_data
from ..diffusivity import DiffusivityMap, refuse_unused, unread
from ..loss import ResidualSmoothingLoss, SquaredErrorLoss
from ..residual import ACTIVATIONS
from .models import MODELS, build_model
from ..regularization import adaptive_decay, add_weight_decay_
from .runfiles import CHECKPOINT, atomic_write, environment, open_run, write_json, write_jsonl

METHODS = ("sgd", "sgd-ce", "label-smoothing", "label-smoothing-se", "adam", "adagrad", "resmooth", "sgd-rescaled",
           "adaptive-wd")
# The methods that read the diffusivity map: residual smoothing, and its mechanistic control.
SMOOTHED = ("resmooth", "sgd-rescaled")
CROSS_ENTROPY = ("sgd-ce", "label-smoothing")
# The optimizers' usual default learning rates; SGD's is the paper's 0.1.
DEFAULT_LR = {"adam": 1e-3, "adagrad": 1e-2}


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: the run diverged.

    ``epoch`` (counted from 1) and ``loss`` say when and what; a sweep records them as the run's
    result (:data:`resmooth.lab.sweep.DIVERGED`) instead of stopping.
    """

    def __init__(self, message: str, *, epoch: int, loss: float) -> None:
        super().__init__(message)
        self.epoch, self.loss = epoch, loss


@dataclass
class Config:
    """Everything that defines a run. The defaults are the paper's Fashion-MNIST protocol.

    The residual smoothing fields (``scheme`` to ``s``) are those of
    :class:`~resmooth.diffusivity.DiffusivityMap`, checked by it. Every field has a default, and a
    default is never refused; a field that the run would ignore must keep it: the smoothing
    fields when ``method`` is neither ``"resmooth"`` nor its control ``"sgd-rescaled"``,
    ``activation`` under the cross-entropy methods, and the ones that the scheme does not read
    (``alpha`` under ``"global"``, which may also be 0; ``s`` outside ``"local"``;
    ``distribution``, ``mu`` and ``b`` under ``"local"``). Another value is a ValueError that
    names the field and why.
    """

    dataset: str = option("fashion-mnist", "the dataset", DATASETS)
    data_root: str | None = option(None, "the folder that holds the datasets (default: $RESMOOTH_DATA, else ~/.cache/resmooth/data)")
    model: str = option("resnet20", "the network", tuple(MODELS))
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
    seed: int = option(0, "the seed of the initialization, the subset, the batch order and the augmentation")
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
        if self.lr is not None:
            check_real("lr", self.lr, minimum=0.0, strict=True)
        if not 0.0 <= check_real("lr_drop", self.lr_drop) <= 1.0:
            raise ValueError(f"{spelled('lr_drop')} must lie in [0, 1] (a fraction of the epochs); got {self.lr_drop}")
        check_real("lr_factor", self.lr_factor, minimum=0.0)
        check_real("momentum", self.momentum, minimum=0.0)
        check_real("weight_decay", self.weight_decay, minimum=0.0)
        check_real("nu", self.nu, minimum=0.0, strict=True)
        if not 0.0 <= check_real("label_smoothing", self.label_smoothing) < 1.0:
            raise ValueError(f"{spelled('label_smoothing')} must lie in [0, 1); got {self.label_smoothing}")
        if not 0.0 < check_real("subset", self.subset) <= 1.0:
            raise ValueError(f"{spelled('subset')} must lie in (0, 1] (a fraction of the training set); got {self.subset}")
        if not 0.0 <= check_real("val_fraction", self.val_fraction) < 1.0:
            raise ValueError(f"{spelled('val_fraction')} must lie in [0, 1); got {self.val_fraction}")
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
        label-smoothing methods; ``nu`` outside adaptive-wd; ``momentum`` under adam and adagrad.
        (``amp`` depends on the device as well: :func:`summarize` records it.)"""
        ignored = set(unread(self.diffusivity if self.method in SMOOTHED else None))
        ignored |= {name for name, read in (("label_smoothing", self.method.startswith("label-smoothing")),
                                            ("nu", self.method == "adaptive-wd"),
                                            ("momentum", self.method not in ("adam", "adagrad"))) if not read}
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


# The calibration record of an evaluated epoch (resmooth.lab.calibration); the last epoch adds the
# temperature fitted on the validation split and the test figures after it (``_scaled``).
CALIBRATION = tuple(f"test_{m}{scaled}" for scaled in ("", "_scaled") for m in ("nll", "brier", "ece"))

DATA_FIELDS = ("dataset", "data_root", "subset", "val_fraction", "val_size", "seed", "device")


def load_run_data(config: Config, *, download: bool = False) -> DeviceData:
    """The data a run of ``config`` trains on: they depend on :data:`DATA_FIELDS` only.

    ``download``: fetch the dataset into ``config.data_root`` first when its files are missing.
    """
    return load_data(config.dataset, config.data_root, subset=config.subset, val_fraction=config.val_fraction,
                     val_size=config.val_size, seed=config.seed, device=resolve_device(config.device), download=download)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{spelled('device', name)} was asked for, but CUDA is not available here; use "
                         f"{spelled('device', 'cpu')} or {spelled('device', 'auto')}")
    return device


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
    over ``total_steps``.
    """

    def __init__(self, config: Config, total_steps: int) -> None:
        super().__init__()
        self.method = config.method
        self.label_smoothing = config.label_smoothing if config.method.startswith("label-smoothing") else 0.0
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
    # adaptive-wd applies its own, per-batch decay (Eq. 6) in place of the optimizer's.
    decay = 0.0 if config.method == "adaptive-wd" else config.weight_decay
    params, lr = model.parameters(), config.learning_rate
    if config.method == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    if config.method == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=decay)
    return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=decay)


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
    model = build_model(config.model, data.num_classes, data.in_channels).to(device)
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
    fill = data.pad_fill if data.augment else None

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
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        kappa_sum, scale_sum = 0.0, 0.0
        ratio_sum = torch.zeros((), device=device)
        ratio_min = torch.full((), math.inf, device=device)
        ratio_max = torch.full((), -math.inf, device=device)
        model.train()
        for xb, yb in batches(data.train_x, data.train_y, config.batch_size, shuffle=True, generator=generator):
            if data.augment:
                xb = augment_batch(xb, generator, fill=fill)
            if device.type == "cuda":
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = step_model(xb)
            losses = objective(logits, yb)
            loss = losses.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.method == "adaptive-wd":
                # adaptive-wd's objective is the data term itself: its per-sample losses are Eq. 5's l_i.
                add_weight_decay_(model.parameters(), adaptive_decay(losses, config.weight_decay, config.nu))
            optimizer.step()
            objective.step()
            loss_sum += losses.detach().sum()
            correct += (logits.detach().argmax(1) == yb).sum()
            if objective.smoothing is not None:
                scale_sum += objective.smoothing.last_scale  # a tensor from the schedule: no read-back
                kappa = objective.smoothing.last_kappa
                kappa_sum += kappa.mean() if isinstance(kappa, Tensor) else kappa  # no read-back per step
                ratio = objective.last_ratio
                ratio_sum += ratio.sum()
                ratio_min, ratio_max = torch.minimum(ratio_min, ratio.min()), torch.maximum(ratio_max, ratio.max())
            if bar is not None:
                bar.update()
        train_loss = float(loss_sum) / len(data.train_x)
        if not math.isfinite(train_loss):
            if bar is not None:
                bar.close()
            kept = f"the checkpoint of epoch {epoch} in {out} is kept" if out is not None and epoch else "nothing was saved"
            raise NonFiniteLossError(
                f"the training loss became {train_loss} in epoch {epoch + 1}: the run stops, and {kept}. "
                f"Lower the learning rate ({spelled('lr')}) or check the data.", epoch=epoch + 1, loss=train_loss
            )
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_acc": 100.0 * float(correct) / len(data.train_x),
        }
        if config.evaluates(epoch):
            record["test_loss"], record["test_acc"], test_logits = evaluate(
                model, objective, data.test_x, data.test_y, config.eval_batch_size, amp)
            record.update(calibration(test_logits, data.test_y, "test_"))
            if data.val_x is not None:
                _, record["val_acc"], val_logits = evaluate(model, objective, data.val_x, data.val_y,
                                                            config.eval_batch_size, amp)
                if epoch + 1 == config.epochs:  # temperature scaling, fitted on the validation split
                    record.update(temperature_scaled(test_logits, data.test_y, val_logits, data.val_y, "test_"))
        elapsed += time.perf_counter() - tic
        record.update(lr=lr, mean_kappa=float(kappa_sum) / steps_per_epoch if objective.smoothing else 0.0,
                      smoothing_scale=float(scale_sum) / steps_per_epoch if objective.smoothing else 0.0, seconds=elapsed)
        if objective.smoothing is not None:
            record.update(ratio_mean=float(ratio_sum) / len(data.train_x), ratio_min=float(ratio_min),
                          ratio_max=float(ratio_max))
        metrics.append(record)
        if out is not None:
            write_jsonl(out / "metrics.jsonl", metrics)
            state = _state(model, optimizer, objective, generator, epoch + 1, metrics, config)
            atomic_write(out / CHECKPOINT, lambda p: torch.save(state, p))
        if bar is not None:
            bar.set_postfix(test_acc=f"{record.get('test_acc', float('nan')):.2f}", loss=f"{train_loss:.4f}")
    if bar is not None:
        bar.close()

    summary = summarize(config, metrics, device)
    if out is not None:
        write_json(out / "summary.json", summary)
    return summary


def last_tenth(epochs: int) -> int:
    """How many final epochs the paper's "mean" figure averages: 10% of them, at least one."""
    return max(1, round(0.1 * epochs))


def summarize(config: Config, metrics: list[dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """The paper's two figures of merit (Sec. 6): the best test accuracy over the evaluated epochs
    ("max") and the mean over the last 10% of epochs ("mean"), plus the clean protocol's final
    accuracy. The last 10% are always evaluated (:meth:`Config.evaluates`).

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
    summary.update({f"final_{k}": metrics[-1][k] for k in CALIBRATION if k in metrics[-1]})
    if "temperature" in metrics[-1]:
        summary["temperature"] = metrics[-1]["temperature"]
    if "val_acc" in metrics[-1]:
        summary["final_val_acc"] = metrics[-1]["val_acc"]
        summary["max_val_acc"] = max(m["val_acc"] for m in evaluated)
    return summary
