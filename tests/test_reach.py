"""Every claim an experiment judges can come out either way at the seeds and points it runs
(report/reach.py), and a sweep whose claim cannot is refused before any cell runs, in one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from edgeai_repro.report.paper import load_claims
from edgeai_repro.report.reach import SYNTHETIC, grid_of, problems, seed_key
from edgeai_repro.report.stats import runs_to_reach, trials_for

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(f"{p.parent.name}/{p.stem}" for p in (ROOT / "conf" / "experiment").glob("*/*.yaml"))
# the scales a paper's claims are judged at: DeepFusion's training experiments run at tiny on a CPU
# (paper needs GPUs and hub weights) but their configured paper seeds are checked too
SCALES = ("tiny", "paper")


def _problems(compose, overrides: list[str]) -> list[str]:
    """What the sweep would refuse, for an experiment composed with `overrides`."""
    cfg = compose(overrides, return_hydra_config=True)
    paper = cfg.experiment_name.split("/")[0]
    declared = {c.id: c for c in load_claims(ROOT / "paper_results", paper)}
    spec = OmegaConf.to_container(cfg.report, resolve=True)
    return problems(spec, declared, grid_of(cfg), seed_key(cfg), cfg.scale.name)


@pytest.mark.parametrize("scale", SCALES)
def test_every_claim_of_every_experiment_can_hold_and_fail_at_its_seeds(compose, scale: str) -> None:
    """Synthetic results on each experiment's own grid (points and seeds at the scale), one world
    where each claim is clearly true and one where it is clearly false: the check must say so."""
    checked = 0
    for name in EXPERIMENTS:
        cfg = compose([f"experiment={name}", f"scale={scale}"])
        if cfg.report is None or not cfg.report.get("claims"):
            continue
        found = _problems(compose, [f"experiment={name}", f"scale={scale}"])
        assert not found, f"{name} at scale={scale}: {found}"
        checked += sum(1 for e in cfg.report.claims.values() if e["check"] in SYNTHETIC)
    assert checked >= 40  # every comparison, threshold, target and rate entry of the three papers


def test_a_rate_claim_that_cannot_hold_at_its_seeds_is_refused_in_one_sentence(compose) -> None:
    found = _problems(
        compose, ["experiment=incentive/convergence", "scale=paper", "scale.incentive.convergence_seeds=10"]
    )
    assert found == [
        "report.claims.asosa_stabilizes cannot reach held at 10 seeds x 1 points: a rate at level 0.9 needs 36 runs "
        "(36 seeds); raise scale key scale.incentive.convergence_seeds to 36 or restate the claim's level"
    ]


def test_one_sampled_seed_cannot_decide_a_comparison(compose) -> None:
    found = _problems(
        compose, ["experiment=deepfusion/transfer", "scale=tiny", "scale.deepfusion.transfer_seeds=1"]
    )
    assert (
        len(found) == 1 and "transfers_device_knowledge cannot reach held or not_held at 1 seeds" in found[0]
    )
    assert "scale.deepfusion.transfer_seeds" in found[0]


def test_the_sweep_refuses_an_unreachable_claim_before_any_cell(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeai_repro",
            "experiment=incentive/convergence",
            "scale=paper",
            "scale.incentive.convergence_seeds=10",
            f"paths.outputs={tmp_path}/o",
            f"paths.results={tmp_path}/r",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode != 0 and "error: report.claims.asosa_stabilizes cannot reach held" in out.stderr, (
        out.stderr[-2000:]
    )
    assert not (tmp_path / "o" / "cells").exists()  # nothing ran


def test_no_committed_verdict_rests_on_a_check_that_could_not_reach_the_other() -> None:
    """The docs' snapshots: every decided claim ran at its experiment's configured seeds (so the
    grid test above covers it), and a held property had the trials to bound its rate."""
    declared = {
        c.id: c
        for paper in ("aeria", "deepfusion", "incentive")
        for c in load_claims(ROOT / "paper_results", paper)
    }
    seen = 0
    for path in sorted((ROOT / "docs" / "results").glob("*/*/claims.json")):
        for entry in json.loads(path.read_text()):
            if entry["verdict"] not in {"held", "not_held"}:
                continue
            seen += 1
            claim = declared[entry["id"].split("@")[0]]
            if claim.kind == "property" and entry["verdict"] == "held":
                assert entry["n"] >= trials_for(claim.at_most), (path, entry["id"])
            if claim.kind == "rate":  # n: the runs; the other verdict needs at least runs_to_reach of them
                other = "not_held" if entry["verdict"] == "held" else "held"
                assert entry["n"] >= runs_to_reach(claim.level, other), (path, entry["id"])
            assert entry.get("multiplicity"), (path, entry["id"])
    assert seen >= 10
