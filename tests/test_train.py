"""The trainer: configs, files, resume after a kill, overwrite protection, sweeps and reports."""

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resmooth.lab.report import against, at_chance, claimed, collect, learning_curves, report
from resmooth.lab.sweep import load_sweep, run_sweep
from resmooth.lab.runfiles import RunExistsError, read_jsonl, write_jsonl
from resmooth.loss import ResidualSmoothingLoss, SquaredErrorLoss
from resmooth.lab.config import METHODS, Config
from resmooth.lab.metrics import summarize
from resmooth.lab.objectives import Objective
from resmooth.lab.runfiles import NonFiniteLossError
from resmooth.lab.train import load_run_data, train

# The real data only through $RESMOOTH_DATA (the Makefile sets it); unset, the test that needs it skips.
DATA_ROOT = os.environ.get("RESMOOTH_DATA")
FASHION = Path(DATA_ROOT or ".") / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz"
HAS_FASHION = bool(DATA_ROOT) and FASHION.exists()
TINY = dict(dataset="digits", model="resnet20", batch_size=64, device="cpu")


def without_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def read_metrics(folder):
    return [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "fields,message",
    [
        (dict(model="resnet19"), "model must be one of"),
        (dict(dataset="mnist"), "dataset must be one of"),
        (dict(method="sgdr"), "method must be one of"),
        (dict(subset=0.0), r"subset must lie in \(0, 1\]"),
        (dict(subset=1.5), r"subset must lie in \(0, 1\]"),
        (dict(epochs=-1), "epochs must be >= 1"),
        (dict(val_fraction=1.0), r"val_fraction must lie in \[0, 1\)"),
        (dict(val_size=10, val_fraction=0.1), "set one of them"),
        (dict(val_size=10), "needs subset < 1"),
        (dict(b=0.0), "b must be > 0"),
        (dict(lr=-0.1), "lr must be > 0"),
        # A field that the run would ignore, at a value other than its default.
        (dict(scheme="global", alpha=2.0), "alpha=2.0 would be ignored: scheme='global' fixes alpha = 0"),
        (dict(s=0.5), "s=0.5 would be ignored: scheme='full' takes its scale from the annealing"),
        (dict(scheme="local", b=0.3), "b=0.3 would be ignored: scheme='local' has the constant scale s"),
        (dict(method="sgd", b=0.3), "b=0.3 would be ignored: method='sgd' has no residual smoothing"),
        (dict(method="adam", scheme="local"), "scheme='local' would be ignored: method='adam' has no residual smoothing"),
        (dict(activation="tanh"), "activation must be one of 'softmax', 'sigmoid', 'identity'; got 'tanh'"),
        (dict(method="sgd-ce", activation="identity"), "activation='identity' would be ignored: method='sgd-ce'"),
        (dict(method="label-smoothing", activation="sigmoid"), "activation='sigmoid' would be ignored"),
        # The control reads the smoothing map, and refuses what its scheme ignores, as resmooth does.
        (dict(method="sgd-rescaled", b=0.0), "b must be > 0"),
        (dict(method="sgd-rescaled", s=0.5), "s=0.5 would be ignored: scheme='full' takes its scale from the annealing"),
        (dict(method="label-smoothing-se", b=0.3), "b=0.3 would be ignored: method='label-smoothing-se' has no residual"),
        # The options of the baseline's screen and of the label-noise study.
        (dict(pad=-1), "pad must be >= 0"),
        (dict(shortcut="C"), "shortcut must be one of 'A', 'B'"),
        (dict(model="densenet-bc-100", shortcut="B"), "shortcut='B' would be ignored: model='densenet-bc-100' is not a ResNet"),
        (dict(label_noise=1.0), r"label_noise must lie in \[0, 1\) \(the probability of a flipped label\); got 1.0"),
        (dict(label_noise=-0.2), r"label_noise must lie in \[0, 1\)"),
    ],
)
def test_bad_configs_fail_before_any_work(fields, message):
    with pytest.raises(ValueError, match=message):
        Config(**fields)


def test_the_smoothing_fields_are_the_diffusivity_maps():
    from resmooth.diffusivity import DiffusivityMap

    config = Config(method="resmooth", scheme="local", alpha=2.0, s=0.5)
    assert config.diffusivity == DiffusivityMap("local", alpha=2.0, s=0.5)
    assert Objective(config, total_steps=10).smoothing.diffusivity == config.diffusivity
    # Defaults are never refused, whatever the method or scheme reads.
    assert Config(method="sgd").diffusivity == DiffusivityMap()
    assert Config(method="resmooth", scheme="global", alpha=0.0).diffusivity.alpha == 0.0


