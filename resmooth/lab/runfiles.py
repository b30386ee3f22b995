"""A run's files: written atomically, never overwritten by mistake, with the environment they came from.

Shared by every runner (:mod:`resmooth.lab.train`, :mod:`resmooth.lab.dense`, :mod:`resmooth.lab.sweep`,
:mod:`resmooth.lab.cluster`): a file is written to a temporary name and renamed into place, so a
reader (or a run killed mid-write) never sees half of it. A run ends with its ``summary.json``, or,
when its loss diverged (:class:`NonFiniteLossError`), with the record :func:`train_or_record`
writes in its place (:data:`DIVERGED`).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._checks import spelled


class RunExistsError(FileExistsError):
    """The output folder holds a run that would be overwritten."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: the run diverged.

    ``epoch`` (counted from 1) and ``loss`` say when and what; a sweep records them as the run's
    result (:data:`DIVERGED`) instead of stopping.
    """

    def __init__(self, message: str, *, epoch: int, loss: float) -> None:
        super().__init__(message)
        self.epoch, self.loss = epoch, loss


CHECKPOINT = "checkpoint.pt"
# The record of a run that diverged, in its folder in place of summary.json: the sweep's result for it.
DIVERGED = "diverged.json"
# A noisy run's temperature refitted on its validation split's true labels, after the run, beside
# its summary (resmooth.lab.recalibration); collect() reads it in with the summary.
CLEAN = "clean_temperature.json"


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; any other name as torch reads it, refused when
    it asks for CUDA that this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{spelled('device', name)} was asked for, but CUDA is not available here; use "
                         f"{spelled('device', 'cpu')} or {spelled('device', 'auto')}")
    return device


def open_run(out: Path, *, resume: bool, overwrite: bool, started_by: tuple[str, ...] = (CHECKPOINT,)) -> dict[str, Any] | None:
    """Make the folder ``out`` ready for a run; return the checkpoint to resume from (None: start afresh).

    A finished run (``summary.json``) is refused unless ``overwrite``; an unfinished one (any of
    the files ``started_by``) unless ``resume`` (continue from its checkpoint) or ``overwrite``.

    Raises:
        RunExistsError: the run would be overwritten, or ``resume`` asks to continue a finished one.
        ValueError: the checkpoint to resume from cannot be read (a truncated or damaged file).
    """
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "summary.json"
    if summary.exists() and not overwrite:
        if resume:
            epochs = json.loads(summary.read_text())["config"]["epochs"]
            raise RunExistsError(
                f"{out} holds a finished run ({epochs} epoch{'s' * (epochs != 1)}, summary.json): there is nothing to "
                f"resume. To train longer, start a new run with more {spelled('epochs')} in another {spelled('out')} (a "
                "run lays out its schedules, such as the learning-rate drop and the smoothing's annealing, over its "
                f"epochs, so a finished run cannot be continued), or pass {spelled('overwrite', True)} to replace this one")
        raise RunExistsError(f"{out} holds a finished run (summary.json); use another {spelled('out')}, or pass "
                             f"{spelled('overwrite', True)} to replace it")
    if any((out / name).exists() for name in started_by) and not (resume or overwrite):
        raise RunExistsError(f"{out} holds an unfinished run; pass {spelled('resume', True)} to continue it or "
                             f"{spelled('overwrite', True)} to start it again")
    if resume and (out / CHECKPOINT).exists():
        try:
            # weights_only: a checkpoint from someone else can hold tensors and plain data, never code.
            return torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
        except Exception as error:
            # torch's reader fails on a damaged file with whatever error the byte at the cut trips (seen:
            # EOFError, OSError, RuntimeError, UnpicklingError, KeyError); any of them means no resuming.
            raise ValueError(
                f"{out / CHECKPOINT} cannot be read: it is truncated or damaged ({type(error).__name__}), so the "
                f"run cannot resume from it. Delete it to start the run again from scratch, or pass "
                f"{spelled('overwrite', True)} instead of {spelled('resume', True)}") from error
    return None


def atomic_write(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` and rename into place: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, value: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(value, indent=2) + "\n"))


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write(path, lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in records)))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file, in order: a run's ``metrics.jsonl``, a sweep's ``invocations.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def environment(device: torch.device) -> dict[str, str | int]:
    """What a run's summary records of where it ran: the device, the versions, the threads."""
    from .. import __version__

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {"device_name": name, "torch_version": torch.__version__, "resmooth_version": __version__,
            "threads": torch.get_num_threads()}


def finished(folder: Path) -> Path | None:
    """The file that marks the run in ``folder`` as done: its summary.json, its :data:`DIVERGED`, or None."""
    return next((folder / f for f in ("summary.json", DIVERGED) if (folder / f).exists()), None)


def train_or_record(train_run: Callable[..., Any], config: Any, folder: Path, *, quiet: bool, data: Any = None) -> None:
    """Train one run of a sweep (resuming); if its loss diverges, write :data:`DIVERGED` instead of stopping.

    A diverged run is an outcome of its setting, not a fault of the sweep: the other runs go on, and
    the report counts it. The record holds the config as the run read it, the epoch (from 1) whose
    training loss was not finite, that loss, the trainer's message, and where it ran.
    """
    try:
        train_run(config, folder, resume=True, quiet=quiet, data=data)
    except NonFiniteLossError as error:
        record = {"config": config.used(), "diverged": True, "epoch": error.epoch, "train_loss": str(error.loss),
                  "message": str(error), "seed": config.seed, **environment(resolve_device(config.device))}
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / DIVERGED, record)
        if not quiet:
            print(f"{folder}: diverged in epoch {error.epoch} (training loss {error.loss}); recorded in {DIVERGED}")
