"""The quick start, CI and the two dependency lists stay in step."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
SETUP = "bash scripts/setup.sh"
TEST_COMMAND = "bash scripts/setup.sh && .venv/bin/python -m pytest"


def test_lock_covers_pyproject_and_environment_yml_is_made_from_it() -> None:
    """Every dependency of pyproject.toml (core, dev and paper extras) is pinned exactly in the
    committed lock, with hashes, the lock records the requirements it was made from, and environment.yml is
    the lock's list (torch apart, pinned in one place)."""
    lockcheck = load_script("lockcheck")
    assert lockcheck.problem() is None, lockcheck.problem()
    pins = lockcheck.locked()
    wanted = {lockcheck.normalise(r) for r in lockcheck.requirements()} - {"torch"}
    assert wanted <= set(pins), wanted - set(pins)
    text = (ROOT / "requirements.lock").read_text()
    blocks = re.findall(
        r"^[A-Za-z0-9][^\n]*==[^\n]*\\\n((?:\s+--hash=sha256:[0-9a-f]{64}[^\n]*\n)+)", text, re.M
    )
    assert len(blocks) == len(pins), "every pin carries its hashes"
    assert (ROOT / "environment.yml").read_text() == lockcheck.environment_yml()
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert f"torch=={lockcheck.TORCH}" in pip and "-e ." in pip
    assert not any(name.startswith("nvidia") for name in pins)  # the CPU build's dependencies only


def test_a_stale_lock_stops_setup_before_anything_is_installed(tmp_path: Path) -> None:
    """A dependency added to pyproject.toml without refreshing the lock: setup says so in one sentence
    naming the refresh command, and creates no environment."""
    for name in ("pyproject.toml", "requirements.lock", "scripts/setup.sh", "scripts/lockcheck.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text((ROOT / name).read_text())
    project = tmp_path / "pyproject.toml"
    project.write_text(
        project.read_text().replace('"rapidfuzz>=3.9",', '"rapidfuzz>=3.9",\n    "tabulate>=0.9",')
    )
    env = {**os.environ, "PYTHON": sys.executable}
    run = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert run.returncode == 1 and not (tmp_path / ".venv").exists()
    message = run.stderr.strip()
    assert message.count("\n") == 0 and "tabulate" in message and "bash scripts/lock.sh" in message, message
    # a changed range of a package the lock already pins is caught by the header
    project.write_text((ROOT / "pyproject.toml").read_text().replace('"scipy>=1.11"', '"scipy>=1.12"'))
    run = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert run.returncode == 1 and not (tmp_path / ".venv").exists()
    assert "+scipy>=1.12, -scipy>=1.11" in run.stderr and "bash scripts/lock.sh" in run.stderr


def test_setup_refuses_an_unknown_option_in_one_sentence(tmp_path: Path) -> None:
    run = subprocess.run(["bash", str(ROOT / "scripts/setup.sh"), "--newest"], capture_output=True, text=True)
    assert run.returncode == 2 and "--latest" in run.stderr and run.stderr.count("\n") == 1


def test_this_environment_is_the_lock_unless_built_unlocked() -> None:
    """The suite run from .venv (what CI and the README run) runs on exactly the lock's versions."""
    if Path(sys.prefix).name != ".venv":
        pytest.skip(f"running from {sys.prefix}, not the locked .venv")
    assert load_script("lockcheck").installed_mismatch() == []


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


def test_bitsandbytes_imports_quietly_offline() -> None:
    """On a CPU with no network, bitsandbytes asks the hub for an optional kernel and logs two
    warnings when it cannot have it; the project's import holds them back (one INFO line of ours)."""
    code = (
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "from edgeai_repro.deepfusion.devices.training import import_bitsandbytes, qlora_runs\n"
        "import_bitsandbytes(); print(qlora_runs())"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "True", run.stderr[-2000:]
    assert "kernels-community" not in run.stderr and "publisher trust" not in run.stderr, run.stderr