def test_unknown_fields_are_named():
    with pytest.raises(ValueError, match="unknown config field.*learning_rate"):
        Config.from_dict({"learning_rate": 0.1})


def test_learning_rate_schedule_is_the_papers():
    config = Config(epochs=48)
    assert [config.lr_at(e) for e in (0, 35, 36, 47)] == [0.1, 0.1, 0.1 * 0.01, 0.1 * 0.01]
    assert Config(method="adam").learning_rate == 1e-3


def test_sparse_evaluation_covers_the_final_window_and_changes_nothing_else():
    config = Config(**TINY, epochs=10, lr_drop=0.5, eval_every=3, seed=1)
    # Every third epoch before the drop (after epoch 5 of 10), then every epoch.
    assert [e + 1 for e in range(10) if config.evaluates(e)] == [3, 6, 7, 8, 9, 10]
    # Without a drop the last 10% (here 2 of 20 epochs) is still evaluated, and the last epoch always.
    assert [e + 1 for e in range(20) if Config(epochs=20, lr_drop=1.0, eval_every=7).evaluates(e)] == [7, 14, 19, 20]
    assert all(Config(epochs=9, eval_every=1).evaluates(e) for e in range(9))

    small = {**TINY, "model": "resnet8-w8"}
    sparse = train(Config(**small, epochs=4, lr_drop=0.75, eval_every=2, val_fraction=0.2), quiet=True)
    full = train(Config(**small, epochs=4, lr_drop=0.75, eval_every=1, val_fraction=0.2), quiet=True)
    assert sparse["evaluated_epochs"] == 2 and full["evaluated_epochs"] == 4  # epochs 2 and 4
    # Evaluation draws no random numbers and leaves the model as it was: the same training, the
    # same accuracies on the epochs both evaluated.
    assert sparse["final_test_acc"] == full["final_test_acc"]
    assert sparse["last10_mean_test_acc"] == full["last10_mean_test_acc"]
    assert sparse["best_epoch"] in (2, 4) and full["max_test_acc"] >= sparse["max_test_acc"]


def test_a_checkpoint_without_the_schedule_resumes_to_the_same_run(tmp_path, monkeypatch):
    # Checkpoints written before the progress schedule was saved in them hold no "objective":
    # resuming one counts the schedule's steps from the epochs done.
    import resmooth.lab.train as trainer

    config = Config(**{**TINY, "model": "resnet8-w8"}, epochs=3, method="resmooth")
    train(config, tmp_path / "whole", quiet=True)

    class Stop(Exception):
        pass

    written = []
    real_write = trainer.atomic_write

    def stop_after_two_checkpoints(path, write):
        real_write(path, write)
        written.append(path.name)
        if written.count("checkpoint.pt") == 2:
            raise Stop

    monkeypatch.setattr(trainer, "atomic_write", stop_after_two_checkpoints)
    with pytest.raises(Stop):
        train(config, tmp_path / "cut", quiet=True)
    monkeypatch.setattr(trainer, "atomic_write", real_write)
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and int(state["objective"]["smoothing.steps_done"]) > 0
    del state["objective"]
    for field in ("s", "shortcut", "pad", "label_noise"):  # and before Config had them: each takes its default
        del state["config"][field]
    torch.save(state, tmp_path / "cut" / "checkpoint.pt")
    train(config, tmp_path / "cut", resume=True, quiet=True)
    assert without_time(read_metrics(tmp_path / "cut")) == without_time(read_metrics(tmp_path / "whole"))


def test_a_run_writes_its_files_and_is_not_overwritten(tmp_path):
    config = Config(**TINY, epochs=2, method="resmooth", val_fraction=0.2)
    summary = train(config, tmp_path, quiet=True)
    records = read_metrics(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "val_acc", "lr", "mean_kappa", "smoothing_scale", "seconds"):
        assert key in records[0]
    assert 0 < records[1]["mean_kappa"] < records[1]["smoothing_scale"] <= 1
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert summary["max_test_acc"] == max(r["test_acc"] for r in records)
    assert summary["final_test_acc"] == records[-1]["test_acc"]
    # The config as the run read it: the rate it trained with; None for amp (no autocast on a CPU) and
    # for the fields that resmooth's full scheme does not read.
    assert summary["config"] == {**config.to_dict(), "lr": 0.1, "amp": None, "s": None, "label_smoothing": None, "nu": None}
    assert Config.from_record(summary["config"]) == dataclasses.replace(config, lr=0.1)
    assert summary["threads"] == torch.get_num_threads() and summary["torch_version"] == torch.__version__
    # The checkpoint holds data only: it loads with weights_only=True.
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2
    # ... with the smoothing's progress schedule: every step of the two epochs counted.
    assert int(state["objective"]["smoothing.steps_done"]) == 2 * math.ceil(len(load_run_data(config).train_x) / config.batch_size)
    before = (tmp_path / "summary.json").read_bytes()
    with pytest.raises(RunExistsError, match="finished run"):
        train(config, tmp_path, quiet=True)
    with pytest.raises(RunExistsError, match="finished run"):
        train(config, tmp_path, quiet=True, resume=True)
    assert (tmp_path / "summary.json").read_bytes() == before
    assert not list(tmp_path.glob(".*tmp*"))
    train(config, tmp_path, quiet=True, overwrite=True)


