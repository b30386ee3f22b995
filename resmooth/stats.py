"""Summaries over trials (mean, standard deviation, a Student-t 95% interval) and paired comparisons."""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (p in (0.5, 1)).

    Bisection on the CDF, whose density is integrated by Simpson's rule: no SciPy needed.
    """
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"p must lie in (0.5, 1) and df be >= 1; got p={p}, df={df}")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float, n: int = 2000) -> float:
        f = lambda u: math.exp(log_c - (df + 1) / 2 * math.log1p(u * u / df))  # noqa: E731
        h = x / n
        s = f(0) + f(x) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, n))
        return 0.5 + s * h / 3

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and the half-width of the 95% t-interval of n values."""

    n: int
    mean: float
    std: float
    ci95: float

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.ci95:.2f}" if self.n > 1 else f"{self.mean:.2f}"


def summarize_values(values: list[float]) -> Summary:
    n = len(values)
    if n == 0:
        raise ValueError("values must not be empty")
    mean = statistics.fmean(values)
    if n == 1:
        return Summary(1, mean, 0.0, math.nan)
    std = statistics.stdev(values)
    return Summary(n, mean, std, t_quantile(0.975, n - 1) * std / math.sqrt(n))


def bootstrap_interval(values: list[float], *, level: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement).

    With few values the bootstrap distribution is coarse (5 values have 126 distinct
    resamples) and the interval is narrower than a t-interval: read it with the sign test.
    """
    if not values:
        raise ValueError("values must not be empty")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level}")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(statistics.fmean(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1 - level) / 2
    return means[math.floor(tail * (resamples - 1))], means[math.ceil((1 - tail) * (resamples - 1))]


def sign_test(differences: list[float]) -> tuple[int, int, float]:
    """(wins, losses, p): the exact two-sided sign test of median 0; ties are dropped.

    With 5 pairs the smallest p it can give is 2/32 = 0.0625: five seeds can never reach 0.05.
    """
    wins = sum(d > 0 for d in differences)
    losses = sum(d < 0 for d in differences)
    n = wins + losses
    if n == 0:
        return 0, 0, 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return wins, losses, min(1.0, 2 * tail)


@dataclass(frozen=True)
class Paired:
    """A paired difference (method minus baseline, one pair per seed): mean, bootstrap interval, sign test."""

    n: int
    mean: float
    low: float
    high: float
    wins: int
    losses: int
    p: float

    def __str__(self) -> str:
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired_difference(method: list[float], baseline: list[float], *, seed: int = 0) -> Paired:
    """Compare ``method`` and ``baseline`` measured on the same seeds, in the same order."""
    if len(method) != len(baseline) or not method:
        raise ValueError(f"method and baseline need the same, non-zero number of values; got {len(method)} and {len(baseline)}")
    differences = [m - b for m, b in zip(method, baseline)]
    low, high = bootstrap_interval(differences, seed=seed)
    return Paired(len(differences), statistics.fmean(differences), low, high, *sign_test(differences))
