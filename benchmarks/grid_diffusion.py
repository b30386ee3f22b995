"""The grid operator at scale, measured side by side in one run.

1. Time: ``resmooth.heat_diffuse`` against the same explicit Euler steps written with
   ``scipy.ndimage.laplace(mode="nearest")`` (the same stencil and boundary), on the same array,
   kappa map and number of steps, for a batch of 2-D images and of 3-D volumes, float32 and
   float64. Prints seconds per call and the ratio library / SciPy (below 1: the library is
   faster), after checking both give the same array.
2. Memory: the peak for a batch of 64 images of 256 x 256 (float32), for the diffusion alone and
   for the loss's forward + backward on the grid, each measured in a fresh process (CPU: the
   rise of the peak resident set, VmHWM; CUDA: ``torch.cuda.max_memory_allocated``), also as a
   multiple of the batch's own size.

`python benchmarks/grid_diffusion.py` (add `--device cuda` on a GPU machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import compare  # noqa: E402

import resmooth  # noqa: E402
from resmooth import ResidualSmoothingLoss, heat_diffuse  # noqa: E402

TAU, STEPS = 1.0, 8  # dt * max(kappa) = 1/8 <= 1/(2 ndim) in 2-D and 3-D for kappa < 1


def scipy_diffuse(u: np.ndarray, kappa: np.ndarray, tau: float, steps: int, axes: tuple[int, ...]) -> np.ndarray:
    dt = tau / steps
    for _ in range(steps):
        u = u + dt * kappa * ndimage.laplace(u, mode="nearest", axes=axes)
    return u


def time_case(shape: tuple[int, ...], ndim: int, dtype: torch.dtype, repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.rand(shape, generator=g, dtype=dtype)
    kappa = 0.9 * torch.rand(shape, generator=g, dtype=dtype)  # a kappa per element, as the full scheme's
    u_np, kappa_np = u.numpy(), kappa.numpy()
    axes = tuple(range(len(shape) - ndim, len(shape)))
    ours = heat_diffuse(u, kappa, TAU, ndim, steps=STEPS)
    ref = scipy_diffuse(u_np, kappa_np, TAU, STEPS, axes)
    error = float(np.abs(ours.numpy() - ref).max())
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    if error > tol:
        raise AssertionError(f"library and SciPy differ by {error:g} on {shape} {dtype}")
    times = compare({"resmooth": lambda: heat_diffuse(u, kappa, TAU, ndim, steps=STEPS),
                     "scipy": lambda: scipy_diffuse(u_np, kappa_np, TAU, STEPS, axes)}, repeats=repeats, inner=1, warmup=1)
    name = str(dtype).removeprefix("torch.")
    print(f"  {str(shape):<22} {name:<8} resmooth {times['resmooth'] * 1e3:8.1f} ms   scipy {times['scipy'] * 1e3:8.1f} ms"
          f"   ratio {times['resmooth'] / times['scipy']:.2f}   (max |diff| {error:.1e})")


def memory_case(case: str, device: str) -> dict[str, float]:
    """Run one case in this process; return its peak memory rise in bytes."""
    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(0)
    shape = (64, 1, 256, 256)
    z = torch.randn(shape, generator=g, device=dev, requires_grad=case == "loss")
    y = torch.rand(shape, generator=g, device=dev)
    kappa = 0.9 * torch.rand(shape, generator=g, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
        before = _status_bytes("VmRSS")
    if case == "diffusion":
        heat_diffuse(y, kappa, TAU, 2, steps=STEPS)
    else:
        loss = ResidualSmoothingLoss(scheme="full", activation="sigmoid", operator="grid", tau=TAU)
        loss(z, y, progress=0.75).backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status_bytes("VmHWM")
    return {"peak_rise": peak - before, "batch_bytes": y.numel() * y.element_size()}


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--memory-case", choices=("diffusion", "loss"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_case:
        print(json.dumps(memory_case(args.memory_case, args.device)))
        return

    print(f"resmooth {resmooth.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads; tau = {TAU}, {STEPS} steps, kappa per element in [0, 0.9)")
    print("1. Explicit Euler diffusion, library vs scipy.ndimage.laplace (same array, kappa, steps):")
    for shape, ndim in (((64, 1, 256, 256), 2), ((8, 1, 32, 64, 64), 3)):
        for dtype in (torch.float32, torch.float64):
            time_case(shape, ndim, dtype, args.repeats)

    print(f"2. Peak memory, batch of 64 images of 256 x 256, float32, on {args.device} (fresh process each):")
    for case in ("diffusion", "loss"):
        done = subprocess.run([sys.executable, __file__, "--memory-case", case, "--device", args.device],
                              capture_output=True, text=True, check=True)
        m = json.loads(done.stdout)
        what = "heat_diffuse (8 steps)" if case == "diffusion" else "loss forward + backward (full scheme, grid)"
        print(f"  {what:<46} {m['peak_rise'] / 2**20:7.1f} MiB = {m['peak_rise'] / m['batch_bytes']:.1f} x the batch "
              f"({m['batch_bytes'] / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
