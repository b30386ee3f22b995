"""The label-noise study's analysis (issue 33), as ``experiments/fashion-mnist-label-noise.toml`` fixes it before its runs.

Seven methods per noise level (:data:`METHODS`, in the sweep's order), each paired seed by seed
against its own baseline at the same level: the methods on the squared error of the softmax
against SGD, the methods on the cross-entropy, and SGD itself, against cross-entropy. A method is
found by its config (:class:`NoiseMethod`), never by its folder's name.
:func:`noise_table` gives a :class:`Row` per method: the final test accuracy, its paired
difference to the baseline (95% paired t interval, wins-losses), the same at the epoch that early
stopping on the noisy validation split chooses, the calibration before and after the temperature
and the memorisation of the training set. :func:`ahead` is the sweep's rule for extending a cell
to more seeds, :func:`stage_two_needed` its rule for running noise 0.2, and
:func:`reliability_curve` pools the seeds' reliability diagrams for a figure, and
:func:`paired_calibration` pairs two settings' calibration seed by seed.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .metrics import CALIBRATION, RELIABILITY
from .noise import MEMORISATION
from .report import collect, diverged
from .stats import Paired, Summary, paired_difference, summarize_values
from .verdict.rows import CONTROL, LAPLACE, READING_C, SGD, config_as_read, matches

# The study's two levels: stage 1, and stage 2, which runs if stage 1 shows a method ahead (stage_two_needed).
STAGE_ONE, STAGE_TWO = 0.4, 0.2
# The primary figure (the last epoch's test accuracy) and the early-stopping one, each paired against the baseline.
PRIMARY, AT_BEST_VAL = "final_test_acc", "test_acc_at_best_val"
# The figures a row averages over its seeds: the name it gives each -> its key in summary.json. The
# temperature refitted on the validation split's true labels (resmooth.lab.recalibration) and the
# figures after it end in _clean; a run without that refit lacks them.
CALIBRATION_FIELDS = {**{k: f"final_{k}" for k in CALIBRATION}, "temperature": "temperature",
                      **{f"{k}_clean": f"final_{k}_clean" for k in CALIBRATION if k.endswith("_scaled")},
                      "temperature_clean": "temperature_clean"}
MEMORISATION_FIELDS = {k: f"final_{k}" for k in MEMORISATION}


@dataclass(frozen=True)
class NoiseMethod:
    """One of the study's methods, and the baseline it is paired against at the same noise level.

    ``fields`` are the config values (as a run reads them, :meth:`~resmooth.lab.config.Config.used`)
    that identify its setting at a level; ``baseline`` is another method's ``key``, None for the
    root of the pairing (cross-entropy). ``smoothing``: the extension rule (:func:`ahead`) reads it.
    """

    key: str
    label: str
    fields: Mapping[str, Any]
    baseline: str | None
    smoothing: bool


# The pairing rule, its one home. The verdict's dicts (SGD, LAPLACE, READING_C, CONTROL) define the
# settings that its label-noise rows read, so that the two never pick different runs; every method
# is SGD's setting with what makes it another method changed.
METHODS: tuple[NoiseMethod, ...] = (
    NoiseMethod("sgd", "SGD (squared error)", SGD, "sgd-ce", False),
    NoiseMethod("laplace-a", "Laplace, reading (A)", LAPLACE, "sgd", True),
    NoiseMethod("laplace-c", "Laplace, reading (C)", READING_C, "sgd", True),
    NoiseMethod("control", "Control (sgd-rescaled)", CONTROL, "sgd", True),
    NoiseMethod("label-smoothing-se", "Label smoothing (squared error)",
                {**SGD, "method": "label-smoothing-se", "label_smoothing": 0.1}, "sgd", True),
    NoiseMethod("sgd-ce", "Cross-entropy", {**SGD, "method": "sgd-ce"}, None, False),
    NoiseMethod("label-smoothing", "Label smoothing (cross-entropy)",
                {**SGD, "method": "label-smoothing", "label_smoothing": 0.1}, "sgd-ce", True),
)
BY_KEY = {method.key: method for method in METHODS}


@dataclass(frozen=True)
class Row:
    """One method at one noise level, on ``seeds``.

    ``seeds`` are those that the method and its baseline both finished; where there are none (the
    root of the pairing, or a baseline without a common seed), every seed the method finished, and
    ``paired`` and ``paired_at_best_val`` are None. Every figure of the row reads the same seeds:
    ``accuracy`` (the final test accuracy), the paired differences (method minus baseline, in
    points), and the means over the seeds of ``calibration`` (named as :data:`CALIBRATION_FIELDS`,
    ECE and Brier as fractions, NLL in nats; the clean temperature's figures only where every seed
    has its refit) and of ``memorisation`` (keyed as :data:`resmooth.lab.noise.MEMORISATION`, in %).
    ``diverged``: the method's seeds whose loss became non-finite, which are in no figure.
    """

    method: NoiseMethod
    setting: str
    baseline_setting: str | None
    seeds: tuple[int, ...]
    accuracy: Summary
    paired: Paired | None
    paired_at_best_val: Paired | None
    calibration: dict[str, float]
    memorisation: dict[str, float]
    diverged: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        return self.method.label


def _setting(configs: Mapping[str, Mapping[str, Any]], method: NoiseMethod, level: float) -> str | None:
    """The one setting folder whose config is ``method``'s at noise ``level``; None if no run has it."""
    found = [s for s, config in configs.items() if matches(config, {**method.fields, "label_noise": level})]
    if len(found) > 1:
        # Two settings of one method would make the pairing a choice: refuse rather than pick one.
        raise ValueError(f"{method.key} at label_noise={level:g} matches several settings: {', '.join(found)}")
    return found[0] if found else None


