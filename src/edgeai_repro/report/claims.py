"""Claim checks: each turns the aggregated table into a verdict with its evidence.

A claim comes from paper_results/<paper>/claims.yaml (what the paper states); an experiment says
which claims it tests and with which check. Every claim of the paper gets a verdict in every
table: those the experiment does not test are `not_testable` here, with a pointer.
"""
from __future__ import annotations

from typing import Any, Callable

import pandas as pd

Verdict = tuple[str, str]
CHECKS: dict[str, Callable[..., Verdict]] = {}


def check(fn: Callable[..., Verdict]) -> Callable[..., Verdict]:
    CHECKS[fn.__name__] = fn
    return fn


def _points(agg: pd.DataFrame, metric: str, method: str) -> pd.Series:
    """Mean of `metric` for `method`, indexed by a readable point label ("vgg16, 10")."""
    sel = agg[(agg["metric"] == metric) & (agg["method"] == method)]
    labels = [", ".join(str(v) for v in (p, x) if str(v) != "") or "all" for p, x in zip(sel["panel"], sel["x"])]
    return pd.Series(sel["mean"].to_numpy(), index=labels)


@check
def beats_baselines(agg: pd.DataFrame, metric: str, ours: str, baselines: list[str], ties_allowed: bool = False,
                    **_: Any) -> Verdict:
    """Held when `ours` has the higher mean at every point against every baseline.

    With ties_allowed (for ablations that `ours` generalises, which can only tie or lose), held
    when `ours` is never lower and is higher at some point against each baseline.
    """
    mine = _points(agg, metric, ours)
    if mine.empty:
        return "not_testable", f"no {metric} results for {ours}"
    lost, compared, margins, never_ahead = [], 0, [], []
    for base in baselines:
        theirs = _points(agg, metric, base)
        ahead, seen = False, 0
        for key, value in mine.items():
            if key not in theirs.index:
                continue
            compared, seen = compared + 1, seen + 1
            margins.append((value - theirs[key]) / abs(theirs[key]) if theirs[key] else float("inf"))
            tie = abs(value - theirs[key]) <= 1e-9 * max(abs(value), abs(theirs[key]), 1e-300)
            ahead |= value > theirs[key] and not tie
            if not (value > theirs[key] or (ties_allowed and tie)):
                lost.append(f"{base} at {key}: {theirs[key]:.4g} >= {value:.4g}")
        if ties_allowed and seen and not ahead:
            never_ahead.append(base)
    if compared == 0:
        return "not_testable", f"none of {baselines} ran in this experiment"
    finite = [m for m in margins if m != float("inf")]
    gain = f"; median margin {100 * pd.Series(finite).median():+.1f}%" if finite else ""
    if lost:
        word = "lower" if ties_allowed else "lower or equal"
        return "not_held", (f"{ours} {metric} is higher in {compared - len(lost)}/{compared} comparisons{gain}; "
                            f"{word}: " + "; ".join(lost[:5]) + (" ..." if len(lost) > 5 else ""))
    if never_ahead:
        return "not_held", f"{ours} {metric} only ties {', '.join(never_ahead)} at every point{gain}"
    how = "never lower than, and somewhere above," if ties_allowed else "higher than"
    return "held", f"{ours} {metric} is {how} {', '.join(baselines)} at all {compared} comparisons{gain}"


@check
def zero_violations(agg: pd.DataFrame, ours: str, metrics: list[str], **_: Any) -> Verdict:
    """Held when the total of each violation count over all seeds is zero for `ours`."""
    parts, bad = [], False
    for metric in metrics:
        sel = agg[(agg["metric"] == metric) & (agg["method"] == ours)]
        if sel.empty:
            return "not_testable", f"no {metric} results for {ours}"
        total = float(sel["total"].sum())
        bad |= total > 0
        parts.append(f"{metric}={total:g}")
    checked = agg[(agg["metric"] == "users_checked") & (agg["method"] == ours)]["total"].sum()
    text = f"{ours}: " + ", ".join(parts) + f" ({checked:g} users checked for misreports)"
    consensus = agg[(agg["metric"] == "consensus_rate") & (agg["method"] == ours)]["mean"]
    if len(consensus):
        text += f"; consensus reached in {100 * float(consensus.mean()):.1f}% of auctions"
    return ("not_held" if bad else "held"), text


@check
def competitive_ratio(agg: pd.DataFrame, ours: str, bound: float, metric: str = "revenue_over_f2", **_: Any) -> Verdict:
    """Held when mean revenue / F2 of `ours` is at least 1/bound at every point."""
    ratio = _points(agg, metric, ours)
    if ratio.empty:
        return "not_testable", f"no {metric} results for {ours}"
    worst_key = ratio.idxmin()
    worst = float(ratio.min())
    text = (f"mean revenue/F2 of {ours} ranges {worst:.3f} (at {worst_key}) to {float(ratio.max()):.3f}; "
            f"bound 1/{bound:g} = {1 / bound:.3f}")
    return ("held" if worst >= 1 / bound else "not_held"), text


def evaluate(claims: list[dict], tested: dict[str, dict], agg: pd.DataFrame) -> list[dict]:
    """One {claim, verdict, evidence} per paper claim."""
    out = []
    for claim in claims:
        spec = dict(tested.get(claim["id"]) or {})
        if not spec:
            out.append({"claim": claim["text"], "id": claim["id"], "verdict": "not_testable",
                        "evidence": f"not tested by this experiment; see {claim.get('tested_by', 'the README')}"})
            continue
        fn = CHECKS[spec.pop("check")]
        verdict, evidence = fn(agg, **spec)
        out.append({"claim": claim["text"], "id": claim["id"], "verdict": verdict, "evidence": evidence})
    return out
