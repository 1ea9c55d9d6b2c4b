"""Verdicts on a paper's claims: each claim's evidence is an estimate and its 95% interval, read
against the boundary the claim's kind sets (report/stats.py; paper_results/<paper>/claims.yaml
declares the kind, margins, figures and levels before any run).

  superiority      per comparison better when the interval of the paired difference (positive:
                   ours better) lies above 0, worse when below, undecided otherwise; the claim is
                   held when every required comparison is better, not_held when any is worse,
                   inconclusive otherwise;
  non_inferiority  held when every interval's lower bound is above -margin, not_held when any
                   interval lies wholly below -margin, inconclusive otherwise;
  equivalence      held when every interval lies within +-margin, not_held when any lies wholly
                   outside, inconclusive otherwise;
  magnitude        the estimate and its interval beside the paper's figure (a target with a
                   tolerance, a range, a bound or a normalised level), judged only at the scale the
                   claim needs; otherwise not_testable;
  property         any counterexample: not_held, the first one printed; none in N trials: held, with
                   N and the 95% upper bound on the violation rate;
  rate             the proportion of successes with its Clopper-Pearson interval against a level.

Fewer than two seeds is not_testable for every estimated kind. An inconclusive verdict carries the
seeds that would decide it (from the observed spread and distance to the boundary) and what they
would cost in wall time at the scale run. An experiment's `report.claims` names, per claim, the
check that gathers its evidence (metric, ours, baselines, ...); the check must serve the claim's
declared kind.
"""

from __future__ import annotations

import fnmatch
import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pandas as pd

from edgeai_repro.report.paper import ClaimSpec
from edgeai_repro.report.stats import (
    MAX_SEEDS,
    Estimate,
    clopper_pearson,
    estimate,
    rate_seeds_needed,
    seeds_needed,
    t_quantile,
    violation_bound,
)

VERDICTS = ("held", "not_held", "inconclusive", "not_testable")


@functools.lru_cache(maxsize=256)
def _t(df: int) -> float:
    return t_quantile(df)


COMPARATIVE = ("superiority", "non_inferiority", "equivalence")


@dataclass
class Evidence:
    """What the checks read: the aggregated table, the per-seed rows (with `_point` labels), the
    scale and setting the cells ran at, the wall time per seed, and counterexamples found."""

    agg: pd.DataFrame
    rows: pd.DataFrame | None = None
    scale: str = "paper"
    setting: dict = field(default_factory=dict)
    seed_wall_s: float | None = None
    counterexamples: dict[str, dict[str, str]] = field(default_factory=dict)

    def series(self, metric: str, method: str, point: str) -> pd.Series:
        return self._lookup(metric).get((point, method), pd.Series(dtype=float))

    def _lookup(self, metric: str) -> dict[tuple[str, str], pd.Series]:
        cache = self.__dict__.setdefault("_lookups", {})
        if metric not in cache:
            rows = self.rows
            if rows is None or rows.empty or metric not in rows:
                cache[metric] = {}
            else:
                cache[metric] = {
                    (str(p), str(m)): g.set_index("seed")[metric]
                    for (p, m), g in rows.groupby(["_point", "method"], sort=False)
                }
        return cache[metric]

    def paired_points(
        self, metric: str, ours: str, base: str, points: list[str], lower: bool
    ) -> list[tuple[str, Estimate, float]]:
        """(point, estimate of the oriented paired difference, the baseline's mean) at every point,
        in one pass over the rows (the same numbers as `stats.paired` point by point)."""
        wide = self._wide(metric)
        if ours not in wide or base not in wide:
            return []
        a, b = wide[ours], wide[base]
        d = (b - a) if lower else (a - b)
        frame = pd.DataFrame({"d": d, "base": b, "scale": pd.concat([a.abs(), b.abs()], axis=1).max(axis=1)})
        frame = frame[d.notna()]
        grouped = frame.groupby(level=0, sort=False)
        n, mean, sd = grouped["d"].count(), grouped["d"].mean(), grouped["d"].std(ddof=1)
        scale, base_mean = grouped["scale"].max().clip(lower=1.0), grouped["base"].mean()
        out = []
        for p in points:
            if p not in n.index:
                out.append((p, estimate([]), self.mean(metric, base, p)))
                continue
            k, mu = int(n[p]), float(mean[p])
            if k < 2:
                est = Estimate(k, mu, math.nan, math.nan, math.nan)
            elif float(sd[p]) <= 1e-12 * float(scale[p]):
                est = Estimate(k, mu, 0.0, mu, mu)
            else:
                half = _t(k - 1) * float(sd[p]) / math.sqrt(k)
                est = Estimate(k, mu, float(sd[p]), mu - half, mu + half)
            out.append((p, est, float(base_mean[p])))
        return out

    def _wide(self, metric: str) -> pd.DataFrame:
        cache = self.__dict__.setdefault("_wides", {})
        if metric not in cache:
            rows = self.rows
            if rows is None or rows.empty or metric not in rows:
                cache[metric] = pd.DataFrame()
            else:
                values = rows.assign(_v=pd.to_numeric(rows[metric], errors="coerce"))
                cache[metric] = values.pivot_table(
                    index=["_point", "seed"],
                    columns="method",
                    values="_v",
                    aggfunc="first",
                    sort=False,
                    dropna=False,
                )
        return cache[metric]

    def points(self, metric: str, method: str, only: str | None = None) -> list[str]:
        sel = self.agg[(self.agg["metric"] == metric) & (self.agg["method"] == method)]
        labels = point_labels(sel)
        return [p for p in labels if only is None or only in p]

    def mean(self, metric: str, method: str, point: str) -> float:
        s = self.series(metric, method, point)
        return float(pd.to_numeric(s, errors="coerce").mean()) if len(s) else math.nan


