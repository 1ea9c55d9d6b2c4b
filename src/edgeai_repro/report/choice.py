"""A setting chosen by a stated rule from an experiment's own cells (report.choice).

The rule: among the swept values x of the table's axis, take the one that maximises one metric of a
method (its mean over seeds), subject to each of its `floors` metrics staying at least `fraction`
of that metric's value at a reference x. AERIA's consensus base is chosen so (aeria/consensus_base,
on its tuning seeds): the base that earns the most on the markets while keeping its worst case and
its rate of consensus (where CORE is envy-free) within a declared fraction of the
worst-case-optimal base's. The rule and its outcome are printed with the
table (table.md, choice.json), so a reader sees what was chosen, from what, and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from edgeai_repro.core.errors import ConfigError


@dataclass
class ChoiceSpec:
    key: str  # the setting chosen (the table's x key), for the text
    method: str  # whose metrics decide
    maximise: str  # the metric to maximise
    floors: list[str]  # the metrics kept above their floors
    reference: float  # the x whose values set the floors
    fraction: float = 0.9  # each floor = fraction * that metric at `reference`

    def check(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ConfigError(
                f"report.choice.fraction={self.fraction} must lie in (0, 1]: each floor is that share of the "
                f"reference's value; for example report.choice.fraction=0.9."
            )


def choose(agg: pd.DataFrame, spec: ChoiceSpec) -> dict:
    """{value, rule, floors, candidates, reason}: the chosen x under the rule, from the aggregated table."""
    spec.check()
    mine = agg[agg["method"] == spec.method]
    means = {
        m: {float(x): float(v) for x, v in zip(part["x"], part["mean"])}
        for m, part in mine.groupby("metric", sort=False)
        if m in (spec.maximise, *spec.floors)
    }
    gain = means.get(spec.maximise, {})
    rule = (
        f"the {spec.key} that maximises {spec.method}'s mean {spec.maximise}, among those whose "
        f"{' and '.join(spec.floors)} are each at least {spec.fraction:g} x their value at {spec.key} = {spec.reference:g}"
    )
    ref = next((x for x in gain if math.isclose(x, spec.reference, rel_tol=1e-9)), None)
    if ref is None or any(ref not in means.get(f, {}) for f in spec.floors):
        return {
            "value": None,
            "rule": rule,
            "candidates": [],
            "reason": f"{spec.key} = {spec.reference:g} was not run",
        }
    floors = {f: spec.fraction * means[f][ref] for f in spec.floors}
    candidates = []
    for x in sorted(gain):
        row = {"x": x, spec.maximise: gain[x], **{f: means[f].get(x, math.nan) for f in spec.floors}}
        row["eligible"] = all(means[f].get(x, -math.inf) >= floors[f] for f in spec.floors)
        candidates.append(row)
    eligible = [c for c in candidates if c["eligible"]]
    best = max(eligible, key=lambda c: c[spec.maximise]) if eligible else None
    if best:
        kept = ", ".join(f"{f} {best[f]:.4g} >= {floors[f]:.4g}" for f in spec.floors)
        reason = f"{spec.key} = {best['x']:g}: {spec.maximise} {best[spec.maximise]:.4g}; {kept}"
        if best["x"] in (candidates[0]["x"], candidates[-1]["x"]) and len(candidates) > 2:
            reason += " (at an end of the grid: widen it to be sure the optimum is inside)"
    else:
        reason = (
            f"no {spec.key} keeps every floor ({', '.join(f'{f} >= {v:.4g}' for f, v in floors.items())})"
        )
    return {
        "value": best["x"] if best else None,
        "rule": rule,
        "floors": floors,
        "candidates": candidates,
        "reason": reason,
    }


def choice_markdown(result: dict, spec: ChoiceSpec) -> str:
    rows = [
        "| "
        + " | ".join([f"{c['x']:g}", f"{c[spec.maximise]:.4g}", *(f"{c[f]:.4g}" for f in spec.floors)])
        + f" | {'yes' if c['eligible'] else 'no'} |"
        for c in result["candidates"]
    ]
    header = [spec.key, spec.maximise, *spec.floors, "eligible"]
    return "\n".join(
        [
            "## Choice",
            "",
            f"Rule: {result['rule']}. Outcome: **{result['reason']}**.",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *rows,
            "",
        ]
    )
