"""The quick start, CI and the two dependency lists stay in step."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SETUP = "bash scripts/setup.sh"
TEST_COMMAND = "bash scripts/setup.sh && .venv/bin/python -m pytest"


def _name(req: str) -> str:
    return re.split(r"[<>=!\[ ]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]} | {
        _name(r) for r in project["optional-dependencies"]["dev"]
    }
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_name(r) for r in pip if not r.startswith("-e")}
    assert listed == wanted


def test_readme_quick_start_and_ci_use_the_same_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"{SETUP} && .venv/bin/edgeai-repro experiment=aeria/revenue_vs_users" in readme
    assert TEST_COMMAND in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert SETUP in ci and ".venv/bin/python -m pytest" in ci  # the same setup and test command ...
    assert ".venv/bin/ruff check" in ci and ".venv/bin/ruff format --check" in ci  # ... after lint and format


def test_readme_fits_on_a_screen_and_every_experiment_has_a_manual_section() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
    for path in (ROOT / "conf" / "experiment").glob("*/*.yaml"):
        manual = (ROOT / "docs" / f"{path.parent.name}.md").read_text()
        assert f"experiment={path.parent.name}/{path.stem}" in manual, path
