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
    fns: dict[str, Callable[[], object]], *, device: str = "cpu", repeats: int = 30, inner: int = 10, warmup: int = 3,
    ratio: tuple[str, str] | None = None,
) -> dict[str, float]:
    """Median seconds per call of each function, measured in interleaved rounds.

    The order of the functions is reversed every other round, so that whatever the one before
    leaves behind (a warm or a spoiled cache, a clock ramping up) falls on each alike. With
    ``ratio=(a, b)``, also the median over the rounds of a's time over b's in the same round,
    under the key ``"a/b"``: paired, it sees past the drift that moves both.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats):
        for name, fn in list(fns.items())[:: -1 if round_ % 2 else 1]:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / inner)
    medians = {name: statistics.median(s) for name, s in samples.items()}
    if ratio is not None:
        a, b = ratio
        medians[f"{a}/{b}"] = statistics.median(x / y for x, y in zip(samples[a], samples[b]))
    return medians