NO_SMOOTHING = dict.fromkeys(("scheme", "distribution", "b", "alpha", "mu", "s"))


@pytest.mark.parametrize(
    "fields,unlike_given",
    [
        (dict(method="adam"), dict(lr=1e-3, momentum=None, **NO_SMOOTHING, label_smoothing=None, nu=None)),
        (dict(method="label-smoothing", lr=0.05), dict(**NO_SMOOTHING, nu=None)),
        (dict(method="adaptive-wd"), dict(lr=0.1, **NO_SMOOTHING, label_smoothing=None)),
        (dict(method="resmooth", scheme="local", s=0.5), dict(lr=0.1, distribution=None, b=None, mu=None,
                                                               label_smoothing=None, nu=None)),
        (dict(method="sgd-rescaled", scheme="global"), dict(lr=0.1, alpha=None, s=None, label_smoothing=None, nu=None)),
        # The screen's options and the label noise are recorded as given; a network without shortcuts reads none.
        (dict(method="sgd", pad=2, shortcut="B", label_noise=0.4, subset=0.125, val_size=20000),
         dict(lr=0.1, **NO_SMOOTHING, label_smoothing=None, nu=None)),
        (dict(method="sgd", model="densenet-bc-100"), dict(lr=0.1, **NO_SMOOTHING, label_smoothing=None, nu=None,
                                                          shortcut=None)),
    ],
)
@pytest.mark.parametrize("cuda", [False, True])
def test_the_summary_records_the_config_as_the_run_read_it(fields, unlike_given, cuda, monkeypatch):
    import resmooth.lab.metrics as metrics

    monkeypatch.setattr(metrics, "environment", lambda device: {})  # names the GPU, which the test need not have
    config = Config(**fields, amp=not cuda)  # amp=False on CUDA: the record says what was asked there
    record = summarize(config, [{"epoch": 1, "test_acc": 50.0, "seconds": 1.0}], torch.device("cuda" if cuda else "cpu"))
    # The rate it trained with; None for each field it did not read, and for amp on a CPU (no autocast there).
    assert record["config"] == {**config.to_dict(), **unlike_given, "amp": False if cuda else None}
    # Read back, the record is the same run: the fields that it did not read at their defaults.
    assert Config.from_record(record["config"]).used() == {**record["config"], "amp": not cuda}


def test_every_method_trains(tmp_path):
    for method in METHODS:
        # Two epochs: after one, adaptive-wd sat near chance on some thread counts (15% with one).
        # ResNet8: what is tested is each method's objective and optimizer, at a third of the cost.
        summary = train(Config(**{**TINY, "model": "resnet8"}, epochs=2, method=method), quiet=True)
        assert summary["final_test_acc"] > 20, method  # 10 classes: chance is 10%


def _objective_gradient(config, logits, target, progress_steps):
    objective = Objective(config, total_steps=100)
    for _ in range(progress_steps):
        objective.step()
    z = logits.clone().requires_grad_()
    losses = objective(z, target)
    losses.sum().backward()
    return losses.detach(), z.grad


def test_the_control_rescales_the_plain_gradient_by_the_smoothing_ratio():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 10, dtype=torch.float64) * 3, torch.randint(0, 10, (16,))
    smoothing = dict(scheme="full", distribution="laplace", b=0.9)
    losses, grad = _objective_gradient(Config(method="sgd-rescaled", **smoothing), logits, target, 60)
    _, plain_grad = _objective_gradient(Config(method="sgd"), logits, target, 60)
    # The ratio, from the loss module at the same progress (60 of 100 steps).
    smoothed = ResidualSmoothingLoss(**smoothing, reduction="none")(logits, target, progress=0.6)
    plain = SquaredErrorLoss(reduction="none")(logits, target)
    ratio = smoothed / plain
    # The smoothing shrinks every residual here, each by its own factor.
    assert 0 < ratio.min() and ratio.max() < 1.0 and ratio.std() > 0.01
    torch.testing.assert_close(losses, smoothed)  # its value is the smoothed loss...
    torch.testing.assert_close(grad, ratio[:, None] * plain_grad)  # ...its gradient the plain one, rescaled
    # ...which is not the smoothing's own gradient: that one also moves the residual between classes.
    _, smoothing_grad = _objective_gradient(Config(method="resmooth", **smoothing), logits, target, 60)
    assert not torch.allclose(grad, smoothing_grad, atol=1e-3)


