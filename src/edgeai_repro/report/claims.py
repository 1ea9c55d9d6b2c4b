"""Claim checks: each turns the aggregated table into a verdict with its evidence.

A claim comes from paper_results/<paper>/claims.yaml (what the paper states); an experiment says
which claims it tests and with which check. Every claim of the paper gets a verdict in every
table: those the experiment does not test are `not_testable` here, with a pointer.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from edgeai_repro.report.stats import ALPHA, Paired, paired

Verdict = tuple[str, str]


@dataclass(frozen=True)
class Check:
    fn: Callable[..., Verdict]
    magnitude: bool  # judges a size (a ratio, a percentage): only meaningful at paper scale


CHECKS: dict[str, Check] = {}
TINY_REASON = "{scale} scale cannot test a magnitude: it is judged at scale=paper only"


def check(fn: Callable[..., Verdict] | None = None, *, magnitude: bool = False):
    """Register a claim check. Its keyword-only parameters are the schema of a `report.claims` entry."""

    def register(f: Callable[..., Verdict]) -> Callable[..., Verdict]:
        CHECKS[f.__name__] = Check(f, magnitude)
        return f

    return register(fn) if fn is not None else register


def _points(agg: pd.DataFrame, metric: str, method: str) -> pd.DataFrame:
    """mean, std, n_seeds of `metric` for `method`, indexed by a readable point label ("vgg16, 10")."""
    sel = agg[(agg["metric"] == metric) & (agg["method"] == method)]
    labels = point_labels(sel)
    return pd.DataFrame(
        {
            "mean": sel["mean"].to_numpy(),
            "std": sel["std"].fillna(0).to_numpy(),
            "n": sel["n_seeds"].to_numpy(),
        },
        index=labels,
    )


Lookup = dict[tuple[str, str], pd.Series]


def _lookup(rows: pd.DataFrame | None, metric: str) -> Lookup:
    """Per-seed values of `metric` for every (point, method), indexed by seed: built once per check,
    so that hundreds of paired comparisons do not each filter the whole table."""
    if rows is None or rows.empty or metric not in rows:
        return {}
    return {
        (str(p), str(m)): g.set_index("seed")[metric]
        for (p, m), g in rows.groupby(["_point", "method"], sort=False)
    }


def _compare(lookup: Lookup, ours: str, base: str, key: str, alpha: float) -> Paired:
    """Paired t-test of ours against base at one point, over their common seeds."""
    empty = pd.Series(dtype=float)
    return paired(lookup.get((key, ours), empty), lookup.get((key, base), empty), alpha)


def _oriented(
    agg: pd.DataFrame, rows: pd.DataFrame | None, metric: str, lower_is_better: bool, only: str | None
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The table (and per-seed rows) restricted to points whose label contains `only`, with the
    metric negated when lower is better, so that "higher" always means "better"."""
    if only is not None:
        labels = pd.Series(point_labels(agg), index=agg.index)
        agg = agg[labels.str.contains(only, regex=False)]
        if rows is not None and "_point" in rows:
            rows = rows[rows["_point"].str.contains(only, regex=False)]
    if lower_is_better:
        agg = agg.assign(mean=agg["mean"].where(agg["metric"] != metric, -agg["mean"]))
        if rows is not None and metric in rows:
            rows = rows.assign(**{metric: -pd.to_numeric(rows[metric], errors="coerce")})
    return agg, rows


def expand_methods(patterns: list[str], agg: pd.DataFrame, exclude: str = "") -> list[str]:
    """Baseline names, with shell-style patterns ("edge_only+*") expanded over the methods present
    (a pattern never matches `exclude`, the method being judged)."""
    present = list(dict.fromkeys(agg["method"]))
    out = []
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            hits = [m for m in present if fnmatch.fnmatchcase(str(m), pat) and m != exclude]
        else:
            hits = [pat]
        out += [m for m in hits if m not in out]
    return out


def _test_note(alpha: float) -> str:
    return f"two-sided paired t-test over seeds, df = n - 1, alpha = {alpha:g}"


