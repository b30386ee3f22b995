"""Side-by-side timing: candidates run interleaved, so that the machine's drift hits all alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def compare(
    fns: dict[str, Callable[[], object]], *, device: str = "cpu", repeats: int = 30, inner: int = 10, warmup: int = 3
) -> dict[str, float]:
    """Median seconds per call of each function, measured in interleaved rounds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(s) for name, s in samples.items()}
