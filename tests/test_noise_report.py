"""The label-noise study's analysis: its pairing, its numbers against an independent computation, the
sweep's rules for extending a cell and for stage 2, the pooled reliability diagram, and the empty
folder, on fake studies written as the sweep of experiments/fashion-mnist-label-noise.toml would."""

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest

from resmooth.lab.calibration import BINS
from resmooth.lab.config import CROSS_ENTROPY
from resmooth.lab.metrics import CALIBRATION
from resmooth.lab.noise import MEMORISATION
from resmooth.lab.noise_report import (BY_KEY, CALIBRATION_FIELDS, METHODS, ahead, noise_table,
                                       paired_calibration, reliability_curve, stage_two_needed)
from resmooth.lab.runfiles import CLEAN
from resmooth.lab.sweep import DIVERGED, load_sweep

scipy_stats = pytest.importorskip("scipy.stats")  # the independent reference (the test extra installs it)

ROOT = Path(__file__).resolve().parents[1]
STUDY = load_sweep(ROOT / "experiments" / "fashion-mnist-label-noise.toml")
# The real sweep's runs: (method key, level) -> (setting folder, {seed: config}). The keys are given by
# hand from the folder names, so that the module's matching by config is checked against them.
BY_FOLDER = {"method=sgd": "sgd", "method=resmooth,b=0.9": "laplace-a", "method=resmooth,b=0.01875": "laplace-c",
             "method=sgd-rescaled,b=0.9": "control", "method=label-smoothing-se": "label-smoothing-se",
             "method=sgd-ce": "sgd-ce", "method=label-smoothing": "label-smoothing"}
RUNS: dict[tuple[str, float], tuple[str, dict]] = {}
for _folder, _config in STUDY.runs():
    _setting = _folder.split("/")[0]
    _level, _rest = _setting.split(",", 1)
    RUNS.setdefault((BY_FOLDER[_rest], float(_level.removeprefix("label_noise="))), (_setting, {}))[1][_config.seed] = _config
# Each method's hand-written baseline: the brief's rule, written again here rather than read from the module.
BASELINE = {"sgd": "sgd-ce", "laplace-a": "sgd", "laplace-c": "sgd", "control": "sgd", "label-smoothing-se": "sgd",
            "sgd-ce": None, "label-smoothing": "sgd-ce"}
# Final test accuracies per seed 0, 1, 2, uneven enough that pairing on the wrong seeds changes every difference.
FINAL = {"sgd": [60.0, 62.5, 61.0], "laplace-a": [61.3, 62.1, 63.4], "laplace-c": [59.2, 62.9, 60.1],
         "control": [60.4, 63.8, 60.2], "label-smoothing-se": [62.0, 61.1, 61.7], "sgd-ce": [57.5, 63.1, 59.9],
         "label-smoothing": [58.8, 64.0, 59.0]}


def one_bin(count: int, confidence: float, accuracy: float) -> dict:
    """A reliability diagram with all its samples in the top bin."""
    return {"count": [0] * (BINS - 1) + [count], "confidence": [None] * (BINS - 1) + [confidence],
            "accuracy": [None] * (BINS - 1) + [accuracy]}


def write_run(out: Path, key: str, level: float, seed: int, final: float, **figures) -> Path:
    """results/<study>/<setting>/seed-<k>/summary.json, as metrics.summarize writes it, for ``key``'s setting at ``level``."""
    setting, configs = RUNS[(key, level)]
    config = configs[seed]
    index = list(BY_FOLDER.values()).index(key)
    summary = {
        "config": {**config.used(), "amp": None}, "seed": seed, "final_test_acc": final,
        "test_acc_at_best_val": final + 0.3 * (seed + 1) - 0.2 * index, "max_test_acc": final + 1.0,
        **{f"final_{k}": 0.01 * (i + 1) + 0.003 * seed + 0.001 * index for i, k in enumerate(CALIBRATION)},
        "temperature": 1.0 + 0.1 * seed + 0.01 * index,
        **{f"final_{k}": 10.0 * (i + 1) + seed + index for i, k in enumerate(MEMORISATION)},
        "final_test_reliability": one_bin(100, 0.95, 0.9), "final_test_reliability_scaled": one_bin(100, 0.9, 0.9),
        **figures,
    }
    folder = out / setting / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def fake_study(root: Path, levels=(0.4, 0.2), finals=FINAL) -> Path:
    """Every method of the study at ``levels``, on seeds 0-2; level 0.2 five points above 0.4."""
    out = root / "fashion-mnist-label-noise"
    for level in levels:
        for key, values in finals.items():
            for seed, value in enumerate(values):
                write_run(out, key, level, seed, value + (5.0 if level == 0.2 else 0.0))
    return out


