"""Estimates with intervals over seeds, one-sided tests, family-wise control and power: what every
verdict follows from.

Every method of an experiment runs on the same random instances per seed (common random numbers),
so a comparison is paired: the per-seed difference, its mean and a 95% t-interval with n - 1
degrees of freedom. A verdict reads one-sided tests at ALPHA = 2.5% each way (the two edges of that
95% interval) against a boundary (0, a margin, a paper's figure), so too few seeds give
`inconclusive`, not a verdict in either direction. Over many cells the "bad" side is one family under
Holm's step-down procedure (`holm`), so a claim with no true violation anywhere is `not_held` at most
2.5% of the time however many cells it spans; the "good" side needs every cell good (an
intersection-union test, valid at 2.5% with no correction). Rates use Clopper-Pearson intervals; a
property with no counterexample in N trials reports the one-sided 95% upper bound on its violation
rate.

Sampled is not exact: zero observed spread over sampled seeds (a saturated or discrete quantity)
gives no t-interval; the distribution-free interval of the median (order statistics, a sign test)
is then the point itself from SIGN_TEST_SEEDS seeds on, and there is no interval below. Only a value
declared deterministic (`exact`) is judged from one run or with zero width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

LEVEL = 0.95
ALPHA = (1 - LEVEL) / 2  # one-sided error of each decision: the edge of the two-sided 95% interval
POWER = 0.8  # "seeds to decide": the seeds at which the decision is reached 80% of the time
MIN_PLANNING_SEEDS = 3  # a spread estimated from fewer seeds is too noisy to plan a sample size
MAX_SEEDS = 10_000  # seeds needed beyond this is reported as "more than"
# all n sampled values on one side: sign-test p = 0.5^n <= ALPHA from n = 6
SIGN_TEST_SEEDS = math.ceil(math.log(ALPHA) / math.log(0.5))


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided `level` quantile of Student's t with `df` degrees of freedom."""
    from scipy.special import stdtrit  # scipy.special, not scipy.stats: a tenth of the import time

    return float(stdtrit(df, 0.5 + level / 2))


@dataclass(frozen=True)
class Estimate:
    """A mean over n seeds (of per-seed values or of paired differences) with its 95% interval.
    `exact`: a computed value (declared deterministic, or one value with no seed in it): the
    interval is the point. A sampled estimate with zero spread has an interval (the point) only from
    SIGN_TEST_SEEDS seeds on; one sampled seed never has one (low = high = nan)."""

    n: int
    mean: float
    sd: float
    low: float
    high: float
    exact: bool = False

    @property
    def testable(self) -> bool:
        return self.n >= 1 and not math.isnan(self.low)

    def ci(self) -> list[float]:
        return [self.low, self.high]

    def describe(self, digits: int = 3) -> str:
        if not self.testable:
            why = (
                f"zero spread over {self.n} sampled seeds: no interval below {SIGN_TEST_SEEDS}"
                if self.n >= 2 and self.sd == 0.0
                else "no interval"
            )
            return f"{self.mean:.{digits}g} (n = {self.n}, {why})"
        return f"{self.mean:+.{digits}g} [{self.low:+.{digits}g}, {self.high:+.{digits}g}]"


def from_moments(n: int, mean: float, sd: float, scale: float = 1.0, exact: bool = False) -> Estimate:
    """The estimate of n values with this mean and sample sd (`scale`: the values' magnitude, below
    which a spread counts as none). `exact` holds only for values without spread: a declared
    deterministic quantity that varies over seeds is judged as sampled."""
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan)
    if n == 1:
        return (
            Estimate(1, mean, 0.0, mean, mean, True)
            if exact
            else Estimate(1, mean, math.nan, math.nan, math.nan)
        )
    if math.isnan(sd) or sd <= 1e-12 * max(scale, 1.0):
        if exact or n >= SIGN_TEST_SEEDS:
            return Estimate(n, mean, 0.0, mean, mean, exact)
        return Estimate(n, mean, 0.0, math.nan, math.nan)
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return Estimate(n, mean, sd, mean - half, mean + half)


