"""Dense outputs: image metrics against scikit-image, corruptions, the autoencoder and the study runner."""

import dataclasses
import json

import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fake_datasets import write_fmnist
from resmooth.data import DeviceData
from resmooth.dense import LOSSES, STUDY_TASKS, DenseConfig, DenseObjective, dense_report, run_dense_study, study_runs, train_dense
from resmooth.images import corrupt, intersection_union, psnr, silhouette, ssim, total_variation
from resmooth.models.autoencoder import ConvAutoencoder
from resmooth.report import report_folder
from resmooth.runfiles import RunExistsError
from resmooth.train import NonFiniteLossError

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
    with pytest.raises(RunExistsError, match="overwrite"):
        train_dense(config, tmp_path / "run", quiet=True, data=data)
    # Same seed, same result: the noise, order and init come from the seed alone.
    again, _ = train_dense(config, quiet=True, data=data)
    assert again["psnr"] == summary["psnr"]


@pytest.mark.parametrize("loss", ["resmooth-full", "total-variation"])
def test_a_stopped_run_resumes_to_the_same_result(tmp_path, monkeypatch, one_thread, loss):
    import resmooth.dense as dense

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


def test_study_runs_are_seed_major_and_resume(tmp_path, monkeypatch):
    runs = study_runs(2)
    assert len(runs) == 2 * len(STUDY_TASKS) * len(LOSSES)
    assert {c.seed for _, c in runs[: len(runs) // 2]} == {0}
    write_fmnist(tmp_path / "data", monkeypatch, per_class=(8, 2))
    overrides = dict(epochs=1, subset=0.5, width=4, data_root=str(tmp_path / "data"), device="cpu")
    out = run_dense_study(tmp_path / "study", seeds=1, quiet=True, **overrides)
    summaries = sorted(out.glob("*/*/seed-0/summary.json"))
    assert len(summaries) == len(STUDY_TASKS) * len(LOSSES)
    stamps = [p.stat().st_mtime_ns for p in summaries]
    run_dense_study(out, seeds=1, quiet=True, **overrides)
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    with pytest.raises(RunExistsError, match="other settings"):
        run_dense_study(out, seeds=1, quiet=True, **{**overrides, "epochs": 2})
    text = dense_report(out)
    assert "| segment-gaussian-0.5 | resmooth-full | 1 |" in text and "(baseline)" in text
    assert (out / "report.csv").read_text().count("\n") == 1 + len(STUDY_TASKS) * len(LOSSES)
    # The folder says what it is; `report` reads that, also from a record written before it did.
    record = json.loads((out / "dense-study.json").read_text())
    assert record["study"] == "dense" and report_folder(out) == text
    del record["study"]
    (out / "dense-study.json").write_text(json.dumps(record))
    run_dense_study(out, seeds=1, quiet=True, **overrides)
    assert report_folder(out) == text
    (out / "dense-study.json").write_text(json.dumps({**record, "study": "ablation"}))
    with pytest.raises(ValueError, match="declares study 'ablation'"):
        report_folder(out)


def test_image_grid_lays_out_columns_and_refuses_ragged_ones():
    import matplotlib

    matplotlib.use("Agg")
    from resmooth.plotting import image_grid

    fig = image_grid({"input": [torch.zeros(4, 4)] * 3, "kappa": [torch.ones(4, 4)] * 3}, ranges={"input": (0, 1)})
    assert len(fig.axes) == 6 and [ax.get_title() for ax in fig.axes[:2]] == ["input", "kappa"]
    assert fig.axes[0].images[0].get_clim() == (0, 1)
    with pytest.raises(ValueError, match="same, non-zero number of images"):
        image_grid({"a": [torch.zeros(2, 2)], "b": []})
