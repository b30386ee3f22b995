"""Grids of configs times trials, from a TOML file, and the tables that aggregate them.

A sweep file (read with ``tomllib``: data only, never code)::

    name = "table1-cpu"
    paper_table = "table1"        # optional: the paper's numbers beside ours
    trials = 5                    # seeds 0..4 (first_seed shifts them)
    [base]                        # fields of Config shared by every run
    dataset = "fashion-mnist"
    epochs = 4
    [[grid]]                      # each block: the product of its lists
    method = ["sgd"]
    weight_decay = [1e-2, 1e-3]
    [[grid]]
    method = ["resmooth"]
    b = [0.1, 0.5]

Each run lands in ``OUT/<setting>/seed-<k>/`` with the files of :func:`resmooth.train.train`;
a run whose summary.json exists is skipped, so a sweep can be stopped and started again.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import platform
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._checks import check_int
from .paper import TABLES, cell_label, paper_cell
from .stats import Paired, Summary, paired_difference, summarize_values
from .runfiles import atomic_write
from .train import DATA_FIELDS, Config, load_run_data, train

SWEEP_KEYS = {"name", "paper_table", "trials", "first_seed", "base", "grid", "description"}


@dataclass
class Sweep:
    name: str
    base: dict[str, Any]
    grid: list[dict[str, list[Any]]]
    trials: int = 1
    first_seed: int = 0
    paper_table: str | None = None
    description: str = ""
    settings: list[dict[str, Any]] = field(init=False)
    _named: list[list[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_int("trials", self.trials, 1)
        if self.paper_table is not None and self.paper_table not in TABLES:
            raise ValueError(f"paper_table must be one of {', '.join(map(repr, TABLES))}; got {self.paper_table!r}")
        if "seed" in self.base or any("seed" in block for block in self.grid):
            raise ValueError("seed is set by trials and first_seed, not in base or grid")
        self.settings, blocks = [], []
        for i, block in enumerate(self.grid or [{}]):
            for key, values in block.items():
                if not isinstance(values, list) or not values:
                    raise ValueError(f"grid[{i}].{key} must be a non-empty list of values; got {values!r}")
            for combo in itertools.product(*block.values()):
                self.settings.append({**self.base, **dict(zip(block, combo))})
                blocks.append(list(block))
        # Every run's config is checked now, before any work starts.
        configs = [Config.from_dict({**values, "seed": self.first_seed}).to_dict() for values in self.settings]
        varied = [k for k in dict.fromkeys(k for block in self.grid for k in block)
                  if len({repr(c[k]) for c in configs}) > 1]
        # A setting is named by the fields its own grid block sets that differ across the sweep.
        self._named = [[k for k in varied if k in keys] for keys in blocks]

    def runs(self) -> list[tuple[str, Config]]:
        """(folder, config) of every setting x trial: ``<setting>/seed-<k>``."""
        runs = []
        for values, named in zip(self.settings, self._named):
            setting = ",".join(f"{k}={_fmt(values[k])}" for k in named) or "base"
            runs += [(f"{setting}/seed-{seed}", Config.from_dict({**values, "seed": seed}))
                     for seed in range(self.first_seed, self.first_seed + self.trials)]
        names = [name for name, _ in runs]
        if len(set(names)) < len(names):
            raise ValueError(f"sweep {self.name!r} lists the same setting twice: {sorted({n for n in names if names.count(n) > 1})[0]}")
        return runs


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file: unknown keys and bad fields fail here, naming the field."""
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    unknown = sorted(set(raw) - SWEEP_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(SWEEP_KEYS))}")
    if "name" not in raw:
        raise ValueError(f"{path}: a sweep needs a name")
    return Sweep(
        name=raw["name"], base=raw.get("base", {}), grid=raw.get("grid", []), trials=raw.get("trials", 1),
        first_seed=raw.get("first_seed", 0), paper_table=raw.get("paper_table"), description=raw.get("description", ""),
    )


