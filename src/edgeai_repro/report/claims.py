"""Claim checks: each turns the aggregated table into a verdict with its evidence.

A claim comes from paper_results/<paper>/claims.yaml (what the paper states); an experiment says
which claims it tests and with which check. Every claim of the paper gets a verdict in every
table: those the experiment does not test are `not_testable` here, with a pointer.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import pandas as pd

Verdict = tuple[str, str]
CHECKS: dict[str, Callable[..., Verdict]] = {}


def check(fn: Callable[..., Verdict]) -> Callable[..., Verdict]:
    CHECKS[fn.__name__] = fn
    return fn


def _points(agg: pd.DataFrame, metric: str, method: str) -> pd.DataFrame:
    """mean, std, n_seeds of `metric` for `method`, indexed by a readable point label ("vgg16, 10")."""
    sel = agg[(agg["metric"] == metric) & (agg["method"] == method)]
    labels = point_labels(sel)
    return pd.DataFrame({"mean": sel["mean"].to_numpy(), "std": sel["std"].fillna(0).to_numpy(),
                         "n": sel["n_seeds"].to_numpy()}, index=labels)


def _paired(rows: pd.DataFrame | None, metric: str, ours: str, base: str, key: str) -> pd.Series | None:
    """Per-seed differences ours - base at one point, when both ran on the same seeds."""
    if rows is None or rows.empty or metric not in rows:
        return None
    at = rows[rows["_point"] == key]
    a = at[at["method"] == ours].set_index("seed")[metric]
    b = at[at["method"] == base].set_index("seed")[metric]
    common = a.index.intersection(b.index)
    return (a[common] - b[common]).astype(float) if len(common) >= 2 else None


def _compare(a: pd.Series, b: pd.Series, z: float, diffs: pd.Series | None = None) -> int:
    """+1 if a's mean is significantly above b's (difference beyond z standard errors), -1 below, 0 neither.

    With per-seed paired differences (both methods saw the same random instances: common random
    numbers), the standard error is that of the differences, which is what the design allows.
    """
    if diffs is not None:
        se, diff = float(diffs.std(ddof=1)) / math.sqrt(len(diffs)), float(diffs.mean())
    else:
        se = math.sqrt(a["std"] ** 2 / max(a["n"], 1) + b["std"] ** 2 / max(b["n"], 1))
        diff = a["mean"] - b["mean"]
    if se == 0:
        return int(diff > 0) - int(diff < 0) if abs(diff) > 1e-12 * max(abs(a["mean"]), abs(b["mean"]), 1.0) else 0
    return 1 if diff > z * se else -1 if diff < -z * se else 0


@check
def _oriented(agg: pd.DataFrame, rows: pd.DataFrame | None, metric: str, lower_is_better: bool,
              only: str | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
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


@check
def beats_baselines(agg: pd.DataFrame, metric: str, ours: str, baselines: list[str], ties_allowed: bool = False,
                    z: float = 2.0, rows: pd.DataFrame | None = None, lower_is_better: bool = False,
                    only: str | None = None, **_: Any) -> Verdict:
    """Held when `ours` is significantly better (by z standard errors over seeds) than every
    baseline at every point (every point whose label contains `only`).

    With ties_allowed (for ablations that `ours` generalises, which can tie), held when `ours` is
    never significantly worse and is significantly better somewhere against each baseline.
    """
    agg, rows = _oriented(agg, rows, metric, lower_is_better, only)
    sign = -1 if lower_is_better else 1
    mine = _points(agg, metric, ours)
    if mine.empty:
        return "not_testable", f"no {metric} results for {ours}"
    better = worse = compared = 0
    lost, never_ahead, margins = [], [], []
    for base in baselines:
        theirs = _points(agg, metric, base)
        ahead = seen = 0
        for key in mine.index:
            if key not in theirs.index:
                continue
            a, b = mine.loc[key], theirs.loc[key]
            verdict = _compare(a, b, z, _paired(rows, metric, ours, base, key))
            compared, seen = compared + 1, seen + 1
            better, worse, ahead = better + (verdict > 0), worse + (verdict < 0), ahead + (verdict > 0)
            if b["mean"]:
                margins.append((a["mean"] - b["mean"]) / abs(b["mean"]))
            if verdict < 0 or (verdict == 0 and not ties_allowed):
                lost.append(f"{base} at {key}: {sign * b['mean']:.4g} vs {sign * a['mean']:.4g}")
        if seen and ties_allowed and not ahead:
            never_ahead.append(base)
    if compared == 0:
        return "not_testable", f"none of {baselines} ran in this experiment"
    summary = (f"{ours} {metric} vs {', '.join(baselines)}{f' ({only})' if only else ''}: significantly better in "
               f"{better}, worse in {worse}, "
               f"indistinguishable in {compared - better - worse} of {compared} comparisons (paired over seeds, z = {z:g})")
    if margins:
        summary += f"; median margin {100 * pd.Series(margins).median():+.1f}%"
    if lost:
        return "not_held", summary + "; not ahead: " + "; ".join(lost[:4]) + (" ..." if len(lost) > 4 else "")
    if never_ahead:
        return "not_held", summary + f"; never ahead of {', '.join(never_ahead)}"
    return "held", summary


@check
def zero_violations(agg: pd.DataFrame, ours: str, metrics: list[str], context: list[str] = (), **_: Any) -> Verdict:
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
    text = f"{ours}: " + ", ".join(parts) + f" ({checked:g} users checked for misreports)"
    consensus = agg[(agg["metric"] == "consensus_rate") & (agg["method"] == ours)]["mean"]
    if len(consensus):
        text += f"; consensus reached in {100 * float(consensus.mean()):.1f}% of auctions"
    return ("not_held" if bad else "held"), text


@check
def competitive_ratio(agg: pd.DataFrame, ours: str, bound: float, metric: str = "revenue_over_f2", **_: Any) -> Verdict:
    """Held when mean revenue / F2 of `ours` is at least 1/bound at every point."""
    ratio = _points(agg, metric, ours)["mean"]
    if ratio.empty:
        return "not_testable", f"no {metric} results for {ours}"
    worst_key = ratio.idxmin()
    worst = float(ratio.min())
    text = (f"mean revenue/F2 of {ours} ranges {worst:.3f} (at {worst_key}) to {float(ratio.max()):.3f}; "
            f"bound 1/{bound:g} = {1 / bound:.3f}")
    return ("held" if worst >= 1 / bound else "not_held"), text


@check
def all_at_least(agg: pd.DataFrame, metric: str, ours: str, threshold: float, only: str | None = None,
                 **_: Any) -> Verdict:
    """Held when the mean of `metric` for `ours` is at least `threshold` at every point (or at every
    point whose label contains `only`, for claims about one setting)."""
    points = _points(agg, metric, ours)
    if only is not None:
        points = points[[only in str(k) for k in points.index]]
    if points.empty:
        return "not_testable", f"no {metric} results for {ours}"
    low = points[points["mean"] < threshold]
    text = (f"{ours} {metric}: mean {points['mean'].min():.4g} (worst point) to {points['mean'].max():.4g} over "
            f"{len(points)} points and {int(points['n'].max())} seeds; needed >= {threshold:g}")
    if len(low):
        return "not_held", text + "; below at " + ", ".join(low.index[:5])
    return "held", text


@check
def near(agg: pd.DataFrame, metric: str, method: str, target: float, tol: float, reduce: str = "max",
         unit: str = "", **_: Any) -> Verdict:
    """Held when the max (or min, or mean) over points of `method`'s mean `metric` lies within an
    absolute `tol` of the paper's number (for claims such as "up to 71%")."""
    points = _points(agg, metric, method)["mean"].dropna()
    if points.empty:
        return "not_testable", f"no {metric} results for {method}"
    value = float(getattr(points, reduce)())
    where = f" (at {points.idxmax() if reduce == 'max' else points.idxmin()})" if reduce in {"max", "min"} else ""
    text = (f"{method} {metric}: {reduce} over {len(points)} points {value:.4g}{unit}{where}, range "
            f"{points.min():.4g}{unit} to {points.max():.4g}{unit}; the paper's {target:g}{unit} ± {tol:g} needed")
    return ("held" if abs(value - target) <= tol else "not_held"), text


