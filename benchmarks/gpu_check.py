"""GPU figures, side by side in one run, on CIFAR-shaped random tensors (no dataset needed).

1. ResNet56, CIFAR-10 shape (50,000 training images, 10,000 test), the trainer's seconds per
   epoch (augmentation on the device, channels_last, bf16 autocast), eager and compiled.
   Target: at most 4 s on an H100 (the paper: 1.5 h for 160 epochs on a GTX 1080 Ti, about
   34 s per epoch).
2. The trainer's images/s over a plain torchvision DataLoader loop with per-sample transforms
   (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize) and 4 workers.
   Target: at least 1.5.
The resmooth loss's overhead there is printed by loss_overhead.py (gpu_check.sh runs both).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader, Dataset

from resmooth.lab.data import DeviceData
from resmooth.loss import SquaredErrorLoss
from resmooth.lab.models import build_model
from resmooth.lab.config import Config
from resmooth.lab.objectives import make_optimizer
from resmooth.lab.train import train

N_TRAIN, N_TEST = 50_000, 10_000


def cifar_shaped(device: str) -> tuple[DeviceData, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N_TRAIN + N_TEST, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, N_TRAIN + N_TEST)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.25).to(device)
    y = torch.from_numpy(labels).to(device)
    data = DeviceData("cifar10", x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:], None, None, 10, 3, True,
                      (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return data, images[:N_TRAIN], labels[:N_TRAIN]


def seconds_per_epoch(config: Config, data: DeviceData) -> float:
    with tempfile.TemporaryDirectory() as out:
        train(config, out, quiet=True, data=data)
        records = [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()]
    times = [b["seconds"] - a["seconds"] for a, b in zip(records, records[1:])]
    return sum(times) / len(times)


class Images(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        from PIL import Image

        self.images, self.labels, self.to_pil = images, labels, Image.fromarray
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.to_pil(self.images[i])), int(self.labels[i])


def dataloader_images_per_second(images: np.ndarray, labels: np.ndarray, model_name: str) -> float:
    """The usual loop: a DataLoader with per-sample transforms and 4 workers, same model and step."""
    model = build_model(model_name, 10, 3).cuda().to(memory_format=torch.channels_last)
    optimizer = make_optimizer(Config(method="sgd"), model)
    criterion = SquaredErrorLoss()
    loader = DataLoader(Images(images, labels), batch_size=128, shuffle=True, num_workers=4, pin_memory=True,
                        drop_last=True, persistent_workers=True)
    for epoch in range(2):  # the first epoch starts the workers and warms up
        seen, start = 0, time.perf_counter()
        for x, y in loader:
            x = x.cuda(non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = y.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(x)
            loss = criterion(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(x)
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main() -> None:
    assert torch.cuda.is_available(), "gpu_check needs a CUDA device"
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    data, images, labels = cifar_shaped("cuda")
    for compile_ in (False, True):
        config = Config(dataset="cifar10", model="resnet56", method="resmooth", epochs=3, weight_decay=1e-4,
                        device="cuda", compile=compile_)
        seconds = seconds_per_epoch(config, data)
        label = "compiled" if compile_ else "eager"
        print(f"ResNet56, CIFAR-10 shape, resmooth, {label}: {seconds:.2f} s per epoch "
              f"(target <= 4 s on an H100; the paper ~34 s on a GTX 1080 Ti); 160 epochs = {160 * seconds / 60:.1f} min")
    config = Config(dataset="cifar10", model="resnet56", method="sgd", epochs=3, weight_decay=1e-4, device="cuda")
    trainer = N_TRAIN / seconds_per_epoch(config, data)
    loader = dataloader_images_per_second(images, labels, "resnet56")
    print(f"trainer: {trainer:.0f} images/s (evaluation included); DataLoader loop, 4 workers: {loader:.0f} images/s")
    print(f"trainer / DataLoader loop: {trainer / loader:.2f}   (target >= 1.5)")


if __name__ == "__main__":
    main()
