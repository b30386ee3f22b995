"""The verdict's rows: one per claim of the paper and per reading, measured from ``results/``."""


from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..paper import TABLE2, TABLE3
from ..stats import Paired, against_observed, paired_difference, selection_gain
from ..sweep import DIVERGED, Sweep, load_sweep
from ..train import Config

# The fields that say where and how a run ran, not what it trains: two runs that differ only in
# these are the same setting.
RUN_FIELDS = ("seed", "device", "data_root", "eval_batch_size", "eval_every", "compile", "amp")
# The paper's trials per cell (Sec. 6): five, with no standard deviation reported.
PAPER_TRIALS = 5


@dataclass(frozen=True)
class Pick:
    """Which setting of a study a claim reads.

    Without ``best``: the one setting whose config is the sweep's base with ``fields`` set, every
    other field at the base's value (so that a study's later variants of a setting, another input
    size or shortcut, are not mistaken for it). With ``best`` (a metric): of the complete settings
    whose configs match ``fields``, the one with the best mean of that metric over its seeds, as
    the paper chose its settings on its test set.
    """

    fields: Mapping[str, Any]
    best: str | None = None


@dataclass(frozen=True)
class Claim:
    """A difference the paper reports, or a reading of it, and where the book measures it."""

    key: str
    text: str  # the row's label, in words the glossary defines
    study: str  # results/<study>, experiments/<study>.toml
    method: Pick
    baseline: Pick
    paper: float | None  # the paper's difference, method minus baseline; None: the paper has none
    metric: str = "max_test_acc"
    # What the study needs that the project lacks ("a GPU"). Such a claim spans several cells (Table 3's
    # six), which its chapter compares one by one: its row gives the paper's range and the study's
    # progress in runs, never one paired difference.
    needs: str | None = None


@dataclass(frozen=True)
class VersusPaper:
    """Our mean difference against the paper's observed one, each with its standard error.

    ``se_paper`` is the paper's difference's standard error, estimated from our seed SDs (the
    paper gives none); ``df`` the Welch-Satterthwaite degrees of freedom of the three variances.
    """

    z: float
    se_ours: float
    se_paper: float
    df: float
    p: float  # two-sided


def versus_paper(paired: Paired, paper: float, sd_method: float, sd_baseline: float,
                 paper_trials: int = PAPER_TRIALS) -> VersusPaper:
    """The test of "our difference equals the paper's", carrying the paper's own standard error.

    The paper's difference is of two means of ``paper_trials`` trials each, with no standard
    deviation reported: each mean gets our seed SD of the same setting over sqrt(paper_trials),
    the two added in quadrature (the paper's trials are not said to be paired). With ``se_ours``
    the paired standard error of our mean difference,
    ``z = (mean - paper) / sqrt(se_ours^2 + se_paper^2)``, referred to Student's t with the
    Welch-Satterthwaite degrees of freedom of the three variance terms (n - 1, and
    paper_trials - 1 for each of the paper's). A small p says the two studies disagree; a large
    one that our difference is within the paper's error and ours, not that the gain is real.
    """
    if paired.n < 2:
        raise ValueError(f"paired needs at least 2 seeds; got {paired.n}")
    if paper_trials < 2:
        raise ValueError(f"paper_trials must be >= 2; got {paper_trials}")
    if sd_method < 0 or sd_baseline < 0:
        raise ValueError(f"sd_method and sd_baseline must be >= 0; got {sd_method}, {sd_baseline}")
    # The arithmetic is the statistics module's, the appendix's test (one home for it).
    observed = against_observed(paired, paper, [sd_method, sd_baseline], paper_trials)
    se_paper = math.sqrt(max(observed.se**2 - paired.se**2, 0.0))
    return VersusPaper(observed.z, paired.se, se_paper, observed.df, observed.p)


@dataclass(frozen=True)
class Progress:
    """How far a claim's study has got: seeds (or runs) done, finished or diverged, of those planned."""

    done: int
    planned: int
    diverged: int = 0
    planned_in_file: bool = True  # False: no sweep file lists the claim's settings
    unit: str = "seeds"

    @property
    def status(self) -> str:
        dead = f"; {self.diverged} diverged" if self.diverged else ""
        if not self.planned_in_file and self.done == 0:
            return "not run yet"
        if self.done == 0:
            return f"not run yet (0 of {self.planned} {self.unit})"
        if self.done < self.planned:
            return f"running {self.done} of {self.planned} {self.unit}{dead}"
        return f"final{dead}"

    @property
    def short(self) -> str:
        """The status in a table's narrow column: "5 of 15", "5, final", "not yet"."""
        unit = "" if self.unit == "seeds" else f" {self.unit}"
        dead = f", {self.diverged} diverged" if self.diverged else ""
        if self.done == 0:
            return "not yet"
        if self.done < self.planned:
            return f"{self.done} of {self.planned}{unit}{dead}"
        return f"{self.done}{unit}, final{dead}"