@check
def beats_baselines(
    agg: pd.DataFrame,
    rows: pd.DataFrame | None,
    *,
    metric: str,
    ours: str,
    baselines: list[str],
    ties_allowed: bool = False,
    lower_is_better: bool = False,
    only: str | None = None,
    alpha: float = ALPHA,
) -> Verdict:
    """Held when `ours` is significantly better (paired t-test over seeds) than every baseline at
    every point (every point whose label contains `only`). Requiring every comparison to be
    significant at alpha is an intersection-union test, so no multiplicity correction is needed.

    With ties_allowed (for ablations that `ours` generalises, which can tie), held when `ours` is
    never significantly worse and is significantly better somewhere against each baseline.
    Points with fewer than two common seeds are untestable; if none is testable, so is the claim.
    """
    agg, rows = _oriented(agg, rows, metric, lower_is_better, only)
    sign = -1 if lower_is_better else 1
    mine = _points(agg, metric, ours)
    if mine.empty:
        return "not_testable", f"no {metric} results for {ours}"
    baselines = expand_methods(baselines, agg, exclude=ours)
    lookup = _lookup(rows, metric)
    better = worse = compared = untestable = 0
    lost, never_ahead, margins, worst_p, ns = [], [], [], 0.0, set()
    for base in baselines:
        theirs = _points(agg, metric, base)
        ahead = seen = 0
        for key in mine.index:
            if key not in theirs.index:
                continue
            a, b = mine.loc[key], theirs.loc[key]
            test = _compare(lookup, ours, base, key, alpha)
            if not test.testable:
                untestable += 1
                continue
            ns.add(test.n)
            compared, seen = compared + 1, seen + 1
            better, worse, ahead = better + (test.sign > 0), worse + (test.sign < 0), ahead + (test.sign > 0)
            if test.sign > 0:
                worst_p = max(worst_p, test.p)
            if b["mean"]:
                margins.append((a["mean"] - b["mean"]) / abs(b["mean"]))
            if test.sign < 0 or (test.sign == 0 and not ties_allowed):
                lost.append(
                    f"{base} at {key}: {sign * b['mean']:.4g} vs {sign * a['mean']:.4g} ({test.describe()})"
                )
        if seen and ties_allowed and not ahead:
            never_ahead.append(base)
    if compared == 0:
        if untestable:
            return "not_testable", (
                f"fewer than 2 common seeds at every point ({untestable} comparisons); "
                "a paired test needs at least 2 seeds (run more seeds)"
            )
        return "not_testable", f"none of {baselines} ran in this experiment"
    seeds = "/".join(str(n) for n in sorted(ns))
    names = (
        ", ".join(baselines)
        if len(baselines) <= 6
        else f"{len(baselines)} approaches ({', '.join(baselines[:3])}, ...)"
    )
    summary = (
        f"{ours} {metric} vs {names}{f' ({only})' if only else ''}: significantly better in "
        f"{better}, worse in {worse}, indistinguishable in {compared - better - worse} of {compared} "
        f"comparisons (n = {seeds} seeds; {_test_note(alpha)})"
    )
    if untestable:
        summary += f"; {untestable} comparisons with fewer than 2 common seeds not tested"
    if margins:
        summary += f"; median margin {100 * pd.Series(margins).median():+.1f}%"
    if lost:
        return "not_held", summary + "; not ahead: " + "; ".join(lost[:4]) + (" ..." if len(lost) > 4 else "")
    if never_ahead:
        return "not_held", summary + f"; never ahead of {', '.join(never_ahead)}"
    return "held", summary + f"; largest p among the wins {worst_p:.2g}"


@check
def zero_violations(
    agg: pd.DataFrame, rows: pd.DataFrame | None, *, ours: str, metrics: list[str], context: list[str] = ()
) -> Verdict:
    """Held when the total of each violation count over all seeds is zero for `ours`.

    `context` metrics are reported in the evidence without deciding the verdict.
    """
    parts, bad = [], False
    for metric in metrics:
        sel = agg[(agg["metric"] == metric) & (agg["method"] == ours)]
        if sel.empty:
            return "not_testable", f"no {metric} results for {ours}"
        total = float(sel["total"].sum())
        bad |= total > 0
        parts.append(f"{metric}={total:g}")
    for metric in context:
        sel = agg[(agg["metric"] == metric) & (agg["method"] == ours)]
        if not sel.empty:
            parts.append(f"{metric}={float(sel['total'].sum()):g}")
    checked = agg[(agg["metric"] == "users_checked") & (agg["method"] == ours)]["total"].sum()
    text = f"{ours}: " + ", ".join(parts) + f" ({checked:g} users checked for misreports on random markets)"
    consensus = agg[(agg["metric"] == "consensus_rate") & (agg["method"] == ours)]["mean"]
    if len(consensus):
        text += f"; consensus reached in {100 * float(consensus.mean()):.1f}% of auctions"
    return ("not_held" if bad else "held"), text