@dataclass
class Verdict:
    """One entry of claims.json (typed: `check_entry` validates it when the report is built)."""

    claim: str
    id: str
    kind: str
    verdict: str
    evidence: str
    n: int
    setting: dict
    estimate: float | None = None
    ci: list[float] | None = None
    margin: str | None = None
    seeds_needed: int | None = None
    wall_needed_s: float | None = None

    def as_json(self) -> dict:
        out = asdict(self)
        for key in ("estimate", "wall_needed_s"):
            if out[key] is not None and math.isnan(out[key]):
                out[key] = None
        if out["ci"] is not None:
            out["ci"] = [None if math.isnan(v) else float(v) for v in out["ci"]]
        return out


@dataclass
class Outcome:
    """What a check returns; `evaluate` adds the claim's text, kind and setting."""

    verdict: str
    evidence: str
    n: int = 0
    estimate: float | None = None
    ci: list[float] | None = None
    margin: str | None = None
    seeds_needed: int | None = None


@dataclass(frozen=True)
class Check:
    fn: Callable[..., Outcome]
    kinds: tuple[str, ...]


CHECKS: dict[str, Check] = {}


def check(*kinds: str):
    """Register a check serving claims of `kinds`. Its keyword-only parameters are the schema of a
    `report.claims` entry (report/schema.py validates them)."""

    def register(f: Callable[..., Outcome]) -> Callable[..., Outcome]:
        CHECKS[f.__name__] = Check(f, kinds)
        return f

    return register


def point_labels(frame: pd.DataFrame) -> list[str]:
    return [
        ", ".join(str(v) for v in (p, x) if str(v) != "") or "all" for p, x in zip(frame["panel"], frame["x"])
    ]


def expand_methods(patterns: list[str], agg: pd.DataFrame, exclude: str = "") -> list[str]:
    """Baseline names, with shell-style patterns ("edge_only+*") expanded over the methods present
    (a pattern never matches `exclude`, the method being judged); a pattern starting with "!"
    removes what it matches ("!*+core_worstcase": another reading of ours, not a baseline)."""
    present = list(dict.fromkeys(agg["method"]))
    dropped = [p[1:] for p in patterns if p.startswith("!")]
    out: list[str] = []
    for pat in (p for p in patterns if not p.startswith("!")):
        hits = (
            [m for m in present if fnmatch.fnmatchcase(str(m), pat) and m != exclude]
            if any(ch in pat for ch in "*?[")
            else [pat]
        )
        out += [m for m in hits if m not in out]
    return [m for m in out if not any(fnmatch.fnmatchcase(str(m), d) for d in dropped)]


# ---------------------------------------------------------------- deciding from intervals