@dataclass(frozen=True)
class VerdictRow:
    """One claim, measured: the paired difference (None until a seed pair is in) and its tests."""

    claim: Claim
    progress: Progress
    paired: Paired | None = None
    sd_method: float = math.nan  # our seed SDs of the two settings, on the paired seeds
    sd_baseline: float = math.nan
    settings: tuple[str, str] | None = None  # the method's and the baseline's setting folders

    @property
    def status(self) -> str:
        if self.claim.needs and self.progress.done == 0:
            return f"not run (needs {self.claim.needs})"
        return self.progress.status

    @property
    def short_status(self) -> str:
        """The status in a narrow column: "5 of 15" (seeds, or runs of a best-of claim's families while
        they run), "5, final" (the seeds paired), "not yet", "needs a GPU"."""
        if self.claim.needs and self.progress.done == 0:
            return f"needs {self.claim.needs}"
        if self.paired is not None and self.progress.done >= self.progress.planned:
            dead = f", {self.progress.diverged} diverged" if self.progress.diverged else ""
            return f"{self.paired.n}, final{dead}"
        return self.progress.short

    @property
    def final(self) -> bool:
        return self.paired is not None and self.progress.done >= self.progress.planned

    def p_below_paper(self) -> float:
        """The one-sided paired t test of "the true gain is at least the paper's" (small: rejected)."""
        if self.paired is None or self.claim.paper is None:
            return math.nan
        return self.paired.p_below(self.claim.paper)

    def versus_paper(self) -> VersusPaper | None:
        """:func:`versus_paper` for this row; None without a paper's number or two seeds."""
        if self.paired is None or self.claim.paper is None or self.paired.n < 2:
            return None
        return versus_paper(self.paired, self.claim.paper, self.sd_method, self.sd_baseline)

    def detectable(self) -> float:
        """The smallest true gain that the one-sided 5% test of "no gain" detects with 80% power."""
        return self.paired.detectable() if self.paired is not None else math.nan


# --- The claims -------------------------------------------------------------------------------

R20 = "fashion-mnist-resnet20"
SMALL = "fashion-mnist-study"
NOISE = "fashion-mnist-label-noise"
TABLE3_STUDY = "table3-paper"

SGD = {"method": "sgd", "weight_decay": 1e-3}
LAPLACE = {"method": "resmooth", "weight_decay": 1e-3, "scheme": "full", "distribution": "laplace", "b": 0.9}
LOGISTIC = {**LAPLACE, "distribution": "logistic", "b": 0.5}
READING_C = {**LAPLACE, "b": 0.9 / 48}  # b = 0.9 epochs of the 48, as a fraction of the run
MEAN_OVER_M = {"lr": 0.01, "weight_decay": 1e-2}  # the mean over M at (0.1, 1e-3) is the sum at (0.01, 1e-2)
RAW = {"activation": "identity"}
CONTROL = {**LAPLACE, "method": "sgd-rescaled"}


def paper_gain(subset: float, distribution: str | None = None) -> float:
    """Table 2's gain at ``subset`` ("max"): the full scheme with ``distribution`` against SGD at
    weight decay 1e-3, the paper's best baseline; without ``distribution``, the best of the two
    against the best SGD (the best of each family, as the paper's grid search chose them)."""
    sgd = [v[0] for k, v in TABLE2.items() if k[0] == subset and k[1] == "sgd"]
    if distribution is not None:
        return TABLE2[(subset, "full", distribution)][0] - TABLE2[(subset, "sgd", 1e-3)][0]
    return max(v[0] for k, v in TABLE2.items() if k[0] == subset and k[1] == "full") - max(sgd)


def table3_gains() -> list[float]:
    """Table 3's gain in each of its six cells ("max"): the better residual smoothing against SGD."""
    cells = {(model, data) for model, data, _ in TABLE3}
    return [max(TABLE3[(m, d, f"resmooth-{dist}")][0] for dist in ("laplace", "logistic")) - TABLE3[(m, d, "sgd")][0]
            for m, d in sorted(cells)]


