"""Dense outputs: image metrics against scikit-image, corruptions, the autoencoder, and dense sweeps."""

import dataclasses
import json

import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fake_datasets import write_fmnist
from resmooth.lab.data import DeviceData
from resmooth.__main__ import main
from resmooth.lab.dense import LOSSES, DenseConfig, DenseObjective, collect_dense, train_dense
from resmooth.lab.images import corrupt, intersection_union, psnr, silhouette, ssim, total_variation
from resmooth.lab.models.autoencoder import ConvAutoencoder
from resmooth.lab.report import report
from resmooth.lab.runfiles import RunExistsError
from resmooth.lab.sweep import load_sweep, run_sweep
from resmooth.lab.runfiles import NonFiniteLossError

F64 = torch.float64


def blobs(n: int, size: int = 28, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1]: a few Gaussian bumps each."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=F64), torch.arange(size, dtype=F64), indexing="ij")
    images = torch.zeros(n, 1, size, size, dtype=F64)
    for i in range(n):
        for _ in range(3):
            cy, cx = torch.rand(2, generator=g, dtype=F64) * size
            r = 2 + 4 * torch.rand((), generator=g, dtype=F64)
            images[i, 0] += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    return images.clamp(0, 1)


def test_ssim_and_psnr_equal_scikit_image():
    clean = blobs(4)
    noisy = corrupt(clean, "gaussian", 0.2, torch.Generator().manual_seed(1)).clamp(0, 1)
    ours_ssim, ours_psnr = ssim(noisy, clean), psnr(noisy, clean)
    for i in range(4):
        a, b = noisy[i, 0].numpy(), clean[i, 0].numpy()
        ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
        assert ours_ssim[i].item() == pytest.approx(ref, abs=1e-10)
        assert ours_psnr[i].item() == pytest.approx(peak_signal_noise_ratio(b, a, data_range=1.0), abs=1e-10)
    assert ssim(clean, clean).tolist() == pytest.approx([1.0] * 4)
    with pytest.raises(ValueError, match="smaller than the 11-pixel window"):
        ssim(clean[..., :8, :8], clean[..., :8, :8])


def test_corruptions_have_the_asked_strength():
    clean = torch.full((8, 1, 28, 28), 0.5, dtype=F64)
    g = torch.Generator().manual_seed(0)
    noise = corrupt(clean, "gaussian", 0.3, g) - clean
    assert noise.std().item() == pytest.approx(0.3, rel=0.03)
    salted = corrupt(clean, "salt-pepper", 0.2, g)
    assert (salted == 0).double().mean().item() == pytest.approx(0.1, abs=0.01)
    assert (salted == 1).double().mean().item() == pytest.approx(0.1, abs=0.01)
    assert (salted == 0.5).double().mean().item() == pytest.approx(0.8, abs=0.01)
    with pytest.raises(ValueError, match="noise must be one of"):
        corrupt(clean, "speckle", 0.1)
    with pytest.raises(ValueError, match="level must lie in \\[0, 1\\] for salt-pepper"):
        corrupt(clean, "salt-pepper", 1.5)


def test_silhouette_iou_and_total_variation():
    image = torch.zeros(1, 1, 4, 4)
    image[..., 1:3, 1:3] = 0.5
    mask = silhouette(image, 0.1)
    assert mask.shape == (1, 4, 4) and mask.sum() == 4
    shifted = torch.roll(mask, 1, dims=-1)
    assert intersection_union(shifted, mask) == (2, 6)
    # A 2x2 square of height 0.5: 4 edges of 2 pixels each in y and x.
    assert total_variation(image).item() == pytest.approx(0.5 * 8)
    assert total_variation(torch.ones(2, 3, 5, 5)).tolist() == [0.0, 0.0]


def test_autoencoder_shapes_and_errors():
    model = ConvAutoencoder(1, 2, width=4)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 2, 28, 28)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(1, 1, 30, 30))
    with pytest.raises(ValueError, match="width must be >= 1"):
        ConvAutoencoder(1, 1, width=0)


@pytest.mark.parametrize(
    "fields,name",
    [(dict(task="inpaint"), "task"), (dict(loss="l1"), "loss"), (dict(noise="poisson"), "noise"),
     (dict(level=-1.0), "level"), (dict(epochs=0), "epochs"), (dict(subset=0.0), "subset"), (dict(b=0.0), "b")],
)
def test_bad_dense_configs_name_the_field(fields, name):
    with pytest.raises((ValueError, TypeError), match=name):
        DenseConfig(**fields)


