"""Datasets as whole tensors on the device, with augmentation a batch at a time on the device.

The trainers are compact (in the manner of airbench): each split is one normalized float tensor
on the device, so there is no DataLoader and no worker processes. The files are those torchvision
downloads, laid out as torchvision lays them out under one data root:

* ``fashion-mnist``: ``FashionMNIST/raw/*-ubyte.gz`` (or the extracted files), decoded here, since
  torchvision's class wants the extracted files and the shared copy is a read-only folder of ``.gz``;
* ``cifar10``: ``cifar-10-batches-py/``; ``cifar100``: ``cifar-100-python/``;
* ``svhn``: ``train_32x32.mat`` and ``test_32x32.mat`` in the root itself (torchvision's SVHN layout);
* ``digits``: scikit-learn's bundled 8x8 digits, so it needs no files (useful for quick runs).

Every file with a published md5 (torchvision's class attributes) is checked before it is read.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor

from .._checks import check_choice, check_int, check_real, spelled


@dataclass(frozen=True)
class DatasetInfo:
    """What a trainer needs to know about a dataset before building a model for it."""

    num_classes: int
    in_channels: int
    image_size: int
    pixel_max: int  # the raw value of a white pixel: pixels are scaled to [0, 1] by it
    augment: bool  # pad 4, random crop, random horizontal flip (CIFAR only, as in the paper)


INFO: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(10, 1, 28, 255, False),
    "cifar10": DatasetInfo(10, 3, 32, 255, True),
    "cifar100": DatasetInfo(100, 3, 32, 255, True),
    "svhn": DatasetInfo(10, 3, 32, 255, False),
    "digits": DatasetInfo(10, 1, 8, 16, False),
}
DATASETS = tuple(INFO)

DEFAULT_ROOT = Path("~/.cache/resmooth/data")
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed, so that the digits test set never depends on the run's seed


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not under the data root (and were not downloaded)."""


class DatasetChecksumError(RuntimeError):
    """A dataset file's md5 differs from the published one."""


@dataclass
class DeviceData:
    """The splits of one dataset, normalized per channel, each one tensor on the device.

    ``val_x``/``val_y`` are ``None`` unless a validation fraction was held out of training.
    ``mean``/``std`` are per channel, in units of the pixel scaled to [0, 1]. ``train_true_y`` and
    ``val_true_y`` hold the true labels where ``train_y`` and ``val_y`` are noisy
    (:func:`resmooth.lab.noise.with_label_noise`), else ``None``.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    val_x: Tensor | None
    val_y: Tensor | None
    num_classes: int
    in_channels: int
    augment: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_true_y: Tensor | None = None
    val_true_y: Tensor | None = None

    @property
    def pad_fill(self) -> Tensor:
        """The normalized value of a black pixel: the ``fill`` that makes ``augment_batch`` pad as
        torchvision's ``RandomCrop(32, padding=4)`` does before ``Normalize``."""
        mean = torch.tensor(self.mean, dtype=self.train_x.dtype, device=self.train_x.device)
        std = torch.tensor(self.std, dtype=self.train_x.dtype, device=self.train_x.device)
        return -mean / std


def resolve_root(root: str | Path | None) -> Path:
    """The data root: ``root`` if given, else ``$RESMOOTH_DATA``, else ``~/.cache/resmooth/data``."""
    if root is None or str(root) == "":
        root = os.environ.get("RESMOOTH_DATA") or DEFAULT_ROOT
    return Path(root).expanduser()


def _expected_files(name: str, root: Path) -> list[tuple[Path, str]]:
    """Each file the dataset is read from, with its published md5 (torchvision's, read at call time)."""
    tv = torchvision.datasets
    if name == "fashion-mnist":
        raw = root / "FashionMNIST" / "raw"
        return [(raw / filename, md5) for filename, md5 in tv.FashionMNIST.resources]
    if name in ("cifar10", "cifar100"):
        cls = tv.CIFAR10 if name == "cifar10" else tv.CIFAR100
        entries = [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]
        return [(root / cls.base_folder / filename, md5) for filename, md5 in entries]
    if name == "svhn":
        return [(root / tv.SVHN.split_list[s][1], tv.SVHN.split_list[s][2]) for s in ("train", "test")]
    return []  # digits ships with scikit-learn