def _small(subset: float) -> Claim:
    return Claim(f"small-{subset:g}", f"Small model, {Fraction(subset)}", SMALL,
                 Pick({"subset": subset, "method": "resmooth", "scheme": "full"}, best="max_test_acc"),
                 Pick({"subset": subset, "method": "sgd"}, best="max_test_acc"), paper_gain(subset))


def _noise(level: float, reading: str, method: Mapping[str, Any]) -> Claim:
    return Claim(f"noise-{level:g}-{reading}", f"Label noise {level:g}: Laplace ({reading})", NOISE,
                 Pick({**method, "label_noise": level}), Pick({**SGD, "label_noise": level}), None,
                 metric="final_test_acc")


CLAIMS: tuple[Claim, ...] = (
    Claim("laplace-a", "Table 2, 1/8: Laplace (A)", R20, Pick(LAPLACE), Pick(SGD),
          paper_gain(0.125, "laplace")),
    Claim("logistic-a", "Table 2, 1/8: Logistic (A)", R20, Pick(LOGISTIC), Pick(SGD),
          paper_gain(0.125, "logistic")),
    Claim("reading-c", "Laplace, reading (C)", R20, Pick(READING_C), Pick(SGD), paper_gain(0.125, "laplace")),
    Claim("mean-over-m", "Laplace, mean over M", R20, Pick({**LAPLACE, **MEAN_OVER_M}),
          Pick({**SGD, **MEAN_OVER_M}), paper_gain(0.125, "laplace")),
    Claim("raw-outputs", "Laplace, raw outputs", R20,
          Pick({**LAPLACE, **MEAN_OVER_M, **RAW}), Pick({**SGD, **MEAN_OVER_M, **RAW}), paper_gain(0.125, "laplace")),
    Claim("control", "Control vs SGD", R20, Pick(CONTROL), Pick(SGD), None),
    Claim("method-vs-control", "Laplace (A) vs control", R20, Pick(LAPLACE), Pick(CONTROL), None),
    _small(0.125), _small(0.25), _small(0.5),
    _noise(0.4, "A", LAPLACE), _noise(0.4, "C", READING_C),
    Claim("table3", "Table 3 (CIFAR, SVHN)", TABLE3_STUDY,
          Pick({"method": "resmooth"}, best="max_test_acc"), Pick({"method": "sgd"}, best="max_test_acc"), None,
          needs="a GPU"),
)


# --- Reading a study --------------------------------------------------------------------------

@dataclass
class _Study:
    """A study's runs, by setting folder: the finished ones' summaries and the diverged seeds."""

    sweep: Sweep | None
    runs: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)  # setting -> seed -> summary
    dead: dict[str, set[int]] = field(default_factory=dict)  # setting -> diverged seeds
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # setting -> config as the runs read it


def config_as_read(record: Mapping[str, Any]) -> dict[str, Any]:
    """A run's config as it read it (unread fields None, ``lr`` the rate it trained with)."""
    return Config.from_record(dict(record)).used()


def _load(results_root: Path, experiments: Path, study: str) -> _Study:
    folder = results_root / study
    sweep_file = next((f for f in (experiments / f"{study}.toml", folder / "sweep.toml") if f.exists()), None)
    loaded = _Study(load_sweep(sweep_file) if sweep_file else None)
    if sweep_file is None and any(folder.glob("*/seed-*")):
        # A sweep writes its file's copy beside the runs: without one, nothing says what the runs are.
        raise FileNotFoundError(f"{folder} holds runs but no sweep file: neither {experiments / f'{study}.toml'} nor "
                                f"{folder / 'sweep.toml'} exists")
    for path in sorted(folder.glob("*/seed-*/summary.json")):
        setting, seed, record = _record(path)
        loaded.runs.setdefault(setting, {})[seed] = record
        loaded.configs.setdefault(setting, config_as_read(record["config"]))
    for path in sorted(folder.glob(f"*/seed-*/{DIVERGED}")):
        setting, seed, record = _record(path)
        loaded.dead.setdefault(setting, set()).add(seed)
        loaded.configs.setdefault(setting, config_as_read(record["config"]))
    return loaded


