"""The trainer's throughput against a bare training step, side by side in one run (CPU).

Fashion-MNIST shape (1 x 28 x 28), ResNet20, batch 128, the resmooth loss. Prints:

1. the trainer's images/s (its whole epoch: batching, the loss, bookkeeping, logging, and the
   per-epoch evaluation on a test set a sixth the size of the training set, as Fashion-MNIST's
   10,000 is of 60,000) over a bare eager step's on ready tensors. Target: at least 0.9.
2. the trainer with ``compile=True`` over the eager trainer, after compiling. Target: 1.3.
3. the peak resident memory of a process that trains on the full Fashion-MNIST training set
   (from the library's data root, ``$RESMOOTH_DATA`` or its default; random tensors of its
   shape where it is missing).
   Target: at most 2 GiB.

Epoch times come from the trainer's own metrics (the first epoch, which warms up or compiles,
is left out). Usage: ``python benchmarks/trainer_throughput.py [--train-images 7680]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from resmooth.lab.data import DeviceData, batches, resolve_root
from resmooth.loss import ResidualSmoothingLoss
from resmooth.lab.models import build_model
from resmooth.lab.config import Config
from resmooth.lab.objectives import make_optimizer
from resmooth.lab.train import train


def fake_data(n_train: int, n_test: int, seed: int = 0) -> DeviceData:
    g = torch.Generator().manual_seed(seed)
    return DeviceData(
        name="fashion-mnist", train_x=torch.randn(n_train, 1, 28, 28, generator=g),
        train_y=torch.randint(0, 10, (n_train,), generator=g), test_x=torch.randn(n_test, 1, 28, 28, generator=g),
        test_y=torch.randint(0, 10, (n_test,), generator=g), val_x=None, val_y=None, num_classes=10,
        in_channels=1, augment=False, mean=(0.0,), std=(1.0,),
    )


def bare_images_per_second(data: DeviceData, config: Config) -> float:
    """A bare eager loop on ready tensors: forward, loss, backward, step. No bookkeeping."""
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 1)
    optimizer = make_optimizer(config, model)
    criterion = ResidualSmoothingLoss()
    xs = list(batches(data.train_x, data.train_y, config.batch_size, shuffle=False))
    total = len(xs)
    for x, y in xs[:3]:  # warm-up
        criterion(model(x), y, 0.0).backward()
    start = time.perf_counter()
    for i, (x, y) in enumerate(xs):
        optimizer.zero_grad(set_to_none=True)
        criterion(model(x), y, i / total).backward()
        optimizer.step()
    return len(data.train_x) / (time.perf_counter() - start)


def trainer_images_per_second(data: DeviceData, config: Config) -> float:
    records = []
    with tempfile.TemporaryDirectory() as out:
        train(config, out, quiet=True, data=data)
        records = [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()]
    per_epoch = [(b["seconds"] - a["seconds"]) for a, b in zip(records, records[1:])]
    return len(data.train_x) / (sum(per_epoch) / len(per_epoch))


MEMORY_CHILD = """
import resource, sys
from resmooth.lab.config import Config
from resmooth.lab.train import train
from resmooth.lab.data import load_data
sys.path.insert(0, {bench!r})
from trainer_throughput import fake_data
try:
    data = load_data("fashion-mnist", {root!r})
    source = "Fashion-MNIST from " + {root!r}
except FileNotFoundError:
    data, source = fake_data(60000, 10000), "random tensors of Fashion-MNIST's shape"
config = Config(epochs=1, device="cpu")
# One epoch over the full set is a minute here; the peak is reached within the first steps and
# the evaluation, so the epoch is cut after 20 steps by a subset view of the same tensors.
full = len(data.train_x)
data.train_x, data.train_y = data.train_x[:20 * 128], data.train_y[:20 * 128]
train(config, None, quiet=True, data=data)
print(source, full, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_memory() -> tuple[str, int, float]:
    root = str(resolve_root(None))  # $RESMOOTH_DATA, else the library's default root
    code = MEMORY_CHILD.format(bench=str(Path(__file__).resolve().parent), root=root)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    *source, n, kib = out
    return " ".join(source), int(n), int(kib) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-images", type=int, default=7680, help="training images per epoch (default: 60 batches)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trainer run; the first is left out")
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ResNet20, 1x28x28, batch 128, "
          f"{args.train_images} training and {args.train_images // 6} test images per epoch")
    data = fake_data(args.train_images, args.train_images // 6)
    config = Config(epochs=args.epochs, device="cpu", method="resmooth")
    bare = [bare_images_per_second(data, config)]
    eager = trainer_images_per_second(data, config)
    bare.append(bare_images_per_second(data, config))
    bare_mean = sum(bare) / len(bare)
    print(f"\nbare eager step:  {bare_mean:8.1f} images/s (runs before and after: {bare[0]:.1f}, {bare[1]:.1f})")
    print(f"trainer (eager):  {eager:8.1f} images/s")
    print(f"trainer / bare step: {eager / bare_mean:.3f}   (target >= 0.9)")
    if not args.skip_compile:
        tic = time.perf_counter()
        compiled = trainer_images_per_second(data, Config(epochs=args.epochs, device="cpu", method="resmooth", compile=True))
        print(f"trainer (compile): {compiled:8.1f} images/s ({time.perf_counter() - tic:.0f} s in all, compiling included)")
        print(f"compiled / eager trainer: {compiled / eager:.3f}   (target >= 1.3)")
    source, n, gib = peak_memory()
    print(f"\npeak resident memory, training on {n} images ({source}): {gib:.2f} GiB   (target <= 2 GiB)")


if __name__ == "__main__":
    main()