@check(magnitude=True)
def competitive_ratio(
    agg: pd.DataFrame,
    rows: pd.DataFrame | None,
    *,
    ours: str,
    bound: float,
    source: str,
    metric: str = "revenue_over_f2_min",
) -> Verdict:
    """Held when the worst expected revenue / F2 of `ours` over every profile of every point and
    seed is at least 1/bound. `metric` must be a per-profile worst case (the expectation over the
    mechanism's coins on each fixed profile, minimised over profiles): a competitive ratio is a
    worst-case guarantee, which a mean over i.i.d. markets cannot test."""
    if rows is None or rows.empty or metric not in rows:
        return "not_testable", f"no per-seed {metric} results for {ours}"
    mine = rows[rows["method"] == ours]
    values = pd.to_numeric(mine[metric], errors="coerce").dropna()
    if values.empty:
        return "not_testable", f"no {metric} results for {ours}"
    where = mine.loc[values.idxmin(), "_point"]
    worst = float(values.min())
    text = (
        f"worst expected revenue/F2 of {ours} over {len(values)} (point, seed) sets of profiles: {worst:.3f} "
        f"(at {where}); the bound 1/{bound:g} = {1 / bound:.3f} ({source})"
    )
    return ("held" if worst >= 1 / bound else "not_held"), text


def _threshold(
    agg: pd.DataFrame, metric: str, ours: str, threshold: float, only: str | None, at_least: bool
) -> Verdict:
    points = _points(agg, metric, ours)
    if only is not None:
        points = points[[only in str(k) for k in points.index]]
    if points.empty:
        return "not_testable", f"no {metric} results for {ours}"
    bad = points[points["mean"] < threshold] if at_least else points[points["mean"] > threshold]
    worst = points["mean"].min() if at_least else points["mean"].max()
    best = points["mean"].max() if at_least else points["mean"].min()
    text = (
        f"{ours} {metric}: mean {worst:.4g} (worst point) to {best:.4g} over {len(points)} points and "
        f"{int(points['n'].max())} seeds; needed {'>=' if at_least else '<='} {threshold:g}"
    )
    if len(bad):
        return "not_held", text + f"; {'below' if at_least else 'above'} at " + ", ".join(bad.index[:5])
    return "held", text


@check
def all_at_least(
    agg: pd.DataFrame,
    rows: pd.DataFrame | None,
    *,
    metric: str,
    ours: str,
    threshold: float,
    only: str | None = None,
) -> Verdict:
    """Held when the mean of `metric` for `ours` is at least `threshold` at every point (or at every
    point whose label contains `only`, for claims about one setting)."""
    return _threshold(agg, metric, ours, threshold, only, at_least=True)


@check
def all_at_most(
    agg: pd.DataFrame,
    rows: pd.DataFrame | None,
    *,
    metric: str,
    ours: str,
    threshold: float,
    only: str | None = None,
) -> Verdict:
    """Held when the mean of `metric` for `ours` is at most `threshold` at every point (a gap within
    a tolerance fixed before running)."""
    return _threshold(agg, metric, ours, threshold, only, at_least=False)


@check(magnitude=True)
def near(
    agg: pd.DataFrame,
    rows: pd.DataFrame | None,
    *,
    metric: str,
    method: str,
    target: float,
    tol: float,
    reduce: str = "max",
    unit: str = "",
) -> Verdict:
    """Held when the max (or min, or mean) over points of `method`'s mean `metric` lies within an
    absolute `tol` of the paper's number (for claims such as "up to 71%")."""
    points = _points(agg, metric, method)["mean"].dropna()
    if points.empty:
        return "not_testable", f"no {metric} results for {method}"
    value = float(getattr(points, reduce)())
    where = (
        f" (at {points.idxmax() if reduce == 'max' else points.idxmin()})" if reduce in {"max", "min"} else ""
    )
    text = (
        f"{method} {metric}: {reduce} over {len(points)} points {value:.4g}{unit}{where}, range "
        f"{points.min():.4g}{unit} to {points.max():.4g}{unit}; the paper's {target:g}{unit} ± {tol:g} needed"
    )
    return ("held" if abs(value - target) <= tol else "not_held"), text