def _record(path: Path) -> tuple[str, int, dict[str, Any]]:
    """(setting, seed, the record) of a run's summary.json or diverged.json, from its path."""
    return path.parent.parent.name, int(path.parent.name.removeprefix("seed-")), json.loads(path.read_text())


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def matches(config: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    """Whether a run's config (:func:`config_as_read`) holds each of ``fields`` (numbers compared to rounding)."""
    return all(_same(config.get(k), v) for k, v in fields.items())


def _planned(sweep: Sweep | None) -> dict[str, tuple[dict[str, Any], set[int]]]:
    """The sweep file's settings: folder -> (config as a run reads it, the seeds it plans)."""
    planned: dict[str, tuple[dict[str, Any], set[int]]] = {}
    for name, config in sweep.runs() if sweep else []:
        setting, seed = name.split("/")
        planned.setdefault(setting, (config.used(), set()))[1].add(int(seed.removeprefix("seed-")))
    return planned


def _exact(sweep: Sweep, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The config of the setting that is the sweep's base with ``fields`` set, as its runs read it."""
    return Config.from_dict({**sweep.base, **fields}).used()


def _is(config: Mapping[str, Any], reference: Mapping[str, Any]) -> bool:
    return all(_same(config.get(k), v) for k, v in reference.items() if k not in RUN_FIELDS)


def _settings(study: _Study, planned: Mapping[str, tuple[dict[str, Any], set[int]]], pick: Pick) -> list[str]:
    """The setting folders (planned or run) that ``pick`` may read."""
    configs = {**{s: c for s, (c, _) in planned.items()}, **study.configs}
    if pick.best is not None:
        return [s for s, c in configs.items() if matches(c, pick.fields)]
    if study.sweep is None:
        return []
    reference = _exact(study.sweep, pick.fields)
    return [s for s, c in configs.items() if _is(c, reference)]


def _seeds(study: _Study, planned: Mapping[str, tuple[dict[str, Any], set[int]]],
           setting: str) -> tuple[set[int], set[int], set[int]]:
    """(planned, finished, diverged) seeds of one setting."""
    plan = planned.get(setting, ({}, set()))[1]
    return plan, set(study.runs.get(setting, {})), study.dead.get(setting, set())


def _measure(claim: Claim, study: _Study) -> VerdictRow:
    planned = _planned(study.sweep)
    if claim.needs is not None:
        runs = {(s, k) for s, (_, seeds) in planned.items() for k in seeds}
        ran = {(s, k) for runs_of in (study.runs, study.dead) for s, seeds in runs_of.items() for k in seeds}
        return VerdictRow(claim, Progress(len(ran), len(runs | ran), sum(map(len, study.dead.values())),
                                          bool(planned), unit="runs"))
    sides = [_settings(study, planned, pick) for pick in (claim.method, claim.baseline)]
    in_file = all(any(s in planned for s in side) for side in sides)
    if not all(sides):
        return VerdictRow(claim, Progress(0, 0, planned_in_file=False))
    if claim.method.best is None:
        # One setting a side: the seeds both plan, and the seeds both have done (finished or diverged).
        (method,), (baseline,) = (side[:1] for side in sides)
        (plan_m, fin_m, dead_m), (plan_b, fin_b, dead_b) = (_seeds(study, planned, s) for s in (method, baseline))
        done = (fin_m | dead_m) & (fin_b | dead_b)
        progress = Progress(len(done), len((plan_m & plan_b) | done), len(done & (dead_m | dead_b)), in_file)
        paired_seeds = sorted(fin_m & fin_b)
    else:
        # The best of each family among its complete settings (every planned seed finished); the families'
        # settings plan different seeds, so the progress counts their runs.
        per_setting = [_seeds(study, planned, s) for side in sides for s in side]
        progress = Progress(sum(len(f | d) for _, f, d in per_setting),
                            sum(len(p | f | d) for p, f, d in per_setting),
                            sum(len(d) for _, _, d in per_setting), in_file, unit="runs")
        chosen = []
        for side, pick in zip(sides, (claim.method, claim.baseline)):
            complete = [s for s in side if study.runs.get(s) and _seeds(study, planned, s)[0] <= set(study.runs[s])]
            if not complete:
                return VerdictRow(claim, progress)
            by = pick.best or claim.metric
            chosen.append(max(complete, key=lambda s: statistics.fmean(r[by] for r in study.runs[s].values())))
        method, baseline = chosen
        paired_seeds = sorted(set(study.runs[method]) & set(study.runs[baseline]))
    if not paired_seeds:
        return VerdictRow(claim, progress, settings=(method, baseline))
    values = [[study.runs[s][k][claim.metric] for k in paired_seeds] for s in (method, baseline)]
    sds = [statistics.stdev(v) if len(v) > 1 else math.nan for v in values]
    return VerdictRow(claim, progress, paired_difference(*values), sds[0], sds[1], (method, baseline))


def verdict_table(results_root: str | Path = "results", experiments: str | Path | None = None,
                  claims: tuple[Claim, ...] = CLAIMS) -> list[VerdictRow]:
    """One :class:`VerdictRow` per claim, from the runs under ``results_root``.

    ``experiments`` (default: ``results_root``'s sibling ``experiments``) holds the sweep files
    that say how many seeds each study plans; a study whose file is missing there is read with
    the copy its results folder keeps, and one with neither is "not run yet". A claim's method
    and baseline are paired on the seeds both finished; a diverged seed counts as done (the status
    says how many) and is not paired.
    """
    results_root = Path(results_root)
    experiments = Path(experiments) if experiments is not None else results_root.parent / "experiments"
    studies: dict[str, _Study] = {}
    rows = []
    for claim in claims:
        if claim.study not in studies:
            studies[claim.study] = _load(results_root, experiments, claim.study)
        rows.append(_measure(claim, studies[claim.study]))
    return rows


def progress(results_root: str | Path, study: str, keep: Callable[[str, dict[str, Any]], bool],
             experiments: str | Path | None = None) -> Progress:
    """How far the runs of ``study``'s settings that ``keep`` accepts have got, in runs.

    ``keep(setting, config)`` gets each setting's folder name and its config as its runs read it
    (:meth:`Config.used`), planned in the sweep file or run: an open question's settings, say,
    that no claim of :data:`CLAIMS` pairs. With no such setting in the file or the results, the
    status is "not run yet".
    """
    results_root = Path(results_root)
    experiments = Path(experiments) if experiments is not None else results_root.parent / "experiments"
    loaded = _load(results_root, experiments, study)
    planned = _planned(loaded.sweep)
    configs = {**{s: c for s, (c, _) in planned.items()}, **loaded.configs}
    kept = [s for s, c in configs.items() if keep(s, c)]
    seeds = [_seeds(loaded, planned, s) for s in kept]
    return Progress(sum(len(f | d) for _, f, d in seeds), sum(len(p | f | d) for p, f, d in seeds),
                    sum(len(d) for _, _, d in seeds), any(s in planned for s in kept), unit="runs")


# --- The selection effect ---------------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    """What choosing the best of ``grid`` settings on the test set manufactures when none works."""

    seed_sd: float  # the seed-to-seed SD of the best test accuracy, pooled over ``settings`` settings
    settings: int
    mean: float
    p95: float


def selection_effect(results_root: str | Path = "results", *, grid: int = 5, trials: int = PAPER_TRIALS) -> Selection:
    """The paper's selection effect at 1/8 (:func:`resmooth.lab.stats.selection_gain`), with the
    ResNet20 study's own seed SD of the best test accuracy.

    The SD is pooled (the mean of the variances) over the settings that train on the book's loss,
    the one under which the paper chooses its ``b`` (softmax outputs, the squared error summed,
    learning rate 0.1), on the sweep's first ``trials`` seeds, among the settings that have all of
    them: the readings that change the loss change the spread as well. ``grid`` is the paper's
    five Laplace widths at 1/8 (0.9 to 1.7).
    """
    study = _load(Path(results_root), Path(results_root).parent / "experiments", R20)
    if study.sweep is None:
        raise FileNotFoundError(f"no sweep file for {R20} under {results_root} or its experiments folder")
    seeds = set(range(study.sweep.first_seed, study.sweep.first_seed + study.sweep.trials))
    variances = [statistics.variance([runs[k]["max_test_acc"] for k in sorted(seeds)])
                 for setting, runs in study.runs.items() if seeds <= set(runs)
                 and study.configs[setting]["activation"] == "softmax" and _same(study.configs[setting]["lr"], 0.1)]
    if not variances:
        raise FileNotFoundError(f"no setting of {R20} on the book's loss has all of the seeds {sorted(seeds)}")
    sd = math.sqrt(statistics.fmean(variances))
    mean, p95 = selection_gain(sd, trials=trials, grid=grid)
    return Selection(sd, len(variances), mean, p95)
