"""Estimates with intervals over seeds: what every verdict follows from.

Every method of an experiment runs on the same random instances per seed (common random numbers),
so a comparison is paired: the per-seed difference, its mean and a 95% t-interval with n - 1
degrees of freedom. A verdict reads the interval against a boundary (0, a margin, a paper's figure),
never a p-value, so too few seeds give `inconclusive`, not a verdict in either direction. Rates use
Clopper-Pearson intervals; a property with no counterexample in N trials reports the one-sided 95%
upper bound on its violation rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

LEVEL = 0.95
MAX_SEEDS = 10_000  # seeds_needed beyond this is reported as "more than"


def t_quantile(df: int) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom."""
    from scipy.special import stdtrit  # scipy.special, not scipy.stats: a tenth of the import time

    return float(stdtrit(df, 0.5 + LEVEL / 2))


@dataclass(frozen=True)
class Estimate:
    """A mean over n seeds (of per-seed values or of paired differences) with its 95% interval.
    One sampled seed: no interval (low = high = nan). Zero spread over several seeds, or one computed
    value: the interval is the point (an exact quantity, such as a byte count, does not vary)."""

    n: int
    mean: float
    sd: float
    low: float
    high: float

    @property
    def testable(self) -> bool:
        # one computed value (estimate(..., exact=True): sd 0) is the quantity itself; one sampled
        # value has no interval
        return (self.n >= 2 or (self.n == 1 and self.sd == 0.0)) and not math.isnan(self.low)

    def ci(self) -> list[float]:
        return [self.low, self.high]

    def describe(self, digits: int = 3) -> str:
        if not self.testable:
            return f"{self.mean:.{digits}g} (n = {self.n}, no interval)"
        return f"{self.mean:+.{digits}g} [{self.low:+.{digits}g}, {self.high:+.{digits}g}]"


def estimate(values: Sequence[float], exact: bool = False) -> Estimate:
    """Mean and 95% t-interval of `values` (NaNs dropped). `exact`: the values are computed, not
    sampled (one value is then already the quantity, with an interval of zero width)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan)
    mean = sum(xs) / n
    if n == 1:
        return (
            Estimate(1, mean, 0.0, mean, mean) if exact else Estimate(1, mean, math.nan, math.nan, math.nan)
        )
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    scale = max(max(abs(x) for x in xs), 1.0)
    if sd <= 1e-12 * scale:
        return Estimate(n, mean, 0.0, mean, mean)
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return Estimate(n, mean, sd, mean - half, mean + half)


def paired(ours: pd.Series, base: pd.Series, lower_is_better: bool = False) -> Estimate:
    """The per-seed difference ours - base (base - ours when lower is better, so positive always
    means "ours is better"), on the seeds both have."""
    common = ours.index.intersection(base.index)
    a = pd.to_numeric(ours[common], errors="coerce").astype(float)
    b = pd.to_numeric(base[common], errors="coerce").astype(float)
    d = (b - a) if lower_is_better else (a - b)
    return estimate(d.tolist())


def seeds_needed(sd: float, distance: float, have: int) -> int | None:
    """The seeds a 95% t-interval of half-width t(n-1) sd / sqrt(n) needs to lie wholly on one side
    of a boundary `distance` away from the estimate, the spread staying as observed. None when
    the estimate sits on the boundary (no number of seeds decides it); more than MAX_SEEDS is
    reported as MAX_SEEDS + 1."""
    if not distance or math.isnan(distance) or math.isnan(sd):
        return None
    if sd == 0:
        return max(2, have)
    n = max(2, have)
    while n <= MAX_SEEDS:
        if t_quantile(n - 1) * sd / math.sqrt(n) < abs(distance):
            return n
        n = n + 1 if n < 100 else int(n * 1.1)
    return MAX_SEEDS + 1


def clopper_pearson(successes: int, n: int) -> tuple[float, float]:
    """The exact two-sided 95% interval of a proportion."""
    from scipy.special import betaincinv

    alpha = 1 - LEVEL
    low = 0.0 if successes == 0 else float(betaincinv(successes, n - successes + 1, alpha / 2))
    high = 1.0 if successes == n else float(betaincinv(successes + 1, n - successes, 1 - alpha / 2))
    return low, high


def rate_seeds_needed(successes: int, n: int, level: float) -> int | None:
    """Trials at the observed success rate for the Clopper-Pearson interval to exclude `level`."""
    if n == 0:
        return None
    rate = successes / n
    if rate == level:
        return None
    m = n
    while m <= MAX_SEEDS:
        low, high = clopper_pearson(round(rate * m), m)
        if low > level or high < level:
            return m
        m = m + 1 if m < 100 else int(m * 1.1)
    return MAX_SEEDS + 1


def violation_bound(trials: int) -> float:
    """One-sided 95% upper bound on a violation rate after `trials` trials without one
    (1 - 0.05^(1/N), about 3/N: the rule of three)."""
    return 1.0 - (1.0 - LEVEL) ** (1.0 / trials) if trials > 0 else 1.0