def test_the_activation_reaches_the_squared_error_and_the_smoothing():
    torch.manual_seed(0)
    logits, target = torch.randn(8, 10, dtype=torch.float64), torch.randint(0, 10, (8,))
    one_hot = torch.nn.functional.one_hot(target, 10).double()
    losses, _ = _objective_gradient(Config(method="sgd", activation="identity"), logits, target, 0)
    torch.testing.assert_close(losses, ((logits - one_hot) ** 2).sum(1))
    losses, _ = _objective_gradient(Config(method="resmooth", activation="identity", b=0.9), logits, target, 30)
    expected = ResidualSmoothingLoss(b=0.9, activation="identity", reduction="none")(logits, target, progress=0.3)
    torch.testing.assert_close(losses, expected)


def test_label_smoothing_on_the_squared_error_targets_the_smoothed_labels():
    logits, target = torch.randn(8, 10, dtype=torch.float64), torch.randint(0, 10, (8,))
    losses, _ = _objective_gradient(Config(method="label-smoothing-se", label_smoothing=0.2), logits, target, 0)
    smoothed = torch.nn.functional.one_hot(target, 10).double() * 0.8 + 0.02
    torch.testing.assert_close(losses, ((logits.softmax(1) - smoothed) ** 2).sum(1))


def test_the_smoothing_ratio_is_recorded_per_epoch(tmp_path):
    train(Config(**TINY, epochs=2, method="sgd-rescaled", b=0.9), tmp_path, quiet=True)
    for record in read_metrics(tmp_path):
        assert 0 < record["ratio_min"] <= record["ratio_mean"] <= record["ratio_max"] <= 1.0, record
    train(Config(**TINY, epochs=1, method="sgd"), tmp_path / "sgd", quiet=True)
    assert "ratio_mean" not in read_metrics(tmp_path / "sgd")[0]


def test_the_screens_options_and_label_noise_train_and_are_recorded(tmp_path, monkeypatch):
    import resmooth.lab.metrics as metrics

    # One pass over each split per evaluated epoch: the validation split's serves its accuracy and the
    # last epoch's temperature; the training set's (label noise only) the memorisation.
    passes = []
    real_evaluate = metrics.evaluate

    def counted(model, objective, x, y, *args):
        passes.append(len(x))
        return real_evaluate(model, objective, x, y, *args)

    monkeypatch.setattr(metrics, "evaluate", counted)
    config = Config(**{**TINY, "model": "resnet8-w8"}, epochs=3, eval_every=2, method="sgd", pad=2, shortcut="B",
                    label_noise=0.4, subset=0.5, val_size=300)
    summary = train(config, tmp_path, quiet=True)
    data = load_run_data(config)
    evaluated = [e for e in range(config.epochs) if config.evaluates(e)]
    assert passes == [len(data.test_x), len(data.val_x), len(data.train_x)] * len(evaluated)
    assert data.train_x.shape[-2:] == data.test_x.shape[-2:] == (12, 12)  # 8x8 digits, padded by 2
    assert {k: summary["config"][k] for k in ("pad", "shortcut", "label_noise", "val_size")} == \
        dict(pad=2, shortcut="B", label_noise=0.4, val_size=300)
    records = read_metrics(tmp_path)
    for record in records:
        memorised = ("train_acc_flipped_given", "train_acc_flipped_true", "train_acc_clean")
        assert all(0 <= record[k] <= 100 for k in memorised) if "test_acc" in record else not set(memorised) & set(record)
    assert summary["final_train_acc_clean"] == records[-1]["train_acc_clean"]
    chosen = max((r for r in records if "val_acc" in r), key=lambda r: r["val_acc"])
    assert (summary["val_best_epoch"], summary["test_acc_at_best_val"]) == (chosen["epoch"], chosen["test_acc"])


