"""Dense outputs on real images: denoising and segmenting Fashion-MNIST with a small autoencoder.

The paper proposes its smoothing for outputs with a spatial domain (Sec. 1) but shows none; this
module trains :class:`~resmooth.lab.models.autoencoder.ConvAutoencoder` on two such tasks, each with
one of five objectives, and measures the test set (book, chapter 10):

- ``denoise``: the input is a clean image plus noise (:func:`resmooth.lab.images.corrupt`), the
  output an intensity map through a sigmoid, the target the clean image; PSNR and SSIM.
- ``segment``: the input is a noisy image, the output two class maps through a softmax, the
  target the garment's silhouette (:func:`resmooth.lab.images.silhouette`); foreground IoU.

Objectives (``loss``): ``squared-error`` (per pixel, summed per image); ``resmooth-global``,
``resmooth-local``, ``resmooth-full``: :class:`~resmooth.loss.ResidualSmoothingLoss` with the
grid operator and that diffusivity scheme; ``resmooth-graph``: the full scheme with the paper's
own operator (Eq. 22), which treats the C x H x W outputs as one vector with no neighbours;
``total-variation``: the squared error plus ``tv_weight`` times the output's total variation,
the classic smoothness prior.

Training noise is drawn afresh for every batch (from the run's seed); the test set's noise is
drawn once from a fixed seed, so every run is measured on the same noisy images. Seed ``k``
picks the training subset, the initialization, the batch order and the noise, the same for every
objective: differences between objectives are paired by seed.

A run with an output folder writes a checkpoint after every epoch and resumes from it, through
:mod:`resmooth.lab.runfiles` as the trainer's runs do. A study of dense runs is a sweep file with
``kind = "dense"`` (:mod:`resmooth.lab.sweep`; chapter 10's is ``experiments/dense-study.toml``), run
and resumed as any sweep; :func:`dense_report` makes its table.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_int, check_real, spelled
from ._fields import from_record, from_values, inherited, option
from .data import DeviceData, batches, load_data
from ..diffusivity import DiffusivityMap, refuse_unused, unread
from .images import NOISES, corrupt, intersection_union, psnr, silhouette, ssim, total_variation
from ..loss import DIFFUSION_TIME, ResidualSmoothingLoss, SquaredErrorLoss
from .models.autoencoder import ConvAutoencoder
from .stats import paired_difference, summarize_values
from .runfiles import CHECKPOINT, NonFiniteLossError, atomic_write, environment, open_run, resolve_device, write_json

TASKS = ("denoise", "segment")
LOSSES = ("squared-error", "total-variation", "resmooth-global", "resmooth-local", "resmooth-full", "resmooth-graph")
TEST_NOISE_SEED = 2019  # one noisy test set for every run
# The fields a run's data depend on (Fashion-MNIST, its subset and where it lives): a sweep loads
# the data once for the runs that share them.
DATA_FIELDS = ("data_root", "subset", "seed", "device")


@dataclass(frozen=True)
class DenseConfig:
    """One dense-output run. Checked at construction; every field's error names the field.

    The smoothing fields (``distribution`` to ``s``) are those of
    :class:`~resmooth.diffusivity.DiffusivityMap`, the scheme the one that ``loss`` names. As in
    :class:`~resmooth.lab.config.Config`, a field that the run would ignore must keep its default:
    the smoothing fields and ``tau`` under a loss without smoothing, those that the scheme does
    not read, and ``tau`` under ``resmooth-graph`` (the global operator has no diffusion time).
    """

    task: str = option("denoise", "denoise (a clean image from a noisy one) or segment (the garment's silhouette)", TASKS)
    noise: str = option("gaussian", "the corruption of the input images", NOISES)
    level: float = option(0.5, "the noise's standard deviation (intensities in [0, 1]), or the salt-and-pepper fraction")
    loss: str = option("squared-error", "the training objective", LOSSES)
    distribution: str = inherited(DiffusivityMap, "distribution", "resmooth-*")
    mu: float = inherited(DiffusivityMap, "mu", "resmooth-*")
    b: float = inherited(DiffusivityMap, "b", "resmooth-*")
    alpha: float = inherited(DiffusivityMap, "alpha", "resmooth-*")
    s: float = inherited(DiffusivityMap, "s", "resmooth-*")
    tau: float = option(DIFFUSION_TIME, "resmooth-global, -local, -full: the diffusion time tau >= 0 of the grid operator")
    tv_weight: float = option(0.01, "total-variation: the weight of the output's total variation")
    threshold: float = option(0.1, "segment: a pixel brighter than this (in [0, 1)) belongs to the garment")
    width: int = option(16, "the autoencoder's channels at full resolution")
    epochs: int = option(3, "training epochs")
    batch_size: int = option(128, "images per optimizer step")
    lr: float = option(1e-3, "Adam's learning rate")
    subset: float = option(0.2, "the fraction in (0, 1] of the 60,000 training images kept")
    seed: int = option(0, "the seed of the subset, the initialization, the batch order and the noise")
    data_root: str | None = option(None, "the folder that holds Fashion-MNIST (default: $RESMOOTH_DATA, else "
                                   "~/.cache/resmooth/data)")
    device: str = option("auto", "auto (cuda when available), cpu, cuda or cuda:N")
    eval_batch_size: int = option(1000, "images per evaluation batch")

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        check_choice("noise", self.noise, NOISES)
        check_choice("loss", self.loss, LOSSES)
        check_real("level", self.level, minimum=0.0)
        if self.noise == "salt-pepper" and self.level > 1:
            raise ValueError(f"level must lie in [0, 1] for salt-pepper (a fraction of pixels); got {self.level:g}")
        # The map's construction checks its fields; a loss without one leaves them at their defaults.
        if self.diffusivity is None:
            refuse_unused(self, f"loss={self.loss!r} has no residual smoothing")
        for name in ("tau", "tv_weight"):
            check_real(name, getattr(self, name), minimum=0.0)
        if not self.grid and self.tau != DIFFUSION_TIME:
            raise ValueError(f"tau={self.tau!r} would be ignored: loss={self.loss!r} has no grid operator, whose diffusion "
                             f"time it is; leave tau at its default {DIFFUSION_TIME!r}")
        if not 0.0 <= check_real("threshold", self.threshold) < 1.0:
            raise ValueError(f"threshold must lie in [0, 1); got {self.threshold}")
        for name in ("width", "epochs", "batch_size", "eval_batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        check_real("lr", self.lr, minimum=0.0, strict=True)
        if not 0.0 < check_real("subset", self.subset) <= 1.0:
            raise ValueError(f"subset must lie in (0, 1]; got {self.subset}")

    @property
    def diffusivity(self) -> DiffusivityMap | None:
        """The smoothing's hyperparameters, of the scheme that ``loss`` names (``resmooth-graph``:
        the full one); None for a loss without smoothing."""
        if not self.loss.startswith("resmooth-"):
            return None
        return DiffusivityMap.of(self, scheme="full" if self.loss == "resmooth-graph" else self.loss.removeprefix("resmooth-"))

    @property
    def grid(self) -> bool:
        """Whether the loss smooths with the grid operator, whose diffusion time ``tau`` is."""
        return self.loss in ("resmooth-global", "resmooth-local", "resmooth-full")

    @property
    def activation(self) -> str:
        return "sigmoid" if self.task == "denoise" else "softmax"

    @property
    def out_channels(self) -> int:
        return 1 if self.task == "denoise" else 2

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DenseConfig:
        """A config from plain values (a sweep file's), refusing unknown fields by name."""
        return from_values(cls, values)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DenseConfig:
        """The config of a finished run from its summary's record (:meth:`used`, or an older summary's config as given)."""
        return from_record(cls, record)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def used(self) -> dict[str, Any]:
        """The fields as a run of this config reads them, which its summary records: None for each
        that it does not read (the smoothing's under a loss without it, and those that the scheme
        ignores; ``tau`` without the grid operator; ``tv_weight`` outside total-variation;
        ``threshold`` outside segment)."""
        ignored = set(unread(self.diffusivity))
        ignored |= {name for name, read in (("tau", self.grid), ("tv_weight", self.loss == "total-variation"),
                                            ("threshold", self.task == "segment")) if not read}
        return {k: None if k in ignored else v for k, v in self.to_dict().items()}


def load_run_data(config: DenseConfig, *, download: bool = False) -> DeviceData:
    """The Fashion-MNIST a run of ``config`` trains and is tested on: they depend on :data:`DATA_FIELDS` only.

    ``download``: fetch it into ``config.data_root`` first when its files are missing.
    """
    return load_data("fashion-mnist", config.data_root, subset=config.subset, seed=config.seed,
                     device=resolve_device(config.device), download=download)


class DenseObjective(nn.Module):
    """The training loss of ``config.loss`` on logits (N, C, H, W) and the task's target;
    :meth:`step`, once per optimizer step, advances the smoothing's progress over ``total_steps``.

    The study's objective is fixed here, not by the criteria's default reduction: per image, the
    sum over its channels and pixels of the (smoothed) squared residual, averaged over the batch.
    The criteria give the loss per pixel (``reduction="none"``), whose ``"mean"`` would also
    average over the pixels and so scale the loss, and with Adam the steps, by 1 / (H W).
    """

    def __init__(self, config: DenseConfig, total_steps: int) -> None:
        super().__init__()
        self.config = config
        if config.diffusivity is not None:
            self.criterion: nn.Module = ResidualSmoothingLoss(
                **dataclasses.asdict(config.diffusivity), activation=config.activation,
                operator="global" if config.loss == "resmooth-graph" else "grid", tau=config.tau, reduction="none",
                total_steps=total_steps)
        else:
            self.criterion = SquaredErrorLoss(activation=config.activation, reduction="none")

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        loss = self.criterion(logits, target).flatten(1).sum(dim=1).mean()
        if self.config.loss == "total-variation":
            loss = loss + self.config.tv_weight * total_variation(prediction(logits, self.config.task)).mean()
        return loss

    def step(self) -> None:
        self.criterion.step()  # the squared error's does nothing


def prediction(logits: Tensor, task: str) -> Tensor:
    """What the network predicts: the intensity (denoise) or the foreground probability (segment)."""
    return torch.sigmoid(logits) if task == "denoise" else torch.softmax(logits, dim=1)[:, 1:]


def clean_images(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Undo the loader's per-channel normalization: intensities in [0, 1]."""
    shape = (1, -1, 1, 1)
    return x * torch.tensor(std, dtype=x.dtype, device=x.device).view(shape) + torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape)


def task_target(clean: Tensor, config: DenseConfig) -> Tensor:
    return clean if config.task == "denoise" else silhouette(clean, config.threshold)


@torch.no_grad()
def evaluate_dense(model: nn.Module, config: DenseConfig, noisy: Tensor, clean: Tensor) -> dict[str, float]:
    """The test metrics: PSNR and SSIM (denoise), foreground IoU and pixel accuracy (segment)."""
    model.eval()
    sums: dict[str, float] = {}
    for i in range(0, len(noisy), config.eval_batch_size):
        x, c = noisy[i:i + config.eval_batch_size], clean[i:i + config.eval_batch_size]
        p = prediction(model(x), config.task)
        if config.task == "denoise":
            values = {"psnr": float(psnr(p, c).sum()), "ssim": float(ssim(p, c).sum())}
        else:
            mask, target = (p[:, 0] > 0.5).long(), silhouette(c, config.threshold)
            inter, union = intersection_union(mask, target)
            values = {"intersection": inter, "union": union, "correct": int((mask == target).sum())}
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
    model.train()
    if config.task == "denoise":
        return {"psnr": sums["psnr"] / len(noisy), "ssim": sums["ssim"] / len(noisy)}
    return {"iou": sums["intersection"] / sums["union"], "pixel_accuracy": sums["correct"] / clean[:, 0].numel()}


def input_metrics(config: DenseConfig, noisy: Tensor, clean: Tensor) -> dict[str, float]:
    """The noisy input's own PSNR and SSIM against the clean image: what doing nothing scores."""
    if config.task != "denoise":
        return {}
    return {"input_psnr": float(psnr(noisy.clamp(0, 1), clean).mean()), "input_ssim": float(ssim(noisy.clamp(0, 1), clean).mean())}


def train_dense(config: DenseConfig, out: str | Path | None = None, *, resume: bool = False, overwrite: bool = False,
                quiet: bool = False, data: Any = None) -> tuple[dict[str, Any], nn.Module]:
    """Train one run; return its summary and the trained model.

    With ``out``, write ``out/checkpoint.pt`` after every epoch (model, optimizer, the smoothing's
    schedule and the random state), so that ``resume=True`` after a kill continues to the same
    result as a run that never stopped, and ``out/summary.json`` at the end; both atomically, and
    a run already there is not overwritten unless ``overwrite=True``
    (:func:`resmooth.lab.runfiles.open_run`).

    ``data`` is a :class:`~resmooth.lab.data.DeviceData` of Fashion-MNIST to reuse (a sweep loads it
    once per seed); by default it is loaded from ``config.data_root`` (:func:`load_run_data`).
    """
    out = Path(out) if out is not None else None
    checkpoint = None
    if out is not None:
        checkpoint = open_run(out, resume=resume, overwrite=overwrite)
        if checkpoint is not None and DenseConfig(**checkpoint["config"]) != config:
            raise ValueError(f"{out}/{CHECKPOINT} was written by another config; use another {spelled('out')} or "
                             f"{spelled('overwrite', True)}")
    device = resolve_device(config.device)
    if data is None:
        data = load_run_data(config)
    torch.manual_seed(config.seed)
    model = ConvAutoencoder(1, config.out_channels, config.width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    clean_train = clean_images(data.train_x, data.mean, data.std)
    clean_test = clean_images(data.test_x, data.mean, data.std)
    noisy_test = corrupt(clean_test, config.noise, config.level,
                         torch.Generator(device=device).manual_seed(TEST_NOISE_SEED))
    generator = torch.Generator(device=device).manual_seed(config.seed)
    steps_per_epoch = -(-len(clean_train) // config.batch_size)
    total = config.epochs * steps_per_epoch
    objective = DenseObjective(config, total)
    losses: list[float] = []
    seconds = 0.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        objective.load_state_dict(checkpoint["objective"])
        generator.set_state(checkpoint["generator"])
        losses, seconds = checkpoint["train_loss"], checkpoint["train_seconds"]
    bar = None
    if not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=len(losses) * steps_per_epoch, unit="step",
                   desc=f"{config.task} {config.loss} seed {config.seed}")
    for epoch in range(len(losses), config.epochs):
        tic = time.perf_counter()
        # Summed on the device and read once per epoch: a check per step would wait for the
        # device at every step. A NaN or an infinity stays in the sum, so the epoch's check sees it.
        epoch_loss = torch.zeros((), device=device)
        for clean, _ in batches(clean_train, data.train_y, config.batch_size, shuffle=True, generator=generator):
            noisy = corrupt(clean, config.noise, config.level, generator)
            loss = objective(model(noisy), task_target(clean, config))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            objective.step()
            epoch_loss += loss.detach()
            if bar is not None:
                bar.update()
        losses.append(float(epoch_loss) / steps_per_epoch)
        if not math.isfinite(losses[-1]):
            if bar is not None:
                bar.close()
            kept = f"the checkpoint of epoch {epoch} in {out} is kept" if out is not None and epoch else "nothing was saved"
            raise NonFiniteLossError(
                f"the {config.loss} loss became {losses[-1]} in epoch {epoch + 1}: the run stops, and {kept}. "
                f"Lower the learning rate ({spelled('lr')}) or check the data.", epoch=epoch + 1, loss=losses[-1]
            )
        seconds += time.perf_counter() - tic
        if out is not None:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "objective": objective.state_dict(),  # the smoothing's progress schedule
                     "generator": generator.get_state(), "train_loss": losses, "train_seconds": seconds,
                     "config": config.to_dict()}
            atomic_write(out / CHECKPOINT, lambda p: torch.save(state, p))
    if bar is not None:
        bar.close()
    summary = {
        "config": config.used(),
        **evaluate_dense(model, config, noisy_test, clean_test),
        **input_metrics(config, noisy_test, clean_test),
        "train_loss": losses,
        "train_seconds": seconds,
        "environment": environment(device),
    }
    if out is not None:
        write_json(out / "summary.json", summary)
    return summary, model


def task_name(config: dict[str, Any]) -> str:
    """A run's task as the report and chapter 10 name it, from its config: ``denoise-gaussian-0.2``."""
    return f"{config['task']}-{config['noise']}-{config['level']:g}"


def collect_dense(folder: str | Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The finished runs of a dense sweep's folder (``<setting>/seed-<k>/summary.json``), by (task
    name, objective), in seed order.

    Raises:
        ValueError: two settings share a task and an objective (a sweep that also varies another
            field, such as ``tau``): their runs would be taken for seeds of one setting.
    """
    runs = [(path.parent.parent.name, json.loads(path.read_text())) for path in Path(folder).glob("*/seed-*/summary.json")]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    settings: dict[tuple[str, str], str] = {}
    for setting, run in sorted(runs, key=lambda r: (task_name(r[1]["config"]), r[1]["config"]["loss"], r[1]["config"]["seed"])):
        key = (task_name(run["config"]), run["config"]["loss"])
        if settings.setdefault(key, setting) != setting:
            raise ValueError(f"{folder}: settings {settings[key]} and {setting} are both task {key[0]} with objective "
                             f"{key[1]}; the dense report holds one setting per task and objective")
        groups.setdefault(key, []).append(run)
    return groups


def headline(task: str) -> str:
    """The metric a task is judged by."""
    return "iou" if task.startswith("segment") else "psnr"


def dense_report(folder: str | Path, *, write: bool = True) -> str:
    """The study's table: each metric's mean over seeds ± the half-width of its 95% t-interval, and
    the paired difference of the headline metric (PSNR in dB, IoU) to the squared error on the
    same seeds, with its 95% paired t interval."""
    folder = Path(folder)
    groups = collect_dense(folder)
    if not groups:
        raise FileNotFoundError(f"no finished runs (*/seed-*/summary.json) under {folder}")
    lines = ["# Dense outputs: Fashion-MNIST denoising and segmentation", "",
             "Test set (10,000 images, one fixed noise draw). Mean ± half-width of the 95% t-interval over seeds; "
             "the difference is objective - squared error on the same seeds, with its 95% paired t "
             "interval and the seeds won and lost.", "",
             "| task | objective | seeds | PSNR (dB) | SSIM | IoU | difference | wins-losses |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    rows = [["task", "objective", "seeds", "metric", "mean", "std", "diff_mean", "diff_low", "diff_high", "wins", "losses"]]
    for (task, loss), runs in sorted(groups.items(), key=lambda item: (item[0][0], LOSSES.index(item[0][1]))):
        cells = []
        for metric in ("psnr", "ssim", "iou"):
            if metric in runs[0]:
                s = summarize_values([r[metric] for r in runs])
                scale = 100 if metric == "iou" else 1
                cells.append(f"{s.mean * scale:.{2 if metric != 'ssim' else 4}f} ± {s.ci95 * scale:.{2 if metric != 'ssim' else 4}f}")
            else:
                cells.append("")
        metric = headline(task)
        base = {r["config"]["seed"]: r[metric] for r in groups.get((task, "squared-error"), [])}
        seeds = [r["config"]["seed"] for r in runs if r["config"]["seed"] in base]
        diff, signs, paired = "(baseline)", "", None
        if loss != "squared-error" and seeds:
            own = {r["config"]["seed"]: r[metric] for r in runs}
            scale = 100 if metric == "iou" else 1
            paired = paired_difference([own[k] * scale for k in seeds], [base[k] * scale for k in seeds])
            diff, signs = str(paired), f"{paired.wins}-{paired.losses}"
        lines.append(f"| {task} | {loss} | {len(runs)} | " + " | ".join(cells) + f" | {diff} | {signs} |")
        s = summarize_values([r[metric] for r in runs])
        rows.append([task, loss, len(runs), metric, f"{s.mean:.6f}", f"{s.std:.6f}"]
                    + ([f"{paired.mean:.6f}", f"{paired.low:.6f}", f"{paired.high:.6f}", paired.wins, paired.losses] if paired else [""] * 5))
    text = "\n".join(lines) + "\n"
    if write:
        atomic_write(folder / "report.md", lambda p: p.write_text(text))
        atomic_write(folder / "report.csv", lambda p: p.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n"))
    return text