def estimate(values: Sequence[float], exact: bool = False) -> Estimate:
    """Mean and 95% t-interval of `values` (NaNs dropped). `exact`: the values are computed, not
    sampled (one value is then already the quantity, with an interval of zero width)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return from_moments(0, math.nan, math.nan)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return from_moments(n, mean, sd, max(abs(x) for x in xs), exact)


def paired(ours: pd.Series, base: pd.Series, lower_is_better: bool = False) -> Estimate:
    """The per-seed difference ours - base (base - ours when lower is better, so positive always
    means "ours is better"), on the seeds both have."""
    common = ours.index.intersection(base.index)
    a = pd.to_numeric(ours[common], errors="coerce").astype(float)
    b = pd.to_numeric(base[common], errors="coerce").astype(float)
    d = (b - a) if lower_is_better else (a - b)
    return estimate(d.tolist())


# ---------------------------------------------------------------- one-sided tests


def p_below(est: Estimate, bound: float) -> float:
    """One-sided p-value of "the mean lies below `bound`" (small: the data say it does). 1 when the
    estimate has no interval."""
    if not est.testable:
        return 1.0
    if est.sd == 0.0:  # exact, or sampled with zero spread over >= SIGN_TEST_SEEDS seeds (a sign test)
        if est.mean >= bound:
            return 1.0
        return 0.0 if est.exact else 0.5**est.n
    from scipy.special import stdtr

    return float(stdtr(est.n - 1, (est.mean - bound) / (est.sd / math.sqrt(est.n))))


def p_above(est: Estimate, bound: float) -> float:
    """One-sided p-value of "the mean lies above `bound`"."""
    mirrored = Estimate(est.n, -est.mean, est.sd, -est.high, -est.low, est.exact)
    return p_below(mirrored, -bound)


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected with the family-wise error rate
    at most `alpha` (the smallest p against alpha/m, the next against alpha/(m-1), ...; stop at the
    first that fails)."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected = [False] * len(pvalues)
    m = len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


# ---------------------------------------------------------------- power: seeds to decide


def power_one_sided(distance: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """The chance that a one-sided t-test at `alpha` with n seeds finds the mean beyond a bound when
    it truly lies `distance` beyond it (negative: on the other side) with spread sd (noncentral t)."""
    if n < 2:
        return 0.0
    if sd == 0.0 or math.isnan(sd):
        return 1.0 if distance > 0 else 0.0
    from scipy.special import nctdtr

    crit = t_quantile(n - 1, 1 - 2 * alpha)
    return float(1.0 - nctdtr(n - 1, distance * math.sqrt(n) / sd, crit))


def seeds_for(power_at: Callable[[int], float], have: int, target: float = POWER) -> int:
    """The fewest seeds (at least `have`) at which `power_at(n)` reaches `target`, MAX_SEEDS + 1
    beyond MAX_SEEDS. Callers ask only where the effect lies on the side the test looks for, so the
    power grows to 1 with n: a doubling search and a bisection find it in a few dozen evaluations."""
    lo = max(2, have)
    if power_at(lo) >= target:
        return lo
    hi = lo
    while power_at(hi) < target:
        if hi > MAX_SEEDS:
            return MAX_SEEDS + 1
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if power_at(mid) < target else (lo, mid)
    return hi


def clopper_pearson(successes: int, n: int) -> tuple[float, float]:
    """The exact two-sided 95% interval of a proportion."""
    from scipy.special import betaincinv

    low = 0.0 if successes == 0 else float(betaincinv(successes, n - successes + 1, ALPHA))
    high = 1.0 if successes == n else float(betaincinv(successes + 1, n - successes, 1 - ALPHA))
    return low, high


def rate_power(rate: float, n: int, level: float, side: str) -> float:
    """The chance that n runs at success rate `rate` give a Clopper-Pearson interval wholly above
    `level` (side "held") or wholly below it (side "not_held")."""
    import numpy as np
    from scipy.special import betaincinv
    from scipy.stats import binom

    k = np.arange(n + 1)
    if side == "held":
        low = np.where(k == 0, 0.0, betaincinv(np.maximum(k, 1), n - k + 1, ALPHA))
        reached = low >= level
    else:
        high = np.where(k == n, 1.0, betaincinv(k + 1, np.maximum(n - k, 1), 1 - ALPHA))
        reached = high < level
    return float(binom.pmf(k[reached], n, rate).sum())


def runs_to_reach(level: float, side: str) -> int:
    """The fewest runs at which a rate claim at `level` can reach `side` at all (every run a success
    for held, none for not_held)."""
    n = 1
    while n <= MAX_SEEDS:
        low, high = clopper_pearson(n if side == "held" else 0, n)
        if (low >= level) if side == "held" else (high < level):
            return n
        n += 1
    return MAX_SEEDS + 1


def violation_bound(trials: int) -> float:
    """One-sided 95% upper bound on a violation rate after `trials` trials without one
    (1 - 0.05^(1/N), about 3/N: the rule of three)."""
    return 1.0 - (1.0 - LEVEL) ** (1.0 / trials) if trials > 0 else 1.0


def trials_for(tolerance: float) -> int:
    """The fewest trials with no violation that bound the violation rate below `tolerance`."""
    return math.ceil(math.log(1.0 - LEVEL) / math.log(1.0 - tolerance))