@pytest.mark.parametrize(
    "fields,message",
    [(dict(loss="squared-error", alpha=2.0), "alpha=2.0 would be ignored: loss='squared-error' has no residual smoothing"),
     (dict(loss="total-variation", tau=2.0), "tau=2.0 would be ignored: loss='total-variation' has no grid operator"),
     (dict(loss="resmooth-graph", tau=2.0), "tau=2.0 would be ignored: loss='resmooth-graph' has no grid operator"),
     (dict(loss="resmooth-global", alpha=2.0), "alpha=2.0 would be ignored: scheme='global' fixes alpha = 0"),
     (dict(loss="resmooth-full", s=0.5), "s=0.5 would be ignored: scheme='full' takes its scale from the annealing"),
     (dict(loss="resmooth-local", b=0.3), "b=0.3 would be ignored: scheme='local' has the constant scale s")],
)
def test_a_field_the_dense_run_ignores_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        DenseConfig(**fields)


def test_the_dense_smoothing_is_the_diffusivity_map_of_its_loss():
    from resmooth.diffusivity import DiffusivityMap

    assert DenseConfig(loss="squared-error").diffusivity is None
    assert DenseConfig(loss="resmooth-graph").diffusivity == DiffusivityMap("full")
    local = DenseConfig(loss="resmooth-local", s=0.5, tau=2.0)
    criterion = DenseObjective(local, total_steps=10).criterion
    assert criterion.diffusivity == DiffusivityMap("local", s=0.5) and criterion.tau == 2.0


@pytest.mark.parametrize(
    "fields,unread",
    [
        (dict(task="segment", loss="resmooth-local", s=0.5), ("distribution", "mu", "b", "tv_weight")),
        (dict(loss="resmooth-graph"), ("s", "tau", "tv_weight", "threshold")),
        (dict(task="segment", loss="total-variation"), ("distribution", "mu", "b", "alpha", "s", "tau")),
    ],
)
def test_a_dense_record_holds_none_for_what_the_run_does_not_read(fields, unread):
    config = DenseConfig(**fields)
    assert config.used() == {**config.to_dict(), **dict.fromkeys(unread)}
    assert DenseConfig.from_record(config.used()) == config


def test_every_objective_gives_a_finite_loss_and_gradient():
    logits = torch.randn(2, 2, 12, 12, requires_grad=True)
    target = silhouette(blobs(2, 12))
    for loss in LOSSES:
        objective = DenseObjective(DenseConfig(task="segment", loss=loss), total_steps=10)
        for _ in range(7):
            objective.step()
        value = objective(logits, target)
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(value) and torch.isfinite(grad).all() and grad.abs().sum() > 0


def synthetic_data(n_train: int, n_test: int) -> DeviceData:
    images = blobs(n_train + n_test, seed=3).float()
    labels = torch.zeros(len(images), dtype=torch.long)
    return DeviceData(name="fashion-mnist", train_x=images[:n_train], train_y=labels[:n_train], test_x=images[n_train:],
                      test_y=labels[n_train:], val_x=None, val_y=None, num_classes=10, in_channels=1, augment=False,
                      mean=(0.0,), std=(1.0,))


