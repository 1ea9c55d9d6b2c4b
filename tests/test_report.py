"""Tables, verdicts, paper files and figures, on hand-made cell results.

Every check kind is proven able to hold, to fail and to stay undecided on synthetic cell results:
a clear effect, a clear opposite effect and pure noise over 2 seeds (PROOFS below); a second test
walks every claim of every claims.yaml and fails if its kind lacks that proof."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.store import CellStore
from edgeai_repro.report import claims
from edgeai_repro.report.gather import gather
from edgeai_repro.report.paper import ClaimSpec, Margin, load_claims, load_table
from edgeai_repro.report.plots import bar_figure, line_figure
from edgeai_repro.report.stats import clopper_pearson, estimate, paired, violation_bound
from edgeai_repro.report.table import aggregate, join_paper

ROOT = Path(__file__).resolve().parents[1]


def frame(values: dict[str, list[float]], metric: str = "m", points: tuple = (1,)) -> pd.DataFrame:
    """Cell rows: method -> per-seed values (the same at every point, plus the point index)."""
    return pd.DataFrame(
        [
            {"n": x, "seed": s, "method": m, metric: v + 0.0 * x}
            for m, vs in values.items()
            for s, v in enumerate(vs)
            for x in points
        ]
    )


def evidence(rows: pd.DataFrame, metrics: list[str], scale: str = "paper") -> claims.Evidence:
    return claims.Evidence.from_rows(rows, "n", None, metrics, scale)


def judge(
    check: str, kind: str, rows: pd.DataFrame, metrics: list[str], params: dict, **spec
) -> claims.Verdict:
    claim = ClaimSpec(id="c", text="C.", provenance="claim-only", kind=kind, **spec)
    return claims.evaluate([claim], {"c": {"check": check, **params}}, evidence(rows, metrics))[0]


CLEAR = [5.0, 5.2]  # ours - base, per seed: far above every boundary
OPPOSITE = [-5.0, -5.2]
NOISE = [4.0, -4.0]  # a mean of 0 with a huge spread over 2 seeds


def diffs(d: list[float]) -> pd.DataFrame:
    return frame({"ours": [10 + x for x in d], "base": [10.0, 10.0]})


# kind -> (check, params, spec, rows for held, rows for not_held, rows for inconclusive)
PROOFS = {
    "superiority": (
        "compare",
        {"metric": "m", "ours": "ours", "baselines": ["base"]},
        {},
        diffs(CLEAR),
        diffs(OPPOSITE),
        diffs(NOISE),
    ),
    "non_inferiority": (
        "compare",
        {"metric": "m", "ours": "ours", "baselines": ["base"]},
        {"margin": Margin(1.0, why="w")},
        diffs([0.1, 0.2]),
        diffs(OPPOSITE),
        diffs(NOISE),
    ),
    "equivalence": (
        "compare",
        {"metric": "m", "ours": "ours", "baselines": ["base"]},
        {"margin": Margin(1.0, why="w")},
        diffs([0.1, 0.2]),
        diffs(CLEAR),
        diffs(NOISE),
    ),
    "magnitude": (
        "threshold",
        {"metric": "m", "ours": "ours"},
        {"at_least": 1.0, "why": "w"},
        frame({"ours": [5.0, 5.2]}),
        frame({"ours": [-5.0, -5.2]}),
        frame({"ours": [5.0, -3.0]}),
    ),
    "magnitude/target": (
        "target",
        {"metric": "m", "method": "ours"},
        {"target": 71.0, "margin": Margin(5.0, why="w")},
        frame({"ours": [70.0, 70.5]}),
        frame({"ours": [95.0, 96.0]}),
        frame({"ours": [50.0, 90.0]}),
    ),
    "rate": (
        "success_rate",
        {"metric": "m", "ours": "ours"},
        {"level": 0.5, "why": "w"},
        frame({"ours": [1.0] * 12}),
        frame({"ours": [0.0] * 12}),
        frame({"ours": [1.0, 0.0]}),
    ),
}


@pytest.mark.parametrize("name", list(PROOFS))
def test_each_check_kind_can_hold_fail_and_stay_undecided(name: str) -> None:
    check, params, spec, held, failed, noise = PROOFS[name]
    kind = name.split("/")[0]
    metrics = ["m"]
    assert judge(check, kind, held, metrics, params, **spec).verdict == "held"
    assert judge(check, kind, failed, metrics, params, **spec).verdict == "not_held"
    undecided = judge(check, kind, noise, metrics, params, **spec)
    assert undecided.verdict == "inconclusive" and set(undecided.seeds_needed) == {"held", "not_held"}
    assert undecided.multiplicity
    one_seed = judge(check, kind, held[held["seed"] == 0], metrics, params, **spec)
    assert one_seed.verdict == "not_testable", one_seed.evidence


def test_a_property_holds_with_no_counterexample_and_fails_on_one() -> None:
    def rows(bad: float) -> pd.DataFrame:
        return pd.DataFrame([{"n": 1, "seed": s, "method": "ours", "v": bad, "t": 100.0} for s in range(2)])

    params = {"ours": "ours", "parts": {"misreports": ["v", "t"]}}
    held = judge("violations", "property", rows(0.0), ["v", "t"], params, at_most=0.05, why="w")
    assert held.verdict == "held" and "none in 200 trials" in held.evidence and "0.015" in held.evidence
    # zero violations in 200 trials bound the rate by 0.015, not by 0.01: too few to hold at 1%
    short = judge("violations", "property", rows(0.0), ["v", "t"], params, at_most=0.01, why="w")
    assert short.verdict == "inconclusive" and short.seeds_needed == {"held": 3, "not_held": None}
    ev = evidence(rows(1.0), ["v", "t"])
    ev.counterexamples = {"ours": {"v": "user 3 bids 2x and gains"}}
    out = claims.evaluate(
        [ClaimSpec("c", "C.", "claim-only", "property", at_most=0.05, why="w")],
        {"c": {"check": "violations", **params}},
        ev,
    )[0]
    assert out.verdict == "not_held" and "first: user 3 bids 2x" in out.evidence
    missing = {"ours": "ours", "parts": {"misreports": ["v", "t"], "profiles": ["w", "t"]}}
    assert judge("violations", "property", rows(0.0), ["v", "t"], missing, at_most=0.05, why="w").verdict == (
        "not_testable"
    )


def test_every_claim_kind_in_paper_results_has_its_proof() -> None:
    proven = {name.split("/")[0] for name in PROOFS} | {"property", "vague"}
    for paper in ("aeria", "deepfusion", "incentive"):
        for claim in load_claims(ROOT / "paper_results", paper):
            assert claim.kind in proven, f"{paper}/{claim.id}: no proof for kind {claim.kind}"


def test_every_check_an_experiment_uses_serves_its_claims_kind(compose) -> None:
    from edgeai_repro.report.schema import validate_report

    for path in sorted((ROOT / "conf" / "experiment").glob("*/*.yaml")):
        validate_report(compose([f"experiment={path.parent.name}/{path.stem}"]))


def test_not_significantly_worse_is_not_held() -> None:
    """Twice as bad on both seeds but noisy (a p-value of 0.16) used to leave a non-inferiority claim
    held: now the interval reaches past the margin, so it is inconclusive, with the seeds needed."""
    rows = frame({"ours": [2.0, 4.4], "base": [1.0, 2.0]})
    out = judge(
        "compare",
        "non_inferiority",
        rows,
        ["m"],
        {"metric": "m", "ours": "ours", "baselines": ["base"], "lower_is_better": True},
        margin=Margin(0.05, relative=True, why="w"),
    )
    assert out.verdict == "inconclusive" and out.seeds_needed is not None and out.ci[0] < -0.075 < out.ci[1]


def test_inconclusive_verdicts_say_what_would_decide_them() -> None:
    """Seeds to decide are a power statement: at the estimated effect and spread, the seeds at which
    the test reaches each verdict 80% of the time (checked against scipy's noncentral t), for every
    item at once; a direction the estimate cannot reach says so; never planned from 2 seeds."""
    from scipy import stats as sps

    ev = evidence(frame({"ours": [11.0, 10.0, 12.5, 10.9], "base": [10.0] * 4}), ["m"])
    ev.seed_wall_s = 60.0
    out = claims.evaluate(
        [ClaimSpec("c", "C.", "claim-only", "superiority")],
        {"c": {"check": "compare", "metric": "m", "ours": "ours", "baselines": ["base"]}},
        ev,
    )[0]
    d = pd.Series([1.0, 0.0, 2.5, 0.9])
    effect = d.mean() / d.std()

    def power(n: int) -> float:
        return sps.nct.sf(sps.t.ppf(0.975, n - 1), n - 1, effect * math.sqrt(n))

    n = out.seeds_needed["held"]
    assert out.verdict == "inconclusive" and power(n) >= 0.8 > power(n - 1), (n, out.evidence)
    assert (
        out.seeds_needed["not_held"] is None
        and "not_held would need an estimate on the bad side" in out.evidence
    )
    assert f"about {n} seeds to reach held" in out.evidence and "noisy estimates from 4 seeds" in out.evidence
    assert out.wall_needed_s["held"] == (n - 4) * 60.0 and out.wall_needed_s["not_held"] is None
    # two seeds: too few to plan anything
    two = judge(
        "compare",
        "superiority",
        diffs([1.0, 3.0]),
        ["m"],
        {"metric": "m", "ours": "ours", "baselines": ["base"]},
    )
    assert two.verdict == "inconclusive" and two.seeds_needed == {"held": None, "not_held": None}
    assert "run at least 3 seeds" in two.evidence and "boundary" not in two.evidence


def test_estimates_match_the_t_interval_and_exact_values_have_zero_width() -> None:
    from scipy import stats as sps

    xs = [3.0, 4.5, 2.0, 6.0]
    est = estimate(xs)
    half = sps.t.ppf(0.975, 3) * pd.Series(xs).std() / 2
    assert est.low == pytest.approx(sum(xs) / 4 - half) and est.high == pytest.approx(sum(xs) / 4 + half)
    # sampled with zero spread: no t-interval; the sign test's interval (the point) from 6 seeds on
    assert not estimate([1.0, 1.0, 1.0]).testable and estimate([1.0] * 6).ci() == [1.0, 1.0]
    assert estimate([1.0, 1.0, 1.0], exact=True).ci() == [1.0, 1.0]  # declared deterministic
    assert not estimate([1.0]).testable and estimate([1.0], exact=True).ci() == [1.0, 1.0]
    assert estimate([1.0], exact=True).testable  # a computed value is judged from one run
    assert paired(pd.Series([1.0, 2.0]), pd.Series([0.0, 1.0])).mean == 1.0
    assert paired(pd.Series([1.0, 2.0]), pd.Series([2.0, 3.0]), lower_is_better=True).mean == 1.0


def test_rates_and_properties_use_exact_intervals() -> None:
    low, high = clopper_pearson(0, 10)
    assert low == 0 and high == pytest.approx(0.3085, abs=1e-3)
    assert violation_bound(1000) == pytest.approx(3 / 1000, rel=0.01)  # the rule of three


def test_magnitude_claims_are_judged_only_where_their_scale_is() -> None:
    claim = ClaimSpec(
        "c", "C.", "printed", "magnitude", target=10.0, margin=Margin(1.0, why="w"), judged_at="paper"
    )
    spec = {"c": {"check": "target", "metric": "m", "method": "ours"}}
    rows = frame({"ours": [10.0, 10.1]})
    assert claims.evaluate([claim], spec, evidence(rows, ["m"], "paper"))[0].verdict == "held"
    tiny = claims.evaluate([claim], spec, evidence(rows, ["m"], "tiny"))[0]
    assert tiny.verdict == "not_testable" and "scale=paper only" in tiny.evidence


def test_a_claim_can_be_judged_again_under_a_named_setting() -> None:
    claim = ClaimSpec("a", "A.", "printed", "magnitude", target=10.0, margin=Margin(1.0, why="w"))
    spec = {
        "a": {"check": "target", "metric": "m", "method": "ours"},
        "a@strict": {"check": "target", "metric": "m", "method": "other"},
    }
    rows = frame({"ours": [10.0, 10.1], "other": [20.0, 20.3]})
    out = claims.evaluate([claim], spec, evidence(rows, ["m"]))
    assert [o.id for o in out] == ["a", "a@strict"] and out[1].claim == "A. [judged under strict]"
    assert [o.verdict for o in out] == ["held", "not_held"] and out[1].setting["preset"] == "strict"


def test_a_clustering_that_recovers_what_the_partition_allows_holds() -> None:
    """Purity has a floor (chance) and a ceiling (what K clusters per type can reach on the partition):
    judged on (purity - chance) / (best - chance), a perfect clustering holds the claim."""
    claim = ClaimSpec("c", "C.", "claim-only", "magnitude", level=0.5, why="w", judged_at="any")
    rows = pd.DataFrame(
        [
            {"n": 1, "seed": s, "method": "ours", "p": best, "ch": 0.5, "best": best}
            for s, best in enumerate([0.69, 0.875, 0.7, 0.8, 0.75, 0.9])
        ]
    )
    spec = {
        "c": {
            "check": "threshold",
            "metric": "p",
            "ours": "ours",
            "normalise": {"chance": "ch", "best": "best"},
        }
    }
    assert claims.evaluate([claim], spec, evidence(rows, ["p", "ch", "best"]))[0].verdict == "held"


def test_every_paper_claim_gets_a_typed_verdict() -> None:
    paper = [
        ClaimSpec("a", "A.", "claim-only", "superiority"),
        ClaimSpec("b", "B.", "claim-only", "vague", tested_by="x"),
    ]
    out = claims.evaluate(
        paper,
        {"a": {"check": "compare", "metric": "m", "ours": "ours", "baselines": ["base"]}},
        evidence(diffs(CLEAR), ["m"]),
    )
    assert [c.verdict for c in out] == ["held", "not_testable"]
    for entry in (c.as_json() for c in out):
        claims.check_entry(entry)
        assert {"claim", "id", "kind", "verdict", "evidence", "n", "setting"} <= set(entry)
    assert out[0].ci is not None and out[0].estimate == pytest.approx(5.1)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("- {id: a, text: A., provenance: claim-only, kind: strongest}", "kind 'strongest'"),
        ("- {id: a, text: A., provenance: claim-only, kind: non_inferiority}", "needs a margin"),
        (
            "- {id: a, text: A., provenance: claim-only, kind: equivalence, margin: {value: -0.1, why: w}}",
            "must be a positive number",
        ),
        ("- {id: a, text: A., provenance: claim-only, kind: rate}", "needs level"),
        ("- {id: a, text: A., provenance: printed, kind: magnitude, target: 5}", "needs a margin"),
    ],
)
def test_a_bad_claims_file_stops_with_one_line_naming_the_claim(
    tmp_path: Path, text: str, fragment: str
) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "claims.yaml").write_text("claims:\n  " + text + "\n")
    with pytest.raises(ConfigError, match=fragment) as err:
        load_claims(tmp_path, "p")
    assert "claim 'a'" in str(err.value) and "\n" not in str(err.value)


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
                "claims": {"truthful": {"check": "violations", "ours": "a", "parts": {}, "x": 1}},
            },
            "passes x",
        ),
        (
            {"metrics": ["m"], "claims": {"truthful": {"check": "violations", "ours": "aeria"}}},
            "missing parts",
        ),
        (
            {"metrics": ["m"], "claims": {"truthful": {"check": "compare", "ours": "a", "baselines": ["b"]}}},
            "cannot judge a property claim",
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


def test_paper_values_join_with_their_provenance(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "t.csv").write_text("x,method,metric,value,provenance\n1,ours,m,11.5,printed\n")
    agg = join_paper(aggregate(diffs(CLEAR), "n", None, ["m"]), load_table(tmp_path, "p", "t"))
    hit = agg[(agg["method"] == "ours") & (agg["x"] == 1)].iloc[0]
    assert hit["paper_value"] == 11.5 and hit["provenance"] == "printed"
    assert math.isnan(agg[agg["method"] == "base"].iloc[0]["paper_value"])


def test_paper_values_are_shown_apart_when_the_setting_is_not_the_papers(tmp_path: Path) -> None:
    """A cell on other data never carries the paper's number: the paper's table is shown beside ours,
    labelled with its setting, and the orderings are compared in words."""
    from edgeai_repro.report.table import paper_beside_markdown

    printed = pd.DataFrame(
        [
            {"panel": "", "x": 1, "method": m, "metric": "m", "value": v, "provenance": "printed"}
            for m, v in (("ours", 1.0), ("base", 2.0))
        ]
    )
    agg = aggregate(diffs(CLEAR), "n", None, ["m"]).assign(panel="")
    text = paper_beside_markdown(
        agg, printed, "MMedBench, Qwen-MoE", {"scale": "tiny", "inputs": "tiny models, synthetic data"}, ["m"]
    )
    assert "in its own setting (MMedBench, Qwen-MoE)" in text and "not comparable" in text
    assert (
        "our best method is the paper's at 0 of 1 points" in text
    )  # ours is better: higher values, m lower-is-better


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
    assert claims_ and all(c.provenance == "claim-only" for c in claims_)
    assert not list((ROOT / "paper_results" / "aeria").glob("*.csv"))  # the abstract prints no number


def test_gather_lists_failed_and_missing_cells_and_the_setting(tmp_path: Path) -> None:
    store = CellStore(tmp_path, "p")
    store.save(
        "a",
        {
            "seed": 0,
            "scale": "smoke",
            "paper": "p",
            "wall_s": 2.0,
            "records": [{"method": "m", "v": 1.0}],
            "config": {"p": {"data": {"source": "synthetic"}}},
        },
    )
    store.save_failure("b", {"error": "boom"})
    manifest = {"cells": [{"cell_id": c, "overrides": [], "coords": {}} for c in "abc"]}
    g = gather(manifest, store)
    assert (
        len(g.rows) == 1
        and [c["cell_id"] for c in g.failed] == ["b"]
        and [c["cell_id"] for c in g.missing] == ["c"]
    )
    assert g.sources == {"synthetic data"} and not g.paper_setting and g.seed_wall_s == {0: 2.0}


def test_figures_are_drawn_from_the_table(tmp_path: Path) -> None:
    agg = aggregate(diffs(CLEAR), "n", None, ["m"])
    assert line_figure(agg, "m", tmp_path / "r.png", "n", "m", "t").stat().st_size > 1000
    assert bar_figure(agg, ["m"], tmp_path / "b.png", "t").stat().st_size > 1000


def test_paired_seeds_detect_a_consistent_small_gain() -> None:
    # Seeds differ a lot, but ours beats base by 0.1 on every seed (same instances: common random
    # numbers). The difference has zero spread: sampled, not exact, so it is judged by a sign test,
    # which needs 6 seeds all on one side (0.5^6 < 2.5%); at 5 there is no interval yet.
    def rows_of(seeds: int) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"n": 1, "seed": s, "method": m, "m": 10.0 * s + (0.1 if m == "ours" else 0.0)}
                for s in range(seeds)
                for m in ("ours", "base")
            ]
        )

    params = {"metric": "m", "ours": "ours", "baselines": ["base"]}
    five = judge("compare", "superiority", rows_of(5), ["m"], params)
    assert five.verdict == "not_testable" and "zero spread over 5 sampled seeds" in five.evidence
    rows = rows_of(6)
    assert (
        judge(
            "compare", "superiority", rows, ["m"], {"metric": "m", "ours": "ours", "baselines": ["base"]}
        ).verdict
        == "held"
    )


def test_claims_json_round_trips_the_typed_fields(tmp_path: Path) -> None:
    out = judge(
        "compare", "superiority", diffs(NOISE), ["m"], {"metric": "m", "ours": "ours", "baselines": ["base"]}
    )
    entry = json.loads(json.dumps(out.as_json()))
    claims.check_entry(entry)
    assert entry["verdict"] == "inconclusive" and "seeds_needed" in entry and len(entry["ci"]) == 2


def test_a_threshold_on_several_metrics_holds_only_when_each_clears_the_bound() -> None:
    """ "DRL finds the optimal strategy" is judged on the worst LMO's gap and on the exploitability:
    one of them above the bound is enough to fail the claim."""
    claim = ClaimSpec("c", "C.", "claim-only", "magnitude", at_most=5.0, why="w", judged_at="any")
    spec = {"c": {"check": "threshold", "metric": ["gap", "exploit"], "ours": "ours"}}

    def rows(gap: list[float], exploit: list[float]) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"n": 1, "seed": s, "method": "ours", "gap": g, "exploit": e}
                for s, (g, e) in enumerate(zip(gap, exploit, strict=True))
            ]
        )

    def verdict(r: pd.DataFrame) -> claims.Verdict:
        return claims.evaluate([claim], spec, evidence(r, ["gap", "exploit"]))[0]

    assert verdict(rows([1.0, 1.1, 0.9], [0.5, 0.6, 0.4])).verdict == "held"
    failed = verdict(rows([1.0, 1.1, 0.9], [9.0, 9.5, 9.2]))
    assert failed.verdict == "not_held" and "exploit" in failed.evidence


@pytest.mark.parametrize(("small", "large", "verdict"), [(3.0, 1.1, "held"), (1.0, 0.5, "not_held")])
def test_a_ratio_range_of_computed_values_is_judged_from_one_run(
    small: float, large: float, verdict: str
) -> None:
    """Fig. 7's memory model has no seed: its one value per model is the quantity, so "3.3x to 9.3x"
    is judged on it (it was not_testable, 'run more seeds', which would print the same numbers)."""
    rows = pd.DataFrame(
        [
            {"n": "fedjets_qwen_moe", "seed": 0, "method": "fedjets", "peak": 10.0},
            {"n": "gpt2", "seed": 0, "method": "deepfusion", "peak": small},
            {"n": "bloom", "seed": 0, "method": "deepfusion", "peak": large},
        ]
    )
    claim = ClaimSpec(
        id="c",
        text="C.",
        provenance="claim-only",
        kind="magnitude",
        range=(3.3, 9.3),
        margin=Margin(0.25, relative=True, why="w"),
    )
    params = {"check": "ratio_range", "metric": "peak", "numerator": "fedjets_qwen_moe", "exact": True}
    out = claims.evaluate([claim], {"c": params}, evidence(rows, ["peak"]))[0]
    assert out.verdict == verdict, out.evidence


def test_a_swept_key_the_report_does_not_show_splits_the_table_instead_of_being_averaged() -> None:
    """Two settings of one method at one point are not two seeds: a key the sweep varies but the
    report neither panels nor puts on x becomes a panel (the build adds it and says so)."""
    from edgeai_repro.report.table import unshown_keys

    rows = pd.DataFrame(
        [
            {"n": 1, "seed": s, "method": "ours", "avg": a, "other": "same", "m": float(a)}
            for s in (0, 1)
            for a in (False, True)
        ]
    )
    assert unshown_keys(rows, ["n", "seed", "avg", "other"], "n", None) == ["avg"]
    assert unshown_keys(rows, ["n", "seed", "avg"], "n", "avg") == []
    one = rows[rows["avg"]]
    assert unshown_keys(one, ["n", "seed", "avg"], "n", None) == []
    by_method = rows.assign(method=rows["avg"].map({False: "a", True: "b"}))  # a method group swept
    assert unshown_keys(by_method, ["n", "seed", "avg"], "n", None) == []


def test_a_table_says_when_its_cells_ran_under_different_versions() -> None:
    """Cells stay reusable across a lock refresh (their identity has no versions), so the report
    names the packages whose versions differ between a table's cells, and says nothing when none do."""
    from edgeai_repro.core.provenance import differing, provenance, version_sets

    now = provenance()
    assert now["commit"] and now["versions"]["python"] and now["versions"]["torch"]
    same = version_sets([now, now, now])
    assert (
        same == [{"versions": now["versions"], "lock": now["lock"], "cells": 3}] and differing(same) is None
    )
    older = {**now, "versions": {**now["versions"], "peft": "0.21.2"}, "lock": "0" * 64}
    mixed = version_sets([now, older, now, None])
    assert [e["cells"] for e in mixed] == [2, 1, 1]
    sentence = differing(mixed)
    assert f"peft 0.21.2, {now['versions']['peft']}" in sentence and "1 cells computed before" in sentence
    assert "torch" not in sentence and sentence.count(". ") == 0


def test_the_consensus_base_protocol_picks_the_best_eligible_value() -> None:
    """report.choice: the x maximising one metric among those whose other metric keeps at least a
    fraction of its value at the reference x; an optimum at the end of the grid is flagged."""
    from edgeai_repro.report.choice import ChoiceSpec, choose

    rows = []
    for x, gain, worst in [
        (1.5, 0.9, 0.001),
        (2.0, 0.8, 0.004),
        (4.0, 0.6, 0.005),
        (5.357, 0.5, 0.005),
        (8.0, 0.4, 0.006),
    ]:
        rows += [
            {"panel": "", "x": x, "method": "core", "metric": "gain", "mean": gain},
            {"panel": "", "x": x, "method": "core", "metric": "worst", "mean": worst},
        ]
    agg = pd.DataFrame(rows)
    spec = ChoiceSpec("c", "core", "gain", ["worst"], 5.357, 0.9)
    picked = choose(agg, spec)
    assert picked["value"] == 4.0 and picked["floors"]["worst"] == pytest.approx(0.0045)
    assert [c["eligible"] for c in picked["candidates"]] == [False, False, True, True, True]
    assert "end of the grid" not in picked["reason"]
    picked = choose(agg, ChoiceSpec("c", "core", "gain", ["worst"], 5.357, 0.1))
    assert picked["value"] == 1.5 and "end of the grid" in picked["reason"]
    with pytest.raises(ConfigError, match=r"report.choice.fraction=1.5 must lie in \(0, 1\]"):
        choose(agg, ChoiceSpec("c", "core", "gain", ["worst"], 5.357, 1.5))


def test_a_reading_of_a_claim_states_its_setting_and_excludes_its_twin() -> None:
    agg = pd.DataFrame({"method": ["auto+core", "auto+core_worstcase", "auto+rsop", "edge+core_worstcase"]})
    assert claims.expand_methods(["*", "!*+core_worstcase"], agg, exclude="auto+core") == ["auto+rsop"]


def _cells_per_row(markdown: str) -> set[int]:
    """The number of cells of every row of every Markdown table (escaped pipes are not separators)."""
    import re

    rows = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    return {len(re.split(r"(?<!\\)\|", ln.strip().strip("|"))) for ln in rows}


@pytest.mark.parametrize(
    "keys",
    [
        ["aeria.market.workload", "aeria.pricing.core.c"],  # AERIA: a workload panel and a swept base
        ["deepfusion.case", "deepfusion.kd.temperature"],  # DeepFusion: a case panel and a swept KD setting
        ["incentive.env.lmos", "incentive/method"],  # incentive: a value key and a config group
    ],
)
def test_every_swept_key_has_its_own_named_column(keys: list[str]) -> None:
    """Issue 39: a table panelled by several keys (the experiment's own and one a user swept) names
    each in its own column, every row has as many cells as the header, and the figures' panel
    titles name every key."""
    from edgeai_repro.report.table import aggregate, key_name, metric_table, panel_columns

    rows = pd.DataFrame(
        [
            {keys[0]: a, keys[1]: b, "x": n, "seed": s, "method": m, "revenue": 1.0 + s + n / 10}
            for a in ("p", "q|r")  # a value holding a pipe must not split a cell
            for b in (1.5, 2)
            for n in (10, 50)
            for s in range(2)
            for m in ("auto+core", "auto+rsop")
        ]
    )
    agg = aggregate(rows, "x", keys, ["revenue"])
    assert panel_columns(agg) == keys  # the CSV keeps one column per key
    text = metric_table(agg, "revenue", "users", False, keys=panel_columns(agg))
    header = text.splitlines()[0]
    assert all(f" {key_name(k, keys)} " in header for k in keys)
    assert _cells_per_row(text) == {len(keys) + 1 + 2}
    title = agg["panel_title"].iloc[0]
    assert title.startswith(f"{key_name(keys[0], keys)} = ") and f"{key_name(keys[1], keys)} = " in title


def test_figures_are_checked_for_legends_over_data_and_lookalike_series(tmp_path: Path) -> None:
    """Positive controls for plots.layout_problems (a legend placed on a line, two series alike) and
    a negative one: 30 series of service model x pricing rule, 4 featured, read cleanly."""
    import matplotlib.pyplot as plt

    from edgeai_repro.report import plots

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], color="C0", label="a")
    ax.plot([0, 1], [1, 0], color="C0", label="b")
    ax.legend(loc="center")
    problems = plots.layout_problems(fig)
    plt.close(fig)
    assert any("covers data" in p for p in problems) and any("a and b look the same" in p for p in problems)

    methods = [f"{s}+{r}" for s in ("auto", "edge", "device", "partition", "uniform") for r in "abcdef"]
    agg = pd.DataFrame(
        [
            {"panel": "", "x": x, "method": m, "metric": "revenue", "mean": i + x / 10, "std": 0.1}
            for i, m in enumerate(methods)
            for x in (10, 50)
        ]
    )
    plots.line_figure(agg, "revenue", tmp_path / "r.png", "users", "revenue", "t", featured=methods[:4])
    assert plots.PROBLEMS["r.png"] == []
    styles = plots.series_styles(methods, methods[:4])
    assert len({(str(s["color"]), s["linestyle"], s["marker"]) for s in styles.values()}) == len(methods)
    assert styles[methods[0]]["lw"] > styles[methods[-1]]["lw"] and styles[methods[-1]]["alpha"] < 1


def test_an_undecided_rate_says_how_many_seeds_reach_each_verdict() -> None:
    """7 of 10 runs against a level of 0.9: inconclusive; at the observed 70% about n runs confirm
    not_held 80% of the time (checked against the binomial), and held is out of reach."""
    from scipy.stats import binom

    from edgeai_repro.report.stats import clopper_pearson

    rows = frame({"ours": [1.0] * 7 + [0.0] * 3})
    out = judge("success_rate", "rate", rows, ["m"], {"metric": "m", "ours": "ours"}, level=0.9, why="w")
    n = out.seeds_needed["not_held"]
    power = lambda m: sum(binom.pmf(k, m, 0.7) for k in range(m + 1) if clopper_pearson(k, m)[1] < 0.9)
    assert out.verdict == "inconclusive" and power(n) >= 0.8 > power(n - 1), n
    assert (
        out.seeds_needed["held"] is None
        and "held would need the observed rate on the other side" in out.evidence
    )
