"""The tables that aggregate a sweep's folder, and the paired comparisons that choose between methods.

:func:`report` writes ``report.md`` and ``report.csv`` (mean ± 95% t-interval per setting, the
runs stuck at chance, the runs that diverged (:func:`diverged`), the paper's table beside ours when
the sweep names one) and ``paired.csv``: per cell and method, the setting each protocol chooses (:data:`PROTOCOLS`: the paper's, on the
test set, or the clean one, on a validation split), paired seed by seed against the chosen
baseline; and, when the sweep names a ``baseline`` setting, every setting paired against it, with
the one-sided test against the difference the paper reports and the smallest gain each comparison
detects (:class:`resmooth.lab.stats.Paired`).
A dense sweep's folder (``kind = "dense"`` in its sweep.toml) gets the dense table instead
(:func:`resmooth.lab.dense.dense_report`). :func:`learning_curves` reads the per-epoch records of a
setting's seeds.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import INFO
from .dense import dense_report
from .paper import TABLES, cell_label, paper_cell, paper_difference, reading
from .config import Config
from .runfiles import CLEAN, DIVERGED, atomic_write, read_jsonl
from .stats import Paired, Summary, paired_difference, summarize_values
from .sweep import _fmt, load_sweep


METRICS = ("max_test_acc", "last10_mean_test_acc", "final_test_acc", "final_val_acc")
# A run is dead when its final test accuracy stays within this many points of chance (100 / classes).
# A run whose loss turned non-finite has no accuracy at all: its sweep recorded it in diverged.json.
DEAD_MARGIN = 5.0


def collect(folder: str | Path) -> dict[str, list[dict[str, Any]]]:
    """The finished runs' summaries under ``folder``, grouped by setting.

    Each config is read back from its record (:meth:`Config.from_record`: the fields that the run did
    not read, or that its summary predates, at their defaults, and the learning rate it trained with),
    so that runs of one setting compare alike whichever version of the trainer wrote them. A noisy
    run's clean temperature (:data:`~resmooth.lab.runfiles.CLEAN`, written after the run by
    :mod:`resmooth.lab.recalibration`) is read in with its summary, under its own keys.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(folder).glob("*/seed-*/summary.json")):
        summary = json.loads(path.read_text())
        summary["config"] = Config.from_record(summary["config"]).to_dict()
        if (path.parent / CLEAN).exists():
            summary.update(json.loads((path.parent / CLEAN).read_text()))
        groups.setdefault(path.parent.parent.name, []).append(summary)
    return groups