def _present(name: str, path: Path) -> Path | None:
    """The file to read for ``path``: Fashion-MNIST may also be there extracted (without ``.gz``)."""
    if path.is_file():
        return path
    if name == "fashion-mnist" and path.with_suffix("").is_file():
        return path.with_suffix("")
    return None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _locate(name: str, root: Path, download: bool) -> list[Path]:
    """The dataset's files under ``root``, downloaded first if asked and missing, md5-checked."""
    expected = _expected_files(name, root)
    if download and any(_present(name, p) is None for p, _ in expected):
        _download(name, root)
    missing = [p for p, _ in expected if _present(name, p) is None]
    if missing:
        listing = "\n".join(f"  {p.relative_to(root)}" for p, _ in expected)
        extracted = " (or extracted, without .gz)" if name == "fashion-mnist" else ""
        raise DatasetNotFoundError(
            f"dataset {name!r} not found in {root}: missing {', '.join(p.name for p in missing)}.\n"
            f"Expected these files{extracted}, as torchvision lays them out, under {root}:\n{listing}\n"
            "To get them: pass download=True (--download on the command line) on a machine with network "
            "access, or point --data-root or $RESMOOTH_DATA at a folder that holds them."
        )
    found = []
    for path, md5 in expected:
        file = _present(name, path)
        # torchvision publishes the md5 of the Fashion-MNIST archives only; an extracted file is
        # checked by its IDX header and size when it is decoded.
        if file == path and (actual := _md5(path)) != md5:
            raise DatasetChecksumError(
                f"{path} has md5 {actual}, but {name!r} expects {md5}: the file is corrupt or not "
                "the published one; delete it and download it again (download=True, or --download)."
            )
        found.append(file)
    return found


def _download(name: str, root: Path) -> None:
    """Fetch the dataset with torchvision's own downloaders (which check the archives' md5)."""
    tv = torchvision.datasets
    root.mkdir(parents=True, exist_ok=True)
    if name == "fashion-mnist":
        tv.FashionMNIST(root, train=True, download=True)
    elif name == "svhn":
        for split in ("train", "test"):
            tv.SVHN(root, split=split, download=True)
    else:
        (tv.CIFAR10 if name == "cifar10" else tv.CIFAR100)(root, train=True, download=True)


def _read_idx(path: Path) -> Tensor:
    """An IDX file of unsigned bytes: 2 zero bytes, type 0x08, ndim, big-endian int32 dims, data."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = bytearray(f.read())  # writable, so torch.from_numpy does not warn
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != math.prod(dims):
        raise ValueError(f"{path} holds {values.size} values, but its header says {dims}")
    return torch.from_numpy(values.reshape(dims))


def _load_raw(name: str, root: Path, download: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train images, train labels, test images, test labels): uint8 NCHW and int64."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.from_numpy(digits.images.astype(np.uint8)).unsqueeze(1)
        y = torch.from_numpy(digits.target.astype(np.int64))
        generator = torch.Generator().manual_seed(DIGITS_SPLIT_SEED)
        test, train = _stratified_split(y, DIGITS_TEST_FRACTION, generator, lowest=0, highest_left=1)
        return x[train], y[train], x[test], y[test]

    files = _locate(name, root, download)
    tv = torchvision.datasets
    if name == "fashion-mnist":
        train_x, train_y, test_x, test_y = (_read_idx(f) for f in files)
        for x, y, f in ((train_x, train_y, files[0]), (test_x, test_y, files[2])):
            if x.ndim != 3 or len(x) != len(y):
                raise ValueError(f"{f} holds {tuple(x.shape)} images for {len(y)} labels")
        return train_x.unsqueeze(1), train_y.long(), test_x.unsqueeze(1), test_y.long()
    if name == "svhn":
        # torchvision turns label 10 into digit 0 and the 32x32x3xN array into NCHW.
        splits = [tv.SVHN(root, split=s) for s in ("train", "test")]
        pairs = [(torch.from_numpy(s.data).contiguous(), torch.from_numpy(s.labels).long()) for s in splits]
    else:
        cls = tv.CIFAR10 if name == "cifar10" else tv.CIFAR100
        splits = [cls(root, train=t) for t in (True, False)]
        pairs = [(torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(s.targets)) for s in splits]
    return pairs[0][0], pairs[0][1], pairs[1][0], pairs[1][1]


def _stratified_split(
    y: Tensor, fraction: float, generator: torch.Generator, *, lowest: int, highest_left: int
) -> tuple[Tensor, Tensor]:
    """(picked, rest): indices of y, sorted; per class a random round(fraction * count) picked,
    at least ``lowest`` and leaving at least ``highest_left`` of the class unpicked."""
    picked, rest = [], []
    for label in torch.unique(y):
        members = torch.nonzero(y == label).flatten()
        count = len(members)
        # Half up, not Python's half to even, so the count is the one a reader computes by hand.
        n = min(max(math.floor(fraction * count + 0.5), lowest), count - highest_left)
        order = members[torch.randperm(count, generator=generator)]
        picked.append(order[:n])
        rest.append(order[n:])
    return torch.cat(picked).sort().values, torch.cat(rest).sort().values


def _channel_stats(x: Tensor, pixel_max: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 images scaled to [0, 1], from a
    histogram, so that no float copy of the whole training set is made."""
    values = torch.arange(pixel_max + 1, dtype=torch.float64) / pixel_max
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=pixel_max + 1).double()
        mean = (counts * values).sum() / counts.sum()
        var = (counts * (values - mean) ** 2).sum() / counts.sum()
        means.append(mean.item())
        stds.append(max(math.sqrt(var.item()), 1e-12))
    return tuple(means), tuple(stds)