@check
def ratio_range(agg: pd.DataFrame, metric: str, numerator: str, low: float, high: float, tol: float,
                **_: Any) -> Verdict:
    """Held when `numerator`'s value over each other point's spans the paper's [low, high] range,
    each end within a relative `tol` (for claims such as "3.3x to 9.3x more memory")."""
    sel = agg[agg["metric"] == metric]
    by_x = sel.groupby(sel["x"].astype(str))["mean"].mean()
    if numerator not in by_x.index or len(by_x) < 2:
        return "not_testable", f"no {metric} for {numerator} and at least one other point"
    others = by_x.drop(index=[x for x in by_x.index if x.split("_")[0] == numerator.split("_")[0]])
    if others.empty:
        return "not_testable", f"no point to compare {numerator} with"
    ratios = by_x[numerator] / others
    lo, hi = float(ratios.min()), float(ratios.max())
    text = (f"{numerator} {metric} over the others: {lo:.2f}x ({ratios.idxmin()}) to {hi:.2f}x ({ratios.idxmax()}); "
            f"the paper: {low:g}x to {high:g}x, each end within {100 * tol:.0f}% needed")
    ok = abs(lo - low) <= tol * low and abs(hi - high) <= tol * high
    return ("held" if ok else "not_held"), text


@check
def never_worse(agg: pd.DataFrame, metrics: dict[str, bool], ours: str, baseline: str, z: float = 2.0,
                rows: pd.DataFrame | None = None, **_: Any) -> Verdict:
    """Held when `ours` is not significantly worse than `baseline` at any point, on every metric
    (`metrics` maps a metric to lower_is_better)."""
    parts, bad = [], []
    for metric, lower in metrics.items():
        a_agg, a_rows = _oriented(agg, rows, metric, lower, None)
        mine, theirs = _points(a_agg, metric, ours), _points(a_agg, metric, baseline)
        keys = [k for k in mine.index if k in theirs.index]
        if not keys:
            return "not_testable", f"no {metric} results for both {ours} and {baseline}"
        verdicts = [_compare(mine.loc[k], theirs.loc[k], z, _paired(a_rows, metric, ours, baseline, k)) for k in keys]
        worse = [k for k, v in zip(keys, verdicts) if v < 0]
        bad += [f"{metric} at {k}" for k in worse]
        parts.append(f"{metric}: better in {sum(v > 0 for v in verdicts)}, worse in {len(worse)}, "
                     f"indistinguishable in {sum(v == 0 for v in verdicts)} of {len(keys)}")
    text = f"{ours} vs {baseline} (paired over seeds, z = {z:g}): " + "; ".join(parts)
    return ("not_held", text + "; worse at " + ", ".join(bad[:4])) if bad else ("held", text)