@dataclass
class Judged:
    """One comparison or one point: its estimate, which side of the boundary its interval lies on
    (ok | bad | undecided | untestable), and how far the estimate is from the deciding boundary."""

    label: str
    est: Estimate
    side: str
    distance: float = math.nan


def _side(est: Estimate, ok: bool, bad: bool) -> str:
    if not est.testable:
        return "untestable"
    return "ok" if ok else ("bad" if bad else "undecided")


def _conclude(
    judged: list[Judged], words: tuple[str, str], what: str, ev: Evidence, margin: str | None = None
) -> Outcome:
    """held when every judged item is ok, not_held when any is bad, inconclusive otherwise;
    not_testable when nothing could be judged. The evidence names the deciding item."""
    testable = [j for j in judged if j.side != "untestable"]
    seeds = sorted({j.est.n for j in testable})
    if not testable:
        if judged:
            return Outcome(
                "not_testable",
                f"{what}: fewer than 2 seeds at every point ({len(judged)} items); an "
                "interval over seeds needs at least 2 (run more seeds)",
                n=max(j.est.n for j in judged),
            )
        return Outcome("not_testable", f"{what}: no results to judge")
    ok = [j for j in judged if j.side == "ok"]
    bad = [j for j in judged if j.side == "bad"]
    open_ = [j for j in judged if j.side in ("undecided", "untestable")]
    counts = f"{len(ok)} {words[0]}, {len(bad)} {words[1]}, {len(open_)} undecided of {len(judged)} " + (
        "(one computed value per point: exact, no interval)"
        if seeds == [1]
        else f"(n = {'/'.join(map(str, seeds))} seeds; 95% intervals)"
    )
    if bad:
        deciding, verdict, needed = max(bad, key=lambda j: j.distance), "not_held", None
    elif not open_:
        deciding, verdict, needed = min(ok, key=lambda j: j.distance), "held", None
    else:
        verdict = "inconclusive"
        needs = [(seeds_needed(j.est.sd, j.distance, j.est.n) if j.est.testable else None, j) for j in open_]
        known = [n for n, _ in needs if n is not None]
        needed = max(known) if known and len(known) == len(needs) else None
        deciding = max(needs, key=lambda nj: math.inf if nj[0] is None else nj[0])[1]
    text = (
        f"{what}: {counts}; {'deciding' if verdict != 'inconclusive' else 'least decided'}: "
        f"{deciding.label} {deciding.est.describe()}"
    )
    return Outcome(
        verdict,
        text,
        n=max(seeds),
        estimate=deciding.est.mean,
        ci=[deciding.est.low, deciding.est.high],
        margin=margin,
        seeds_needed=needed,
    )


# ---------------------------------------------------------------- comparative claims


def _metric_specs(
    metric: str | None,
    metrics: dict[str, bool] | None,
    lower_is_better: bool,
    panel_metrics: dict[str, str] | None,
) -> list[tuple[str, bool, str | None]]:
    """(metric, lower_is_better, panel filter) triples a comparison runs over."""
    if panel_metrics:
        return [(m, False, panel) for panel, m in panel_metrics.items()]
    if metrics:
        return [(m, bool(lower), None) for m, lower in metrics.items()]
    return [(metric, lower_is_better, None)] if metric else []


