"""Verdicts on a paper's claims: each claim's evidence is a set of items (a comparison with one
baseline at one point, one point against a bound), each an estimate and its 95% interval over seeds,
read against the boundary the claim's kind sets (report/stats.py; paper_results/<paper>/claims.yaml
declares the kind, margins, figures and levels before any run).

Every estimated kind decides the same way (`_conclude`): held when every item is good (its one-sided
test at 2.5%, the edge of its 95% interval: an intersection-union test, valid with no correction);
not_held when Holm's step-down over all the claim's items finds one bad at family-wise 2.5%;
inconclusive otherwise. So a claim true everywhere is wrongly not_held at most 2.5% of the time,
and a claim false at one item is wrongly held at most 2.5% of the time, however many cells it spans
(tests/test_calibration.py measures both for every kind).

  superiority      an item is good when the paired difference (positive: ours better) is above 0,
                   bad when below;
  non_inferiority  good above -margin, bad below it;
  equivalence      good within +-margin, bad outside;
  magnitude        a bound at every point (threshold), or the paper's figure +- a tolerance: "up to
                   X" as no point beyond X + tol and one point reaching X - tol (target,
                   gain_target, ratio_range: no maximum of noisy points, which is biased upward),
                   judged only at the scale the claim needs; otherwise not_testable;
  property         any counterexample: not_held, the first one printed; none: held once the trials
                   bound the violation rate (one-sided 95%) below the claim's at_most;
  rate             the proportion of successes with its Clopper-Pearson interval against a level.

Fewer than two sampled seeds, or zero spread over fewer than six, is not_testable for an estimated
kind (a check entry declared `exact: true` is judged from one computed value). An inconclusive verdict
carries the seeds at which each verdict would be reached with 80% power at the estimated effects,
and what they would cost in wall time at the scale run. An experiment's `report.claims` names, per
claim, the check that gathers its evidence (metric, ours, baselines, ...); the check must serve the
claim's declared kind, and must be able to reach both verdicts at the sweep's seeds (report/reach.py).
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
    ALPHA,
    MAX_SEEDS,
    MIN_PLANNING_SEEDS,
    Estimate,
    clopper_pearson,
    estimate,
    from_moments,
    holm,
    p_above,
    p_below,
    power_one_sided,
    rate_power,
    seeds_for,
    trials_for,
    violation_bound,
)
from edgeai_repro.report.table import aggregate, with_points

VERDICTS = ("held", "not_held", "inconclusive", "not_testable")


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

    @classmethod
    def from_rows(
        cls, rows: pd.DataFrame, x: str | None, panel, metrics: list[str], scale: str = "paper"
    ) -> Evidence:
        """Evidence from per-seed cell rows with no report around them (synthetic tables: the
        reachability check, the tests): their aggregate and their rows labelled by point."""
        return cls(aggregate(rows, x, panel, metrics), point_rows(rows, x, panel), scale, {"scale": scale})

    @functools.cached_property
    def seeds_run(self) -> int:
        """How many seeds the rows hold (0 without rows)."""
        return int(self.rows["seed"].nunique()) if self.rows is not None and "seed" in self.rows else 0

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
            est = from_moments(int(n[p]), float(mean[p]), float(sd[p]), float(scale[p]))
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
    multiplicity: str | None = None  # how the claim's cells are combined (family-wise control)
    seeds_needed: dict | None = None  # {"held": n, "not_held": n} at 80% power; None: out of reach
    wall_needed_s: dict | None = None  # the extra wall time of those seeds at this scale

    def as_json(self) -> dict:
        out = asdict(self)
        if out["estimate"] is not None and math.isnan(out["estimate"]):
            out["estimate"] = None
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
    seeds_needed: dict | None = None
    multiplicity: str | None = None


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


def metrics_of(entry: dict) -> list[str]:
    """Every result metric a `report.claims` entry's check reads."""
    names: list[str] = []
    for key in ("metric", "metrics", "panel_metrics"):
        v = entry.get(key)
        if isinstance(v, str):
            names.append(v)
        elif isinstance(v, list):
            names += v
        elif isinstance(v, dict):
            names += list(v) if key == "metrics" else list(v.values())
    names += list((entry.get("normalise") or {}).values())
    for pair in (entry.get("parts") or {}).values():
        names += list(pair)
    if entry.get("check") == "gain_target" and not entry.get("metric"):
        names.append("log_ppl")  # gain_target's default
    return list(dict.fromkeys(names))


