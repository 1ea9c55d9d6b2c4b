"""Shared fixtures. Tests never touch the network: hub and W&B are forced offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")

# The suite runs on every core with pytest-xdist (pyproject's addopts): the cores are split between
# the workers and the launchers they start, so torch's thread pools never oversubscribe them (two
# 2-thread pools on 2 cores run some tests ten times slower).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _share)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(_share))

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """scripts/<name>.py imported as a module (the scripts folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch(
    args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the launcher as a user would, in `cwd` (outputs/ and results/ land there). Cells run one
    after another (`hydra/launcher=basic`) unless the test names a launcher: starting joblib's
    workers costs more than most smoke sweeps, and the suite already runs tests side by side."""
    if not any(a.startswith("hydra/launcher=") for a in args) and any(
        a.startswith("experiment=") for a in args
    ):
        args = [*args, "hydra/launcher=basic"]
    if env is None and "hydra/launcher=basic" in args and not os.environ.get("EDGEAI_TESTS_FRESH"):
        # a fork of a server that imported the heavy libraries once (tests/_forklaunch.py); the
        # process-pool launchers (joblib, submitit) and changed environments start a fresh
        # interpreter, as does every launch with EDGEAI_TESTS_FRESH=1
        import _forklaunch

        return _forklaunch.run(args, cwd, timeout)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edgeai_repro", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def compose():
    """Compose a config exactly as the launcher does, in-process."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from edgeai_repro.cli import conf_dir, load_papers

    load_papers()

    def _compose(overrides: list[str], return_hydra_config: bool = False):
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            return hydra_compose("config", overrides=overrides, return_hydra_config=return_hydra_config)

    return _compose


@pytest.fixture
def df_setup(compose, tmp_path: Path):
    """A DeepFusion cell's Setup from launcher overrides, with its cell store in a temporary folder."""
    from dataclasses import replace

    from edgeai_repro.deepfusion.setup import Setup

    def make(overrides: list[str], store: Path | None = None) -> Setup:
        return replace(Setup.of(compose(overrides)), store=store or tmp_path)

    return make


def _prepared_store(
    experiment: str, factory: pytest.TempPathFactory, split: tuple[str, str] | None = None
) -> Path:
    """One finished smoke run of `experiment`, prepared once for the whole session across xdist
    workers (a file lock in their shared temp folder). With `split` (a swept key and its values in
    two groups, "a,b|c,d") the cells run first as two jobs side by side on the one cell store, as
    SLURM array jobs or joblib's workers do, then the whole experiment (every cell cached) builds
    the report; `done` keeps every job's log."""
    from concurrent.futures import ThreadPoolExecutor

    from filelock import FileLock

    shared = factory.getbasetemp().parent / f"{experiment.replace('/', '-')}-store"
    with FileLock(str(shared) + ".lock"):
        done = shared / "done"
        if not done.exists():
            shared.mkdir(exist_ok=True)
            args = [f"experiment={experiment}", "scale=smoke"]
            logs = ""
            if split:
                key, groups = split[0], split[1].split("|")
                jobs = [
                    [*args, f"{key}={g}", f"paths.results={shared / f'part{i}'}"]
                    for i, g in enumerate(groups)
                ]
                with ThreadPoolExecutor(len(jobs)) as pool:
                    for part in pool.map(lambda a: launch(a, shared), jobs):
                        assert part.returncode == 0, part.stderr[-3000:]
                        logs += part.stdout + part.stderr
            run = launch(args, shared)
            assert run.returncode == 0, run.stderr[-3000:]
            done.write_text(logs + run.stdout + run.stderr)
    return shared


@pytest.fixture(scope="session")
def deepfusion_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deepfusion/table1_2 at smoke scale (its trained devices, the global MoE's init, the teacher
    targets and every method's cell): the other DeepFusion experiments start from a copy of its cell
    store, as a user's later experiments start from Tables I-II's."""
    # two jobs side by side that need the same devices (issue 36: tests/test_cli.py reads their logs)
    return _prepared_store(
        "deepfusion/table1_2",
        tmp_path_factory,
        ("deepfusion/method", "deepfusion,fedmkt,start,prior|ofa_kd,fedjets,server_only"),
    )


@pytest.fixture(scope="session")
def incentive_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """incentive/baselines at smoke scale: its ASOSA cells are the default point of every other
    incentive experiment (convergence, the sweeps, the stabilisers), which start from a copy of its
    cell store, as a user's do after the baselines."""
    return _prepared_store("incentive/baselines", tmp_path_factory)


def seeded_from(store: Path, workdir: Path) -> Path:
    """`workdir` with a copy of a prepared cell store (outputs/cells)."""
    import shutil

    shutil.copytree(store / "outputs" / "cells", workdir / "outputs" / "cells", dirs_exist_ok=True)
    return workdir