@check
def gap_within(agg: pd.DataFrame, metrics: dict[str, str], ours: str, reference: str, max_gap: float,
               **_: Any) -> Verdict:
    """Held when `reference` (an upper bound) leads `ours` by at most `max_gap` at every point;
    `metrics` maps a panel to the metric judged there (e.g. token accuracy for one case, a judge
    score for the other)."""
    gaps = []
    for panel, metric in metrics.items():
        a, b = _points(agg, metric, ours), _points(agg, metric, reference)
        gaps += [(k, float(b.loc[k, "mean"] - a.loc[k, "mean"]), metric) for k in a.index if k in b.index and panel in k]
    if not gaps:
        return "not_testable", f"no results for both {ours} and {reference}"
    worst = max(gaps, key=lambda g: g[1])
    text = (f"{reference} leads {ours} by {min(g[1] for g in gaps):.3g} to {worst[1]:.3g} points "
            f"(largest: {worst[2]} at {worst[0]}); 'close' taken as at most {max_gap:g} points")
    return ("held" if worst[1] <= max_gap else "not_held"), text


@check
def ppl_improvement(agg: pd.DataFrame, ours: str, baselines: list[str], target: float, tol: float,
                    only: str | None = None, metric: str = "log_ppl", **_: Any) -> Verdict:
    """Our largest improvement in perplexity space, 100 (1 - exp(ours) / exp(baseline)), over the
    baselines and points (with `only` in the label), against the paper's "up to `target`%"."""
    sel = agg if only is None else agg[pd.Series(point_labels(agg), index=agg.index).str.contains(only, regex=False)]
    mine = _points(sel, metric, ours)
    gains = []
    for base in baselines:
        theirs = _points(sel, metric, base)
        gains += [(100 * (1 - math.exp(mine.loc[k, "mean"]) / math.exp(theirs.loc[k, "mean"])), base, k)
                  for k in mine.index if k in theirs.index]
    if not gains:
        return "not_testable", f"no {metric} results for {ours} and the baselines"
    best = max(gains)
    text = (f"largest perplexity improvement of {ours}: {best[0]:+.2f}% (vs {best[1]} at {best[2]}); range "
            f"{min(gains)[0]:+.2f}% to {best[0]:+.2f}%; the paper: up to {target:g}% (± {tol:g} needed)")
    return ("held" if abs(best[0] - target) <= tol else "not_held"), text


@check
def vague(agg: pd.DataFrame, reason: str, **_: Any) -> Verdict:
    """For claims too vague to test: says why."""
    return "not_testable", reason


def point_labels(frame: pd.DataFrame) -> list[str]:
    return [", ".join(str(v) for v in (p, x) if str(v) != "") or "all" for p, x in zip(frame["panel"], frame["x"])]


def evaluate(claims: list[dict], tested: dict[str, dict], agg: pd.DataFrame,
             rows: pd.DataFrame | None = None) -> list[dict]:
    """One {claim, verdict, evidence} per paper claim. `rows`: per-seed values with panel and x."""
    if rows is not None and not rows.empty:
        rows = rows.assign(_point=point_labels(rows))
    out = []
    for claim in claims:
        spec = dict(tested.get(claim["id"]) or {})
        if not spec:
            out.append({"claim": claim["text"], "id": claim["id"], "verdict": "not_testable",
                        "evidence": f"not tested by this experiment; see {claim.get('tested_by', 'the README')}"})
            continue
        fn = CHECKS[spec.pop("check")]
        verdict, evidence = fn(agg, rows=rows, **spec)
        out.append({"claim": claim["text"], "id": claim["id"], "verdict": verdict, "evidence": evidence})
    return out
