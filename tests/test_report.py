"""Tables, claim checks, paper files and figures, on hand-made cell results."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.store import CellStore
from edgeai_repro.report import claims
from edgeai_repro.report.gather import gather
from edgeai_repro.report.paper import load_claims, load_table
from edgeai_repro.report.plots import bar_figure, line_figure
from edgeai_repro.report.table import aggregate, join_paper

ROOT = Path(__file__).resolve().parents[1]


def _rows() -> pd.DataFrame:
    rows = []
    for seed, (a, b) in enumerate([(10.0, 8.0), (12.0, 9.0), (14.0, 10.0)]):
        for x in (1, 2):
            rows += [
                {"n": x, "seed": seed, "method": "ours", "revenue": a * x},
                {"n": x, "seed": seed, "method": "base", "revenue": b * x},
            ]
    return pd.DataFrame(rows)


def test_aggregate_reports_mean_std_and_seed_count() -> None:
    agg = aggregate(_rows(), "n", None, ["revenue"])
    ours = agg[(agg["method"] == "ours") & (agg["x"] == 1)].iloc[0]
    assert ours["mean"] == 12.0 and ours["std"] == pytest.approx(2.0) and ours["n_seeds"] == 3
    assert ours["total"] == 36.0


def _paired_rows(rows: pd.DataFrame, x: str | None = "n") -> pd.DataFrame:
    from edgeai_repro.report.table import with_points

    return with_points(rows, x, None).assign(_point=lambda f: claims.point_labels(f))


def test_claim_checks_give_honest_verdicts() -> None:
    agg, rows = aggregate(_rows(), "n", None, ["revenue"]), _paired_rows(_rows())
    beats = lambda ours, base, **kw: claims.beats_baselines(
        agg, rows, metric="revenue", ours=ours, baselines=base, **kw
    )[0]
    assert beats("ours", ["base"]) == "held"
    assert beats("base", ["ours"]) == "not_held"
    assert beats("ours", ["absent"]) == "not_testable"
    # an ablation that only ties is not evidence for the claim
    assert beats("ours", ["ours"], ties_allowed=True) == "not_held"


def test_one_seed_is_not_testable_and_two_noisy_seeds_are_indistinguishable() -> None:
    one = pd.DataFrame(
        [
            {"n": 1, "seed": 0, "method": "ours", "revenue": 10.0},
            {"n": 1, "seed": 0, "method": "base", "revenue": 1.0},
        ]
    )
    verdict, evidence = claims.beats_baselines(
        aggregate(one, "n", None, ["revenue"]),
        _paired_rows(one),
        metric="revenue",
        ours="ours",
        baselines=["base"],
    )
    assert verdict == "not_testable" and "2 seeds" in evidence
    # ours leads by about one standard deviation of the values, with per-seed differences that disagree
    two = pd.DataFrame(
        [
            {"n": 1, "seed": s, "method": m, "revenue": v}
            for s, (a, b) in enumerate([(1.0, 0.5), (3.0, 0.5)])
            for m, v in (("ours", a), ("base", b))
        ]
    )
    verdict, evidence = claims.beats_baselines(
        aggregate(two, "n", None, ["revenue"]),
        _paired_rows(two),
        metric="revenue",
        ours="ours",
        baselines=["base"],
    )
    assert verdict == "not_held" and "indistinguishable in 1 of 1" in evidence and "n = 2" in evidence
    assert "p = 0.3" in evidence  # t = 1.5 on 1 degree of freedom


def test_paired_t_test_matches_scipy() -> None:
    from scipy import stats as sps

    from edgeai_repro.report.stats import paired

    a, b = pd.Series([3.0, 4.5, 2.0, 6.0]), pd.Series([2.0, 4.0, 2.5, 3.0])
    out = paired(a, b)
    assert out.n == 4 and out.p == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert paired(pd.Series([1.0, 2.0]), pd.Series([0.0, 1.0])).sign == 1  # the same gain on every seed


def test_magnitude_claims_are_judged_only_at_paper_scale() -> None:
    agg = aggregate(_rows(), "n", None, ["revenue"])
    spec = {"a": {"check": "near", "metric": "revenue", "method": "ours", "target": 24.0, "tol": 1.0}}
    paper = [{"id": "a", "text": "A."}]
    assert claims.evaluate(paper, spec, agg, scale="paper")[0]["verdict"] == "held"
    tiny = claims.evaluate(paper, spec, agg, scale="tiny")[0]
    assert tiny["verdict"] == "not_testable" and "cannot test a magnitude" in tiny["evidence"]


def test_a_claim_can_be_judged_again_under_a_named_setting() -> None:
    """`<id>@<setting>` gives the claim a second verdict whose text names the setting (Fig. 8's preset
    fitted to the paper), so one figure can judge a claim under several stated assumptions."""
    agg = aggregate(_rows(), "n", None, ["revenue"])
    spec = {
        "a": {"check": "near", "metric": "revenue", "method": "ours", "target": 24.0, "tol": 1.0},
        "a@strict": {"check": "near", "metric": "revenue", "method": "ours", "target": 24.0, "tol": 1e-9},
    }
    out = claims.evaluate([{"id": "a", "text": "A."}], spec, agg, scale="paper")
    assert [o["id"] for o in out] == ["a", "a@strict"] and out[1]["claim"] == "A. [judged under strict]"
    assert out[0]["verdict"] == "held"


def test_competitive_ratio_is_a_worst_case() -> None:
    rows = _paired_rows(
        pd.DataFrame(
            [
                {"n": 1, "seed": s, "method": "ours", "revenue_over_f2_min": v}
                for s, v in enumerate([0.6, 0.25, 0.5])
            ]
        )
    )
    agg = aggregate(rows, "n", None, ["revenue_over_f2_min"])
    assert (
        claims.competitive_ratio(agg, rows, ours="ours", bound=3.39, source="s")[0] == "not_held"
    )  # 0.25 < 0.295
    assert claims.competitive_ratio(agg, rows, ours="ours", bound=4.0, source="s")[0] == "held"


def test_every_paper_claim_gets_a_verdict() -> None:
    paper = [{"id": "a", "text": "A."}, {"id": "b", "text": "B.", "tested_by": "x"}]
    agg = aggregate(_rows(), "n", None, ["revenue"])
    out = claims.evaluate(
        paper,
        {"a": {"check": "beats_baselines", "metric": "revenue", "ours": "ours", "baselines": ["base"]}},
        agg,
        _paired_rows(_rows()),
    )
    assert [c["verdict"] for c in out] == ["held", "not_testable"]


@pytest.mark.parametrize(
    "report,fragment",
    [
        ({"metrics": ["m"], "colour": "red"}, "report.colour"),
        (
            {"metrics": ["m"], "claims": {"no_such_claim": {"check": "vague", "reason": "r"}}},
            "report.claims.no_such_claim",
        ),
        ({"metrics": ["m"], "claims": {"truthful": {"check": "no_such_check"}}}, "check='no_such_check'"),
        (
            {
                "metrics": ["m"],
                "claims": {
                    "truthful": {"check": "zero_violations", "ours": "aeria", "metrics": ["x"], "metirc": "y"}
                },
            },
            "passes metirc",
        ),
        (
            {"metrics": ["m"], "claims": {"truthful": {"check": "zero_violations", "ours": "aeria"}}},
            "missing metrics",
        ),
    ],
)
def test_report_blocks_are_typed(compose, report: dict, fragment: str) -> None:
    from omegaconf import OmegaConf

    from edgeai_repro.report.schema import validate_report

    cfg = compose(["experiment=aeria/properties"])
    OmegaConf.set_struct(cfg, False)
    cfg.report = report
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        validate_report(cfg)


def test_every_experiment_report_validates(compose) -> None:
    from edgeai_repro.report.schema import validate_report

    for path in sorted((ROOT / "conf" / "experiment").glob("*/*.yaml")):
        validate_report(compose([f"experiment={path.parent.name}/{path.stem}"]))


def test_paper_values_join_with_their_provenance(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "t.csv").write_text("x,method,metric,value,provenance\n1,ours,revenue,11.5,printed\n")
    agg = join_paper(aggregate(_rows(), "n", None, ["revenue"]), load_table(tmp_path, "p", "t"))
    hit = agg[(agg["method"] == "ours") & (agg["x"] == 1)].iloc[0]
    assert hit["paper_value"] == 11.5 and hit["provenance"] == "printed"
    assert math.isnan(agg[agg["method"] == "base"].iloc[0]["paper_value"])


def test_bad_paper_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "t.csv").write_text("x,value,provenance\n1,2,made-up\n")
    with pytest.raises(ConfigError, match="provenance"):
        load_table(tmp_path, "p", "t")
    (tmp_path / "p" / "claims.yaml").write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="claims"):
        load_claims(tmp_path, "p")


def test_aeria_paper_results_hold_only_claims() -> None:
    claims_ = load_claims(ROOT / "paper_results", "aeria")
    assert claims_ and all(c["provenance"] == "claim-only" for c in claims_)
    assert not list((ROOT / "paper_results" / "aeria").glob("*.csv"))  # the abstract prints no number


def test_gather_lists_failed_and_missing_cells(tmp_path: Path) -> None:
    store = CellStore(tmp_path, "p")
    store.save("a", {"seed": 0, "scale": "smoke", "records": [{"method": "m", "v": 1.0}]})
    store.save_failure("b", {"error": "boom"})
    manifest = {"cells": [{"cell_id": c, "overrides": [], "coords": {}} for c in "abc"]}
    g = gather(manifest, store)
    assert (
        len(g.rows) == 1
        and [c["cell_id"] for c in g.failed] == ["b"]
        and [c["cell_id"] for c in g.missing] == ["c"]
    )


def test_figures_are_drawn_from_the_table(tmp_path: Path) -> None:
    agg = aggregate(_rows(), "n", None, ["revenue"])
    assert line_figure(agg, "revenue", tmp_path / "r.png", "n", "revenue", "t").stat().st_size > 1000
    assert bar_figure(agg, ["revenue"], tmp_path / "b.png", "t").stat().st_size > 1000


def test_paired_seeds_detect_a_consistent_small_gain() -> None:
    # Seeds differ a lot, but ours beats base by 0.1 on every seed (same instances: common random numbers).
    rows = pd.DataFrame(
        [
            {"n": 1, "seed": s, "method": m, "revenue": 10.0 * s + (0.1 if m == "ours" else 0.0)}
            for s in range(5)
            for m in ("ours", "base")
        ]
    )
    agg = aggregate(rows, "n", None, ["revenue"])
    assert (
        claims.beats_baselines(agg, _paired_rows(rows), metric="revenue", ours="ours", baselines=["base"])[0]
        == "held"
    )
    # without per-seed values there is nothing to pair: not testable rather than a guess
    assert (
        claims.beats_baselines(agg, None, metric="revenue", ours="ours", baselines=["base"])[0]
        == "not_testable"
    )