def run_sweep(path: str | Path, out: str | Path | None = None, *, quiet: bool = False, data_root: str | None = None,
              device: str | None = None, executor: str = "local", download: bool = False, **ray_options: Any) -> Path:
    """Run every setting x trial of the sweep file that has not finished yet; return the folder.

    ``out`` defaults to ``results/<name>``. ``data_root`` and ``device`` override the file's.
    ``download`` fetches a dataset whose files are missing (the local executor).
    ``executor="ray"`` runs each trial as a Ray task (see :func:`resmooth.cluster.run_on_ray`,
    which takes ``ray_options``: address, cpus_per_trial, gpus_per_trial, max_retries, shared_fs).
    """
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be one of 'local', 'ray'; got {executor!r}")
    if ray_options and executor != "ray":
        raise ValueError(f"{', '.join(ray_options)} apply to executor='ray' only")
    if download and executor != "local":
        raise ValueError("download applies to executor='local' only: fetch the data first (resmooth train --download) "
                         "where the Ray workers read it")
    sweep = load_sweep(path)
    if data_root is not None:
        sweep.settings = [{**s, "data_root": data_root} for s in sweep.settings]
    if device is not None:
        sweep.settings = [{**s, "device": device} for s in sweep.settings]
    out = Path(out) if out is not None else Path("results") / sweep.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "sweep.toml", lambda p: p.write_bytes(Path(path).read_bytes()))
    runs = sweep.runs()
    # Seed-major, smallest training sets first: a sweep stopped part way leaves whole seeds of
    # paired runs (every setting on the same data and init), which is what the statistics need.
    todo = sorted((run for run in runs if not (out / run[0] / "summary.json").exists()),
                  key=lambda run: (run[1].seed, run[1].subset))
    _log_invocation(out, sweep, len(todo), executor)
    if not quiet:
        print(f"sweep {sweep.name}: {len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to go -> {out}")
    if executor == "ray":
        from .cluster import run_on_ray

        run_on_ray(todo, out, quiet=quiet, **ray_options)
        return out
    loaded: dict[tuple, Any] = {}
    for i, (name, config) in enumerate(todo, 1):
        # A run's data depend on these fields only: load once, reuse across methods.
        key = tuple(getattr(config, f) for f in DATA_FIELDS)
        if key not in loaded:
            loaded.clear()
            loaded[key] = load_run_data(config, download=download)
        if not quiet:
            print(f"[{i}/{len(todo)}] {name}")
        train(config, out / name, resume=True, quiet=quiet, data=loaded[key])
    return out