@pytest.mark.skipif(not HAS_FASHION, reason="needs the real Fashion-MNIST under $RESMOOTH_DATA")
def test_a_held_out_split_of_20000_leaves_the_training_set_the_bases():
    base = Config(subset=0.125, val_size=2500, device="cpu", method="sgd")
    large = load_run_data(dataclasses.replace(base, val_size=20000))
    data = load_run_data(base)
    assert len(large.val_y) == 20_000 and torch.equal(torch.bincount(large.val_y), torch.full((10,), 2000))
    # 52,500 images are left out of the 1/8 subset; the training set is the base's, image for image.
    assert len(large.train_x) == 7_500 and torch.equal(large.train_x, data.train_x) and torch.equal(large.train_y, data.train_y)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    forward = Objective.forward

    def poisoned(self, logits, target):
        losses = forward(self, logits, target)
        return losses * float("nan") if self.smoothing.progress() >= 0.5 else losses

    monkeypatch.setattr(Objective, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="epoch 2: the run stops, and the checkpoint of epoch 1"):
        train(Config(**TINY, epochs=2), tmp_path, quiet=True)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert len(read_metrics(tmp_path)) == 1 and not (tmp_path / "summary.json").exists()


@pytest.mark.slow
def test_resume_after_kill_9_mid_epoch_gives_the_same_metrics(tmp_path):
    args = ["--dataset", "digits", "--epochs", "6", "--batch-size", "32", "--device", "cpu", "--quiet",
            "--method", "resmooth", "--subset", "0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-m", "resmooth", "train", *args, "--out", str(reference)], check=True, env=env,
                   capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "resmooth", "train", *args, "--out", str(killed)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (killed / "metrics.jsonl").exists() and len(read_metrics(killed)) >= 2:
            break
        time.sleep(0.02)
    # A third of an epoch later: the third epoch is under way, the second one's checkpoint is on disk.
    epoch_seconds = read_metrics(killed)[0]["seconds"]
    time.sleep(epoch_seconds / 3)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(read_metrics(killed))
    assert 2 <= done < 6 and not (killed / "summary.json").exists()
    with pytest.raises(subprocess.CalledProcessError):  # without --resume it refuses to start
        subprocess.run([sys.executable, "-m", "resmooth", "train", *args, "--out", str(killed)], check=True, env=env,
                       capture_output=True)
    subprocess.run([sys.executable, "-m", "resmooth", "train", *args, "--out", str(killed), "--resume"], check=True,
                   env=env, capture_output=True)
    assert without_time(read_metrics(killed)) == without_time(read_metrics(reference))
    ours, theirs = (json.loads((f / "summary.json").read_text()) for f in (killed, reference))
    for key in ("max_test_acc", "last10_mean_test_acc", "final_test_acc"):
        assert ours[key] == theirs[key]


SWEEP = """
name = "tiny"
paper_table = "table1"
trials = 2
[base]
dataset = "digits"
epochs = 1
batch_size = 64
device = "cpu"
[[grid]]
method = ["sgd"]
weight_decay = [1e-3]
[[grid]]
method = ["resmooth"]
scheme = ["full"]
b = [0.5]
weight_decay = [1e-3]
"""


def test_sweep_runs_skips_finished_runs_and_reports(tmp_path):
    file = tmp_path / "tiny.toml"
    file.write_text(SWEEP)
    out = run_sweep(file, tmp_path / "results", quiet=True)
    summaries = sorted(out.glob("*/seed-*/summary.json"))
    assert [p.relative_to(out).as_posix() for p in summaries] == [
        "method=resmooth/seed-0/summary.json", "method=resmooth/seed-1/summary.json",
        "method=sgd/seed-0/summary.json", "method=sgd/seed-1/summary.json",
    ]
    stamps = [p.stat().st_mtime_ns for p in summaries]
    run_sweep(file, out, quiet=True)
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    text = report(out)
    assert "| method=sgd | 2 |" in text and "Beside the paper's Table 1" in text
    assert "| sgd / 0.001 | 93.36 |" in text and "| full / laplace | 93.89 |" in text
    csv = (out / "report.csv").read_text().splitlines()
    assert csv[0].startswith("setting,trials,dead,max_test_acc_mean") and len(csv) == 3
    accs = [json.loads(p.read_text())["max_test_acc"] for p in summaries[2:]]
    mean = float(csv[2].split(",")[3])
    assert mean == pytest.approx(sum(accs) / 2, abs=1e-4)
    # The paired section compares seed by seed against the baseline sgd.
    assert "## Paired against the best sgd (paper protocol" in text
    diffs = [json.loads((out / f"method=resmooth/seed-{k}/summary.json").read_text())["max_test_acc"]
             - json.loads((out / f"method=sgd/seed-{k}/summary.json").read_text())["max_test_acc"] for k in (0, 1)]
    paired = (out / "paired.csv").read_text().splitlines()
    assert len(paired) == 3 and paired[2].startswith("paper,all,resmooth-full-laplace,")
    assert float(paired[2].split(",")[8]) == pytest.approx(sum(diffs) / 2, abs=1e-4)
    invocations = [json.loads(line) for line in (out / "invocations.jsonl").read_text().splitlines()]
    assert [i["runs_to_go"] for i in invocations] == [4, 0] and invocations[0]["torch"] == torch.__version__
    # A changed file does not skip finished runs of other settings as if they were its own.
    file.write_text(SWEEP.replace("epochs = 1", "epochs = 2"))
    with pytest.raises(RunExistsError, match=r"method=sgd/seed-0 holds a finished run with other settings: epochs=1 "):
        run_sweep(file, out, quiet=True)


