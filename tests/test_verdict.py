"""The verdict table: its pairing, its status and its tests, on small fake studies, and the README's copy of it."""

import json
import math
import statistics
from pathlib import Path

import pytest

from resmooth.lab.stats import paired_difference, selection_gain
from resmooth.lab.sweep import DIVERGED, load_sweep
from resmooth.lab.verdict import (CLAIMS, R20, README_BEGIN, README_END, Claim, Pick, progress, readme_block, selection_effect,
                                  verdict_markdown, verdict_table, versus_paper, write_readme)

scipy_stats = pytest.importorskip("scipy.stats")  # the independent reference (the test extra installs it)

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """
name = "{name}"
trials = 3
[base]
dataset = "fashion-mnist"
model = "resnet20"
epochs = 2
subset = 0.125
val_size = 100
[[grid]]
method = ["sgd"]
weight_decay = [1e-3]
[[grid]]
method = ["resmooth"]
weight_decay = [1e-3]
scheme = ["full"]
distribution = ["laplace"]
b = [0.9, 0.5]
[[grid]]
method = ["sgd"]
weight_decay = [1e-3]
val_size = [500]
[[grid]]
method = ["resmooth"]
weight_decay = [1e-3]
scheme = ["full"]
distribution = ["laplace"]
b = [0.9]
seed = [3, 4]
"""
SGD = Pick({"method": "sgd", "weight_decay": 1e-3})
LAPLACE = {"method": "resmooth", "weight_decay": 1e-3, "scheme": "full", "distribution": "laplace"}
# A fake run's best test accuracy: a level per setting, plus a per-seed offset (and noise for the method).
LEVELS = {"method=sgd": 89.0, "method=resmooth,b=0.9": 89.3, "method=resmooth,b=0.5": 89.1, "method=sgd,val_size=500": 95.0}
OFFSETS = [0.0, 0.4, -0.2, 0.1, -0.3]
NOISE = [0.05, -0.1, 0.2, 0.0, -0.05]


def fake_study(root: Path, name: str = "fake", seeds=(0, 1, 2), settings=None, sweep_file: bool = True) -> Path:
    """results/<name>/<setting>/seed-<k>/summary.json for the sweep's runs of ``seeds`` (and ``settings``)."""
    (root / "experiments").mkdir(exist_ok=True)
    text = SWEEP.format(name=name)
    (root / "experiments" / f"{name}.toml").write_text(text)
    sweep = load_sweep(root / "experiments" / f"{name}.toml")
    if not sweep_file:
        (root / "experiments" / f"{name}.toml").unlink()
    out = root / "results" / name
    for folder, config in sweep.runs():
        setting = folder.split("/")[0]
        if config.seed not in seeds or (settings is not None and setting not in settings):
            continue
        acc = LEVELS[setting] + OFFSETS[config.seed] + (NOISE[config.seed] if "resmooth" in setting else 0.0)
        (out / folder).mkdir(parents=True, exist_ok=True)
        summary = {"config": config.used(), "max_test_acc": acc, "final_test_acc": acc - 0.1, "seed": config.seed}
        (out / folder / "summary.json").write_text(json.dumps(summary))
    return out


def claim(name="fake", method=Pick({**LAPLACE, "b": 0.9}), baseline=SGD, paper=0.33):
    return Claim("c", "a claim", name, method, baseline, paper)


def test_versus_paper_carries_both_errors_with_welch_satterthwaite_degrees_of_freedom():
    method, baseline = [89.4, 89.1, 89.6, 89.2, 89.5], [89.3, 89.2, 89.3, 89.0, 89.4]
    paired = paired_difference(method, baseline)
    sd_m, sd_b = statistics.stdev(method), statistics.stdev(baseline)
    result = versus_paper(paired, 0.33, sd_m, sd_b)
    # By hand: the three variances, their sum, and the Welch-Satterthwaite df.
    v = [paired.sd**2 / 5, sd_m**2 / 5, sd_b**2 / 5]
    df = sum(v) ** 2 / (v[0] ** 2 / 4 + v[1] ** 2 / 4 + v[2] ** 2 / 4)
    z = (paired.mean - 0.33) / math.sqrt(sum(v))
    assert result.z == pytest.approx(z) and result.df == pytest.approx(df)
    assert result.se_paper == pytest.approx(math.sqrt(v[1] + v[2]))
    assert result.p == pytest.approx(2 * scipy_stats.t.sf(abs(z), df), abs=1e-7)
    # The paper's error widens the test: against the paired t test alone, the paper's +0.33 is rejected, here not.
    assert paired.p_below(0.33) < 0.05 < result.p
    # With more paper trials its error shrinks, and the test comes closer to the paired one.
    assert versus_paper(paired, 0.33, sd_m, sd_b, paper_trials=50).p < result.p
    with pytest.raises(ValueError, match="paper_trials"):
        versus_paper(paired, 0.33, sd_m, sd_b, paper_trials=1)
    with pytest.raises(ValueError, match="sd_method"):
        versus_paper(paired, 0.33, -1.0, sd_b)


