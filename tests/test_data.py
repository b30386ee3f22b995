"""Loading, splitting and augmenting the datasets, on small files written here in the real formats."""

import os
from pathlib import Path

import pytest
import torch

from fake_datasets import TV, write_cifar, write_fmnist, write_svhn
from resmooth.lab.data import (
    DATASETS,
    DatasetChecksumError,
    DatasetNotFoundError,
    augment_batch,
    batches,
    crop_flip,
    load_data,
    resolve_root,
)


def sample_ids(x: torch.Tensor, data) -> set[int]:
    """The index encoded by fake_datasets.fake_images, read back through the normalization."""
    raw = (x[:, 0].flatten(1)[:, :2] * data.std[0] + data.mean[0]) * 255
    raw = raw.round().long()
    return set((raw[:, 0] + 256 * raw[:, 1]).tolist())


def unnormalize(x: torch.Tensor, data) -> torch.Tensor:
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8)


def test_resolve_root(monkeypatch, tmp_path):
    monkeypatch.setenv("RESMOOTH_DATA", str(tmp_path / "env"))
    assert resolve_root(tmp_path / "given") == tmp_path / "given"
    assert resolve_root(str(tmp_path)) == tmp_path
    assert resolve_root(None) == tmp_path / "env"
    monkeypatch.delenv("RESMOOTH_DATA")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_root(None) == tmp_path / ".cache" / "resmooth" / "data"


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "extracted"])
def test_fashion_mnist_from_idx_files(tmp_path, monkeypatch, gz):
    arrays = write_fmnist(tmp_path, monkeypatch, gz=gz)
    data = load_data("fashion-mnist", tmp_path)
    assert data.train_x.shape == (200, 1, 28, 28) and data.test_x.shape == (50, 1, 28, 28)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert (data.num_classes, data.in_channels, data.augment, data.val_x) == (10, 1, False, None)
    assert set(data.train_y.tolist()) == set(range(10))
    # Normalized by the training split's own statistics: zero mean, unit std per channel.
    assert abs(data.train_x.mean().item()) < 1e-5 and abs(data.train_x.std().item() - 1) < 1e-2
    assert torch.equal(unnormalize(data.test_x, data)[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert torch.equal(data.test_y, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())


def test_checksum_mismatch_names_the_file(tmp_path, monkeypatch):
    write_fmnist(tmp_path, monkeypatch)
    resources = list(TV.FashionMNIST.resources)
    resources[2] = (resources[2][0], "0" * 32)
    monkeypatch.setattr(TV.FashionMNIST, "resources", resources)
    with pytest.raises(DatasetChecksumError, match="t10k-images-idx3-ubyte.gz"):
        load_data("fashion-mnist", tmp_path)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("fashion-mnist", "FashionMNIST/raw/train-images-idx3-ubyte.gz"),
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
        ("cifar100", "cifar-100-python/train"),
        ("svhn", "train_32x32.mat"),
    ],
)
def test_missing_data_is_one_clear_error(tmp_path, name, expected):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_data(name, tmp_path / "empty")
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    for part in (repr(name), expected, str(tmp_path / "empty"), "download=True", "--download", "--data-root", "$RESMOOTH_DATA"):
        assert part in message


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_pickled_batches(tmp_path, monkeypatch, name):
    rows, labels = write_cifar(tmp_path, monkeypatch, name)
    data = load_data(name, tmp_path)
    classes = 10 if name == "cifar10" else 100
    assert data.train_x.shape == (len(rows), 3, 32, 32) and data.test_x.shape == (classes, 3, 32, 32)
    assert (data.num_classes, data.in_channels, data.augment) == (classes, 3, True)
    assert data.train_y.dtype == torch.int64 and int(data.train_y.max()) == classes - 1
    # Each row is the R, G, B planes in turn: NCHW is a plain reshape of the rows.
    assert torch.equal(unnormalize(data.train_x, data), torch.from_numpy(rows).view(-1, 3, 32, 32))
    assert torch.equal(data.train_y, torch.from_numpy(labels).long())
    assert data.train_x.mean(dim=(0, 2, 3)).abs().max() < 1e-5


def test_svhn_from_mat_files(tmp_path, monkeypatch):
    written = write_svhn(tmp_path, monkeypatch)
    data = load_data("svhn", tmp_path)
    images, digits = written["train"]
    assert data.train_x.shape == (40, 3, 32, 32) and data.test_x.shape == (20, 3, 32, 32)
    assert torch.equal(data.train_y, torch.from_numpy(digits).long())  # 10 read back as 0
    assert torch.equal(unnormalize(data.train_x, data), torch.from_numpy(images).permute(3, 2, 0, 1))
    assert (data.num_classes, data.in_channels, data.augment) == (10, 3, False)