def _log_invocation(out: Path, sweep: Sweep, todo: int, executor: str) -> None:
    """Append who ran what, where and with which versions to ``out/invocations.jsonl``."""
    from . import __version__

    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sweep": sweep.name, "argv": sys.argv, "executor": executor,
        "runs_to_go": todo, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(), "torch": torch.__version__, "resmooth": __version__,
    }
    with open(out / "invocations.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


METRICS = ("max_test_acc", "last10_mean_test_acc", "final_test_acc", "final_val_acc")


def collect(folder: str | Path) -> dict[str, list[dict[str, Any]]]:
    """The finished runs' summaries under ``folder``, grouped by setting."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(folder).glob("*/seed-*/summary.json")):
        groups.setdefault(path.parent.parent.name, []).append(json.loads(path.read_text()))
    return groups


def report(folder: str | Path, *, write: bool = True) -> str:
    """Aggregate a sweep's folder into Markdown (returned) and, with ``write``, report.md and report.csv.

    One row per setting: mean ± 95% t-interval over trials of each metric. Where the sweep names
    a paper table, a second table puts the paper's cells beside ours, each cell taking the best
    of our settings that map to it (by mean "max", as the paper chose on its test set).
    """
    folder = Path(folder)
    groups = collect(folder)
    if not groups:
        raise FileNotFoundError(f"no finished runs (*/seed-*/summary.json) under {folder}")
    sweep_file = folder / "sweep.toml"
    sweep = load_sweep(sweep_file) if sweep_file.exists() else None
    metrics = [m for m in METRICS if all(m in r for runs in groups.values() for r in runs)]
    rows = []
    for setting, runs in groups.items():
        rows.append({"setting": setting, "trials": len(runs), **{m: summarize_values([r[m] for r in runs]) for m in metrics}})

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["setting", "trials"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std", "ci95")])
    for row in rows:
        writer.writerow([row["setting"], row["trials"]] + [f"{getattr(row[m], s):.4f}" for m in metrics for s in ("mean", "std", "ci95")])

    title = sweep.name if sweep else folder.name
    lines = [f"# {title}", "", "Mean ± half-width of the 95% t-interval over trials, test accuracy in %.", ""]
    lines.append("| setting | trials | " + " | ".join(metrics) + " |")
    lines.append("|---|---:|" + "---:|" * len(metrics))
    for row in rows:
        lines.append(f"| {row['setting']} | {row['trials']} | " + " | ".join(str(row[m]) for m in metrics) + " |")
    if sweep is not None and sweep.paper_table:
        comparison = paper_comparison(sweep.paper_table, groups)
        lines += ["", *comparison] if comparison else []
    paired = {protocol: compare(groups, protocol) for protocol in PROTOCOLS}
    paired = {protocol: rows for protocol, rows in paired.items() if rows}
    for protocol, rows in paired.items():
        lines += ["", *paired_table(protocol, rows)]
    text = "\n".join(lines) + "\n"
    if write:
        atomic_write(folder / "report.md", lambda p: p.write_text(text))
        atomic_write(folder / "report.csv", lambda p: p.write_text(buffer.getvalue()))
        if paired:
            atomic_write(folder / "paired.csv", lambda p: p.write_text(paired_csv(paired)))
    return text


# What makes a method a method; what the grid searches tune within it; what does not change results.
FAMILY_FIELDS = ("method", "scheme", "distribution")
TUNED_FIELDS = ("weight_decay", "b", "alpha", "mu", "nu", "label_smoothing", "lr")
TUNED_BY = {"resmooth": ("b", "alpha", "mu", "weight_decay"), "adaptive-wd": ("nu", "weight_decay"),
            "label-smoothing": ("label_smoothing", "weight_decay")}
RUN_FIELDS = ("seed", "device", "data_root", "eval_batch_size")
BASELINE = "sgd"
# protocol: (metric the setting is chosen by, metric reported). "paper": Sec. 6, the best epoch
# on the test set, settings chosen on the test set. "clean": settings chosen on the validation
# split, the test set read once, at the last epoch.
PROTOCOLS = {"paper": ("max_test_acc", "max_test_acc"), "clean": ("final_val_acc", "final_test_acc")}


def family(config: dict[str, Any]) -> str:
    """A method's name: ``sgd``, or ``resmooth-full-laplace`` (the scheme and distribution are part of it)."""
    if config["method"] == "resmooth":
        return "-".join(str(config[k]) for k in FAMILY_FIELDS)
    return config["method"]


def cell(config: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """What a comparison holds fixed: every field that is not the method, its tuning, or the run's seed and place."""
    ignored = set(FAMILY_FIELDS) | set(TUNED_FIELDS) | set(RUN_FIELDS)
    return tuple((k, v) for k, v in config.items() if k not in ignored)


def _cell_names(cells: list[tuple[tuple[str, Any], ...]]) -> dict[tuple, str]:
    """Name each cell by the fields that differ between cells ("all" when there is one)."""
    varied = [k for k, _ in cells[0] if len({repr(dict(c)[k]) for c in cells}) > 1] if cells else []
    return {c: ",".join(f"{k}={_fmt(dict(c)[k])}" for k in varied) or "all" for c in cells}


@dataclass(frozen=True)
class Comparison:
    cell: str
    family: str
    setting: str
    chosen_from: int
    result: Summary
    paired: Paired | None  # against the baseline's chosen setting, seed by seed; None for the baseline


def compare(groups: dict[str, list[dict[str, Any]]], protocol: str) -> list[Comparison]:
    """Per cell and family, the setting the protocol chooses, and its paired difference to the chosen baseline.

    Empty when the runs lack a metric the protocol needs (no validation split for "clean").
    """
    choose_by, metric = PROTOCOLS[protocol]
    if not all(choose_by in r and metric in r for runs in groups.values() for r in runs):
        return []
    cells: dict[tuple, dict[str, list[tuple[str, list[dict[str, Any]]]]]] = {}
    for setting, runs in groups.items():
        config = runs[0]["config"]
        cells.setdefault(cell(config), {}).setdefault(family(config), []).append((setting, runs))
    names = _cell_names(list(cells))
    rows = []
    for key, families in sorted(cells.items(), key=lambda item: names[item[0]]):
        name = names[key]
        chosen = {fam: max(options, key=lambda o: summarize_values([r[choose_by] for r in o[1]]).mean)
                  for fam, options in families.items()}
        base = chosen.get(BASELINE)
        base_by_seed = {r["config"]["seed"]: r[metric] for r in base[1]} if base else {}
        for fam in sorted(chosen, key=lambda f: (f != BASELINE, f)):
            setting, runs = chosen[fam]
            paired = None
            if fam != BASELINE and base:
                seeds = sorted(set(base_by_seed) & {r["config"]["seed"] for r in runs})
                by_seed = {r["config"]["seed"]: r[metric] for r in runs}
                if seeds:
                    paired = paired_difference([by_seed[k] for k in seeds], [base_by_seed[k] for k in seeds])
            config = runs[0]["config"]
            tuned = ",".join(f"{k}={_fmt(config[k])}" for k in TUNED_BY.get(config["method"], ("weight_decay", "lr"))
                             if len({repr(o[1][0]["config"][k]) for options in families.values() for o in options}) > 1) or "-"
            rows.append(Comparison(name, fam, tuned, len(families[fam]), summarize_values([r[metric] for r in runs]), paired))
    return rows


def paired_table(protocol: str, rows: list[Comparison]) -> list[str]:
    choose_by, metric = PROTOCOLS[protocol]
    lines = [f"## Paired against the best {BASELINE} ({protocol} protocol: chosen by {choose_by}, reporting {metric})", "",
             "Difference = method - baseline on the same seeds (same subset, initialization and batch order), "
             "with a 95% percentile-bootstrap interval over seeds and the exact two-sided sign test.", "",
             "| cell | method | chosen setting | of | accuracy | difference [95% bootstrap] | wins-losses | sign-test p |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        p = row.paired
        diff = (str(p), f"{p.wins}-{p.losses}", f"{p.p:.3f}") if p else ("(baseline)", "", "")
        lines.append(f"| {row.cell} | {row.family} | {row.setting} | {row.chosen_from} | {row.result} | " + " | ".join(diff) + " |")
    return lines


def paired_csv(paired: dict[str, list[Comparison]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["protocol", "cell", "method", "setting", "chosen_from", "trials", "mean", "ci95",
                     "diff_mean", "diff_low", "diff_high", "wins", "losses", "sign_p"])
    for protocol, rows in paired.items():
        for r in rows:
            p = r.paired
            extra = [f"{p.mean:.4f}", f"{p.low:.4f}", f"{p.high:.4f}", p.wins, p.losses, f"{p.p:.4f}"] if p else [""] * 6
            writer.writerow([protocol, r.cell, r.family, r.setting, r.chosen_from, r.result.n, f"{r.result.mean:.4f}",
                             f"{r.result.ci95:.4f}", *extra])
    return buffer.getvalue()


def paper_comparison(table: str, groups: dict[str, list[dict[str, Any]]]) -> list[str]:
    best: dict[tuple, tuple[str, list[dict[str, Any]]]] = {}
    for setting, runs in groups.items():
        key = paper_cell(table, runs[0]["config"])
        if key is None:
            continue
        score = summarize_values([r["max_test_acc"] for r in runs]).mean
        if key not in best or score > summarize_values([r["max_test_acc"] for r in best[key][1]]).mean:
            best[key] = (setting, runs)
    if not best:
        return []
    lines = [f"## Beside the paper's {table.replace('table', 'Table ')}", "",
             "Our best setting per cell (chosen by mean max over trials, as the paper chose on its test set).", "",
             "| cell | paper max | ours max | paper mean | ours mean | our setting | trials |", "|---|---:|---:|---:|---:|---|---:|"]
    for key, (paper_max, paper_mean) in TABLES[table].items():
        if key not in best:
            continue
        setting, runs = best[key]
        ours_max = summarize_values([r["max_test_acc"] for r in runs])
        ours_mean = summarize_values([r["last10_mean_test_acc"] for r in runs])
        lines.append(f"| {cell_label(key)} | {paper_max:.2f} | {ours_max} | {paper_mean:.2f} | {ours_mean} | {setting} | {len(runs)} |")
    return lines
