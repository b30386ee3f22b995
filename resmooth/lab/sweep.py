"""Grids of configs times trials, from a TOML file, run locally or on Ray (:mod:`resmooth.lab.report` aggregates them).

A sweep file (read with ``tomllib``: data only, never code)::

    name = "table1-cpu"
    kind = "classification"       # optional: the runs' kind, "classification" (the default) or "dense"
    paper_table = "table1"        # optional: the paper's numbers beside ours
    baseline = "method=sgd,weight_decay=0.001"  # optional: every setting paired against this one
    trials = 5                    # seeds 0..4 (first_seed shifts them)
    [base]                        # fields of the kind's config shared by every run
    dataset = "fashion-mnist"
    epochs = 4
    [[grid]]                      # each block: the product of its lists
    method = ["sgd"]
    weight_decay = [1e-2, 1e-3]
    [[grid]]
    method = ["resmooth"]
    b = [0.1, 0.5]
    [[grid]]                      # more seeds of settings above: the same values, a block's own seeds
    method = ["sgd"]
    weight_decay = [1e-3]
    seed = [5, 6, 7, 8, 9]

A classification run is a :class:`resmooth.lab.config.Config` trained by :func:`resmooth.lab.train.train`;
a dense one (chapter 10) a :class:`resmooth.lab.dense.DenseConfig` trained by
:func:`resmooth.lab.dense.train_dense`. Each run lands in ``OUT/<setting>/seed-<k>/`` with the files
of its trainer; a run whose summary.json exists is skipped, so a sweep can be stopped and started
again, and a run stopped part way resumes from its checkpoint. A run whose training loss becomes
NaN or infinite (:class:`~resmooth.lab.runfiles.NonFiniteLossError`) is a result too: the sweep
writes ``diverged.json`` (:data:`~resmooth.lab.runfiles.DIVERGED`) in its folder, skips it from then on like a finished
run, and goes on with the others; the report counts it as dead.

A grid block's ``seed`` list, the one list that is not a product, gives its settings those seeds
instead of the sweep's ``trials``: a block that repeats a setting of an earlier block with other
seeds adds seeds to that setting, in the same folders and paired with the others seed by seed, and
takes its place in the file's priority order (``settings=K`` counts it as a setting).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import dense, train
from .config import Config
from .._checks import check_choice, check_int, spelled
from ._fields import not_read
from .paper import TABLES
from .runfiles import DIVERGED, RunExistsError, atomic_write, finished, train_or_record

SWEEP_KEYS = {"name", "kind", "paper_table", "baseline", "trials", "first_seed", "base", "grid", "description"}


@dataclass(frozen=True)
class RunKind:
    """What a sweep's runs are: their config, the function that trains one, and the data it trains on."""

    config: type  # from_dict, from_record, to_dict, used; the fields seed and subset
    train: Callable[..., Any]  # train(config, out, resume=True, quiet=..., data=...)
    load_data: Callable[..., Any]  # load_data(config, download=...): the data of a run
    data_fields: tuple[str, ...]  # the config fields the data depend on: runs that share them share the data


KINDS = {
    "classification": RunKind(Config, train.train, train.load_run_data, train.DATA_FIELDS),
    "dense": RunKind(dense.DenseConfig, dense.train_dense, dense.load_run_data, dense.DATA_FIELDS),
}
# Where a run ran, which run_sweep's overrides set: a finished run may differ from the sweep there.
PLACE_FIELDS = ("data_root", "device")