def _settings(folder: str | Path, level: float) -> tuple[dict[str, str], dict[str, dict[int, dict[str, Any]]],
                                                         dict[str, list[int]]]:
    """(method key -> its setting at ``level``, of those with a finished run; setting -> seed -> finished
    summary; setting -> diverged seeds)."""
    finished = collect(folder)
    configs = {s: config_as_read(records[0]["config"]) for s, records in finished.items()}
    found = {m.key: s for m in METHODS if (s := _setting(configs, m, level)) is not None}
    runs = {s: {r["config"]["seed"]: r for r in records} for s, records in finished.items()}
    return found, runs, {s: sorted(r["seed"] for r in records) for s, records in diverged(folder).items()}


def _pair(runs: Mapping[int, dict[str, Any]], base: Mapping[int, dict[str, Any]], seeds: list[int],
          metric: str) -> Paired | None:
    if not seeds:
        return None
    return paired_difference([runs[k][metric] for k in seeds], [base[k][metric] for k in seeds])


def _means(runs: Mapping[int, dict[str, Any]], seeds: tuple[int, ...], fields: Mapping[str, str]) -> dict[str, float]:
    """The mean over ``seeds`` of each summary figure of ``fields`` (name -> summary key), by its name;
    a figure that not every seed records (the clean temperature before its refit) is left out."""
    return {name: statistics.fmean(runs[k][key] for k in seeds) for name, key in fields.items()
            if all(key in runs[k] for k in seeds)}


def noise_table(folder: str | Path, level: float) -> list[Row]:
    """A :class:`Row` per method of :data:`METHODS` at noise ``level`` with a finished run, in the sweep's order.

    ``folder`` is the study's results folder (``results/fashion-mnist-label-noise``). A method with
    no finished run at this level is absent (its diverged seeds, if any, are then in no row: the
    chapter reads the runs that are there, and names what is missing); a folder with no runs gives
    an empty table. Each method is paired against its baseline's setting at the same level
    (:data:`METHODS`) on the seeds both finished.
    """
    found, runs, dead = _settings(folder, level)
    rows = []
    for method in METHODS:
        setting = found.get(method.key)
        if setting is None:
            continue
        mine = runs[setting]
        base_setting = found.get(method.baseline) if method.baseline else None
        base = runs.get(base_setting, {}) if base_setting else {}
        common = sorted(set(mine) & set(base))
        seeds = tuple(common or sorted(mine))
        rows.append(Row(
            method, setting, base_setting, seeds, summarize_values([mine[k][PRIMARY] for k in seeds]),
            _pair(mine, base, common, PRIMARY), _pair(mine, base, common, AT_BEST_VAL),
            _means(mine, seeds, CALIBRATION_FIELDS), _means(mine, seeds, MEMORISATION_FIELDS),
            tuple(dead.get(setting, ())),
        ))
    return rows


