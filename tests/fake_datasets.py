"""Small dataset files in the real formats (IDX, CIFAR pickles, SVHN .mat), for the loaders' tests.

Each writer also points torchvision's recorded md5 sums at the files it wrote (through pytest's
``monkeypatch``), so the loaders check them as they check the published archives.
"""

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import scipy.io
import torchvision

TV = torchvision.datasets
FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def fake_images(labels: np.ndarray, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random images whose first two bytes encode the sample's index, to tell samples apart."""
    images = np.random.default_rng(seed).integers(0, 256, (len(labels), *shape), dtype=np.uint8)
    flat = images.reshape(len(labels), -1)
    flat[:, 0], flat[:, 1] = np.arange(len(labels)) % 256, np.arange(len(labels)) // 256
    return images


def write_fmnist(root: Path, monkeypatch, *, per_class=(20, 5), gz=True) -> dict[str, np.ndarray]:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for split, n, seed in (("train", per_class[0], 0), ("t10k", per_class[1], 1)):
        labels = np.repeat(np.arange(10), n)
        arrays[f"{split}-images-idx3-ubyte"] = fake_images(labels, (28, 28), seed)
        arrays[f"{split}-labels-idx1-ubyte"] = labels
    resources = []
    for name in FMNIST_FILES:
        data = idx_bytes(arrays[name])
        path = raw / (name + ".gz" if gz else name)
        path.write_bytes(gzip.compress(data) if gz else data)
        resources.append((name + ".gz", md5(path) if gz else "0" * 32))
    monkeypatch.setattr(TV.FashionMNIST, "resources", resources)
    return arrays


def write_cifar(root: Path, monkeypatch, name: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR pickles as the archives hold them: rows of 3072 bytes (R, G, B planes, row-major)."""
    cls = TV.CIFAR10 if name == "cifar10" else TV.CIFAR100
    classes = 10 if name == "cifar10" else 100
    key = "labels" if name == "cifar10" else "fine_labels"
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    train_files = [f for f, _ in cls.train_list]
    n = 2 * classes
    rows = np.random.default_rng(2).integers(0, 256, (n * len(train_files), 3072), dtype=np.uint8)
    all_labels = np.tile(np.arange(classes), 2 * len(train_files))

    def dump(file: str, content: dict) -> list[str]:
        with open(folder / file, "wb") as f:
            pickle.dump(content, f)
        return [file, md5(folder / file)]

    train_list = [
        dump(f, {"data": rows[i * n : (i + 1) * n], key: all_labels[i * n : (i + 1) * n].tolist()})
        for i, f in enumerate(train_files)
    ]
    test_rows = np.random.default_rng(3).integers(0, 256, (classes, 3072), dtype=np.uint8)
    test_list = [dump(cls.test_list[0][0], {"data": test_rows, key: np.arange(classes).tolist()})]
    meta_file, meta_md5 = dump(cls.meta["filename"], {cls.meta["key"]: [f"c{i}" for i in range(classes)]})
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", test_list)
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": meta_md5})
    return rows, all_labels


def write_svhn(root: Path, monkeypatch) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The .mat files: X is 32x32x3xN uint8, y is Nx1 with 10 standing for the digit 0."""
    root.mkdir(parents=True, exist_ok=True)
    split_list = {k: list(v) for k, v in TV.SVHN.split_list.items()}
    written = {}
    for i, (split, n) in enumerate((("train", 40), ("test", 20))):
        digits = np.arange(n) % 10
        images = np.random.default_rng(4 + i).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        path = root / split_list[split][1]
        scipy.io.savemat(path, {"X": images, "y": np.where(digits == 0, 10, digits).reshape(n, 1).astype(np.uint8)})
        split_list[split][2] = md5(path)
        written[split] = images, digits
    monkeypatch.setattr(TV.SVHN, "split_list", split_list)
    return written