@pytest.fixture
def one_thread():
    """One torch thread for the test, restored after: the thread count is global state."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_denoising_learns_and_the_run_is_not_overwritten(tmp_path, one_thread):
    data = synthetic_data(256, 64)
    config = DenseConfig(noise="gaussian", level=0.3, epochs=12, batch_size=32, lr=3e-3, width=8, eval_batch_size=64)
    summary, _ = train_dense(config, tmp_path / "run", quiet=True, data=data)
    # Could be false: an untrained or broken model scores below its noisy input.
    assert summary["psnr"] > summary["input_psnr"] + 3
    assert summary["ssim"] > summary["input_ssim"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["psnr"] == summary["psnr"]
    # The config as the run read it: None for the fields that the squared error and denoising do not read.
    unread = ("distribution", "mu", "b", "alpha", "s", "tau", "tv_weight", "threshold")
    assert summary["config"] == {**config.to_dict(), **dict.fromkeys(unread)}
    assert DenseConfig.from_record(summary["config"]) == config and summary["environment"]["threads"] == 1
    with pytest.raises(RunExistsError, match="overwrite"):
        train_dense(config, tmp_path / "run", quiet=True, data=data)
    # Same seed, same result: the noise, order and init come from the seed alone.
    again, _ = train_dense(config, quiet=True, data=data)
    assert again["psnr"] == summary["psnr"]


@pytest.mark.parametrize("loss", ["resmooth-full", "total-variation"])
def test_a_stopped_run_resumes_to_the_same_result(tmp_path, monkeypatch, one_thread, loss):
    import resmooth.lab.dense as dense

    data = synthetic_data(64, 16)
    config = DenseConfig(loss=loss, epochs=3, batch_size=16, width=4, eval_batch_size=16)
    whole, _ = train_dense(config, tmp_path / "whole", quiet=True, data=data)

    class Stop(Exception):
        pass

    real_write = dense.atomic_write

    def stop_after_the_first_checkpoint(path, write):
        real_write(path, write)
        raise Stop

    monkeypatch.setattr(dense, "atomic_write", stop_after_the_first_checkpoint)
    with pytest.raises(Stop):
        train_dense(config, tmp_path / "cut", quiet=True, data=data)
    monkeypatch.setattr(dense, "atomic_write", real_write)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["train_loss"] == whole["train_loss"][:1]
    with pytest.raises(RunExistsError, match="unfinished run; pass resume=True"):
        train_dense(config, tmp_path / "cut", quiet=True, data=data)
    with pytest.raises(ValueError, match="written by another config"):
        train_dense(dataclasses.replace(config, lr=1e-2), tmp_path / "cut", resume=True, quiet=True, data=data)
    resumed, _ = train_dense(config, tmp_path / "cut", resume=True, quiet=True, data=data)
    # The schedule, the optimizer, the batch order and the noise all continue where they stopped.
    for key in ("train_loss", "psnr", "ssim"):
        assert resumed[key] == whole[key]


def test_a_non_finite_loss_stops_the_run_with_a_clear_error(tmp_path, one_thread):
    data = synthetic_data(64, 16)
    data.train_x[5] = float("nan")  # one image: its batch's loss, and the epoch's sum, are NaN
    config = DenseConfig(epochs=2, batch_size=16, width=4, eval_batch_size=16, loss="resmooth-full")
    with pytest.raises(NonFiniteLossError, match="the resmooth-full loss became nan in epoch 1: the run stops"):
        train_dense(config, tmp_path / "run", quiet=True, data=data)
    assert not (tmp_path / "run" / "summary.json").exists()


DENSE_SWEEP = """
name = "tiny-dense"
kind = "dense"
trials = 2
[base]
task = "segment"
epochs = 1
subset = 0.5
width = 4
batch_size = 16
eval_batch_size = 16
device = "cpu"
[[grid]]
loss = ["squared-error", "resmooth-full"]
"""


def test_a_dense_sweep_runs_seed_major_resumes_and_reports(tmp_path, monkeypatch, capsys, one_thread):
    write_fmnist(tmp_path / "data", monkeypatch, per_class=(8, 2))
    file = tmp_path / "tiny-dense.toml"
    file.write_text(DENSE_SWEEP)
    out = run_sweep(file, tmp_path / "study", data_root=str(tmp_path / "data"))
    # Seed-major: both objectives of seed 0 before seed 1, so a stopped sweep leaves paired seeds.
    order = [line.split("] ")[1] for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert order == ["loss=squared-error/seed-0", "loss=resmooth-full/seed-0", "loss=squared-error/seed-1",
                     "loss=resmooth-full/seed-1"]
    summaries = sorted(out.glob("*/seed-*/summary.json"))
    assert len(summaries) == 4 and (out / "sweep.toml").read_text() == DENSE_SWEEP
    assert json.loads(summaries[0].read_text())["config"]["data_root"] == str(tmp_path / "data")
    # Run again, without the data root: where a run ran may differ, and nothing is trained again.
    stamps = [p.stat().st_mtime_ns for p in summaries]
    run_sweep(file, out, quiet=True)
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    # A run stopped after its last checkpoint resumes from it, to the same result and without
    # training again (the clock is the checkpoint's).
    stopped = out / "loss=resmooth-full" / "seed-1" / "summary.json"
    finished = json.loads(stopped.read_text())
    stopped.unlink()
    run_sweep(file, out, quiet=True, data_root=str(tmp_path / "data"))
    resumed = json.loads(stopped.read_text())
    for key in ("iou", "train_loss", "train_seconds"):
        assert resumed[key] == finished[key]
    # A changed file does not skip runs of other settings as if they were its own.
    file.write_text(DENSE_SWEEP.replace("epochs = 1", "epochs = 2"))
    with pytest.raises(RunExistsError, match=r"other settings: epochs=1 \(the sweep's: 2\)"):
        run_sweep(file, out, quiet=True)
    assert (out / "sweep.toml").read_text() == DENSE_SWEEP
    with pytest.raises(ValueError, match="executor='ray' runs kind='classification' sweeps only"):
        run_sweep(file, tmp_path / "ray", executor="ray")
    # report reads the kind from the folder's sweep.toml: the dense table, paired by seed.
    text = report(out)
    assert "| segment-gaussian-0.5 | squared-error | 2 |" in text and "(baseline)" in text
    runs = collect_dense(out)
    differences = [100 * (own["iou"] - base["iou"]) for own, base in
                   zip(runs[("segment-gaussian-0.5", "resmooth-full")], runs[("segment-gaussian-0.5", "squared-error")])]
    csv = (out / "report.csv").read_text().splitlines()
    assert len(csv) == 3 and csv[2].startswith("segment-gaussian-0.5,resmooth-full,2,iou,")
    assert float(csv[2].split(",")[6]) == pytest.approx(sum(differences) / 2, abs=1e-6)
    assert main(["report", str(out)]) == 0 and capsys.readouterr().out == text + "\n"


def test_a_sweep_file_names_its_kind(tmp_path):
    file = tmp_path / "bad.toml"
    file.write_text(DENSE_SWEEP.replace('kind = "dense"', 'kind = "segmentation"'))
    with pytest.raises(ValueError, match="kind must be one of 'classification', 'dense'; got 'segmentation'"):
        load_sweep(file)
    # The kind decides which config the fields are checked against.
    file.write_text(DENSE_SWEEP.replace('kind = "dense"\n', ""))
    with pytest.raises(ValueError, match="unknown config field.*loss, task, width"):
        load_sweep(file)
    file.write_text(DENSE_SWEEP.replace('task = "segment"', 'task = "segment"\nmethod = "sgd"'))
    with pytest.raises(ValueError, match="unknown config field.*method"):
        load_sweep(file)
    file.write_text(DENSE_SWEEP.replace("trials = 2", 'trials = 2\npaper_table = "table1"'))
    with pytest.raises(ValueError, match="paper_table and baseline apply to kind='classification' only"):
        load_sweep(file)
    file.write_text(DENSE_SWEEP)
    assert {type(config) for _, config in load_sweep(file).runs()} == {DenseConfig}


def test_the_dense_report_refuses_two_settings_of_one_task_and_objective(tmp_path):
    for setting, tau in (("tau=1", 1.0), ("tau=2", 2.0)):
        run = tmp_path / setting / "seed-0"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"config": DenseConfig(loss="resmooth-full", tau=tau).to_dict()}))
    with pytest.raises(ValueError, match="tau=1 and tau=2 are both task denoise-gaussian-0.5 with objective resmooth-full"):
        collect_dense(tmp_path)


def test_image_grid_lays_out_columns_and_refuses_ragged_ones():
    import matplotlib

    matplotlib.use("Agg")
    from resmooth.lab.plotting import image_grid

    fig = image_grid({"input": [torch.zeros(4, 4)] * 3, "kappa": [torch.ones(4, 4)] * 3}, ranges={"input": (0, 1)})
    assert len(fig.axes) == 6 and [ax.get_title() for ax in fig.axes[:2]] == ["input", "kappa"]
    assert fig.axes[0].images[0].get_clim() == (0, 1)
    with pytest.raises(ValueError, match="same, non-zero number of images"):
        image_grid({"a": [torch.zeros(2, 2)], "b": []})


# The epoch losses of a short run of every objective, computed before the criteria's "mean"
# changed to torch's convention (issue 22: the mean over pixels too). The study keeps its own
# objective (DenseObjective: the per-image sum averaged over images), so its runs do not move.
LOSSES_BEFORE_TORCH_REDUCTIONS = {
    ("denoise", "squared-error"): [111.56874084472656, 106.52171325683594],
    ("denoise", "total-variation"): [112.73698425292969, 107.63656616210938],
    ("denoise", "resmooth-global"): [107.8018569946289, 100.34880065917969],
    ("denoise", "resmooth-local"): [96.58116912841797, 90.78489685058594],
    ("denoise", "resmooth-full"): [104.08404541015625, 92.89813995361328],
    ("denoise", "resmooth-graph"): [101.84010314941406, 83.17318725585938],
    ("segment", "squared-error"): [403.7218017578125, 389.69805908203125],
    ("segment", "total-variation"): [405.505126953125, 391.4564208984375],
    ("segment", "resmooth-global"): [390.15411376953125, 372.79290771484375],
    ("segment", "resmooth-local"): [341.903076171875, 325.93621826171875],
    ("segment", "resmooth-full"): [369.45556640625, 331.7722473144531],
    ("segment", "resmooth-graph"): [376.2161865234375, 321.3948974609375],
}


def test_a_short_dense_run_gives_the_losses_of_before(one_thread):
    data = synthetic_data(32, 8)
    for (task, loss), before in LOSSES_BEFORE_TORCH_REDUCTIONS.items():
        config = DenseConfig(task=task, loss=loss, epochs=2, batch_size=16, width=4, eval_batch_size=8)
        summary, _ = train_dense(config, quiet=True, data=data)
        # The numbers were recorded on one CPU; the convolution kernels differ in their last digits
        # from one instruction set to another (the Makefile tests on another path than the native
        # one). A change of reduction would move them by orders of magnitude (784 pixels).
        assert summary["train_loss"] == pytest.approx(before, rel=1e-5), (task, loss)