@dataclass
class Sweep:
    name: str
    base: dict[str, Any]
    grid: list[dict[str, list[Any]]]
    trials: int = 1
    first_seed: int = 0
    paper_table: str | None = None
    baseline: str | None = None
    description: str = ""
    kind: str = "classification"
    settings: list[dict[str, Any]] = field(init=False)
    _named: list[list[str]] = field(init=False, repr=False)
    _seeds: list[list[int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_int("trials", self.trials, 1)
        check_choice("kind", self.kind, KINDS)
        # The dense report pairs every objective with the squared error of its task; it reads neither.
        if self.kind != "classification" and (self.paper_table is not None or self.baseline is not None):
            raise ValueError(f"paper_table and baseline apply to kind='classification' only; got kind={self.kind!r}")
        if self.paper_table is not None and self.paper_table not in TABLES:
            raise ValueError(f"paper_table must be one of {', '.join(map(repr, TABLES))}; got {self.paper_table!r}")
        if "seed" in self.base:
            raise ValueError("seed is set by trials and first_seed (or a grid block's seed list), not in base")
        trials = list(range(self.first_seed, self.first_seed + self.trials))
        self.settings, blocks, self._seeds = [], [], []
        for i, block in enumerate(self.grid or [{}]):
            for key, values in block.items():
                if not isinstance(values, list) or not values:
                    raise ValueError(f"grid[{i}].{key} must be a non-empty list of values; got {values!r}")
            block = dict(block)
            seeds = block.pop("seed", trials)
            if any(type(k) is not int or k < 0 for k in seeds) or len(set(seeds)) < len(seeds):
                raise ValueError(f"grid[{i}].seed must list distinct integers >= 0 (the block's seeds); got {seeds!r}")
            for combo in itertools.product(*block.values()):
                self.settings.append({**self.base, **dict(zip(block, combo))})
                blocks.append(list(block))
                self._seeds.append(seeds)
        # Every run's config is checked now, before any work starts.
        configs = [self.config({**values, "seed": self.first_seed}).to_dict() for values in self.settings]
        varied = [k for k in dict.fromkeys(k for block in self.grid for k in block if k != "seed")
                  if len({repr(c[k]) for c in configs}) > 1]
        # A setting is named by the fields its own grid block sets that differ across the sweep.
        self._named = [[k for k in varied if k in keys] for keys in blocks]
        folders = [f"{name}/seed-{seed}" for name, seeds in zip(self._names(), self._seeds) for seed in seeds]
        if len(set(folders)) < len(folders):
            twice = sorted({f for f in folders if folders.count(f) > 1})[0]
            raise ValueError(f"sweep {self.name!r} lists the same run twice: {twice} (a setting repeated with seeds it already has)")
        if self.baseline is not None and self.baseline not in self.setting_names():
            raise ValueError(f"baseline must name one of the sweep's settings ({', '.join(self.setting_names())}); "
                             f"got {self.baseline!r}")

    def config(self, values: dict[str, Any]) -> Any:
        """The config of one run: a :class:`~resmooth.lab.config.Config` or, in a dense sweep, a
        :class:`~resmooth.lab.dense.DenseConfig`; unknown fields fail, naming them."""
        return KINDS[self.kind].config.from_dict(values)

    def _names(self) -> list[str]:
        # A setting is named by the fields its grid block sets that differ across the sweep, so a
        # block that repeats an earlier setting with other seeds names the same folder.
        return [",".join(f"{k}={_fmt(values[k])}" for k in named) or "base" for values, named in zip(self.settings, self._named)]

    def setting_names(self) -> list[str]:
        """Each setting's folder name, once, in the file's order: the fields its grid block sets that
        differ across the sweep."""
        return list(dict.fromkeys(self._names()))

    def runs(self, settings: int | None = None) -> list[tuple[str, Any]]:
        """(folder, config) of every setting x seed, ``<setting>/seed-<k>``; of the first ``settings``
        settings of the file only, when given (a block's seed list counts as a setting of its own)."""
        runs = []
        for values, setting, seeds in list(zip(self.settings, self._names(), self._seeds))[:settings]:
            runs += [(f"{setting}/seed-{seed}", self.config({**values, "seed": seed})) for seed in seeds]
        return runs


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file: unknown keys and bad fields fail here, naming the field.

    The file's ``kind`` says what its runs are, and so which config its fields are checked against:
    ``"classification"`` (the default, :class:`~resmooth.lab.config.Config`) or ``"dense"``
    (:class:`~resmooth.lab.dense.DenseConfig`).
    """
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    unknown = sorted(set(raw) - SWEEP_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(SWEEP_KEYS))}")
    if "name" not in raw:
        raise ValueError(f"{path}: a sweep needs a name")
    return Sweep(
        name=raw["name"], base=raw.get("base", {}), grid=raw.get("grid", []), trials=raw.get("trials", 1),
        first_seed=raw.get("first_seed", 0), paper_table=raw.get("paper_table"), baseline=raw.get("baseline"),
        description=raw.get("description", ""), kind=raw.get("kind", "classification"),
    )


def run_sweep(path: str | Path, out: str | Path | None = None, *, quiet: bool = False, data_root: str | None = None,
              device: str | None = None, executor: str = "local", download: bool = False,
              settings: int | None = None, **ray_options: Any) -> Path:
    """Run every setting x trial of the sweep file that has not finished yet; return the folder.

    ``out`` defaults to ``results/<name>``. ``data_root`` and ``device`` override the file's.
    ``settings=K`` runs the first K settings only, every trial of each: the cut a budget forces
    drops settings from the end of the file's list (its priority order), never seeds.
    ``download`` fetches a dataset whose files are missing (the local executor).
    ``executor="ray"`` runs each trial of a classification sweep as a Ray task (see
    :func:`resmooth.lab.cluster.run_on_ray`, which takes ``ray_options``: address, cpus_per_trial,
    gpus_per_trial, max_retries, shared_fs).

    Raises:
        RunExistsError: a finished run in ``out`` has other settings than the sweep's run of that
            folder (a changed file): the sweep would skip it and report it as the file's.
    """
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be one of 'local', 'ray'; got {executor!r}")
    if ray_options and executor != "ray":
        raise ValueError(f"{', '.join(ray_options)} apply to executor='ray' only")
    if download and executor != "local":
        raise ValueError(f"{spelled('download', True)} applies to {spelled('executor', 'local')} only: fetch the data "
                         "first (resmooth train --download) where the Ray workers read it")
    sweep = load_sweep(path)
    if executor == "ray" and sweep.kind != "classification":
        raise ValueError(f"executor='ray' runs kind='classification' sweeps only; run the {sweep.kind} sweep "
                         f"{sweep.name!r} with executor='local'")
    if data_root is not None:
        sweep.settings = [{**s, "data_root": data_root} for s in sweep.settings]
    if device is not None:
        sweep.settings = [{**s, "device": device} for s in sweep.settings]
    out = Path(out) if out is not None else Path("results") / sweep.name
    if settings is not None:
        check_int("settings", settings, 1)
    runs = sweep.runs(settings)
    for name, config in runs:
        _check_finished(out / name, config)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "sweep.toml", lambda p: p.write_bytes(Path(path).read_bytes()))
    # Seed-major, smallest training sets first: a sweep stopped part way leaves whole seeds of
    # paired runs (every setting on the same data and init), which is what the statistics need.
    todo = sorted((run for run in runs if finished(out / run[0]) is None),
                  key=lambda run: (run[1].seed, run[1].subset))
    _log_invocation(out, sweep, len(todo), executor)
    if not quiet:
        print(f"sweep {sweep.name}: {len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to go -> {out}")
    if executor == "ray":
        from .cluster import run_on_ray

        run_on_ray(todo, out, quiet=quiet, **ray_options)
        return out
    kind = KINDS[sweep.kind]
    loaded: dict[tuple, Any] = {}
    for i, (name, config) in enumerate(todo, 1):
        # A run's data depend on these fields only: load once, reuse across methods.
        key = tuple(getattr(config, f) for f in kind.data_fields)
        if key not in loaded:
            loaded.clear()
            loaded[key] = kind.load_data(config, download=download)
        if not quiet:
            print(f"[{i}/{len(todo)}] {name}")
        train_or_record(kind.train, config, out / name, quiet=quiet, data=loaded[key])
    return out


def _check_finished(folder: Path, config: Any) -> None:
    """Refuse a finished (or diverged) run in ``folder`` whose config is not ``config`` (but for :data:`PLACE_FIELDS`)."""
    summary = finished(folder)
    if summary is None:
        return
    # Compared as the runs read their configs (used): an unset learning rate as the rate it stands
    # for, a field that the method does not read as None. A field that the record says its run did not
    # read for want of the device (amp without CUDA) holds nothing to compare.
    record = json.loads(summary.read_text())["config"]
    ran = type(config).from_record({**record, **{f: getattr(config, f) for f in PLACE_FIELDS}}).used()
    wanted = config.used()
    unread = not_read(type(config), record)
    differ = [f"{k}={v!r} (the sweep's: {wanted[k]!r})" for k, v in ran.items() if k not in unread and v != wanted[k]]
    if differ:
        raise RunExistsError(f"{folder} holds a {'diverged' if summary.name == DIVERGED else 'finished'} run with other settings: {', '.join(differ)}; "
                             "run the sweep into another out")


def _log_invocation(out: Path, sweep: Sweep, todo: int, executor: str) -> None:
    """Append who ran what, where and with which versions to ``out/invocations.jsonl``."""
    from .. import __version__

    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sweep": sweep.name, "argv": sys.argv, "executor": executor,
        "runs_to_go": todo, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(), "torch": torch.__version__, "resmooth": __version__,
    }
    with open(out / "invocations.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