def point_labels(frame: pd.DataFrame) -> list[str]:
    return [
        ", ".join(str(v) for v in (p, x) if str(v) != "") or "all" for p, x in zip(frame["panel"], frame["x"])
    ]


def point_rows(rows: pd.DataFrame, x: str | None, panel) -> pd.DataFrame:
    """Per-seed rows with their panel and x (table.with_points) and the point label the checks key on."""
    labelled = with_points(rows, x, panel)
    return labelled.assign(_point=point_labels(labelled))


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

# One-sided tests an item must pass (good) or any of which makes it bad: (direction, bound), the
# direction saying where the mean must lie: "above" or "below" the bound.
Test = tuple[str, float]

MULTIPLICITY = (
    "not_held needs Holm's step-down over the {m} {unit} to find one bad at family-wise 2.5% "
    "(one-sided); held needs every {unit_one} good at 2.5% (intersection-union)"
)


@dataclass
class Judged:
    """One comparison or one point: its estimate, the one-sided tests it must all pass to count as
    good (`ok`, each at ALPHA) and those any one of which shows it bad (`bad`, one member of the
    claim's Holm family). `p_ok` / `p_bad` override the tests' own p-values for a compound item
    (a target's "the largest point reaches the bound"), `share` is the Bonferroni divisor its good
    side was tested at."""

    label: str
    est: Estimate
    ok: list[Test]
    bad: list[Test]
    p_ok: float | None = None
    p_bad: float | None = None
    share: int = 1

    def __post_init__(self) -> None:
        if self.p_ok is None:
            self.p_ok = max((_p(self.est, t) for t in self.ok), default=1.0)
        if self.p_bad is None:
            self.p_bad = min((_p(self.est, t) for t in self.bad), default=1.0)

    @property
    def good(self) -> bool:
        return self.est.testable and self.p_ok <= ALPHA / self.share

    def power_good(self, n: int) -> float:
        out = 1.0
        for t in self.ok:
            out *= _power(self.est, t, n, ALPHA / self.share)
        return out

    def power_bad(self, n: int, alpha: float) -> float:
        return max((_power(self.est, t, n, alpha) for t in self.bad), default=0.0)


def _p(est: Estimate, test: Test) -> float:
    direction, bound = test
    return p_above(est, bound) if direction == "above" else p_below(est, bound)


def _distance(est: Estimate, test: Test) -> float:
    """How far the estimate lies beyond the test's bound on the side the test looks for."""
    direction, bound = test
    return est.mean - bound if direction == "above" else bound - est.mean


def _power(est: Estimate, test: Test, n: int, alpha: float) -> float:
    """The chance that the test passes with n seeds if the estimate and its spread are the truth."""
    d = _distance(est, test)
    if est.sd == 0.0 and not est.exact:  # zero spread over sampled seeds: a sign test
        return 1.0 if d > 0 and 0.5**n <= alpha else 0.0
    return power_one_sided(d, est.sd, n, alpha)