def test_a_claim_pairs_its_settings_seed_by_seed(tmp_path):
    fake_study(tmp_path)
    [row] = verdict_table(tmp_path / "results", claims=(claim(),))
    # SGD plans seeds 0-2 and Laplace b 0.9 seeds 0-4: the claim plans the three both do, and all are in. The SGD
    # variant with another validation split is another setting, not the baseline.
    assert row.settings == ("method=resmooth,b=0.9", "method=sgd")
    expected = paired_difference([89.3 + o + n for o, n in zip(OFFSETS[:3], NOISE[:3])], [89.0 + o for o in OFFSETS[:3]])
    assert (row.paired.n, row.paired.mean, row.paired.sd) == (3, pytest.approx(expected.mean), pytest.approx(expected.sd))
    assert row.sd_baseline == pytest.approx(statistics.stdev([89.0 + o for o in OFFSETS[:3]]))
    assert row.status == "final" and row.final
    assert row.p_below_paper() == pytest.approx(expected.p_below(0.33))
    assert row.versus_paper().z == pytest.approx(versus_paper(expected, 0.33, row.sd_method, row.sd_baseline).z)
    assert row.detectable() == pytest.approx(expected.detectable())
    # The last-epoch figure, when the claim reads it.
    [last] = verdict_table(tmp_path / "results", claims=(Claim("c", "x", "fake", Pick({**LAPLACE, "b": 0.9}), SGD, None,
                                                               metric="final_test_acc"),))
    assert last.paired.mean == pytest.approx(expected.mean) and last.p_below_paper() != last.p_below_paper()  # NaN


def test_the_status_counts_planned_seeds_and_diverged_runs(tmp_path):
    out = fake_study(tmp_path, seeds=(0, 1))
    [row] = verdict_table(tmp_path / "results", claims=(claim(),))
    assert row.status == "running 2 of 3 seeds" and not row.final and row.paired.n == 2
    assert row.short_status == "2 of 3" and "| running 2 of 3 seeds |" in verdict_markdown([row], short=True)
    # A diverged seed is done, counted in the status, and not paired.
    config = json.loads((out / "method=resmooth,b=0.9" / "seed-0" / "summary.json").read_text())["config"]
    folder = out / "method=resmooth,b=0.9" / "seed-2"
    folder.mkdir(parents=True)
    (folder / DIVERGED).write_text(json.dumps({"config": {**config, "seed": 2}, "diverged": True, "epoch": 1, "seed": 2}))
    fake_study(tmp_path, seeds=(2,), settings={"method=sgd"})
    [row] = verdict_table(tmp_path / "results", claims=(claim(),))
    assert row.status == "final; 1 diverged" and row.paired.n == 2 and row.short_status == "2, final, 1 diverged"
    assert f"| {row.paired} | 2-0 |" in verdict_markdown([row])  # the method's fake noise is above zero on seeds 0, 1


def test_a_study_not_started_is_said_so(tmp_path):
    # No sweep file and no runs: not run yet. A sweep file and no runs: 0 of the seeds it plans.
    [row] = verdict_table(tmp_path / "results", tmp_path / "experiments", claims=(claim(name="absent"),))
    assert row.status == "not run yet" and row.paired is None
    fake_study(tmp_path, name="planned", seeds=())
    [row] = verdict_table(tmp_path / "results", claims=(claim(name="planned"),))
    assert row.status == "not run yet (0 of 3 seeds)" and row.paired is None
    assert "| a claim | +0.33 | — | — | — | — | — | not yet |" in verdict_markdown([row])
    assert "| a claim | +0.33 | — | 0 | not run yet (0 of 3 seeds) |" in verdict_markdown([row], short=True)
    # A study that needs what the project lacks gives its progress in runs.
    gpu = Claim("g", "on a GPU", "planned", Pick({"method": "resmooth"}, best="max_test_acc"),
                Pick({"method": "sgd"}, best="max_test_acc"), None, needs="a GPU")
    [row] = verdict_table(tmp_path / "results", claims=(gpu,))
    assert row.status == "not run (needs a GPU)" and row.paired is None
    fake_study(tmp_path, name="planned", seeds=(0,), settings={"method=sgd"})
    [row] = verdict_table(tmp_path / "results", claims=(gpu,))
    assert row.status == "running 1 of 14 runs" and row.paired is None  # 3 + 3 + 3 + 3 + 2 runs planned