def paired_calibration(runs: Mapping[int, Mapping[str, Any]], base: Mapping[int, Mapping[str, Any]],
                       seeds: Iterable[int]) -> dict[str, Paired | None]:
    """Each figure of :data:`CALIBRATION_FIELDS` (its name -> ``runs`` minus ``base``, paired) on those
    of ``seeds`` where both runs' summaries record it, in the summaries' units (ECE and Brier as
    fractions, NLL in nats).

    ``runs`` and ``base`` map a seed to its summary. Runs older than the calibration metrics lack
    them, so each figure pairs on its own seeds; a figure that fewer than two seeds have is None (a
    single pair has no interval). The clean-label calibration of reading (C) against SGD (chapter
    7) and the label-noise chapter's read it, so that both pair the same way.
    """
    seeds = [k for k in seeds if k in runs and k in base]
    out: dict[str, Paired | None] = {}
    for name, key in CALIBRATION_FIELDS.items():
        have = [k for k in seeds if key in runs[k] and key in base[k]]
        out[name] = paired_difference([runs[k][key] for k in have], [base[k][key] for k in have]) if len(have) > 1 else None
    return out


def ahead(row: Row) -> bool:
    """The sweep's extension rule: ``row`` is a smoothing method whose mean gain over its baseline,
    on the final test accuracy, exceeds its 95% paired t interval's half-width (the interval lies
    above zero). A baseline, a row without a pair, or one with a single pair (no interval) is never ahead."""
    if not row.method.smoothing or row.paired is None:
        return False
    # mean > half-width is low = mean - half-width > 0; a NaN low (n = 1) compares False.
    return row.paired.low > 0


def stage_two_needed(folder: str | Path) -> bool:
    """The sweep's rule for stage 2 (noise 0.2): stage 1 (noise 0.4) shows at least one method
    :func:`ahead` of its own baseline. It reads the runs that are there: before stage 1 has all its
    seeds, its answer is provisional (the rows' ``seeds`` say how many each comparison holds)."""
    return any(ahead(row) for row in noise_table(folder, STAGE_ONE))


def reliability_curve(folder: str | Path, setting: str | Row, scaled: bool = False,
                      clean: bool = False) -> dict[str, list[Any]]:
    """The reliability diagram of the seeds of ``setting`` pooled, for a figure: per confidence bin,
    ``count`` (the seeds' counts summed), ``confidence`` and ``accuracy`` (the seeds' means weighted by
    their counts, so the pooled bin is the bin of all the seeds' test images together), None for a bin
    empty in every seed; as :func:`resmooth.lab.calibration.reliability` gives one run's.

    ``setting`` is a setting's folder name (every seed it finished) or a :class:`Row` (its setting,
    on the row's seeds). ``scaled``: the diagram after the temperature fitted on the validation split;
    ``clean``: after the one refitted on its true labels instead (:mod:`resmooth.lab.recalibration`).
    """
    name, seeds = (setting.setting, set(setting.seeds)) if isinstance(setting, Row) else (setting, None)
    runs = [r for r in collect(folder).get(name, []) if seeds is None or r["config"]["seed"] in seeds]
    if not runs:
        raise FileNotFoundError(f"no finished runs of {name!r} under {folder}")
    key = f"final_{RELIABILITY[1]}_clean" if clean else f"final_{RELIABILITY[1] if scaled else RELIABILITY[0]}"
    diagrams = [run[key] for run in runs]
    bins = len(diagrams[0]["count"])
    if any(len(d["count"]) != bins for d in diagrams):
        raise ValueError(f"the seeds of {name!r} bin their {key} differently: {sorted({len(d['count']) for d in diagrams})} bins")
    count = [sum(d["count"][b] for d in diagrams) for b in range(bins)]

    def pooled(field: str) -> list[float | None]:
        # A bin empty in a seed holds None there, and weighs nothing.
        return [sum(d["count"][b] * d[field][b] for d in diagrams if d["count"][b]) / count[b] if count[b] else None
                for b in range(bins)]

    return {"count": count, "confidence": pooled("confidence"), "accuracy": pooled("accuracy")}
