"""Summaries over trials and paired comparisons, with what five or ten seeds can say.

A mean over trials gets its 95% Student-t interval (:func:`summarize_values`); a paired
difference its 95% paired t interval, the one-sided test against a claimed gain, the equivalence
test at a margin and the smallest gain it can detect (:class:`Paired`); :func:`selection_gain`
sizes what choosing the best of a grid on the test set manufactures when nothing works, and
:func:`against_observed` tests a paired difference against another study's observed difference,
each with its own error. SciPy is not needed: the t and noncentral t distributions are integrated
here.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass


def _simpson(f, a: float, b: float, n: int = 2000) -> float:
    """Simpson's rule for the integral of ``f`` over [a, b] with ``n`` (even) intervals."""
    h = (b - a) / n
    return (f(a) + f(b) + sum((4 if i % 2 else 2) * f(a + i * h) for i in range(1, n))) * h / 3


def t_cdf(x: float, df: float) -> float:
    """The CDF of Student's t with ``df`` degrees of freedom (any real df >= 1, as Welch-Satterthwaite's),
    its density integrated by Simpson's rule."""
    if df < 1:
        raise ValueError(f"df must be >= 1; got {df}")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = lambda u: math.exp(log_c - (df + 1) / 2 * math.log1p(u * u / df))  # noqa: E731
    # The density peaks at 0: integrate from there, on an interval scaled to |x| but never
    # coarser than 0.01 per step in the heavy tails.
    half = _simpson(density, 0.0, abs(x), max(2000, 2 * math.ceil(50 * abs(x))))
    return 0.5 + half if x >= 0 else 0.5 - half


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (p in (0.5, 1)), by bisection on :func:`t_cdf`."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"p must lie in (0.5, 1) and df be >= 1; got p={p}, df={df}")
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def t_power(effect: float, se: float, df: int, *, alpha: float = 0.05) -> float:
    """The power of the one-sided level-``alpha`` t test of "no gain" when the true gain is ``effect``.

    The test rejects when ``mean / se > t_{1-alpha, df}``; under the gain, ``mean / se`` follows
    the noncentral t with noncentrality ``effect / se``. Its tail is an integral over the
    chi-square of the variance estimate, ``E_V[Phi(effect / se - c sqrt(V / df))]``, computed
    with ``V = u^2`` (which removes the density's pole at 0 for df = 1).
    """
    if se <= 0:
        raise ValueError(f"se must be > 0; got {se}")
    c = t_quantile(1 - alpha, df)
    shift = effect / se
    log_norm = math.log(2.0) - (df / 2) * math.log(2.0) - math.lgamma(df / 2)
    phi = lambda z: 0.5 * math.erfc(-z / math.sqrt(2.0))  # noqa: E731
    # The density of u = sqrt(V), V ~ chi-square(df): 2 u^(df-1) exp(-u^2/2) / (2^(df/2) Gamma(df/2)).
    def integrand(u: float) -> float:
        if u == 0.0:
            return 0.0 if df > 1 else math.exp(log_norm) * phi(shift)
        return math.exp(log_norm + (df - 1) * math.log(u) - u * u / 2) * phi(shift - c * u / math.sqrt(df))
    return _simpson(integrand, 0.0, math.sqrt(df) + 12.0, 4000)


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
    """A paired difference (method minus baseline, one pair per seed).

    ``low`` and ``high`` bound the 95% paired t interval of the mean difference (the book's
    primary interval): with n seeds it is ``mean ± t_{0.975, n-1} sd / sqrt(n)``. The tests read
    the same t statistic: :meth:`p_below` (the one-sided test of "the gain is at least the one
    claimed"), :meth:`p_above` (of "there is no gain"), :meth:`p_equivalent` (two one-sided tests of a tie within a margin),
    :meth:`detectable` (the smallest gain the comparison detects with a given power). ``wins``
    and ``losses`` count the seeds on either side of zero (:func:`sign_test`).
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float
    wins: int
    losses: int

    @property
    def se(self) -> float:
        """The standard error of the mean difference, ``sd / sqrt(n)``."""
        return self.sd / math.sqrt(self.n)

    def _t_cdf(self, value: float) -> float:
        """P(T <= (mean - value) / se) for T ~ t(n - 1): how probable a mean this low is if the truth were ``value``."""
        if self.n < 2:
            return math.nan
        if self.se == 0:
            return 1.0 if self.mean >= value else 0.0
        return t_cdf((self.mean - value) / self.se, self.n - 1)

    @property
    def p(self) -> float:
        """The two-sided paired t test's p of "no difference"."""
        tail = self._t_cdf(0.0)
        return min(1.0, 2 * min(tail, 1 - tail))

    def p_below(self, claimed: float) -> float:
        """One-sided p of H0 "the true difference is at least ``claimed``" against "it is smaller".

        A small p says the data reject the claimed gain: the paired t test of "no gain of that size".
        """
        return self._t_cdf(claimed)

    def p_above(self, value: float = 0.0) -> float:
        """One-sided p of H0 "the true difference is at most ``value``" against "it is larger":
        with ``value = 0``, the paired t test of "no gain" that :meth:`detectable` sizes."""
        return 1.0 - self._t_cdf(value) if self.n >= 2 else math.nan

    def p_equivalent(self, margin: float) -> float:
        """The TOST p of "a tie within ``margin``": the larger of the one-sided p's of H0
        "difference <= -margin" and H0 "difference >= +margin". Below 0.05, the 90% t interval
        lies inside (-margin, +margin) and a tie at that margin is supported."""
        if margin <= 0:
            raise ValueError(f"margin must be > 0; got {margin}")
        return max(1 - self._t_cdf(-margin), self._t_cdf(margin))

    def detectable(self, power: float = 0.8, alpha: float = 0.05) -> float:
        """The smallest true gain that the one-sided level-``alpha`` paired t test of "no gain"
        detects with probability ``power``, at this comparison's n and standard deviation."""
        if not 0 < power < 1:
            raise ValueError(f"power must lie in (0, 1); got {power}")
        if self.n < 2:
            return math.nan
        if self.se == 0:
            return 0.0
        lo, hi = 0.0, self.se
        while t_power(hi, self.se, self.n - 1, alpha=alpha) < power:
            lo, hi = hi, 2 * hi
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if t_power(mid, self.se, self.n - 1, alpha=alpha) < power else (lo, mid)
        return (lo + hi) / 2

    def __str__(self) -> str:
        # One pair has no spread, so no interval (as Summary prints one value).
        if self.n < 2:
            return f"{self.mean:+.2f} (one pair)"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired_difference(method: list[float], baseline: list[float]) -> Paired:
    """Compare ``method`` and ``baseline`` measured on the same seeds, in the same order."""
    if len(method) != len(baseline) or not method:
        raise ValueError(f"method and baseline need the same, non-zero number of values; got {len(method)} and {len(baseline)}")
    differences = [m - b for m, b in zip(method, baseline)]
    summary = summarize_values(differences)
    wins, losses, _ = sign_test(differences)
    return Paired(summary.n, summary.mean, summary.std, summary.mean - summary.ci95, summary.mean + summary.ci95,
                  wins, losses)