def test_digits_split_is_fixed_and_stratified():
    data = load_data("digits", seed=5)
    assert data.train_x.shape[1:] == (1, 8, 8) and len(data.train_x) + len(data.test_x) == 1797
    assert 0.19 < len(data.test_x) / 1797 < 0.21
    assert torch.equal(data.test_x, load_data("digits", seed=6).test_x)  # the run's seed leaves it alone
    counts = torch.bincount(data.test_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # about 180 per class, a fifth of each


@pytest.mark.parametrize("subset", [1 / 2, 1 / 4, 1 / 8])
def test_subset_is_stratified_and_seeded(tmp_path, monkeypatch, subset):
    write_fmnist(tmp_path, monkeypatch, per_class=(24, 2))
    data = load_data("fashion-mnist", tmp_path, subset=subset, seed=1)
    assert torch.equal(torch.bincount(data.train_y, minlength=10), torch.full((10,), round(24 * subset)))
    again = load_data("fashion-mnist", tmp_path, subset=subset, seed=1)
    other = load_data("fashion-mnist", tmp_path, subset=subset, seed=2)
    assert torch.equal(data.train_x, again.train_x)
    assert sample_ids(data.train_x, data) != sample_ids(other.train_x, other)
    assert len(data.test_x) == 20  # the test split is always whole


def test_validation_split_is_disjoint_and_stratified(tmp_path, monkeypatch):
    write_fmnist(tmp_path, monkeypatch, per_class=(20, 2))
    data = load_data("fashion-mnist", tmp_path, subset=0.5, val_fraction=0.2, seed=3)
    assert torch.equal(torch.bincount(data.val_y, minlength=10), torch.full((10,), 2))
    assert torch.equal(torch.bincount(data.train_y, minlength=10), torch.full((10,), 8))
    train, val = sample_ids(data.train_x, data), sample_ids(data.val_x, data)
    assert not train & val
    # Held out of the same subset that val_fraction=0 trains on.
    assert train | val == sample_ids(load_data("fashion-mnist", tmp_path, subset=0.5, seed=3).train_x, data)


def test_validation_from_outside_the_subset_leaves_the_training_set_whole(tmp_path, monkeypatch):
    write_fmnist(tmp_path, monkeypatch, per_class=(20, 2))
    data = load_data("fashion-mnist", tmp_path, subset=0.25, val_size=30, seed=3)
    assert torch.equal(torch.bincount(data.val_y, minlength=10), torch.full((10,), 3))
    train, val = sample_ids(data.train_x, data), sample_ids(data.val_x, data)
    assert not train & val
    assert train == sample_ids(load_data("fashion-mnist", tmp_path, subset=0.25, seed=3).train_x, data)
    with pytest.raises(ValueError, match="val_size=151 exceeds the 150"):
        load_data("fashion-mnist", tmp_path, subset=0.25, val_size=151, seed=3)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"name": "mnist"}, "name"),
        ({"val_size": -1}, "val_size"),
        ({"val_size": 10}, "val_size"),
        ({"val_size": 10, "subset": 0.5, "val_fraction": 0.1}, "val_size"),
        ({"subset": 0.0}, "subset"),
        ({"subset": 1.5}, "subset"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, argument):
    with pytest.raises(ValueError, match=argument) as caught:
        load_data(**{"name": "digits", **kwargs})
    if argument == "name":
        assert all(name in str(caught.value) for name in DATASETS)


def test_crop_flip_identity_flip_and_shift():
    x = torch.randn(3, 2, 6, 5)
    zero, no = torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.bool)
    assert torch.equal(crop_flip(x, zero, zero, no), x)
    assert torch.equal(crop_flip(x, zero, zero, ~no), x.flip(-1))
    fill = torch.tensor([7.0, -7.0])
    shifted = crop_flip(x, zero + 2, zero - 1, no, fill=fill)  # content moves up 2 and right 1
    assert torch.equal(shifted[:, :, :4, 1:], x[:, :, 2:, :4])
    assert torch.equal(shifted[:, 0, 4:], torch.full((3, 2, 5), 7.0))
    assert torch.equal(shifted[:, 1, :, 0], torch.full((3, 6), -7.0))


