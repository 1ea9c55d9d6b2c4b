"""Runs one cell: validate, skip if cached, run the task, store the result or a failure record."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from edgeai_repro.core import tasks
from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.files import atomic_write_json
from edgeai_repro.core.gpus import is_gpu
from edgeai_repro.core.locks import check_writable
from edgeai_repro.core.loggers import build_loggers, finish_cell_run, finish_wandb
from edgeai_repro.core.provenance import provenance
from edgeai_repro.core.seeding import seed_everything
from edgeai_repro.core.store import cell_id, store_for
from edgeai_repro.core.trainer import Trainers

log = logging.getLogger(__name__)


def check_seed(seed: object) -> int:
    """The seed as an int, or ConfigError naming the fix."""
    try:
        value = int(str(seed)) if not isinstance(seed, bool) else -1
    except ValueError:
        value = -1
    if value < 0 or (isinstance(seed, float) and not float(seed).is_integer()):
        raise ConfigError(f"seed={seed!r} must be a non-negative integer, for example seed=0.")
    return value


def validate(cfg: DictConfig) -> tasks.Task:
    """Check shared keys and the task's own settings; raise ConfigError on the first problem."""
    task = tasks.get(OmegaConf.select(cfg, "task.name"))
    seed = OmegaConf.select(cfg, "seed")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be a non-negative integer, for example seed=0.")
    if cfg.scale.name not in {"paper", "tiny", "smoke"}:
        raise ConfigError(f"scale={cfg.scale.name!r} is unknown; use scale=paper, scale=tiny or scale=smoke.")
    task.validate(cfg)  # what the task needs first (its data, checkpoints), then the machine
    check_writable(Path(str(cfg.paths.cache)), "paths.cache")
    if not OmegaConf.select(cfg, "dry_run", default=False):  # a dry run plans for another machine
        check_accelerator(cfg)
    return task


def check_accelerator(cfg: DictConfig) -> None:
    """An accelerator the machine does not have is refused before any cell runs (not inside Lightning,
    once per cell). torch is imported only when a GPU is asked for."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator") or "cpu")
    if is_gpu(accelerator):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={accelerator} but this machine has no CUDA GPU (torch sees none); "
                "use trainer=cpu here, or run on a GPU node."
            )


def job_type_of(task: tasks.Task, cfg: DictConfig) -> str:
    """W&B job_type of a cell: its method, or the task where a cell holds several methods."""
    method = OmegaConf.select(cfg, task.method_key) if task.method_key else None
    return str(method) if method is not None else task.name


def share_cores(cfg: DictConfig | None = None) -> None:
    """Under a parallel launcher (joblib), split the cores between the cells running side by side,
    so that torch's threads do not oversubscribe them."""
    import os

    import torch

    from edgeai_repro.core.gpus import parallel_cells

    jobs = parallel_cells(cfg)
    if jobs > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))


def _run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def run_cell(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """Run the cell described by cfg unless its result already exists. Returns its status."""
    task = validate(cfg)
    cid = cell_id(cfg)
    store = store_for(cfg)
    run_dir = run_dir or _run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    pointer = {"cell_id": cid, "task": task.name, "seed": int(cfg.seed), "store": str(store.folder(cid))}
    if store.status(cid) == "done" and not cfg.force:
        log.info("cell %s already done; skipping (force=true recomputes it)", cid)
        atomic_write_json(run_dir / "cell.json", {**pointer, "status": "cached"})
        return {**pointer, "status": "cached"}

    seed_everything(int(cfg.seed))
    share_cores(cfg)
    job_type = job_type_of(task, cfg)
    loggers = build_loggers(cfg, run_dir, cid, job_type)
    progress = bool(cfg.progress) and sys.stderr.isatty()
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    if is_gpu(trainer.get("accelerator")) and str(trainer.get("devices", 1)) == "1":
        # a one-GPU cell takes a GPU of its own (core/gpus.py); trainer=ddp_spawn spans the node's GPUs
        from edgeai_repro.core.gpus import claim

        trainer["devices"] = [claim(int(trainer.get("cells_per_gpu") or 1))]
    ctx = tasks.CellContext(
        run_dir=run_dir,
        cell_id=cid,
        loggers=loggers,
        progress=progress,
        trainers=Trainers(trainer, loggers, progress, run_dir),
    )
    started = time.perf_counter()
    try:
        result = task.run(cfg, ctx)
        ctx.trainers.close()  # the last logged rows reach the CSV and W&B before the run closes
        finish_cell_run(result, store.folder(cid), cfg)
    except (ConfigError, KeyboardInterrupt):
        raise
    except Exception as exc:
        with contextlib.suppress(Exception):  # what was logged before the failure is kept
            ctx.trainers.close("failed")
        failure = {
            **pointer,
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "run_dir": str(run_dir),
        }
        store.save_failure(cid, failure)
        atomic_write_json(run_dir / "cell.json", failure)
        log.error("cell %s failed: %s", cid, failure["error"])
        return failure
    finally:
        finish_wandb()
    record = {
        **pointer,
        "paper": task.paper,
        "scale": cfg.scale.name,
        "wall_s": time.perf_counter() - started,
        "run_dir": str(run_dir),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "provenance": provenance(),  # the code and versions that made it; not part of its identity
        **result,
    }
    record.pop("store", None)
    atomic_write_json(run_dir / "result.json", record)
    store.save(cid, record)
    atomic_write_json(run_dir / "cell.json", {**pointer, "status": "done"})
    return {**pointer, "status": "done"}
