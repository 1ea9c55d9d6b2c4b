"""The verdict engine's error rates, measured: simulated data with no true effect over many cells
must give `not_held` (for a claim that holds on the boundary) or `held` (for one that does not) at
most about ALPHA = 2.5% of the time, and a true effect of a stated size must give `held` at the power
the engine itself predicts. One test per kind, each through the project's own `evaluate()`.

Simulation noise: with S = SIMS = 120 simulations a true rate r is observed within r +- 3 sqrt(r (1 - r) / S);
the bars below (7% for a 2.5% error; +-0.12 around a predicted 80% power) leave that margin."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from edgeai_repro.report import claims
from edgeai_repro.report.paper import ClaimSpec, Margin
from edgeai_repro.report.stats import ALPHA, power_one_sided

SIMS = 120
ERROR_BAR = 0.07  # the bar: null over 16 cells and 5 seeds -> not_held <= 7%
CELLS, SEEDS = 16, 5


def _paired_rows(diff: np.ndarray, base: float = 100.0) -> pd.DataFrame:
    """Cells x seeds of ours - base = diff, on a baseline that varies by seed and cell (common
    random numbers: the pairing removes it)."""
    cells, seeds = diff.shape
    rng = np.random.default_rng(int(abs(diff).sum() * 1e6) % 2**32)
    shared = base + rng.normal(0, 5, size=(cells, seeds))
    rows = []
    for c in range(cells):
        for s in range(seeds):
            rows.append({"n": c, "seed": s, "method": "base", "m": shared[c, s]})
            rows.append({"n": c, "seed": s, "method": "ours", "m": shared[c, s] + diff[c, s]})
    return pd.DataFrame(rows)


def _rate(verdicts: list[str], verdict: str) -> float:
    return sum(v == verdict for v in verdicts) / len(verdicts)


def _run(claim: ClaimSpec, entry: dict, worlds, metrics: list[str]) -> list[str]:
    return [
        claims.evaluate([claim], {"c": entry}, claims.Evidence.from_rows(rows, "n", None, metrics))[0].verdict
        for rows in worlds
    ]


COMPARE = {"check": "compare", "metric": "m", "ours": "ours", "baselines": ["base"]}


@pytest.mark.parametrize(
    ("kind", "margin", "boundary"),
    [("superiority", None, 0.0), ("non_inferiority", 0.5, -0.5), ("equivalence", 0.5, 0.5)],
)
def test_a_comparison_over_16_cells_with_no_true_violation_is_rarely_not_held(
    kind: str, margin: float | None, boundary: float
) -> None:
    """Every cell's true difference sits exactly on the claim's boundary (no difference; the margin's
    edge): the claim is true but barely, the hardest case for not_held. Before Holm, "any cell bad"
    made it not_held 36.5% of the time (superiority, 16 cells, 5 seeds)."""
    rng = np.random.default_rng(1)
    claim = ClaimSpec("c", "C.", "claim-only", kind, margin=Margin(margin, why="w") if margin else None)
    worlds = [_paired_rows(boundary + rng.normal(0, 1, size=(CELLS, SEEDS))) for _ in range(SIMS)]
    verdicts = _run(claim, COMPARE, worlds, ["m"])
    assert _rate(verdicts, "not_held") <= ERROR_BAR, _rate(verdicts, "not_held")
    # the other error: a claim false at the boundary is held at most ALPHA per cell (intersection-union)
    assert _rate(verdicts, "held") <= ERROR_BAR


def test_correlated_cells_keep_the_family_wise_error() -> None:
    """Cells that share a seed's luck (correlation 0.5) are covered too: Holm needs no independence."""
    rng = np.random.default_rng(2)
    claim = ClaimSpec("c", "C.", "claim-only", "superiority")
    worlds = []
    for _ in range(SIMS):
        common = rng.normal(0, 1, size=(1, SEEDS))
        worlds.append(
            _paired_rows(math.sqrt(0.5) * common + math.sqrt(0.5) * rng.normal(0, 1, size=(CELLS, SEEDS)))
        )
    assert _rate(_run(claim, COMPARE, worlds, ["m"]), "not_held") <= ERROR_BAR


def test_a_true_effect_holds_at_the_power_the_engine_predicts() -> None:
    """An effect in every cell sized so that the engine's own power model predicts held 80% of the
    time at 16 cells and 5 seeds (every cell's one-sided test at 2.5%: per-cell power 0.8^(1/16));
    the simulated held rate must match it. Before, a true +0.2 sd effect was not_held 13.5% of the
    time; here not_held must stay under ALPHA's bar."""
    per_cell = 0.8 ** (1 / CELLS)
    lo, hi = 0.0, 10.0  # the standardised effect with that per-cell power, by bisection
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if power_one_sided(mid, 1.0, SEEDS, ALPHA) < per_cell else (lo, mid)
    effect = hi
    rng = np.random.default_rng(3)
    claim = ClaimSpec("c", "C.", "claim-only", "superiority")
    worlds = [_paired_rows(effect + rng.normal(0, 1, size=(CELLS, SEEDS))) for _ in range(SIMS)]
    verdicts = _run(claim, COMPARE, worlds, ["m"])
    assert abs(_rate(verdicts, "held") - 0.8) <= 0.12, (effect, _rate(verdicts, "held"))
    assert _rate(verdicts, "not_held") == 0.0
    # and the claim's own seeds-to-decide at this effect, from an inconclusive run, is near 5
    # (the engine plans with the estimate; its noise is why the docs call it a noisy plan)