def read(out: Path, key: str, level: float, seed: int) -> dict:
    return json.loads((out / RUNS[(key, level)][0] / f"seed-{seed}" / "summary.json").read_text())


def t_interval(differences: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the 95% paired t interval, from SciPy."""
    n = len(differences)
    mean = statistics.fmean(differences)
    half = scipy_stats.t.ppf(0.975, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


def test_the_pairing_rule_keeps_each_loss_with_its_own_baseline():
    # The rule's data: every method's baseline is the brief's, and a smoothing is paired on its own loss.
    assert [m.key for m in METHODS] == list(BY_FOLDER.values())  # the sweep's order
    assert {m.key: m.baseline for m in METHODS} == BASELINE
    for m in METHODS:
        if m.smoothing:
            assert (m.fields["method"] in CROSS_ENTROPY) == (BY_KEY[m.baseline].fields["method"] in CROSS_ENTROPY)
    assert {m.key for m in METHODS if m.smoothing} == set(BASELINE) - {"sgd", "sgd-ce"}


def test_each_method_is_paired_with_its_baseline_seed_by_seed(tmp_path):
    out = fake_study(tmp_path)
    for level in (0.4, 0.2):
        rows = noise_table(out, level)
        assert [r.method.key for r in rows] == list(BY_FOLDER.values())
        for row in rows:
            key, base = row.method.key, BASELINE[row.method.key]
            assert row.setting == RUNS[(key, level)][0] and row.seeds == (0, 1, 2)
            if base is None:
                assert row.baseline_setting is None and row.paired is None and row.paired_at_best_val is None
                continue
            assert row.baseline_setting == RUNS[(base, level)][0]
            differences = [a - b for a, b in zip(FINAL[key], FINAL[base])]
            assert row.paired.mean == pytest.approx(statistics.fmean(differences))
            assert row.paired.sd == pytest.approx(statistics.stdev(differences))


def test_the_numbers_against_an_independent_computation(tmp_path):
    out = fake_study(tmp_path)
    row = {r.method.key: r for r in noise_table(out, 0.4)}["laplace-a"]
    runs = [read(out, "laplace-a", 0.4, k) for k in range(3)]
    base = [read(out, "sgd", 0.4, k) for k in range(3)]
    for paired, metric in ((row.paired, "final_test_acc"), (row.paired_at_best_val, "test_acc_at_best_val")):
        differences = [r[metric] - b[metric] for r, b in zip(runs, base)]
        mean, low, high = t_interval(differences)
        assert (paired.n, paired.mean, paired.low, paired.high) == (3, pytest.approx(mean), pytest.approx(low, abs=1e-6),
                                                                    pytest.approx(high, abs=1e-6))
        assert (paired.wins, paired.losses) == (sum(d > 0 for d in differences), sum(d < 0 for d in differences))
    assert (row.paired.wins, row.paired.losses) == (2, 1)  # +1.3, -0.4, +2.4
    finals = [r["final_test_acc"] for r in runs]
    assert row.accuracy.mean == pytest.approx(statistics.fmean(finals))
    assert row.accuracy.ci95 == pytest.approx(scipy_stats.t.ppf(0.975, 2) * statistics.stdev(finals) / math.sqrt(3), abs=1e-6)
    for key in (*CALIBRATION, "temperature"):
        name = key if key == "temperature" else f"final_{key}"
        assert row.calibration[key] == pytest.approx(statistics.fmean(r[name] for r in runs))
    assert row.memorisation == pytest.approx({k: statistics.fmean(r[f"final_{k}"] for r in runs) for k in MEMORISATION})


def test_missing_runs_pair_on_the_common_seeds_and_a_method_without_runs_is_absent(tmp_path):
    out = fake_study(tmp_path, levels=(0.4,))
    shutil.rmtree(out / RUNS[("sgd", 0.4)][0] / "seed-2")
    shutil.rmtree(out / RUNS[("label-smoothing-se", 0.4)][0])
    rows = {r.method.key: r for r in noise_table(out, 0.4)}
    assert "label-smoothing-se" not in rows and len(rows) == 6
    row = rows["laplace-a"]
    assert row.seeds == (0, 1) and row.accuracy.n == 2
    assert row.paired.mean == pytest.approx(statistics.fmean([61.3 - 60.0, 62.1 - 62.5]))
    # The row's figures read its paired seeds.
    assert row.accuracy.mean == pytest.approx(statistics.fmean([61.3, 62.1]))
    paired_runs = [read(out, "laplace-a", 0.4, k) for k in (0, 1)]
    assert row.calibration["test_ece_scaled"] == pytest.approx(statistics.fmean(r["final_test_ece_scaled"] for r in paired_runs))
    assert row.memorisation == pytest.approx({k: statistics.fmean(r[f"final_{k}"] for r in paired_runs) for k in MEMORISATION})
    assert rows["sgd"].seeds == (0, 1)  # and SGD against cross-entropy too
    # A diverged seed is named, and in no figure.
    folder = out / RUNS[("control", 0.4)][0] / "seed-2"
    record = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").unlink()
    (folder / DIVERGED).write_text(json.dumps({"config": record["config"], "diverged": True, "epoch": 3, "seed": 2}))
    control = {r.method.key: r for r in noise_table(out, 0.4)}["control"]
    assert control.diverged == (2,) and control.seeds == (0, 1)
    # A baseline with no run: the method's own seeds, unpaired.
    shutil.rmtree(out / RUNS[("sgd-ce", 0.4)][0])
    rows = {r.method.key: r for r in noise_table(out, 0.4)}
    assert rows["label-smoothing"].paired is None and rows["label-smoothing"].seeds == (0, 1, 2)
    assert rows["sgd"].paired is None and rows["sgd"].seeds == (0, 1)


def test_methods_are_found_by_their_config_not_their_folder_name(tmp_path):
    out = fake_study(tmp_path, levels=(0.4,))
    expected = [(r.method.key, r.paired) for r in noise_table(out, 0.4)]
    for i, folder in enumerate(sorted(out.iterdir())):
        folder.rename(out / f"run-{i}")
    assert [(r.method.key, r.paired) for r in noise_table(out, 0.4)] == expected
    # Two settings of one method would make the pairing a choice: refused, naming them.
    shutil.copytree(out / "run-0", out / "run-copy")
    with pytest.raises(ValueError, match="matches several settings"):
        noise_table(out, 0.4)


def differences_of(mean: float) -> list[float]:
    """Three paired differences with mean ``mean`` and standard deviation 1."""
    return [mean - 1.0, mean, mean + 1.0]


@pytest.mark.parametrize("factor, expected", [(1.001, True), (0.999, False)])
def test_a_smoothing_is_ahead_by_more_than_the_half_width_and_stage_two_follows(tmp_path, factor, expected):
    half = scipy_stats.t.ppf(0.975, 2) / math.sqrt(3)  # of three differences with sd 1
    base = [60.0, 62.5, 61.0]
    finals = {"sgd": base, "sgd-ce": [40.0, 41.0, 42.0],  # SGD far ahead of its own baseline: never "ahead"
              "laplace-a": [b + d for b, d in zip(base, differences_of(factor * half))],
              "label-smoothing": [30.0, 31.0, 32.0]}  # far behind its baseline
    out = fake_study(tmp_path, levels=(0.4,), finals=finals)
    rows = {r.method.key: r for r in noise_table(out, 0.4)}
    assert rows["laplace-a"].paired.mean == pytest.approx(factor * half)
    assert ahead(rows["laplace-a"]) is expected
    assert not ahead(rows["sgd"]) and rows["sgd"].paired.low > 0
    assert not ahead(rows["label-smoothing"]) and not ahead(rows["sgd-ce"])
    assert stage_two_needed(out) is expected


def test_stage_two_reads_stage_one_alone(tmp_path):
    base = [60.0, 62.5, 61.0]
    out = fake_study(tmp_path, levels=(0.2,), finals={"sgd": base, "laplace-c": [b + 5.0 + d for b, d in zip(base, [0.1, 0, -0.1])]})
    assert ahead({r.method.key: r for r in noise_table(out, 0.2)}["laplace-c"])
    assert not stage_two_needed(out)
    # A single seed pair has no interval: never ahead.
    write_run(out, "sgd", 0.4, 0, 60.0)
    write_run(out, "laplace-a", 0.4, 0, 70.0)
    assert not stage_two_needed(out)


def test_the_pooled_reliability_diagram_by_hand(tmp_path):
    out = tmp_path / "fashion-mnist-label-noise"
    first, second = one_bin(2, 0.95, 1.0), one_bin(6, 0.91, 0.5)
    first["count"][3], first["confidence"][3], first["accuracy"][3] = 4, 0.25, 0.25  # a bin empty in the other seed
    write_run(out, "sgd", 0.4, 0, 60.0, final_test_reliability=first)
    write_run(out, "sgd", 0.4, 1, 61.0, final_test_reliability=second, final_test_reliability_scaled=one_bin(8, 0.5, 0.75))
    write_run(out, "sgd", 0.4, 2, 62.0, final_test_reliability=one_bin(10, 0.99, 0.0))
    setting = RUNS[("sgd", 0.4)][0]
    write_run(out, "sgd-ce", 0.4, 0, 59.0)
    write_run(out, "sgd-ce", 0.4, 1, 59.0)  # SGD's row pairs on seeds 0 and 1
    [row, _] = noise_table(out, 0.4)
    pooled = reliability_curve(out, row)
    assert pooled["count"][14] == 8 and pooled["count"][3] == 4 and sum(pooled["count"]) == 12
    assert pooled["confidence"][14] == pytest.approx((2 * 0.95 + 6 * 0.91) / 8)  # 0.92
    assert pooled["accuracy"][14] == pytest.approx((2 * 1.0 + 6 * 0.5) / 8)  # 0.625
    assert pooled["confidence"][3] == pytest.approx(0.25) and pooled["accuracy"][0] is None
    # By the setting's name: every seed it finished.
    every = reliability_curve(out, setting)
    assert every["count"][14] == 18 and every["accuracy"][14] == pytest.approx((2 + 3 + 0) / 18)
    scaled = reliability_curve(out, row, scaled=True)
    assert scaled["count"][14] == 108 and scaled["accuracy"][14] == pytest.approx((100 * 0.9 + 8 * 0.75) / 108)
    with pytest.raises(FileNotFoundError):
        reliability_curve(out, "label_noise=0.4,method=absent")


def test_a_folder_with_no_runs_gives_an_empty_table(tmp_path):
    assert noise_table(tmp_path / "fashion-mnist-label-noise", 0.4) == []  # not even created yet
    (tmp_path / "empty").mkdir()
    assert noise_table(tmp_path / "empty", 0.2) == [] and not stage_two_needed(tmp_path / "empty")


def test_calibration_pairs_each_figure_on_the_seeds_that_record_it():
    # Seeds 0-4 of two settings; seed 0 predates the calibration metrics (both lack them), seed 1's
    # baseline lacks the temperature alone, and seed 4 has no baseline run.
    def summary(seed, shift, temperature=True):
        s = {f"final_{k}": 0.05 * (i + 1) + 0.01 * seed**2 + shift for i, k in enumerate(CALIBRATION)}
        return {**s, "temperature": 1.2 + 0.1 * seed + shift} if temperature else s
    runs = {0: {}, 1: summary(1, 0.02), 2: summary(2, -0.01), 3: summary(3, 0.005), 4: summary(4, 0.0)}
    base = {0: {}, 1: summary(1, 0.0, temperature=False), 2: summary(2, 0.0), 3: summary(3, 0.0)}
    pairs = paired_calibration(runs, base, range(5))
    assert set(pairs) == set(CALIBRATION_FIELDS)
    for name, key in CALIBRATION_FIELDS.items():
        if name.endswith("_clean"):  # no run here has the clean refit
            assert pairs[name] is None
            continue
        seeds = [2, 3] if name == "temperature" else [1, 2, 3]
        differences = [runs[k][key] - base[k][key] for k in seeds]
        mean, low, high = t_interval(differences)
        assert (pairs[name].n, pairs[name].mean) == (len(seeds), pytest.approx(mean))
        assert (pairs[name].low, pairs[name].high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
    # Seeds outside those asked for are not read; a figure with one pair has no interval.
    assert paired_calibration(runs, base, [1, 2])["temperature"] is None
    assert paired_calibration(runs, base, [1, 2])["test_ece"].n == 2


def test_the_clean_temperature_is_read_where_every_seed_has_its_refit(tmp_path):
    out = fake_study(tmp_path, levels=(0.4,))
    clean = {k: v for k, v in CALIBRATION_FIELDS.items() if k.endswith("_clean")}
    assert set(clean) == {"temperature_clean", "test_nll_scaled_clean", "test_brier_scaled_clean",
                          "test_ece_scaled_clean"}
    refits = {}
    for seed in range(3):
        refits[seed] = {key: 0.5 + 0.1 * seed + 0.01 * i for i, key in enumerate(clean.values())}
        refits[seed]["final_test_reliability_scaled_clean"] = one_bin(100, 0.8, 0.6 + 0.1 * seed)
        folder = out / RUNS[("laplace-a", 0.4)][0] / f"seed-{seed}"
        (folder / CLEAN).write_text(json.dumps(refits[seed]))
    (out / RUNS[("sgd", 0.4)][0] / "seed-0" / CLEAN).write_text(json.dumps(refits[0]))  # one seed of three
    rows = {r.method.key: r for r in noise_table(out, 0.4)}
    for name, key in clean.items():
        assert rows["laplace-a"].calibration[name] == pytest.approx(statistics.fmean(r[key] for r in refits.values()))
        assert name not in rows["sgd"].calibration  # a mean over some of its seeds would mix two fits
    assert "temperature" in rows["sgd"].calibration
    after = reliability_curve(out, rows["laplace-a"], clean=True)
    assert after["count"][14] == 300 and after["accuracy"][14] == pytest.approx(0.7)