@check(*COMPARATIVE)
def compare(
    ev: Evidence,
    claim: ClaimSpec,
    *,
    ours: str,
    baselines: list[str],
    metric: str | None = None,
    metrics: dict[str, bool] | None = None,
    lower_is_better: bool = False,
    panel_metrics: dict[str, str] | None = None,
    only: str | None = None,
    pooled: bool = False,
) -> Outcome:
    """Paired comparisons of `ours` with each baseline on each metric, at every point (or, with
    `pooled`, on the per-seed mean over the points they share: one comparison per baseline),
    judged by the claim's kind. `panel_metrics` judges one metric per panel (e.g. token accuracy
    for one case, a judge score for the other); `only` keeps the points whose label contains it."""
    names = expand_methods(baselines, ev.agg, exclude=ours)
    judged: list[Judged] = []
    margin = claim.margin
    for m, lower, panel in _metric_specs(metric, metrics, lower_is_better, panel_metrics):
        mine = set(ev.points(m, ours, only))
        if panel:
            mine = {p for p in mine if panel in p}
        for base in names:
            shared = [p for p in ev.points(m, base, only) if p in mine]
            if not shared:
                continue
            if pooled:  # one comparison: the per-seed mean over the shared points
                per_seed = pd.concat([_oriented_diff(ev, m, ours, base, p, lower) for p in shared], axis=1)
                items = [
                    (
                        f"mean over {len(shared)} points",
                        estimate(per_seed.mean(axis=1, skipna=False).tolist()),
                        sum(ev.mean(m, base, p) for p in shared) / len(shared),
                    )
                ]
            else:
                items = ev.paired_points(m, ours, base, shared, lower)
            for point, est, ref in items:
                label = f"{base} at {point}" + (
                    f" ({m})"
                    if len(_metric_specs(metric, metrics, lower_is_better, panel_metrics)) > 1
                    else ""
                )
                judged.append(_judge_difference(claim.kind, label, est, margin.units(ref) if margin else 0.0))
    described = ", ".join(
        f"{m} ({'lower' if lower else 'higher'} is better{f', {panel}' if panel else ''})"
        for m, lower, panel in _metric_specs(metric, metrics, lower_is_better, panel_metrics)
    )
    what = (
        f"{ours} vs {_names(names)}{f' ({only})' if only else ''} on {described}: paired difference per seed, "
        f"positive = {ours} better{', pooled over the points' if pooled else ''}"
        f"{f'; margin {margin.describe()} ({margin.why})' if margin else ''}"
    )
    words = {
        "superiority": ("better", "worse"),
        "non_inferiority": ("within the margin", "worse beyond it"),
        "equivalence": ("within +-margin", "outside it"),
    }[claim.kind]
    return _conclude(judged, words, what, ev, margin.describe() if margin else None)


def _oriented_diff(ev: Evidence, metric: str, ours: str, base: str, point: str, lower: bool) -> pd.Series:
    a = pd.to_numeric(ev.series(metric, ours, point), errors="coerce")
    b = pd.to_numeric(ev.series(metric, base, point), errors="coerce")
    common = a.index.intersection(b.index)
    return (b[common] - a[common]) if lower else (a[common] - b[common])


def _judge_difference(kind: str, label: str, est: Estimate, m: float) -> Judged:
    if kind == "superiority":
        return Judged(label, est, _side(est, est.low > 0, est.high < 0), abs(est.mean))
    if kind == "non_inferiority":
        return Judged(label, est, _side(est, est.low > -m, est.high < -m), abs(est.mean + m))
    return Judged(
        label,
        est,
        _side(est, est.low > -m and est.high < m, est.low > m or est.high < -m),
        abs(m - abs(est.mean)),
    )