def test_a_threshold_over_16_points_on_its_bound_is_rarely_not_held() -> None:
    """Before Holm: 32.5% not_held with every point's truth on the bound."""
    rng = np.random.default_rng(4)
    claim = ClaimSpec("c", "C.", "claim-only", "magnitude", at_least=1.0, why="w", judged_at="any")
    entry = {"check": "threshold", "metric": "m", "ours": "ours"}
    worlds = []
    for _ in range(SIMS):
        values = 1.0 + rng.normal(0, 1, size=(CELLS, SEEDS))
        worlds.append(
            pd.DataFrame(
                [
                    {"n": c, "seed": s, "method": "ours", "m": values[c, s]}
                    for c in range(CELLS)
                    for s in range(SEEDS)
                ]
            )
        )
    verdicts = _run(claim, entry, worlds, ["m"])
    assert _rate(verdicts, "not_held") <= ERROR_BAR and _rate(verdicts, "held") <= ERROR_BAR


def test_up_to_a_figure_is_judged_without_the_bias_of_a_maximum() -> None:
    """ "Up to 71%" with the truth exactly on 71% at every point: taking the per-seed maximum over
    noisy points made not_held 23% at n = 30 (and growing with n). Judged point by point, the
    not_held rate stays under the bar at 30 seeds, and a truth beyond the band is found."""
    rng = np.random.default_rng(5)
    claim = ClaimSpec(
        "c", "C.", "claim-only", "magnitude", target=71.0, margin=Margin(2.0, why="w"), judged_at="any"
    )
    entry = {"check": "target", "metric": "m", "method": "ours", "reduce": "max"}

    def world(truth: float, seeds: int) -> pd.DataFrame:
        values = truth + rng.normal(0, 3, size=(8, seeds))
        return pd.DataFrame(
            [{"n": c, "seed": s, "method": "ours", "m": values[c, s]} for c in range(8) for s in range(seeds)]
        )

    on_target = _run(claim, entry, [world(71.0, 30) for _ in range(SIMS // 2)], ["m"])
    assert _rate(on_target, "not_held") <= ERROR_BAR, _rate(on_target, "not_held")
    beyond = _run(claim, entry, [world(80.0, 30) for _ in range(SIMS // 4)], ["m"])
    assert _rate(beyond, "not_held") >= 0.8
    inside = _run(claim, entry, [world(71.0, 30) for _ in range(SIMS // 4)], ["m"])
    assert _rate(inside, "held") >= 0.5  # 8 points whose intervals must all stay under 73


def test_a_rate_on_its_level_is_rarely_decided_either_way() -> None:
    """A success rate exactly at the claim's level over 40 runs: not_held and held each <= the bar;
    a rate well above it holds at the power the engine predicts."""
    from edgeai_repro.report.stats import rate_power

    rng = np.random.default_rng(6)
    claim = ClaimSpec("c", "C.", "claim-only", "rate", level=0.7, why="w")
    entry = {"check": "success_rate", "metric": "m", "ours": "ours"}

    def world(rate: float, runs: int) -> pd.DataFrame:
        ok = rng.random(runs) < rate
        return pd.DataFrame([{"n": 1, "seed": s, "method": "ours", "m": float(v)} for s, v in enumerate(ok)])

    at = _run(claim, entry, [world(0.7, 40) for _ in range(SIMS)], ["m"])
    assert _rate(at, "not_held") <= ERROR_BAR and _rate(at, "held") <= ERROR_BAR
    predicted = rate_power(0.95, 40, 0.7, "held")
    above = _run(claim, entry, [world(0.95, 40) for _ in range(SIMS)], ["m"])
    assert abs(_rate(above, "held") - predicted) <= 0.12, (predicted, _rate(above, "held"))


def test_a_property_with_violations_at_its_tolerance_is_rarely_held() -> None:
    """A property violated at exactly its tolerated rate (1%) is held (no counterexample found) at
    most 5% of the time (the one-sided 95% bound), once there are enough trials to hold at all."""
    rng = np.random.default_rng(7)
    claim = ClaimSpec("c", "C.", "claim-only", "property", at_most=0.01, why="w")
    entry = {"check": "violations", "ours": "ours", "parts": {"p": ["v", "t"]}}

    def world(rate: float) -> pd.DataFrame:
        trials = 100
        return pd.DataFrame(
            [
                {
                    "n": 1,
                    "seed": s,
                    "method": "ours",
                    "v": float(rng.binomial(trials, rate)),
                    "t": float(trials),
                }
                for s in range(3)
            ]
        )

    verdicts = _run(claim, entry, [world(0.01) for _ in range(SIMS)], ["v", "t"])
    assert _rate(verdicts, "held") <= 0.05 + 0.045
    clean = _run(claim, entry, [world(0.0) for _ in range(5)], ["v", "t"])
    assert set(clean) == {"held"}  # 300 trials without a violation bound the rate below 1%