def _conclude(
    judged: list[Judged],
    words: tuple[str, str],
    what: str,
    ev: Evidence,
    margin: str | None = None,
    unit: tuple[str, str] = ("comparisons", "comparison"),
) -> Outcome:
    """held when every item is good (each at 2.5%: an intersection-union test), not_held when Holm's
    step-down finds one bad at family-wise 2.5% over all the claim's items, inconclusive otherwise;
    not_testable when nothing could be judged. The evidence names the deciding item and, when
    undecided, the seeds at which each verdict would be reached with 80% power."""
    testable = [j for j in judged if j.est.testable]
    seeds = sorted({j.est.n for j in testable})
    if not testable:
        if judged:
            return Outcome(
                "not_testable",
                f"{what}: no interval at any of the {len(judged)} items ("
                + "; ".join(sorted({j.est.describe().split("(", 1)[-1].rstrip(")") for j in judged}))
                + "); run more seeds",
                n=max(j.est.n for j in judged),
            )
        return Outcome("not_testable", f"{what}: no results to judge")
    m = len(testable)
    rejected = dict(zip(map(id, testable), holm([j.p_bad for j in testable])))
    bad = [j for j in testable if rejected[id(j)]]
    ok = [j for j in testable if j.good and not rejected[id(j)]]
    decided = {id(j) for j in ok + bad}  # by identity: `in` would compare every field of every item
    open_ = [j for j in judged if id(j) not in decided]
    multiplicity = (
        "one item: its 95% interval against the bound"
        if m == 1
        else MULTIPLICITY.format(m=m, unit=unit[0], unit_one=unit[1])
    )
    exact = all(j.est.exact for j in testable)
    counts = f"{len(ok)} {words[0]}, {len(bad)} {words[1]}, {len(open_)} undecided of {len(judged)} " + (
        "(computed values: exact, no interval)"
        if exact
        else f"(n = {'/'.join(map(str, seeds))} seeds; 95% intervals{'; Holm over the ' + str(m) if m > 1 else ''})"
    )
    needed = None
    plan = ""
    if bad:
        deciding, verdict = min(bad, key=lambda j: j.p_bad), "not_held"
    elif not open_:
        deciding, verdict = max(ok, key=lambda j: j.p_ok), "held"
    else:
        verdict = "inconclusive"
        deciding = max(open_, key=lambda j: (j.est.testable, j.p_ok))
        needed, plan = _seeds_to_decide(judged, len(testable))
    text = (
        f"{what}: {counts}; {'deciding' if verdict != 'inconclusive' else 'least decided'}: "
        f"{deciding.label} {deciding.est.describe()}" + plan
    )
    return Outcome(
        verdict,
        text,
        n=max(seeds),
        estimate=deciding.est.mean,
        ci=[deciding.est.low, deciding.est.high],
        margin=margin,
        seeds_needed=needed,
        multiplicity=multiplicity,
    )


def _seeds_to_decide(judged: list[Judged], m: int) -> tuple[dict, str]:
    """The seeds (for every item at once) at which each verdict would be reached with 80% power if
    the estimates and spreads were the truth, and the sentence saying so; `m` is the size of the
    claim's Holm family. Items with zero spread over too few sampled seeds plan by a sign test."""
    have = min(j.est.n for j in judged)
    if have < MIN_PLANNING_SEEDS:
        return {"held": None, "not_held": None}, (
            f"; run at least {MIN_PLANNING_SEEDS} seeds at every item first: a spread from {have} cannot "
            "plan how many would decide it"
        )
    # items whose estimate lies on the wrong side of a bound they must clear, the farthest first
    wrong = sorted(
        (j for j in judged if any(_distance(j.est, t) <= 0 for t in j.ok)),
        key=lambda j: min(_distance(j.est, t) for t in j.ok),
    )
    held = None if wrong else seeds_for(lambda n: math.prod(j.power_good(n) for j in judged), have)
    beyond = [j for j in judged if any(_distance(j.est, t) > 0 for t in j.bad)]
    failed = (
        seeds_for(lambda n: 1 - math.prod(1 - j.power_bad(n, ALPHA / m) for j in beyond), have)
        if beyond
        else None
    )
    parts = []
    for name, n, why in (
        (
            "not_held",
            failed,
            f"not_held would need an estimate on the bad side of its bound (none of the {m} is)",
        ),
        (
            "held",
            held,
            f"holding would need {wrong[0].label if wrong else ''} to move to the good side of its bound",
        ),
    ):
        if n is None:
            parts.append(why)
        elif n > MAX_SEEDS:
            parts.append(f"more than {MAX_SEEDS:,} seeds to reach {name}")
        else:
            parts.append(f"about {n} seeds to reach {name}")
    return {"held": held, "not_held": failed}, (
        f"; at the estimated effects (80% power; resting on noisy estimates from {have} seeds): "
        + "; ".join(parts)
    )


# ---------------------------------------------------------------- comparative claims