def test_a_run_that_diverges_is_recorded_and_the_sweep_goes_on(tmp_path):
    file = tmp_path / "diverging.toml"
    file.write_text(SMALL_SWEEP + '[[grid]]\nmethod = ["sgd"]\nactivation = ["identity"]\nlr = [1000.0]\n')
    out = run_sweep(file, tmp_path / "results", quiet=True)
    dead = out / "method=sgd,activation=identity,lr=1000"
    assert sorted(p.name for p in dead.glob("seed-*/*")) == ["diverged.json", "diverged.json"]
    record = json.loads((dead / "seed-1" / "diverged.json").read_text())
    assert record["diverged"] and record["epoch"] == 1 and record["seed"] == 1 and record["config"]["lr"] == 1000.0
    assert record["train_loss"] in ("nan", "inf") and "became" in record["message"]
    # The settings after it ran; a second sweep trains nothing again.
    assert len(list(out.glob("*/seed-*/summary.json"))) == 4
    stamps = [p.stat().st_mtime_ns for p in sorted(out.glob("*/seed-*/*.json"))]
    run_sweep(file, out, quiet=True)
    assert [p.stat().st_mtime_ns for p in sorted(out.glob("*/seed-*/*.json"))] == stamps
    text = report(out)
    assert "their settings are left out of the comparisons below): method=sgd,activation=identity,lr=1000: 2 of 2 runs " \
           "(seeds 0, 1), in epoch 1." in text and "| method=sgd,activation=identity" not in text
    # A changed file is told apart from a diverged run too.
    file.write_text(file.read_text().replace("lr = [1000.0]", "lr = [999.0]").replace("lr=1000", "lr=999"))
    (out / "method=sgd,activation=identity,lr=999").mkdir()
    for seed in ("seed-0", "seed-1"):
        (dead / seed).rename(out / "method=sgd,activation=identity,lr=999" / seed)
    with pytest.raises(RunExistsError, match=r"holds a diverged run with other settings: lr=1000.0 \(the sweep's: 999.0\)"):
        run_sweep(file, out, quiet=True)


SMALL_SWEEP = """
name = "small"
trials = 2
[base]
dataset = "digits"
model = "resnet8-w8"
epochs = 1
batch_size = 64
device = "cpu"
amp = false
[[grid]]
method = ["sgd", "label-smoothing"]
"""


def test_the_summaries_of_this_version_and_of_older_ones_read_alike(tmp_path):
    file = tmp_path / "small.toml"
    file.write_text(SMALL_SWEEP)
    out = run_sweep(file, tmp_path / "results", quiet=True)
    text = report(out, write=False)
    summaries = sorted(out.glob("*/seed-*/summary.json"))
    stamps = [p.stat().st_mtime_ns for p in summaries]
    # A CPU run does not read amp: its record holds None, not the sweep's false, and the run is the sweep's.
    assert len(summaries) == 4 and all(json.loads(p.read_text())["config"]["amp"] is None for p in summaries)
    run_sweep(file, out, quiet=True)
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    # An older summary holds the config as given (lr None for the method's default, amp as asked,
    # label_smoothing under sgd) and the threads as a string, and lacks the fields added since (the
    # screen's and the label-noise study's): the same runs to the sweep and the report.
    given = dict(load_sweep(file).runs())
    for path in summaries:
        old = json.loads(path.read_text())
        config = given[path.parent.relative_to(out).as_posix()].to_dict()
        old.update(config={k: v for k, v in config.items() if k not in ("shortcut", "pad", "label_noise")},
                   threads=str(old["threads"]))
        path.write_text(json.dumps(old))
    assert json.loads(summaries[0].read_text())["config"]["lr"] is None
    run_sweep(file, out, quiet=True)
    assert [p.stat().st_mtime_ns for p in summaries] != stamps  # rewritten above, and not trained again since:
    stamps = [p.stat().st_mtime_ns for p in summaries]
    run_sweep(file, out, quiet=True)
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    assert report(out, write=False) == text
    # A setting that the file changes is still told apart, a new field too.
    file.write_text(SMALL_SWEEP.replace("amp = false", "lr = 0.05"))
    with pytest.raises(RunExistsError, match=r"other settings: lr=0.1 \(the sweep's: 0.05\)"):
        run_sweep(file, out, quiet=True)
    for value, recorded in (("pad = 2", "pad=0 (the sweep's: 2)"), ("label_noise = 0.2", "label_noise=0.0 (the sweep's: 0.2)"),
                            ('shortcut = "B"', "shortcut='A' (the sweep's: 'B')")):
        file.write_text(SMALL_SWEEP.replace("amp = false", value))
        with pytest.raises(RunExistsError, match=re.escape(recorded)):
            run_sweep(file, out, quiet=True)


