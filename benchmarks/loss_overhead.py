"""The cost of residual smoothing, as ratios measured side by side in one run.

1. Forward + backward of the loss over the squared-error baseline's, for (N, M) = (128, 10),
   (128, 100), (1024, 1000). Target: at most 2.0. Then the same with both losses under
   ``torch.compile(fullgraph=True)`` (the loss on its progress schedule, ``validate_args=False``).
   Target: at most 1.3.
2. How the loss's cost grows with M at fixed N, against the paper's dense O(M^2) layer: the
   exponent k of time ~ M^k from a log-log fit (1 is linear, 2 quadratic).
3. One training step of a ResNet20 with the loss over the same step with the baseline.
   Target: at most 1.02 (the paper reports 1.67 for ResNet56 on CIFAR-10: 2.5 h against 1.5 h).

Each ratio is the median, over interleaved rounds, of the two times measured in the same round
(the times printed beside it are each one's median).

Runs on the CPU, and also on CUDA where present: `python benchmarks/loss_overhead.py`.
``--quick`` times every case once, to check that the script runs (its figures mean nothing).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import compare  # noqa: E402

import resmooth  # noqa: E402
from resmooth import ResidualSmoothingLoss, SquaredErrorLoss, smoothing_matrix  # noqa: E402
from resmooth.diffusivity import diffusivity  # noqa: E402
from resmooth.lab.models import build_model  # noqa: E402


SHAPES = [(128, 10), (128, 100), (1024, 1000)]
# Overrides of every compare()'s repeats, inner and warmup (--quick).
TIMING: dict[str, int] = {}


def timed(fns, device: str, ratio: tuple[str, str] | None = None, **counts: int) -> dict[str, float]:
    return compare(fns, device=device, ratio=ratio, **{**counts, **TIMING})


def loss_step(criterion, z: torch.Tensor, y: torch.Tensor, **kw):
    def run():
        z.grad = None
        criterion(z, y, **kw).backward()

    return run


def dense_loss(z: torch.Tensor, y: torch.Tensor, t: float) -> torch.Tensor:
    """The paper's layer as written: a dense M x M matrix per sample (Eq. 22)."""
    d = (torch.softmax(z, 1) - torch.nn.functional.one_hot(y, z.shape[1]).to(z.dtype)).abs()
    w = smoothing_matrix(diffusivity(d, t))
    return (w @ d.unsqueeze(-1)).squeeze(-1).square().sum(1).mean()


def eager_losses(z, y, device):
    return {"baseline": loss_step(SquaredErrorLoss(), z, y),
            "resmooth": loss_step(ResidualSmoothingLoss(), z, y, progress=0.5)}


def compiled_losses(z, y, device):
    smoothing = ResidualSmoothingLoss(total_steps=2, validate_args=False).to(device)
    smoothing.step()  # progress 0.5, from the schedule: one graph for the whole run
    return {"baseline": loss_step(torch.compile(SquaredErrorLoss(validate_args=False), fullgraph=True), z, y),
            "resmooth": loss_step(torch.compile(smoothing, fullgraph=True), z, y)}


def loss_ratios(device: str, title: str, target: float, losses) -> None:
    """The loss over the squared error at each of SHAPES; ``losses(z, y, device)`` makes the pair."""
    print(f"\n## {title} ({device})")
    print(f"{'N':>6} {'M':>6} {'baseline ms':>12} {'resmooth ms':>12} {'ratio':>6}  target <= {target}")
    gen = torch.Generator().manual_seed(0)
    for n, m in SHAPES:
        z = torch.randn(n, m, generator=gen).to(device).requires_grad_()
        y = torch.randint(0, m, (n,), generator=gen).to(device)
        times = timed(losses(z, y, device), device=device, ratio=("resmooth", "baseline"))
        ratio = times["resmooth/baseline"]
        print(f"{n:>6} {m:>6} {1e3 * times['baseline']:>12.3f} {1e3 * times['resmooth']:>12.3f} {ratio:>6.2f}")


def growth(device: str) -> None:
    print(f"\n## Growth in M at N = 64 ({device}): exponent k of time ~ M^k")
    ms = [256, 512, 1024, 2048]
    gen = torch.Generator().manual_seed(0)
    rows = {"resmooth (O(M))": [], "dense W (Eq. 22 as written)": []}
    for m in ms:
        z = torch.randn(64, m, generator=gen).to(device).requires_grad_()
        y = torch.randint(0, m, (64,), generator=gen).to(device)
        dense = lambda z=z, y=y: dense_loss(z, y, 0.5).backward()  # noqa: E731
        times = timed(
            {"resmooth (O(M))": loss_step(ResidualSmoothingLoss(), z, y, progress=0.5), "dense W (Eq. 22 as written)": dense},
            device=device,
            repeats=7,
            inner=3,
            warmup=1,
        )
        for name in rows:
            rows[name].append(times[name])
    print(f"{'':30}" + "".join(f"{'M=' + str(m):>10}" for m in ms) + f"{'k':>7}")
    for name, ts in rows.items():
        xs, ys = [math.log(m) for m in ms], [math.log(t) for t in ts]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        k = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        print(f"{name:30}" + "".join(f"{1e3 * t:>8.2f}ms" for t in ts) + f"{k:>7.2f}")


def training_step_ratio(device: str, channels_last: bool) -> None:
    print(f"\n## One ResNet20 training step, batch 128, 10 classes ({device})")
    torch.manual_seed(0)
    shape = (128, 3, 32, 32) if device == "cuda" else (128, 1, 28, 28)
    model = build_model("resnet20", num_classes=10, in_channels=shape[1]).to(device)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(shape, device=device).to(memory_format=memory)
    y = torch.randint(0, 10, (shape[0],), device=device)
    baseline, smoothing = SquaredErrorLoss(), ResidualSmoothingLoss()

    def step(criterion, **kw):
        def run():
            opt.zero_grad(set_to_none=True)
            criterion(model(x), y, **kw).backward()
            opt.step()

        return run

    # The loss is a thousandth of a CPU step: enough rounds for the median to see past the convolutions' noise.
    repeats, inner = (20, 5) if device == "cuda" else (30, 1)
    times = timed(
        {"baseline": step(baseline), "resmooth": step(smoothing, progress=0.5)},
        device=device,
        repeats=repeats,
        inner=inner,
        ratio=("resmooth", "baseline"),
    )
    ratio = times["resmooth/baseline"]
    print(f"input {tuple(shape)}: baseline {1e3 * times['baseline']:.1f} ms, resmooth {1e3 * times['resmooth']:.1f} ms")
    print(f"step ratio resmooth / baseline: {ratio:.3f}  (target <= 1.02; the paper: 2.5 h / 1.5 h = {2.5 / 1.5:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, and cuda if present)")
    parser.add_argument("--quick", action="store_true", help="time every case once: checks that the script runs")
    args = parser.parse_args()
    if args.quick:
        TIMING.update(repeats=1, inner=1, warmup=1)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"resmooth {resmooth.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads")
    for device in devices:
        if device == "cuda":
            print(f"GPU: {torch.cuda.get_device_name()}")
        loss_ratios(device, "Loss forward+backward over the squared-error baseline", 2.0, eager_losses)
        loss_ratios(device, "Loss forward+backward under torch.compile over the compiled squared error", 1.3,
                    compiled_losses)
        growth(device)
        training_step_ratio(device, channels_last=device == "cuda")


if __name__ == "__main__":
    main()