def diverged(folder: str | Path) -> dict[str, list[dict[str, Any]]]:
    """The runs under ``folder`` whose training loss became non-finite, grouped by setting: the
    records that :func:`resmooth.lab.runfiles.train_or_record` wrote (the epoch, the loss, the seed)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(folder).glob(f"*/seed-*/{DIVERGED}")):
        record = json.loads(path.read_text())
        record["config"] = Config.from_record(record["config"]).to_dict()  # read back as collect() reads a summary
        groups.setdefault(path.parent.parent.name, []).append(record)
    return groups


def at_chance(run: dict[str, Any]) -> bool:
    """Whether a finished run is dead: its final test accuracy within :data:`DEAD_MARGIN` points of chance."""
    chance = 100.0 / INFO[run["config"]["dataset"]].num_classes
    return not run["final_test_acc"] > chance + DEAD_MARGIN  # a NaN accuracy counts as dead


def learning_curves(folder: str | Path, setting: str, key: str) -> tuple[list[int], list[list[float]]]:
    """The epochs at which every finished seed of ``setting`` recorded ``key``, and the values, one list per seed.

    ``key`` is a field of metrics.jsonl (``test_acc``, ``val_acc``, ``train_loss``, ``lr``,
    ``mean_kappa``, ``smoothing_scale``...); test and validation accuracy are missing from the
    epochs a sparse evaluation skips (``Config.eval_every``), so only the epochs all seeds share are kept.
    """
    records = []
    for path in sorted(Path(folder, setting).glob("seed-*/summary.json")):
        records.append({r["epoch"]: r[key] for r in read_jsonl(path.parent / "metrics.jsonl") if key in r})
    if not records:
        raise FileNotFoundError(f"no finished runs of {setting!r} under {folder}")
    epochs = sorted(set.intersection(*(set(r) for r in records)))
    return epochs, [[r[e] for e in epochs] for r in records]


def against(groups: dict[str, list[dict[str, Any]]], baseline: str, metric: str) -> list[tuple[str, Summary, Paired]]:
    """Every setting but ``baseline``, paired seed by seed against it on ``metric`` (the seeds both finished)."""
    base = {r["config"]["seed"]: r[metric] for r in groups[baseline]}
    rows = []
    for setting, runs in groups.items():
        by_seed = {r["config"]["seed"]: r[metric] for r in runs}
        seeds = sorted(set(base) & set(by_seed))
        if setting != baseline and seeds:
            paired = paired_difference([by_seed[k] for k in seeds], [base[k] for k in seeds])
            rows.append((setting, summarize_values([by_seed[k] for k in seeds]), paired))
    return rows


def report(folder: str | Path, *, write: bool = True) -> str:
    """Aggregate a sweep's folder into Markdown (returned) and, with ``write``, report.md and report.csv.

    One row per setting: mean ± 95% t-interval over trials of each metric. The comparisons that
    follow take the settings with all the sweep's trials only (the others are named as in
    progress). Where the sweep names a paper table, a second table puts the paper's cells beside ours, each cell taking the best
    of our settings that map to it (by mean "max", as the paper chose on its test set).

    The folder's sweep.toml (which :func:`resmooth.lab.sweep.run_sweep` copies there) says what its
    runs are: a dense sweep's folder is reported by :func:`resmooth.lab.dense.dense_report`.
    """
    folder = Path(folder)
    sweep_file = folder / "sweep.toml"
    sweep = load_sweep(sweep_file) if sweep_file.exists() else None
    if sweep is not None and sweep.kind == "dense":
        return dense_report(folder, write=write)
    groups = collect(folder)
    if not groups:
        raise FileNotFoundError(f"no finished runs (*/seed-*/summary.json) under {folder}")
    dead = diverged(folder)
    metrics = [m for m in METRICS if all(m in r for runs in groups.values() for r in runs)]
    rows = []
    for setting, runs in groups.items():
        rows.append({"setting": setting, "trials": len(runs), "dead": sum(map(at_chance, runs)),
                     **{m: summarize_values([r[m] for r in runs]) for m in metrics}})

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["setting", "trials", "dead"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std", "ci95")])
    for row in rows:
        writer.writerow([row["setting"], row["trials"], row["dead"]]
                        + [f"{getattr(row[m], s):.4f}" for m in metrics for s in ("mean", "std", "ci95")])

    title = sweep.name if sweep else folder.name
    lines = [f"# {title}", "", "Mean ± half-width of the 95% t-interval over trials, test accuracy in %; "
             f"dead: runs that ended within {DEAD_MARGIN:g} points of chance (counted in the means, never dropped).", ""]
    lines.append("| setting | trials | dead | " + " | ".join(metrics) + " |")
    lines.append("|---|---:|---:|" + "---:|" * len(metrics))
    for row in rows:
        lines.append(f"| {row['setting']} | {row['trials']} | {row['dead']} | " + " | ".join(str(row[m]) for m in metrics) + " |")
    # The comparisons pair complete settings only: a setting still running would be chosen, or paired,
    # on the seeds it happens to have.
    # A setting with a diverged run is left out of them as well: paired on the seeds that survived, it
    # would be judged on its luckiest runs.
    if dead:
        lines += ["", "Diverged (runs whose training loss became NaN or infinite: they have no accuracy, so they are "
                  "not in the table above, and their settings are left out of the comparisons below): " + "; ".join(
                      f"{setting}: {len(runs)} of {len(runs) + len(groups.get(setting, []))} runs (seeds "
                      f"{', '.join(str(r['seed']) for r in runs)}), in epoch "
                      + ", ".join(str(e) for e in sorted({r["epoch"] for r in runs}))
                      for setting, runs in dead.items()) + "."]
    complete = {setting: runs for setting, runs in groups.items()
                if setting not in dead and (sweep is None or len(runs) >= sweep.trials)}
    running = sorted(set(groups) - set(complete) - set(dead))
    if running:
        lines += ["", f"In progress (fewer than {sweep.trials} trials, left out of the comparisons below): "
                  + ", ".join(running) + "."]
    if sweep is not None and sweep.paper_table:
        comparison = paper_comparison(sweep.paper_table, complete)
        lines += ["", *comparison] if comparison else []
    paired = {protocol: compare(complete, protocol) for protocol in PROTOCOLS}
    paired = {protocol: rows for protocol, rows in paired.items() if rows}
    for protocol, rows in paired.items():
        lines += ["", *paired_table(protocol, rows)]
    if sweep is not None and sweep.baseline in complete:
        for protocol, (_, metric) in PROTOCOLS.items():
            if all(metric in r for runs in complete.values() for r in runs):
                claims = claimed(complete, sweep.baseline, sweep.paper_table, metric)
                lines += ["", *against_table(sweep.baseline, metric, against(complete, sweep.baseline, metric), claims)]
    text = "\n".join(lines) + "\n"
    if write:
        atomic_write(folder / "report.md", lambda p: p.write_text(text))
        atomic_write(folder / "report.csv", lambda p: p.write_text(buffer.getvalue()))
        if paired:
            atomic_write(folder / "paired.csv", lambda p: p.write_text(paired_csv(paired)))
    return text


# What makes a method a method; what the grid searches tune within it; what does not change results.
FAMILY_FIELDS = ("method", "scheme", "distribution")
TUNED_FIELDS = ("weight_decay", "b", "alpha", "mu", "s", "nu", "label_smoothing", "lr")
TUNED_BY = {"resmooth": ("b", "alpha", "mu", "s", "weight_decay"), "sgd-rescaled": ("b", "alpha", "mu", "s", "weight_decay"),
            "adaptive-wd": ("nu", "weight_decay"), "label-smoothing": ("label_smoothing", "weight_decay"),
            "label-smoothing-se": ("label_smoothing", "weight_decay")}
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
            # .get: a summary older than a field (s) lacks it.
            tuned = ",".join(f"{k}={_fmt(config.get(k))}" for k in TUNED_BY.get(config["method"], ("weight_decay", "lr"))
                             if len({repr(o[1][0]["config"].get(k)) for options in families.values() for o in options}) > 1) or "-"
            rows.append(Comparison(name, fam, tuned, len(families[fam]), summarize_values([r[metric] for r in runs]), paired))
    return rows


PAIRED_NOTE = ("with its 95% paired t interval over seeds (mean ± t_0.975,n-1 sd / sqrt(n)), the seeds won and lost, and "
               "the two-sided paired t test's p")


def paired_table(protocol: str, rows: list[Comparison]) -> list[str]:
    choose_by, metric = PROTOCOLS[protocol]
    lines = [f"## Paired against the best {BASELINE} ({protocol} protocol: chosen by {choose_by}, reporting {metric})", "",
             f"Difference = method - baseline on the same seeds (same subset, initialization and batch order), {PAIRED_NOTE}.", "",
             "| cell | method | chosen setting | of | accuracy | difference [95% t] | wins-losses | p |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        p = row.paired
        diff = (str(p), f"{p.wins}-{p.losses}", _p(p.p)) if p else ("(baseline)", "", "")
        lines.append(f"| {row.cell} | {row.family} | {row.setting} | {row.chosen_from} | {row.result} | " + " | ".join(diff) + " |")
    return lines


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def claimed(groups: dict[str, list[dict[str, Any]]], baseline: str, table: str | None, metric: str) -> dict[str, float]:
    """Per setting, the difference to ``baseline`` that the paper's ``table`` reports for its cell
    (its "max" figure for max_test_acc, its "mean" figure, the last 10% of epochs, otherwise)."""
    if table is None:
        return {}
    figure = "max" if metric == "max_test_acc" else "mean"
    base = groups[baseline][0]["config"]
    claims = {setting: paper_difference(table, runs[0]["config"], base, figure)
              for setting, runs in groups.items() if setting != baseline}
    return {setting: claim for setting, claim in claims.items() if claim is not None}


def against_table(baseline: str, metric: str, rows: list[tuple[str, Summary, Paired]],
                  claims: dict[str, float] | None = None) -> list[str]:
    claims = claims or {}
    lines = [f"## Every setting paired against {baseline} ({metric})", "",
             f"Difference = setting - baseline on the seeds both finished, {PAIRED_NOTE}. Paper: the difference the "
             "paper's table reports for the setting's cell; p (>= paper): the one-sided paired t test of H0 \"the "
             "true difference is at least the paper's\" (small p: the paper's difference is rejected). Detects: the "
             "smallest gain that the one-sided 5% paired t test of \"no gain\" detects with 80% power at this n and spread.", "",
             "| setting | seeds | accuracy | difference [95% t] | wins-losses | p | paper | p (>= paper) | detects |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for setting, result, p in rows:
        claim = claims.get(setting)
        versus = (f"{claim:+.2f}", _p(p.p_below(claim))) if claim is not None else ("", "")
        lines.append(f"| {setting} | {p.n} | {result} | {p} | {p.wins}-{p.losses} | {_p(p.p)} | "
                     f"{versus[0]} | {versus[1]} | {p.detectable():.2f} |")
    return lines


def paired_csv(paired: dict[str, list[Comparison]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["protocol", "cell", "method", "setting", "chosen_from", "trials", "mean", "ci95",
                     "diff_mean", "diff_sd", "diff_low", "diff_high", "wins", "losses", "t_p"])
    for protocol, rows in paired.items():
        for r in rows:
            p = r.paired
            extra = [f"{p.mean:.4f}", f"{p.sd:.4f}", f"{p.low:.4f}", f"{p.high:.4f}", p.wins, p.losses, f"{p.p:.4f}"] if p else [""] * 7
            writer.writerow([protocol, r.cell, r.family, r.setting, r.chosen_from, r.result.n, f"{r.result.mean:.4f}",
                             f"{r.result.ci95:.4f}", *extra])
    return buffer.getvalue()


def paper_comparison(table: str, groups: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The paper's ``table`` beside ours: per cell, our best setting (by mean "max" over seeds, as the
    paper chose on its test set), chosen within one reading of the annealing's time
    (:func:`resmooth.lab.paper.reading`): a cell with runs under several readings gets a row for each,
    the reading named after the cell, so that a setting under reading (C) is never "our setting" of a
    cell beside runs under reading (A). The readings are named wherever one of them is not (A)."""
    best: dict[tuple, tuple[str, list[dict[str, Any]]]] = {}
    for setting, runs in groups.items():
        key = paper_cell(table, runs[0]["config"])
        if key is None:
            continue
        key = (key, reading(runs[0]["config"]))
        score = summarize_values([r["max_test_acc"] for r in runs]).mean
        if key not in best or score > summarize_values([r["max_test_acc"] for r in best[key][1]]).mean:
            best[key] = (setting, runs)
    if not best:
        return []
    named = any(read not in (None, "A") for _, read in best)
    lines = [f"## Beside the paper's {table.replace('table', 'Table ')}", "",
             "Our best setting per cell (chosen by mean max over trials, as the paper chose on its test set)"
             + (", within one reading of the annealing's time: (A) b in fractions of the run, the book's; (B) t in "
                "epochs; (C) b in epochs with the peak at 75% of the run (`resmooth.lab.paper.reading`)." if named else "."),
             "", "| cell | paper max | ours max | paper mean | ours mean | our setting | trials |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for cell_key, (paper_max, paper_mean) in TABLES[table].items():
        for read in sorted({read for key, read in best if key == cell_key}, key=lambda r: r or ""):
            setting, runs = best[(cell_key, read)]
            ours_max = summarize_values([r["max_test_acc"] for r in runs])
            ours_mean = summarize_values([r["last10_mean_test_acc"] for r in runs])
            label = cell_label(cell_key) + (f" (reading {read})" if named and read is not None else "")
            lines.append(f"| {label} | {paper_max:.2f} | {ours_max} | {paper_mean:.2f} | {ours_mean} | {setting} | {len(runs)} |")
    return lines