def test_a_budget_cut_keeps_every_seed_and_the_named_baseline_is_paired_with_each_setting(tmp_path):
    file = tmp_path / "tiny.toml"
    file.write_text(SWEEP.replace('trials = 2', 'trials = 2\nbaseline = "method=sgd"')
                    + '[[grid]]\nmethod = ["label-smoothing"]\nweight_decay = [1e-3]\n')
    out = run_sweep(file, tmp_path / "results", quiet=True, settings=2)
    finished = sorted(p.parent.relative_to(out).as_posix() for p in out.glob("*/seed-*/summary.json"))
    assert finished == ["method=resmooth/seed-0", "method=resmooth/seed-1", "method=sgd/seed-0", "method=sgd/seed-1"]
    text = report(out)
    assert "## Every setting paired against method=sgd (max_test_acc)" in text
    assert "## Every setting paired against method=sgd (final_test_acc)" in text
    groups = collect(out)
    (setting, result, paired), = against(groups, "method=sgd", "final_test_acc")
    ours, base = ([r["final_test_acc"] for r in groups[s]] for s in ("method=resmooth", "method=sgd"))
    assert setting == "method=resmooth" and paired.n == 2
    assert paired.mean == pytest.approx((sum(ours) - sum(base)) / 2)
    # The paper's Table 1 claims full Laplace 93.89 against SGD 93.36 ("max"): +0.53, tested one-sided;
    # label smoothing has no cell there.
    section = text.split("## Every setting paired against method=sgd (max_test_acc)")[1]
    row = next(line for line in section.splitlines() if line.startswith("| method=resmooth | 2 |"))
    (max_paired,) = [p for s, _, p in against(groups, "method=sgd", "max_test_acc")]
    assert f"| +0.53 | {max_paired.p_below(0.53):.3f} | {max_paired.detectable():.2f} |" in row
    assert claimed(groups, "method=sgd", "table1", "max_test_acc") == {"method=resmooth": pytest.approx(0.53)}
    # A summary written before a config field existed (activation) reads as the run had it, at its default:
    # the report is the same.
    old = out / "method=sgd" / "seed-0" / "summary.json"
    values = json.loads(old.read_text())
    del values["config"]["activation"]
    old.write_text(json.dumps(values))
    assert report(out, write=False) == text
    # A setting with fewer seeds than the sweep's trials is listed as in progress and paired with nothing.
    (out / "method=resmooth" / "seed-1" / "summary.json").unlink()
    partial = report(out, write=False)
    assert "In progress (fewer than 2 trials, left out of the comparisons below): method=resmooth." in partial
    assert "| method=resmooth | 1 |" in partial and "| method=resmooth | 1 | " not in partial.split("In progress")[1]
    assert "## Every setting paired against method=sgd" in partial and "resmooth-full" not in partial.split("In progress")[1]
    epochs, losses = learning_curves(out, "method=sgd", "train_loss")
    assert epochs == [1] and len(losses) == 2 and losses[0] != losses[1]  # two seeds, two runs
    with pytest.raises(ValueError, match="settings must be"):
        run_sweep(file, out, quiet=True, settings=0)
    file.write_text(SWEEP.replace('trials = 2', 'trials = 2\nbaseline = "method=sgdd"'))
    with pytest.raises(ValueError, match="baseline must name one of the sweep's settings"):
        load_sweep(file)


