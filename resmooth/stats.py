"""Summaries over trials: mean, standard deviation and a Student-t 95% interval."""

from __future__ import annotations

import math
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
