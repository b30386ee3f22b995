"""The study files: each loads, and a file that gains settings keeps the folders of the runs already finished."""

from pathlib import Path

import pytest

from resmooth.lab.runfiles import finished
from resmooth.lab.sweep import _check_finished, load_sweep

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_study_file_loads_and_its_finished_runs_are_its_own(path):
    sweep = load_sweep(path)  # every run's config checked
    out = ROOT / "results" / sweep.name
    runs = dict(sweep.runs())
    done = [folder for folder in runs if finished(out / folder)]
    for folder in done:
        _check_finished(out / folder, runs[folder])  # raises on a run of other settings
    # No finished run under the study's folder is left without its setting in the file.
    on_disk = {p.parent.relative_to(out).as_posix() for name in ("summary.json", "diverged.json")
               for p in out.glob(f"*/seed-*/{name}")}
    assert on_disk <= set(runs)


def test_the_screen_and_the_label_noise_study_are_where_their_issues_put_them():
    sweep = load_sweep(ROOT / "experiments" / "fashion-mnist-resnet20.toml")
    names = sweep.setting_names()
    screen = ["method=sgd,weight_decay=0.001,pad=2", "method=sgd,weight_decay=0.01,pad=2",
              "method=sgd,weight_decay=0.001,val_size=20000", "method=sgd,weight_decay=0.01,val_size=20000",
              "method=sgd,weight_decay=0.001,shortcut=B", "method=sgd,weight_decay=0.001,subset=0.25"]
    first = names.index(screen[0])
    assert names[first:first + len(screen)] == screen
    assert names[first - 1] == "method=label-smoothing-se,weight_decay=0.001"
    folders = [folder for folder, _ in sweep.runs()]
    seeds = {s: sorted(int(f.rsplit("-", 1)[1]) for f in folders if f.startswith(s + "/")) for s in screen}
    assert seeds == dict(zip(screen, [[0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1], [0, 1, 2], [0, 1]]))
    # After the screen, the seeds 5 to 9 of full Laplace b 0.9 under reading (A).
    after = folders[folders.index("method=sgd,weight_decay=0.001,subset=0.25/seed-1") + 1]
    assert after == "method=resmooth,weight_decay=0.001,distribution=laplace,b=0.9/seed-5"

    noise = load_sweep(ROOT / "experiments" / "fashion-mnist-label-noise.toml")
    runs = noise.runs()
    assert len(runs) == 42 and [c.seed for _, c in runs[:21]] == [0, 1, 2] * 7
    stages = [runs[:21], runs[21:]]
    for stage, p in zip(stages, (0.4, 0.2)):
        assert {c.label_noise for _, c in stage} == {p}
        assert [(c.method, c.b) for _, c in stage[::3]] == [
            ("sgd", 0.5), ("resmooth", 0.9), ("resmooth", 0.01875), ("sgd-rescaled", 0.9),
            ("label-smoothing-se", 0.5), ("sgd-ce", 0.5), ("label-smoothing", 0.5)]
        assert all(c.weight_decay == 1e-3 and c.epochs == 48 and c.subset == 0.125 and c.model == "resnet20"
                   for _, c in stage)