def metric_specs(
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
    for m, lower, panel in metric_specs(metric, metrics, lower_is_better, panel_metrics):
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
                    if len(metric_specs(metric, metrics, lower_is_better, panel_metrics)) > 1
                    else ""
                )
                judged.append(_judge_difference(claim.kind, label, est, margin.units(ref) if margin else 0.0))
    described = ", ".join(
        f"{m} ({'lower' if lower else 'higher'} is better{f', {panel}' if panel else ''})"
        for m, lower, panel in metric_specs(metric, metrics, lower_is_better, panel_metrics)
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
    """The oriented paired difference (positive: ours better) against the kind's boundary."""
    if kind == "superiority":
        return Judged(label, est, ok=[("above", 0.0)], bad=[("below", 0.0)])
    if kind == "non_inferiority":
        return Judged(label, est, ok=[("above", -m)], bad=[("below", -m)])
    return Judged(label, est, ok=[("above", -m), ("below", m)], bad=[("above", m), ("below", -m)])


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
            label = f"{name} at {p}" if len(metrics) > 1 and p else (name if len(metrics) > 1 else p)
            good, worse = ("above", "below") if above else ("below", "above")
            judged.append(Judged(label, est, ok=[(good, bound)], bad=[(worse, bound)]))
    scaled = " normalised to (value - chance) / (best - chance)" if normalise else ""
    what = (
        f"{ours} {' and '.join(metrics)}{scaled}{f' ({only})' if only else ''}, needed "
        f"{'>=' if above else '<='} {bound:g} at every point ({claim.why})"
    )
    return _conclude(judged, ("clear", "miss"), what, ev, unit=("points", "point"))


def _extreme(
    items: list[tuple[str, Estimate]], target: float, tol: float, reduce: str, what: str
) -> list[Judged]:
    """A paper's "up to X" (reduce max) or "as little as X" (min) over noisy points, judged without
    taking a maximum of noisy values (which is biased upward): no point lies beyond X + tol (each
    point one member of the Holm family), and some point reaches X - tol (one compound item: good
    when one point clears it, Bonferroni over the points; bad when every point falls short, an
    intersection-union test). `reduce` mean: the per-seed mean over points, one item."""
    lo, hi = target - tol, target + tol
    if reduce == "mean":
        return [
            Judged(what, items[0][1], ok=[("above", lo), ("below", hi)], bad=[("below", lo), ("above", hi)])
        ]
    (inside, beyond), reach = (("below", "above"), lo) if reduce == "max" else (("above", "below"), hi)
    edge = hi if reduce == "max" else lo
    judged = [
        Judged(f"{label} ({what})", est, ok=[(inside, edge)], bad=[(beyond, edge)]) for label, est in items
    ]
    testable = [(label, est) for label, est in items if est.testable]
    if testable:
        k = len(testable)
        sign = 1 if reduce == "max" else -1
        label, best = max(testable, key=lambda le: sign * le[1].mean)
        judged.append(
            Judged(
                f"the {'largest' if reduce == 'max' else 'smallest'} of {k} ({what}, at {label})",
                best,
                ok=[(beyond, reach)],
                bad=[(inside, reach)],
                p_ok=min(_p(e, (beyond, reach)) for _, e in testable),  # against ALPHA / k (Bonferroni)
                p_bad=max(_p(e, (inside, reach)) for _, e in testable),
                share=k,
            )
        )
    return judged


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
    """`method`'s metric against the paper's figure +- the claim's margin: with `reduce` max ("up to
    71%"), no point above the band and some point reaching it; min, the mirror image; mean, the
    per-seed mean over the points. `exact`: the metric is declared deterministic (no seed enters it)."""
    points = ev.points(metric, method)
    rows = [pd.to_numeric(ev.series(metric, method, p), errors="coerce") for p in points]
    if not rows:
        return Outcome("not_testable", f"no {metric} results for {method}")
    tol = claim.margin.units(claim.target)
    if reduce == "mean":
        items = [("mean over points", estimate(pd.concat(rows, axis=1).mean(axis=1).tolist(), exact=exact))]
    else:
        items = [(p, estimate(r.tolist(), exact=exact)) for p, r in zip(points, rows)]
    judged = _extreme(items, claim.target, tol, reduce, f"{reduce} over points")
    shown = max(items, key=lambda le: le[1].mean if reduce != "min" else -le[1].mean)
    what = (
        f"{method} {metric}: {reduce} over {len(points)} points at {shown[0]} {shown[1].describe()}{unit}; "
        f"the paper's {claim.target:g}{unit} +- {tol:g} ({claim.margin.why})"
    )
    return _conclude(
        judged, ("within the tolerance", "outside it"), what, ev, claim.margin.describe(), ("items", "item")
    )


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
    """The improvement in perplexity space, 100 (1 - exp(ours) / exp(baseline)), paired per seed at
    every baseline and point (with `only` in the label), against the paper's "up to X%": none beyond
    the band, one reaching it (see `_extreme`)."""
    items = []
    for base in baselines:
        for p in ev.points(metric, ours, only):
            a = pd.to_numeric(ev.series(metric, ours, p), errors="coerce")
            b = pd.to_numeric(ev.series(metric, base, p), errors="coerce")
            common = a.index.intersection(b.index)
            if len(common):
                gain = 100 * (1 - a[common].map(math.exp) / b[common].map(math.exp))
                items.append((f"{base} at {p}", estimate(gain.tolist())))
    if not items:
        return Outcome("not_testable", f"no {metric} results for {ours} and the baselines")
    tol = claim.margin.units(claim.target)
    judged = _extreme(items, claim.target, tol, "max", "gain")
    best = max(items, key=lambda le: le[1].mean)
    what = (
        f"perplexity improvement of {ours} over {', '.join(baselines)}{f' ({only})' if only else ''} at "
        f"{len(items)} (baseline, point) pairs, largest at {best[0]} {best[1].describe()}%; the paper: up to "
        f"{claim.target:g}% +- {tol:g} ({claim.margin.why})"
    )
    return _conclude(
        judged, ("within the tolerance", "outside it"), what, ev, claim.margin.describe(), ("items", "item")
    )


@check("magnitude")
def ratio_range(
    ev: Evidence,
    claim: ClaimSpec,
    *,
    metric: str,
    numerator: str,
    methods: list[str] | None = None,
    exact: bool = False,
) -> Outcome:
    """`numerator`'s value over each other point's spans the paper's [low, high] range: the largest
    ratio within high's band and the smallest within low's (each end judged as `target` judges "up
    to" and "as little as", without a maximum of noisy values). `methods` keeps only those rows (one
    setting of several in the table); `exact`: the metric is declared deterministic."""
    sel = ev.agg[ev.agg["metric"] == metric]
    if methods:
        sel = sel[sel["method"].isin(methods)]
    labels = [str(x) for x in sel["x"]]
    others = [x for x in dict.fromkeys(labels) if x.split("_")[0] != numerator.split("_")[0]]
    if numerator not in labels or not others:
        return Outcome("not_testable", f"no {metric} for {numerator} and at least one other point")
    method_of = dict(zip(labels, sel["method"]))
    num = pd.to_numeric(ev.series(metric, method_of[numerator], numerator), errors="coerce")
    items = [
        (
            x,
            estimate(
                (num / pd.to_numeric(ev.series(metric, method_of[x], x), errors="coerce")).tolist(), exact
            ),
        )
        for x in others
    ]
    low, high = claim.range
    judged = _extreme(items, high, claim.margin.units(high), "max", "largest ratio") + _extreme(
        items, low, claim.margin.units(low), "min", "smallest ratio"
    )
    means = sorted(items, key=lambda le: le[1].mean)
    what = (
        f"{numerator} {metric} over the others: {means[0][1].mean:.2f}x ({means[0][0]}) to "
        f"{means[-1][1].mean:.2f}x ({means[-1][0]}); the paper: {low:g}x to {high:g}x, each end within "
        f"{claim.margin.describe()} ({claim.margin.why})"
    )
    return _conclude(
        judged, ("within the tolerance", "outside it"), what, ev, claim.margin.describe(), ("items", "item")
    )


# ---------------------------------------------------------------- properties and rates


@check("property")
def violations(ev: Evidence, claim: ClaimSpec, *, ours: str, parts: dict[str, list[str]]) -> Outcome:
    """Counterexamples of a property, reported apart per part of its evidence (`parts`: name ->
    [violations metric, trials metric]). Any violation: not_held, the first one printed. None: held
    only when every part's trials bound its violation rate (one-sided 95%) below the claim's at_most
    (one part without trials leaves the claim not_testable; too few, inconclusive)."""
    texts, trials_all, missing, short, found = [], 0, [], [], False
    tolerance = claim.at_most
    seeds = max(1, ev.seeds_run)
    needed = trials_for(tolerance)
    more = 0
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
            found = True
            first = ev.counterexamples.get(ours, {}).get(bad_metric)
            texts.append(f"{name}: {b} violations in {n} trials" + (f" (first: {first})" if first else ""))
            continue
        bound = violation_bound(n)
        texts.append(f"{name}: none in {n} trials (violation rate <= {bound:.2g}, 95%)")
        if bound > tolerance:
            short.append(name)
            more = max(more, math.ceil(needed * seeds / n))
    what = (
        f"{ours}: "
        + "; ".join(texts)
        + (f"; not run: {', '.join(missing)}" if missing else "")
        + f"; held needs the rate bounded below {tolerance:g} ({needed} trials without a violation per part)"
    )
    seeds_needed = None
    if found:
        verdict = "not_held"
    elif missing:
        verdict = "not_testable"  # held needs every part of the evidence
    elif short:
        verdict = "inconclusive"
        seeds_needed = {"held": more, "not_held": None}
        what += (
            f"; {', '.join(short)} too few: about {more} seeds would bound it; not_held needs a "
            "counterexample, which no number of seeds guarantees"
        )
    else:
        verdict = "held"
    return Outcome(
        verdict,
        what,
        n=trials_all,
        seeds_needed=seeds_needed,
        multiplicity="every part: no violation, and trials enough to bound its rate (intersection-union)",
    )


@check("rate")
def success_rate(
    ev: Evidence, claim: ClaimSpec, *, metric: str, ours: str, only: str | None = None
) -> Outcome:
    """The share of (point, seed) runs where `metric` is 1, with its Clopper-Pearson interval, against
    the claim's level (held: the interval wholly above it; not_held: wholly below)."""
    values, points = [], ev.points(metric, ours, only)
    for p in points:
        values += [float(v) for v in pd.to_numeric(ev.series(metric, ours, p), errors="coerce").dropna()]
    n, k = len(values), int(sum(v >= 0.5 for v in values))
    if n < 2:
        return Outcome("not_testable", f"{ours} {metric}: {n} runs; a rate needs at least 2", n=n)
    low, high = clopper_pearson(k, n)
    level = claim.level
    verdict = "held" if low >= level else ("not_held" if high < level else "inconclusive")
    what = (
        f"{ours} {metric}: {k} of {n} runs ({100 * k / n:.0f}%, 95% interval {100 * low:.0f}-{100 * high:.0f}%), "
        f"needed {100 * level:g}% ({claim.why})"
    )
    needed = None
    if verdict == "inconclusive" and n < MIN_PLANNING_SEEDS:
        needed = {"held": None, "not_held": None}
        what += f"; run at least {MIN_PLANNING_SEEDS} runs first: {n} cannot plan how many would decide it"
    elif verdict == "inconclusive":
        per_seed, rate = max(1, len(points)), k / n
        needed, parts = {}, []
        for side in ("not_held", "held"):
            if (rate < level) if side == "not_held" else (rate > level):
                runs = seeds_for(lambda m, s=side: rate_power(rate, m, level, s), n)
                needed[side] = math.ceil(runs / per_seed) if runs <= MAX_SEEDS else MAX_SEEDS + 1
                parts.append(
                    f"about {needed[side]} seeds to reach {side}"
                    if runs <= MAX_SEEDS
                    else f"more than {MAX_SEEDS:,} runs to reach {side}"
                )
            else:
                needed[side] = None
                parts.append(f"{side} would need the observed rate on the other side of {level:g}")
        what += f"; at the observed rate (80% power; a noisy estimate from {n} runs): " + "; ".join(parts)
    return Outcome(
        verdict,
        what,
        n=n,
        estimate=k / n,
        ci=[low, high],
        seeds_needed=needed,
        multiplicity="one rate over every run",
    )


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
            if result.seeds_needed and ev.seed_wall_s:
                wall = {
                    side: (
                        max(0, n - ev.seeds_run) * ev.seed_wall_s
                        if n is not None and n <= MAX_SEEDS
                        else None
                    )
                    for side, n in result.seeds_needed.items()
                }
                nearer = [s for s in wall.values() if s]
                if result.verdict == "inconclusive" and nearer:
                    result.evidence += (
                        f" (the nearer: {_duration(min(nearer))} more at this scale on this machine)"
                    )
            evidence = result.evidence
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
                    result.multiplicity,
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
    if entry["verdict"] in {"held", "not_held", "inconclusive"} and not isinstance(
        entry.get("multiplicity"), str
    ):
        raise ValueError(
            f"claims.json entry {entry['id']!r}: a decided or inconclusive verdict names its multiplicity procedure"
        )
    needed = entry.get("seeds_needed")
    if entry["verdict"] == "inconclusive" and not (
        isinstance(needed, dict) and {"held", "not_held"} <= set(needed)
    ):
        raise ValueError(
            f"claims.json entry {entry['id']!r}: inconclusive needs seeds_needed {{held: n | null, not_held: n | null}}"
        )