def test_runs_without_a_sweep_file_are_refused_and_the_results_copy_stands_in(tmp_path):
    out = fake_study(tmp_path, sweep_file=False)
    with pytest.raises(FileNotFoundError, match="holds runs but no sweep file"):
        verdict_table(tmp_path / "results", claims=(claim(),))
    (out / "sweep.toml").write_text(SWEEP.format(name="fake"))
    [row] = verdict_table(tmp_path / "results", claims=(claim(),))
    assert row.status == "final" and row.paired.n == 3


def test_a_best_of_claim_chooses_among_complete_settings_as_the_paper_did(tmp_path):
    fake_study(tmp_path, seeds=(0, 1, 2))
    best = claim(method=Pick(LAPLACE, best="max_test_acc"), baseline=Pick({"method": "sgd"}, best="max_test_acc"))
    [row] = verdict_table(tmp_path / "results", claims=(best,))
    # b = 0.9 has three of its five seeds: the family's complete setting is b = 0.5; the best SGD is the variant (95%).
    assert row.settings == ("method=resmooth,b=0.5", "method=sgd,val_size=500")
    assert row.status == "running 12 of 14 runs" and row.short_status == "12 of 14 runs"
    fake_study(tmp_path, seeds=(3, 4))
    [row] = verdict_table(tmp_path / "results", claims=(best,))
    # Complete, b = 0.9 (89.32 over its five seeds) beats b = 0.5 (89.22 over its three).
    assert row.settings == ("method=resmooth,b=0.9", "method=sgd,val_size=500") and row.status == "final"
    assert row.short_status == "3, final"
    assert row.paired.n == 3  # the seeds both finished


def test_the_selection_effect_pools_the_seed_variances_on_the_books_loss(tmp_path):
    out = fake_study(tmp_path, name=R20, seeds=(0, 1, 2))
    effect = selection_effect(tmp_path / "results")
    variances = [statistics.variance([json.loads((out / s / f"seed-{k}" / "summary.json").read_text())["max_test_acc"]
                                      for k in range(3)]) for s in LEVELS]
    assert effect.settings == len(LEVELS)
    assert effect.seed_sd == pytest.approx(math.sqrt(statistics.fmean(variances)))
    assert (effect.mean, effect.p95) == selection_gain(effect.seed_sd, trials=5, grid=5)
    # A setting off the book's loss (the raw outputs) does not enter the pool.
    raw = out / "method=sgd,activation=identity" / "seed-0"
    for k in range(3):
        folder = out / "method=sgd,activation=identity" / f"seed-{k}"
        folder.mkdir(parents=True)
        config = json.loads((out / "method=sgd" / f"seed-{k}" / "summary.json").read_text())["config"]
        (folder / "summary.json").write_text(json.dumps({"config": {**config, "activation": "identity"},
                                                         "max_test_acc": 50.0 + 10 * k}))
    assert raw.exists() and selection_effect(tmp_path / "results") == effect


def test_the_readme_block_is_rewritten_between_its_markers(tmp_path):
    fake_study(tmp_path)
    rows = verdict_table(tmp_path / "results", claims=(claim(),))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_BEGIN}\nold\n{README_END}\n\nafter\n")
    write_readme(readme, rows)
    text = readme.read_text()
    assert text.startswith("# x\n\n") and text.endswith("\n\nafter\n") and "old" not in text
    readme.write_text("no block")
    with pytest.raises(ValueError, match="no verdict block"):
        write_readme(readme, rows)


def test_the_readme_carries_the_verdict_of_the_committed_results():
    block = readme_block(verdict_table(ROOT / "results"))
    assert block in (ROOT / "README.md").read_text(), (
        "README.md's verdict is not that of results/: run `python -m resmooth.lab.verdict results --readme README.md`")


def test_every_claim_names_a_study_with_a_sweep_file_or_says_what_it_needs():
    files = {p.stem for p in (ROOT / "experiments").glob("*.toml")}
    for c in CLAIMS:
        assert c.study in files or c.study == "fashion-mnist-label-noise", c.key  # the label-noise study's file comes with its issue


def test_the_progress_of_an_open_questions_settings_is_counted_in_runs(tmp_path):
    fake_study(tmp_path, seeds=(0, 1))
    results = tmp_path / "results"
    # Laplace at b = 0.9 plans five seeds, two are in; at b = 0.5 three, two are in.
    assert progress(results, "fake", lambda s, c: c["method"] == "resmooth").status == "running 4 of 8 runs"
    assert progress(results, "fake", lambda s, c: s == "method=resmooth,b=0.5").status == "running 2 of 3 runs"
    assert progress(results, "fake", lambda s, c: c["alpha"] == 2.0).status == "not run yet"  # no such setting
    fake_study(tmp_path, seeds=(2, 3, 4))
    assert progress(results, "fake", lambda s, c: c["method"] == "resmooth").status == "final"