def test_augment_batch_is_seeded_and_changes_images():
    x = torch.randn(64, 3, 32, 32)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, augment_batch(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment_batch(x, torch.Generator().manual_seed(1)))
    changed = (out != x).flatten(1).any(dim=1)
    assert 50 < int(changed.sum()) < 64  # 1 in 162 draws is the identity
    padded = (out == 0).flatten(1).any(dim=1)  # shifted images show the zero fill
    assert int(padded.sum()) > 40
    flipped_only = augment_batch(x, torch.Generator().manual_seed(0), padding=0)
    same, mirrored = [(flipped_only == ref).flatten(1).all(dim=1) for ref in (x, x.flip(-1))]
    assert bool((same | mirrored).all()) and bool(same.any()) and bool(mirrored.any())


def test_pad_fill_is_the_normalized_black_pixel(tmp_path, monkeypatch):
    write_cifar(tmp_path, monkeypatch, "cifar10")
    data = load_data("cifar10", tmp_path)
    black = (torch.zeros(3) - torch.tensor(data.mean)) / torch.tensor(data.std)
    assert torch.allclose(data.pad_fill, black)
    n = 8
    shift, still = torch.full((n,), 4), torch.zeros(n, dtype=torch.long)
    out = crop_flip(data.train_x[:n], shift, still, torch.zeros(n, dtype=torch.bool), fill=data.pad_fill)
    # The 4 rows shifted in are black in the raw image, as torchvision's zero padding makes them.
    assert torch.equal(unnormalize(out, data)[:, :, 28:], torch.zeros(n, 3, 4, 32, dtype=torch.uint8))


def test_pad_surrounds_every_split_with_the_normalized_black_pixel(tmp_path, monkeypatch):
    write_fmnist(tmp_path, monkeypatch, per_class=(20, 2))
    plain = load_data("fashion-mnist", tmp_path, subset=0.5, val_size=20, seed=1)
    padded = load_data("fashion-mnist", tmp_path, subset=0.5, val_size=20, seed=1, pad=2)
    assert padded.mean == plain.mean and padded.std == plain.std  # the normalization is the images' own
    for split in ("train", "val", "test"):
        x, inner = getattr(padded, f"{split}_x"), getattr(plain, f"{split}_x")
        assert x.shape == (len(inner), 1, 32, 32)
        assert torch.equal(x[:, :, 2:-2, 2:-2], inner)
        border = torch.ones(32, 32, dtype=torch.bool)
        border[2:-2, 2:-2] = False
        # The normalized black pixel, up to the rounding of (0 - 255 mean) / (255 std) against -mean / std.
        assert torch.allclose(x[:, :, border], padded.pad_fill.view(1, 1, 1).expand(len(x), 1, int(border.sum())))
        assert torch.equal(unnormalize(x, padded)[:, :, border], torch.zeros(len(x), 1, int(border.sum()), dtype=torch.uint8))
    with pytest.raises(ValueError, match="pad must be >= 0"):
        load_data("fashion-mnist", tmp_path, pad=-1)


def test_batches_cover_every_sample_once():
    x, y = torch.arange(10).float().view(10, 1), torch.arange(10)
    ordered = list(batches(x, y, 4, shuffle=False))
    assert [len(b) for b, _ in ordered] == [4, 4, 2] and torch.equal(torch.cat([b for _, b in ordered]), y)
    shuffled = torch.cat([b for _, b in batches(x, y, 4, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(shuffled.tolist()) == list(range(10)) and not torch.equal(shuffled, y)
    again = torch.cat([b for _, b in batches(x, y, 4, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert torch.equal(shuffled, again)
    assert [len(b) for b, _ in batches(x, y, 4, shuffle=False, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(x, y, 0, shuffle=False))


def real_fmnist_root() -> Path | None:
    """``$RESMOOTH_DATA`` when it is set and holds the real Fashion-MNIST; else None (skip)."""
    root = os.environ.get("RESMOOTH_DATA")
    if root and (Path(root) / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz").exists():
        return Path(root)
    return None


@pytest.mark.skipif(real_fmnist_root() is None,
                    reason="$RESMOOTH_DATA is unset or holds no FashionMNIST/raw/train-images-idx3-ubyte.gz")
def test_real_fashion_mnist():
    data = load_data("fashion-mnist", real_fmnist_root())  # md5s are the published ones
    assert len(data.train_x) == 60000 and len(data.test_x) == 10000
    assert torch.equal(torch.bincount(data.train_y), torch.full((10,), 6000))
    # The published constants of the training set.
    assert abs(data.mean[0] - 0.2860) < 1e-3 and abs(data.std[0] - 0.3530) < 1e-3