def load_data(
    name: str,
    root: str | Path | None = None,
    *,
    subset: float = 1.0,
    val_fraction: float = 0.0,
    val_size: int = 0,
    seed: int = 0,
    pad: int = 0,
    device: str | torch.device = "cpu",
    download: bool = False,
    dtype: torch.dtype = torch.float32,
) -> DeviceData:
    """Load a dataset onto ``device``, normalized per channel by the full training split's statistics.

    ``subset`` in (0, 1] keeps that fraction of each class of the training split (the paper's
    partial training sets, Table 2), chosen by a CPU ``torch.Generator`` seeded with ``seed``, so
    the same seed picks the same images on every machine. ``val_fraction`` in [0, 1) then holds
    that fraction of each class of the kept images out as a validation split, disjoint from the
    training split. ``val_size`` instead draws a validation split of that many images from the
    training images the subset left out (stratified, so the training set keeps the paper's size
    and the validation split does not shrink it); it needs ``subset < 1``. The test split is
    always whole. ``pad`` adds that many pixels on each side of every image of every split, each
    the normalized black pixel (:attr:`DeviceData.pad_fill`): 2 makes Fashion-MNIST's 28x28 the
    32x32 that the CIFAR ResNets take. The normalization is the unpadded training split's.

    Raises ``DatasetNotFoundError`` when the files are missing (and ``download`` is False) and
    ``DatasetChecksumError`` when a file's md5 is not the published one.
    """
    check_choice("name", name, DATASETS)
    subset = check_real("subset", subset)
    if not 0.0 < subset <= 1.0:
        raise ValueError(f"subset must lie in (0, 1] (a fraction of the training set); got {subset:g}")
    val_fraction = check_real("val_fraction", val_fraction)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1) (a fraction of the training set); got {val_fraction:g}")
    check_int("val_size", val_size, 0)
    check_int("pad", pad, 0)
    if val_size and val_fraction:
        raise ValueError("val_size and val_fraction both ask for a validation split; set one of them")
    if val_size and subset == 1.0:
        raise ValueError("val_size draws from the images a subset leaves out, so it needs subset < 1; use val_fraction")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype; got {dtype}")
    info = INFO[name]
    train_x, train_y, test_x, test_y = _load_raw(name, resolve_root(root), download)
    mean, std = _channel_stats(train_x, info.pixel_max)

    generator = torch.Generator().manual_seed(seed)
    kept, left = _stratified_split(train_y, subset, generator, lowest=1, highest_left=0)
    val = None
    if val_size:
        if val_size > len(left):
            raise ValueError(f"{spelled('val_size', val_size)} exceeds the {len(left)} training images that "
                             f"{spelled('subset', subset)} leaves out")
        val, _ = _stratified_split(train_y[left], val_size / len(left), generator, lowest=0, highest_left=0)
        val = left[val]
    elif val_fraction > 0:
        val, train = _stratified_split(train_y[kept], val_fraction, generator, lowest=0, highest_left=1)
        val, kept = kept[val], kept[train]

    scale = torch.tensor(std, dtype=dtype, device=device).view(1, -1, 1, 1) * info.pixel_max
    shift = torch.tensor(mean, dtype=dtype, device=device).view(1, -1, 1, 1) * info.pixel_max

    def to_device(x: Tensor) -> Tensor:
        # Move the uint8 images (4x smaller) and convert there: (x / max - mean) / std. A pixel of the
        # padding is a raw 0, so it becomes the normalized black pixel with the image.
        return torch.nn.functional.pad(x.to(device), (pad,) * 4).to(dtype).sub_(shift).div_(scale)

    return DeviceData(
        name=name,
        train_x=to_device(train_x[kept]),
        train_y=train_y[kept].to(device),
        test_x=to_device(test_x),
        test_y=test_y.to(device),
        val_x=None if val is None else to_device(train_x[val]),
        val_y=None if val is None else train_y[val].to(device),
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        augment=info.augment,
        mean=mean,
        std=std,
    )


