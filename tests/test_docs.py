"""The manuals' generated sections are the results they claim to show, and every experiment has one."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, load_script


def section_script():
    return load_script("readme_section")


MANUALS = sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("manual", MANUALS, ids=[m.name for m in MANUALS])
def test_every_generated_section_is_current(manual: Path) -> None:
    """Re-rendered from the committed snapshot (docs/results/), each section is what the manual
    says; when this fails, run `scripts/readme_section.py render` (or `update` after a re-run)."""
    script = section_script()
    text = manual.read_text()
    for name, opts, body in script.sections(text):
        assert body == script.render(name, opts), f"{manual.name}: the section of {name} is stale"


def test_every_experiment_has_a_generated_section_with_its_figures() -> None:
    script = section_script()
    shown = {name for manual in MANUALS for name, _, _ in script.sections(manual.read_text())}
    experiments = {f"{p.parent.name}/{p.stem}" for p in (ROOT / "conf" / "experiment").glob("*/*.yaml")}
    assert experiments <= shown, f"no generated section for {sorted(experiments - shown)}"
    for name in shown:
        folder = ROOT / "docs" / "results" / name
        assert {"table.csv", "claims.json", "run.json"} <= {p.name for p in folder.iterdir()}, name
    for name in shown:  # re-judging needs the per-seed rows (scripts/readme_section.py rejudge)
        assert (ROOT / "docs" / "results" / name / "seeds.csv.gz").exists(), f"{name}: no seeds.csv.gz"


def test_every_snapshot_is_judged_as_todays_engine_judges_it(tmp_path: Path) -> None:
    """Each snapshot's claims.json is what today's claims.yaml, report block and verdict engine
    conclude from its own per-seed rows: a change to any of them that moves a verdict (or its
    evidence) fails here until the snapshots are re-judged (`readme_section.py rejudge`, no cells)."""
    import json
    import shutil

    script = section_script()
    copy = tmp_path / "results"
    shutil.copytree(ROOT / "docs" / "results", copy)
    script.rejudge_snapshots([], copy)
    for path in sorted(copy.glob("*/*/claims.json")):
        committed = ROOT / "docs" / "results" / path.relative_to(copy)
        assert json.loads(path.read_text()) == json.loads(committed.read_text()), (
            f"{committed.parent.relative_to(ROOT)}: claims.json differs from today's verdicts; run "
            "scripts/readme_section.py rejudge"
        )