def test_a_grid_block_with_its_own_seeds_adds_seeds_to_a_setting(tmp_path):
    # More seeds for the headline pair (seed 2 of sgd), after the other settings in the file's priority order.
    file = tmp_path / "tiny.toml"
    file.write_text(SWEEP.replace('trials = 2', 'trials = 2\nbaseline = "method=sgd"')
                    + '[[grid]]\nmethod = ["label-smoothing"]\nweight_decay = [1e-3]\n'
                    + '[[grid]]\nmethod = ["sgd"]\nweight_decay = [1e-3]\nseed = [2]\n')
    sweep = load_sweep(file)
    assert sweep.setting_names() == ["method=sgd", "method=resmooth", "method=label-smoothing"]
    assert [name for name, _ in sweep.runs()][-3:] == ["method=label-smoothing/seed-0", "method=label-smoothing/seed-1",
                                                       "method=sgd/seed-2"]
    assert [name for name, _ in sweep.runs(3)] == [name for name, _ in sweep.runs()][:-1]  # a budget cut drops it first
    assert dict(sweep.runs())["method=sgd/seed-2"] == dataclasses.replace(dict(sweep.runs())["method=sgd/seed-0"], seed=2)
    out = run_sweep(file, tmp_path / "results", quiet=True, settings=2)
    out = run_sweep(file, out, quiet=True)
    assert sorted(p.parent.name for p in out.glob("method=sgd/seed-*/summary.json")) == ["seed-0", "seed-1", "seed-2"]
    assert [i["runs_to_go"] for i in read_jsonl(out / "invocations.jsonl")] == [4, 3]
    groups = collect(out)
    # Each setting is paired with sgd on the seeds both have: two, while sgd has three.
    assert {s: p.n for s, _, p in against(groups, "method=sgd", "max_test_acc")} == {"method=resmooth": 2,
                                                                                   "method=label-smoothing": 2}
    assert "| method=sgd | 3 |" in report(out, write=False)
    # Seeds that a setting already has, and seeds that are not seeds, are refused when the file is read.
    for seeds, message in (("[1, 2]", "lists the same run twice: method=sgd/seed-1"), ("[2, 2]", "grid.3..seed must list"),
                           ("[-1]", "grid.3..seed must list"), ("3", "grid.3..seed must be a non-empty list")):
        file.write_text(file.read_text().rsplit("seed = ", 1)[0] + f"seed = {seeds}\n")
        with pytest.raises(ValueError, match=message):
            load_sweep(file)


def test_jsonl_records_come_back_as_written(tmp_path):
    records = [{"epoch": 1, "test_acc": 0.1 + 0.2}, {"epoch": 2, "argv": ["a", "b"], "lr": 1e-3}]
    write_jsonl(tmp_path / "m.jsonl", records)
    with open(tmp_path / "m.jsonl", "a") as f:  # appended as a sweep appends its invocations
        f.write(json.dumps({"epoch": 3}) + "\n")
    assert read_jsonl(tmp_path / "m.jsonl") == [*records, {"epoch": 3}]


def test_a_run_at_chance_is_dead():
    run = {"config": {"dataset": "cifar100"}, "final_test_acc": 5.9}
    assert at_chance(run) and at_chance({**run, "final_test_acc": float("nan")})
    assert not at_chance({**run, "final_test_acc": 6.1})
    assert at_chance({"config": {"dataset": "svhn"}, "final_test_acc": 14.9})


def test_bad_sweep_files_name_the_field(tmp_path):
    file = tmp_path / "bad.toml"
    file.write_text(SWEEP.replace('method = ["sgd"]', 'method = ["sgdd"]'))
    with pytest.raises(ValueError, match="method must be one of"):
        load_sweep(file)
    file.write_text(SWEEP.replace("trials = 2", "trials = 2\nseeds = 3"))
    with pytest.raises(ValueError, match="unknown key.*seeds"):
        load_sweep(file)
    file.write_text(SWEEP.replace("epochs = 1", "epoch = 1"))
    with pytest.raises(ValueError, match="unknown config field.*epoch"):
        load_sweep(file)


@pytest.mark.skipif(not HAS_FASHION, reason="$RESMOOTH_DATA is unset or holds no FashionMNIST/raw/train-images-idx3-ubyte.gz")
def test_fashion_mnist_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "resmooth", "train", "--data-root", str(DATA_ROOT), "--subset", "0.01", "--epochs", "1",
         "--eval-batch-size", "500", "--device", "cpu", "--out", str(out)],
        check=True, capture_output=True, text=True,
    )
    assert "step" in result.stderr  # the progress bar
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["dataset"] == "fashion-mnist" and summary["epochs"] == 1
    assert len(read_metrics(out)) == 1


def test_the_ray_executor_without_ray_says_what_to_install(tmp_path, monkeypatch):
    import sys

    from resmooth.lab.cluster import run_on_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'resmooth\[ray\]'"):
        run_on_ray([("x", Config(**TINY, epochs=1))], tmp_path)
    with pytest.raises(ValueError, match="executor must be one of 'local', 'ray'"):
        run_sweep(tmp_path / "none.toml", executor="dask")