def _fill_tensor(fill: float | Tensor, x: Tensor) -> Tensor:
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    if fill.ndim == 1 and len(fill) == x.shape[1]:
        return fill.view(1, -1, 1, 1)
    if fill.ndim == 0:
        return fill
    raise ValueError(f"fill must be a number or one value per channel ({x.shape[1]}); got shape {tuple(fill.shape)}")


def crop_flip(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, *, fill: float | Tensor = 0.0) -> Tensor:
    """Shift each image of ``x`` (N, C, H, W) and mirror it, as a padded random crop does.

    Output pixel (r, c) of image i is input pixel (r + dy[i], c' + dx[i]), with c' = W - 1 - c
    where ``flip[i]`` and c' = c otherwise (crop first, then flip, as torchvision's transforms
    in that order), and ``fill`` (a number or one per channel) where that lies outside the image.
    A padding of p and a crop at offset o is the shift o - p; zero shifts and no flip give ``x``.
    One gather for the whole batch: no loop over images.
    """
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device) + dy.to(x.device).view(n, 1)
    cols = torch.arange(w, device=x.device)
    cols = torch.where(flip.to(x.device).view(n, 1), w - 1 - cols, cols) + dx.to(x.device).view(n, 1)
    inside = ((rows >= 0) & (rows < h)).view(n, 1, h, 1) & ((cols >= 0) & (cols < w)).view(n, 1, 1, w)
    out = x[
        torch.arange(n, device=x.device).view(n, 1, 1, 1),
        torch.arange(c, device=x.device).view(1, c, 1, 1),
        rows.clamp(0, h - 1).view(n, 1, h, 1),
        cols.clamp(0, w - 1).view(n, 1, 1, w),
    ]
    return torch.where(inside, out, _fill_tensor(fill, x))


def augment_batch(
    x: Tensor, generator: torch.Generator | None = None, *, padding: int = 4, fill: float | Tensor = 0.0
) -> Tensor:
    """The CIFAR augmentation on a batch: pad by ``padding``, a random crop of the original size,
    and a horizontal flip with probability 1/2, each drawn per image from ``generator``.

    ``fill`` pads the normalized images: 0.0 (the default) is the training mean;
    ``DeviceData.pad_fill`` (the normalized black pixel) reproduces torchvision's
    ``RandomCrop(32, padding=4)`` before ``Normalize`` exactly. The draws are made on the
    generator's device (the default generator of ``x``'s device when None), so a seeded generator
    gives the same batch every time.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W); got shape {tuple(x.shape)}")
    check_int("padding", padding, 0)
    n = len(x)
    where = generator.device if generator is not None else x.device
    dy = torch.randint(-padding, padding + 1, (n,), generator=generator, device=where)
    dx = torch.randint(-padding, padding + 1, (n,), generator=generator, device=where)
    flip = torch.randint(0, 2, (n,), generator=generator, device=where).bool()
    return crop_flip(x, dy, dx, flip, fill=fill)


def batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """(x, y) batches of ``batch_size`` in order, or in a random order drawn from ``generator``
    (on its device, then moved to ``x``'s). The last batch is smaller unless ``drop_last``."""
    check_int("batch_size", batch_size, 1)
    if len(x) != len(y):
        raise ValueError(f"x and y must hold as many samples; got {len(x)} and {len(y)}")
    n = len(x)
    if shuffle:
        where = generator.device if generator is not None else x.device
        order = torch.randperm(n, generator=generator, device=where).to(x.device)
    else:
        order = torch.arange(n, device=x.device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        yield x[index], y[index.to(y.device)]