def selection_gain(sd: float, *, trials: int = 5, grid: int = 5, draws: int = 100_000,
                   seed: int = 0) -> tuple[float, float]:
    """The "gain" that choosing the best of ``grid`` settings on the test set makes when none has any.

    Each setting's figure is the mean of ``trials`` runs whose seed-to-seed standard deviation is
    ``sd``; every setting, and the baseline, has the same true mean. Returns the mean and the 95th
    percentile, over ``draws`` simulated studies, of (the best setting's figure) - (the baseline's).
    """
    if sd < 0:
        raise ValueError(f"sd must be >= 0; got {sd}")
    check = {"trials": trials, "grid": grid, "draws": draws}
    for name, value in check.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    rng = random.Random(seed)
    sd_mean = sd / math.sqrt(trials)
    gains = sorted(max(rng.gauss(0.0, sd_mean) for _ in range(grid)) - rng.gauss(0.0, sd_mean) for _ in range(draws))
    return statistics.fmean(gains), gains[math.ceil(0.95 * (draws - 1))]


@dataclass(frozen=True)
class Observed:
    """A paired difference against another study's observed difference (:func:`against_observed`).

    ``z`` is the standardized gap, ``se`` its standard error (ours and theirs in quadrature), ``df``
    the Welch-Satterthwaite degrees of freedom and ``p`` the two-sided p of "the two are equal".
    """

    z: float
    se: float
    df: float
    p: float


def against_observed(ours: Paired, observed: float, sds: list[float], trials: int) -> Observed:
    """Test "our true difference equals the one another study observed", carrying both errors.

    The other study reports a difference of independent means of ``trials`` runs each and no spread
    (the paper: two five-trial means). Each of its means gets the standard error ``sd / sqrt(trials)``
    from ``sds``, one standard deviation per mean (ours, of the same setting), with ``trials - 1``
    degrees of freedom; ours is the paired standard error with ``n - 1``. Then
    ``z = (mean - observed) / sqrt(se_ours^2 + sum_j sd_j^2 / trials)`` and the two-sided p is read
    from Student's t with the Welch-Satterthwaite degrees of freedom
    ``(sum_i v_i)^2 / sum_i (v_i^2 / df_i)`` over the variances ``v_i``, ours and each of theirs.
    """
    if trials < 2:
        raise ValueError(f"trials must be >= 2; got {trials}")
    if ours.n < 2:
        raise ValueError(f"ours must hold at least two pairs; got n={ours.n}")
    if not sds or any(not sd >= 0 for sd in sds):
        raise ValueError(f"sds must be one or more standard deviations >= 0; got {sds!r}")
    parts = [(ours.se**2, ours.n - 1)] + [(sd**2 / trials, trials - 1) for sd in sds]
    variance = sum(v for v, _ in parts)
    if variance == 0:
        raise ValueError("ours and sds have no spread at all: the test is undefined")
    se = math.sqrt(variance)
    z = (ours.mean - observed) / se
    df = variance**2 / sum(v**2 / dof for v, dof in parts if v > 0)
    tail = t_cdf(-abs(z), df)
    return Observed(z, se, df, min(1.0, 2 * tail))
