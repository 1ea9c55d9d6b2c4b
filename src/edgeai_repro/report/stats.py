"""Paired comparisons over seeds: the one statistical test every claim check uses.

Every method of an experiment runs on the same random instances per seed (common random numbers),
so a comparison is a paired one: a two-sided paired t-test (scipy.stats.ttest_rel) on the per-seed
values, with n - 1 degrees of freedom. Fewer than two common seeds cannot be tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

ALPHA = 0.05


@dataclass(frozen=True)
class Paired:
    """The outcome of one paired comparison of `ours` against `base` (higher is better)."""

    n: int  # common seeds
    diff: float  # mean of ours - base
    p: float  # two-sided p-value (nan when untestable)
    sign: int  # +1 significantly better, -1 significantly worse, 0 indistinguishable

    @property
    def testable(self) -> bool:
        return self.n >= 2

    def describe(self) -> str:
        if not self.testable:
            return f"n = {self.n}"
        return f"n = {self.n}, p = {self.p:.2g}"


def paired(ours: pd.Series, base: pd.Series, alpha: float = ALPHA) -> Paired:
    """Paired t-test of two per-seed series (indexed by seed), on their common seeds.

    A difference that is the same on every seed (zero spread, e.g. an exact count) is significant
    when it is not zero: the t statistic is infinite. All-zero differences are indistinguishable.
    """
    common = ours.index.intersection(base.index)
    a = pd.to_numeric(ours[common], errors="coerce").astype(float)
    b = pd.to_numeric(base[common], errors="coerce").astype(float)
    keep = a.notna() & b.notna()
    a, b = a[keep], b[keep]
    n = len(a)
    if n < 2:
        return Paired(n, float((a - b).mean()) if n else math.nan, math.nan, 0)
    d = a - b
    scale = max(float(a.abs().max()), float(b.abs().max()), 1.0)
    if float(d.abs().max()) <= 1e-12 * scale:
        return Paired(n, 0.0, 1.0, 0)
    if float(d.std(ddof=1)) <= 1e-12 * scale:
        return Paired(n, float(d.mean()), 0.0, 1 if d.mean() > 0 else -1)
    from scipy import stats  # here, not at import: scipy.stats costs every launch 0.6 s, even a cached one

    p = float(stats.ttest_rel(a.to_numpy(), b.to_numpy()).pvalue)
    sign = (1 if d.mean() > 0 else -1) if p < alpha else 0
    return Paired(n, float(d.mean()), p, sign)