@check(magnitude=True)
def ratio_range(
    agg: pd.DataFrame,
    rows: pd.DataFrame | None,
    *,
    metric: str,
    numerator: str,
    low: float,
    high: float,
    tol: float,
    methods: list[str] | None = None,
) -> Verdict:
    """Held when `numerator`'s value over each other point's spans the paper's [low, high] range,
    each end within a relative `tol` (for claims such as "3.3x to 9.3x more memory"). `methods`
    keeps only those rows (one setting of several in the table)."""
    sel = agg[agg["metric"] == metric]
    if methods:
        sel = sel[sel["method"].isin(methods)]
    by_x = sel.groupby(sel["x"].astype(str))["mean"].mean()
    if numerator not in by_x.index or len(by_x) < 2:
        return "not_testable", f"no {metric} for {numerator} and at least one other point"
    others = by_x.drop(index=[x for x in by_x.index if x.split("_")[0] == numerator.split("_")[0]])
    if others.empty:
        return "not_testable", f"no point to compare {numerator} with"
    ratios = by_x[numerator] / others
    lo, hi = float(ratios.min()), float(ratios.max())
    text = (
        f"{numerator} {metric} over the others: {lo:.2f}x ({ratios.idxmin()}) to {hi:.2f}x ({ratios.idxmax()}); "
        f"the paper: {low:g}x to {high:g}x, each end within {100 * tol:.0f}% needed"
    )
    ok = abs(lo - low) <= tol * low and abs(hi - high) <= tol * high
    return ("held" if ok else "not_held"), text


@check
def never_worse(
    agg: pd.DataFrame,
    rows: pd.DataFrame | None,
    *,
    metrics: dict[str, bool],
    ours: str,
    baselines: list[str],
    alpha: float = ALPHA,
) -> Verdict:
    """Held when `ours` is not significantly worse than any baseline at any point, on every metric
    (`metrics` maps a metric to lower_is_better), each metric reported separately."""
    parts, bad, tested = [], [], 0
    baselines = expand_methods(baselines, agg, exclude=ours)
    for metric, lower in metrics.items():
        a_agg, a_rows = _oriented(agg, rows, metric, lower, None)
        mine = _points(a_agg, metric, ours)
        lookup = _lookup(a_rows, metric)
        tests = []
        for base in baselines:
            theirs = _points(a_agg, metric, base)
            tests += [
                (f"{base} at {k}", _compare(lookup, ours, base, k, alpha))
                for k in mine.index
                if k in theirs.index
            ]
        tests = [(k, t) for k, t in tests if t.testable]
        if not tests:
            continue
        tested += len(tests)
        worse = [(k, t) for k, t in tests if t.sign < 0]
        bad += [f"{metric} vs {k} ({t.describe()})" for k, t in worse]
        parts.append(
            f"{metric}: better in {sum(t.sign > 0 for _, t in tests)}, worse in {len(worse)}, "
            f"indistinguishable in {sum(t.sign == 0 for _, t in tests)} of {len(tests)}"
        )
    if not tested:
        return "not_testable", (
            f"no metric of {ours} and {', '.join(baselines)} has 2 common seeds at a common point; "
            "a paired test needs at least 2 seeds"
        )
    text = f"{ours} vs {', '.join(baselines)} ({_test_note(alpha)}): " + "; ".join(parts)
    return (
        ("not_held", text + "; worse: " + "; ".join(bad[:4]) + (" ..." if len(bad) > 4 else ""))
        if bad
        else ("held", text)
    )


