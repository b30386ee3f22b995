"""Sweeps on a Ray cluster: each trial one Ray task with the resources it asks for.

Ray is an optional extra (``pip install resmooth[ray]``). The driver submits every unfinished
trial of a sweep; a trial trains into ``<out>/<setting>/seed-<k>`` on the machine that runs it,
resuming from its own checkpoint there when an earlier attempt died (Ray retries a task whose
worker dies, at most ``max_retries`` times), and returns its ``metrics.jsonl`` and
``summary.json`` as text (a trial whose loss diverged: its ``diverged.json``, see
:func:`resmooth.lab.runfiles.train_or_record`). The driver writes those files into its own ``out``
folder wherever they are missing: on a shared file system the trial has already written them and
nothing is copied; without one (``shared_fs=False``, or a cluster whose nodes do not see the driver's disk) the
driver's copy is the result. Either way ``report`` reads the same layout.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from .._checks import spelled
from .config import Config
from .runfiles import DIVERGED, atomic_write, finished, train_or_record
from .train import train

RESULT_FILES = ("metrics.jsonl", "summary.json")


def _import_ray():
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            "the Ray executor needs Ray: pip install 'resmooth[ray]' (or pip install ray), "
            "or run the sweep with the default local executor"
        ) from error
    return ray


def trial_folder(out: str, name: str, shared_fs: bool) -> Path:
    """Where a trial trains: in the sweep's folder, or on the worker's own disk without a shared one.

    The worker's folder is named after the driver's out path: a retry on the same node resumes from
    its checkpoint, and two sweeps never share a trial folder.
    """
    if shared_fs:
        return Path(out) / name
    tag = hashlib.sha1(out.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "resmooth-trials" / tag / name


def run_trial(config: dict[str, Any], out: str, name: str, threads: int, shared_fs: bool) -> dict[str, str]:
    """One trial, as a Ray task runs it: train (resuming) and return the result files' text."""
    import torch

    torch.set_num_threads(threads)  # as many threads as CPUs the task holds
    folder = trial_folder(out, name, shared_fs)
    if finished(folder) is None:
        train_or_record(train, Config.from_dict(config), folder, quiet=True)
    # A diverged trial returns its record (and the epochs it finished, if any) in place of a summary.
    return {f: (folder / f).read_text() for f in (*RESULT_FILES, DIVERGED) if (folder / f).exists()}


def run_on_ray(
    todo: list[tuple[str, Config]],
    out: Path,
    *,
    address: str | None = None,
    cpus_per_trial: int = 1,
    gpus_per_trial: float = 0,
    max_retries: int = 2,
    shared_fs: bool = True,
    quiet: bool = False,
) -> None:
    """Run the ``(folder name, config)`` trials as Ray tasks and write their files under ``out``.

    ``address``: a running cluster (``"auto"``, or ``"ray://host:10001"``); None starts a local one.
    """
    ray = _import_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=not quiet)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ConnectionError(
                f"could not reach the Ray cluster at {address!r}: {error}. Start one with `ray start --head` "
                f"(then {spelled('address', 'auto')}), give its address as ray://HOST:10001, or leave "
                f"{spelled('address')} out to start a local one"
            ) from error
    remote = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=max_retries)(run_trial)
    pending = {remote.remote(config.to_dict(), str(out.resolve()), name, cpus_per_trial, shared_fs): name
               for name, config in todo}
    done = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        name = pending.pop(ready[0])
        files = ray.get(ready[0])  # raises if the trial failed for good (its retries spent)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for f in (*RESULT_FILES, DIVERGED):  # summary.json or diverged.json last: either marks a finished trial
            if f in files and not (folder / f).exists():
                atomic_write(folder / f, lambda p, text=files[f]: p.write_text(text))
        done += 1
        if not quiet:
            print(f"[{done}/{len(todo)}] {name} (ray)")