def _names(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 6 else f"{len(names)} approaches ({', '.join(names[:3])}, ...)"


# ---------------------------------------------------------------- magnitudes


def _per_point(
    ev: Evidence,
    metric: str,
    method: str,
    only: str | None,
    exact: bool,
    normalise: dict[str, str] | None = None,
) -> list[tuple[str, Estimate]]:
    out = []
    for p in ev.points(metric, method, only):
        s = pd.to_numeric(ev.series(metric, method, p), errors="coerce")
        if normalise:  # (value - chance) / (best - chance): 0 at chance, 1 at the achievable maximum
            lo = pd.to_numeric(ev.series(normalise["chance"], method, p), errors="coerce")
            hi = pd.to_numeric(ev.series(normalise["best"], method, p), errors="coerce")
            s = (s - lo) / (hi - lo).where((hi - lo).abs() > 1e-12)
        out.append((p, estimate(s.tolist(), exact=exact)))
    return out


@check("magnitude")
def threshold(
    ev: Evidence,
    claim: ClaimSpec,
    *,
    metric: str | list[str],
    ours: str,
    only: str | None = None,
    exact: bool = False,
    normalise: dict[str, str] | None = None,
) -> Outcome:
    """At every point, `ours`' metric (or each of several, all against the same bound) against the
    claim's bound: at_least (or a normalised `level`: with `normalise` = {chance: <metric>, best:
    <metric>} the value is rescaled so that chance is 0 and the achievable maximum is 1) or at_most.
    `exact`: the metric is computed, not sampled."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    bound = (
        claim.level
        if claim.level is not None
        else (claim.at_least if claim.at_least is not None else claim.at_most)
    )
    above = claim.at_most is None
    judged = []
    for name in metrics:
        for p, est in _per_point(ev, name, ours, only, exact, normalise):
            ok = est.low >= bound if above else est.high <= bound
            bad = est.high < bound if above else est.low > bound
            label = f"{name} at {p}" if len(metrics) > 1 and p else (name if len(metrics) > 1 else p)
            judged.append(Judged(label, est, _side(est, ok, bad), abs(est.mean - bound)))
    scaled = " normalised to (value - chance) / (best - chance)" if normalise else ""
    what = (
        f"{ours} {' and '.join(metrics)}{scaled}{f' ({only})' if only else ''}, needed "
        f"{'>=' if above else '<='} {bound:g} at every point ({claim.why})"
    )
    return _conclude(judged, ("clear", "miss"), what, ev)


def _target_judged(label: str, est: Estimate, target: float, tol: float) -> Judged:
    lo, hi = target - tol, target + tol
    return Judged(
        label,
        est,
        _side(est, est.low >= lo and est.high <= hi, est.high < lo or est.low > hi),
        abs(tol - abs(est.mean - target)),
    )


@check("magnitude")
def target(
    ev: Evidence,
    claim: ClaimSpec,
    *,
    metric: str,
    method: str,
    reduce: str = "max",
    exact: bool = False,
    unit: str = "",
) -> Outcome:
    """The `reduce` (max, min or mean) over points of `method`'s metric, per seed, against the
    paper's figure +- the claim's margin (for claims such as "up to 71%")."""
    rows = [pd.to_numeric(ev.series(metric, method, p), errors="coerce") for p in ev.points(metric, method)]
    if not rows:
        return Outcome("not_testable", f"no {metric} results for {method}")
    frame = pd.concat(rows, axis=1)
    per_seed = getattr(frame, reduce)(axis=1)
    est = estimate(per_seed.tolist(), exact=exact)
    tol = claim.margin.units(claim.target)
    judged = [_target_judged(f"{reduce} over {frame.shape[1]} points", est, claim.target, tol)]
    what = (
        f"{method} {metric}: {reduce} over points {est.describe()}{unit}; the paper's {claim.target:g}{unit} "
        f"+- {tol:g} ({claim.margin.why})"
    )
    return _conclude(judged, ("within the tolerance", "outside it"), what, ev, claim.margin.describe())


@check("magnitude")
def gain_target(
    ev: Evidence,
    claim: ClaimSpec,
    *,
    ours: str,
    baselines: list[str],
    only: str | None = None,
    metric: str = "log_ppl",
) -> Outcome:
    """The largest improvement in perplexity space, 100 (1 - exp(ours) / exp(baseline)) over the
    baselines and points (with `only` in the label), per seed, against the paper's "up to X%"."""
    cols = []
    for base in baselines:
        for p in ev.points(metric, ours, only):
            a = pd.to_numeric(ev.series(metric, ours, p), errors="coerce")
            b = pd.to_numeric(ev.series(metric, base, p), errors="coerce")
            if len(b):
                cols.append(100 * (1 - a.map(math.exp) / b.map(math.exp)))
    if not cols:
        return Outcome("not_testable", f"no {metric} results for {ours} and the baselines")
    est = estimate(pd.concat(cols, axis=1).max(axis=1).tolist())
    tol = claim.margin.units(claim.target)
    judged = [_target_judged("largest gain over the baselines and points", est, claim.target, tol)]
    what = (
        f"largest perplexity improvement of {ours} over {', '.join(baselines)}{f' ({only})' if only else ''}: "
        f"{est.describe()}%; the paper: up to {claim.target:g}% +- {tol:g} ({claim.margin.why})"
    )
    return _conclude(judged, ("within the tolerance", "outside it"), what, ev, claim.margin.describe())


@check("magnitude")
def ratio_range(
    ev: Evidence,
    claim: ClaimSpec,
    *,
    metric: str,
    numerator: str,
    methods: list[str] | None = None,
    exact: bool = True,
) -> Outcome:
    """`numerator`'s value over each other point's spans the paper's [low, high] range, each end
    within the claim's (relative) margin (for claims such as "3.3x to 9.3x more memory"). `methods`
    keeps only those rows (one setting of several in the table)."""
    sel = ev.agg[ev.agg["metric"] == metric]
    if methods:
        sel = sel[sel["method"].isin(methods)]
    labels = [str(x) for x in sel["x"]]
    others = [x for x in dict.fromkeys(labels) if x.split("_")[0] != numerator.split("_")[0]]
    if numerator not in labels or not others:
        return Outcome("not_testable", f"no {metric} for {numerator} and at least one other point")
    method_of = dict(zip(labels, sel["method"]))
    num = pd.to_numeric(ev.series(metric, method_of[numerator], numerator), errors="coerce")
    ratios = pd.concat(
        [num / pd.to_numeric(ev.series(metric, method_of[x], x), errors="coerce") for x in others], axis=1
    )
    ratios.columns = others
    lo, hi = estimate(ratios.min(axis=1).tolist(), exact), estimate(ratios.max(axis=1).tolist(), exact)
    low, high = claim.range
    judged = [
        _target_judged(f"smallest ratio ({ratios.mean().idxmin()})", lo, low, claim.margin.units(low)),
        _target_judged(f"largest ratio ({ratios.mean().idxmax()})", hi, high, claim.margin.units(high)),
    ]
    what = (
        f"{numerator} {metric} over the others: {lo.mean:.2f}x to {hi.mean:.2f}x; the paper: {low:g}x to "
        f"{high:g}x, each end within {claim.margin.describe()} ({claim.margin.why})"
    )
    return _conclude(judged, ("within the tolerance", "outside it"), what, ev, claim.margin.describe())


# ---------------------------------------------------------------- properties and rates


@check("property")
def violations(ev: Evidence, claim: ClaimSpec, *, ours: str, parts: dict[str, list[str]]) -> Outcome:
    """Counterexamples of a property, reported apart per part of its evidence (`parts`: name ->
    [violations metric, trials metric]); held only when every part has none. Each part reports its
    trials and the 95% upper bound on its violation rate; a violation prints the first one found."""
    texts, held, trials_all, missing = [], True, 0, []
    for name, (bad_metric, trials_metric) in parts.items():
        sel = ev.agg[ev.agg["method"] == ours]
        bad = sel[sel["metric"] == bad_metric]["total"]
        trials = sel[sel["metric"] == trials_metric]["total"]
        if bad.empty or trials.empty or float(trials.sum()) == 0:
            missing.append(name)
            continue
        b, n = int(bad.sum()), int(trials.sum())
        trials_all += n
        if b:
            held = False
            first = ev.counterexamples.get(ours, {}).get(bad_metric)
            texts.append(f"{name}: {b} violations in {n} trials" + (f" (first: {first})" if first else ""))
        else:
            texts.append(f"{name}: none in {n} trials (violation rate <= {violation_bound(n):.2g}, 95%)")
    what = f"{ours}: " + "; ".join(texts) + (f"; not run: {', '.join(missing)}" if missing else "")
    if not held:
        verdict = "not_held"
    elif missing:
        verdict = "not_testable"  # held needs every part of the evidence
    else:
        verdict = "held"
    return Outcome(verdict, what, n=trials_all)


@check("rate")
def success_rate(
    ev: Evidence, claim: ClaimSpec, *, metric: str, ours: str, only: str | None = None
) -> Outcome:
    """The share of (point, seed) runs where `metric` is 1, with its Clopper-Pearson interval, against
    the claim's level."""
    values = []
    for p in ev.points(metric, ours, only):
        values += [float(v) for v in pd.to_numeric(ev.series(metric, ours, p), errors="coerce").dropna()]
    n, k = len(values), int(sum(v >= 0.5 for v in values))
    if n < 2:
        return Outcome("not_testable", f"{ours} {metric}: {n} runs; a rate needs at least 2", n=n)
    low, high = clopper_pearson(k, n)
    level = claim.level
    verdict = "held" if low >= level else ("not_held" if high < level else "inconclusive")
    needed = rate_seeds_needed(k, n, level) if verdict == "inconclusive" else None
    what = (
        f"{ours} {metric}: {k} of {n} runs ({100 * k / n:.0f}%, 95% interval {100 * low:.0f}-{100 * high:.0f}%), "
        f"needed {100 * level:g}% ({claim.why})"
    )
    return Outcome(verdict, what, n=n, estimate=k / n, ci=[low, high], seeds_needed=needed)


@check("vague")
def vague(ev: Evidence, claim: ClaimSpec, *, reason: str) -> Outcome:
    """For claims too vague to test: says why."""
    return Outcome("not_testable", reason)


# ---------------------------------------------------------------- every claim of the paper


def evaluate(claims: list[ClaimSpec], tested: dict[str, dict], ev: Evidence) -> list[Verdict]:
    """One verdict per paper claim (and per named setting `<id>@<setting>` an experiment judges a
    claim under). Claims the experiment does not test are not_testable here, with a pointer."""
    out = []
    for claim in claims:
        keys = [k for k in tested if k == claim.id or k.startswith(claim.id + "@")] or [claim.id]
        for key in keys:
            spec = dict(tested.get(key) or {})
            # `setting:` in a claim entry states what this reading fixed (e.g. AERIA's consensus base)
            stated = dict(spec.pop("setting", None) or {})
            label = key.split("@", 1)[1] if "@" in key else ""
            shown = ", ".join([label, *(f"{k} = {v}" for k, v in stated.items())][0 if label else 1 :])
            text = claim.text + (f" [judged under {shown}]" if shown else "")
            setting = {**ev.setting, **({"preset": label} if label else {}), **stated}
            if not spec:
                result = Outcome(
                    "not_testable", f"not tested by this experiment; see {claim.tested_by or 'the docs'}"
                )
            elif claim.judged_at == "paper" and ev.scale != "paper":
                result = Outcome(
                    "not_testable",
                    f"{ev.scale} scale cannot test this claim: it is judged at "
                    "scale=paper only (its figures are the paper's)",
                )
            else:
                chk = CHECKS[spec.pop("check")]
                result = chk.fn(ev, claim, **spec)
            wall = None
            if result.seeds_needed is not None and ev.seed_wall_s and result.seeds_needed <= MAX_SEEDS:
                wall = max(0, result.seeds_needed - result.n) * ev.seed_wall_s
            evidence = result.evidence
            if result.verdict == "inconclusive":
                if not result.seeds_needed:
                    evidence += (
                        "; no number of seeds decides it at the observed effect (it sits on the boundary)"
                    )
                elif result.seeds_needed > MAX_SEEDS:
                    evidence += (
                        f"; more than {MAX_SEEDS:,} seeds would be needed to decide it at the observed "
                        "spread (the estimate is all but on the boundary)"
                    )
                else:
                    evidence += f"; about {result.seeds_needed} seeds would decide it" + (
                        f" ({_duration(wall)} more at this scale on this machine)" if wall else ""
                    )
            out.append(
                Verdict(
                    text,
                    key,
                    claim.kind,
                    result.verdict,
                    evidence,
                    int(result.n),
                    setting,
                    result.estimate,
                    result.ci,
                    result.margin,
                    result.seeds_needed,
                    wall,
                )
            )
    return out


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def check_entry(entry: dict) -> None:
    """The typed schema of a claims.json entry, checked when the report is built."""
    required = {
        "claim": str,
        "id": str,
        "kind": str,
        "verdict": str,
        "evidence": str,
        "n": int,
        "setting": dict,
    }
    for key, typ in required.items():
        if not isinstance(entry.get(key), typ):
            raise ValueError(f"claims.json entry {entry.get('id')!r}: {key} must be a {typ.__name__}")
    if entry["verdict"] not in VERDICTS:
        raise ValueError(
            f"claims.json entry {entry['id']!r}: verdict {entry['verdict']!r} is not one of {VERDICTS}"
        )
    if entry["kind"] in COMPARATIVE and entry["verdict"] in {"held", "not_held", "inconclusive"}:
        ci = entry.get("ci")
        if not (isinstance(ci, list) and len(ci) == 2):
            raise ValueError(
                f"claims.json entry {entry['id']!r}: a comparative verdict needs its ci [low, high]"
            )
    if entry["verdict"] == "inconclusive" and "seeds_needed" not in entry:
        raise ValueError(f"claims.json entry {entry['id']!r}: inconclusive needs seeds_needed")