@check(magnitude=True)
def gap_within(
    agg: pd.DataFrame,
    rows: pd.DataFrame | None,
    *,
    metrics: dict[str, str],
    ours: str,
    reference: str,
    max_gap: float,
) -> Verdict:
    """Held when `reference` (an upper bound) leads `ours` by at most `max_gap` at every point;
    `metrics` maps a panel to the metric judged there (e.g. token accuracy for one case, a judge
    score for the other)."""
    gaps = []
    for panel, metric in metrics.items():
        a, b = _points(agg, metric, ours), _points(agg, metric, reference)
        gaps += [
            (k, float(b.loc[k, "mean"] - a.loc[k, "mean"]), metric)
            for k in a.index
            if k in b.index and panel in k
        ]
    if not gaps:
        return "not_testable", f"no results for both {ours} and {reference}"
    worst = max(gaps, key=lambda g: g[1])
    text = (
        f"{reference} leads {ours} by {min(g[1] for g in gaps):.3g} to {worst[1]:.3g} points "
        f"(largest: {worst[2]} at {worst[0]}); 'close' taken as at most {max_gap:g} points"
    )
    return ("held" if worst[1] <= max_gap else "not_held"), text


@check(magnitude=True)
def ppl_improvement(
    agg: pd.DataFrame,
    rows: pd.DataFrame | None,
    *,
    ours: str,
    baselines: list[str],
    target: float,
    tol: float,
    only: str | None = None,
    metric: str = "log_ppl",
) -> Verdict:
    """Our largest improvement in perplexity space, 100 (1 - exp(ours) / exp(baseline)), over the
    baselines and points (with `only` in the label), against the paper's "up to `target`%"."""
    sel = (
        agg
        if only is None
        else agg[pd.Series(point_labels(agg), index=agg.index).str.contains(only, regex=False)]
    )
    mine = _points(sel, metric, ours)
    gains = []
    for base in baselines:
        theirs = _points(sel, metric, base)
        gains += [
            (100 * (1 - math.exp(mine.loc[k, "mean"]) / math.exp(theirs.loc[k, "mean"])), base, k)
            for k in mine.index
            if k in theirs.index
        ]
    if not gains:
        return "not_testable", f"no {metric} results for {ours} and the baselines"
    best = max(gains)
    text = (
        f"largest perplexity improvement of {ours}: {best[0]:+.2f}% (vs {best[1]} at {best[2]}); range "
        f"{min(gains)[0]:+.2f}% to {best[0]:+.2f}%; the paper: up to {target:g}% (± {tol:g} needed)"
    )
    return ("held" if abs(best[0] - target) <= tol else "not_held"), text


@check
def vague(agg: pd.DataFrame, rows: pd.DataFrame | None, *, reason: str) -> Verdict:
    """For claims too vague to test: says why."""
    return "not_testable", reason


def point_labels(frame: pd.DataFrame) -> list[str]:
    return [
        ", ".join(str(v) for v in (p, x) if str(v) != "") or "all" for p, x in zip(frame["panel"], frame["x"])
    ]


def evaluate(
    claims: list[dict],
    tested: dict[str, dict],
    agg: pd.DataFrame,
    rows: pd.DataFrame | None = None,
    scale: str = "paper",
) -> list[dict]:
    """One {claim, verdict, evidence} per paper claim. `rows`: per-seed values with panel and x.
    Magnitude checks are judged only at scale=paper; direction checks at every scale. A claim may
    also be judged under a named setting: an entry `<id>@<setting>` gives a second verdict, whose
    claim text says which setting it was judged under (e.g. Fig. 8's preset fitted to the paper)."""
    if rows is not None and not rows.empty:
        rows = rows.assign(_point=point_labels(rows))
    out = []
    for claim in claims:
        keys = [k for k in tested if k == claim["id"] or k.startswith(claim["id"] + "@")] or [claim["id"]]
        for key in keys:
            spec = dict(tested.get(key) or {})
            text = claim["text"] + (f" [judged under {key.split('@', 1)[1]}]" if "@" in key else "")
            if not spec:
                out.append(
                    {
                        "claim": text,
                        "id": key,
                        "verdict": "not_testable",
                        "evidence": f"not tested by this experiment; see {claim.get('tested_by', 'the README')}",
                    }
                )
                continue
            chk = CHECKS[spec.pop("check")]
            if chk.magnitude and scale != "paper":
                verdict, evidence = "not_testable", TINY_REASON.format(scale=scale)
            else:
                verdict, evidence = chk.fn(agg, rows, **spec)
            out.append({"claim": text, "id": key, "verdict": verdict, "evidence": evidence})
    return out
