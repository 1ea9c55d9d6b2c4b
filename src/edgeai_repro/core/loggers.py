"""CSV and W&B loggers, built from the `logger` config group, and W&B publishing of cells.

W&B is optional: without an API key it runs offline and writes under the run folder, so the runs
can be synced later with `wandb sync`. Every cell becomes one W&B run (config with the cell id,
group = experiment, job_type = method or task, its curves as history, its result metrics as
summary), whether it was computed now or earlier: a cached cell is published from its stored
record. A marker in the cell's store folder (wandb.json, keyed by entity/project) keeps a cell from
being published twice to the same project.
"""

from __future__ import annotations

import json
import netrc
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def wandb_mode(requested: str | None) -> str:
    """`online` only when asked for or when a key is configured; `offline` otherwise."""
    if requested in {"online", "offline", "disabled"}:
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


def wandb_settings(cfg: DictConfig) -> dict[str, Any] | None:
    """Keyword arguments for wandb.init, or None when W&B is not enabled."""
    wb = OmegaConf.select(cfg, "logger.wandb")
    if wb is None or not wb.get("enabled", False):
        return None
    # W&B's own console lines (banner, "You can sync this run", the run summary) would be about 20
    # per cell; the sweep prints one summary of its own instead (report/callback.py).
    os.environ.setdefault("WANDB_SILENT", "true")
    return {
        "project": wb.project,
        "entity": wb.get("entity"),
        "group": cfg.experiment_name,
        "mode": wandb_mode(wb.get("mode")),
        "tags": list(wb.get("tags") or []) + [f"scale={cfg.scale.name}"],
    }


def launched_with(cfg: DictConfig) -> dict[str, Any]:
    """The keys this cell's job set on the command line or in the sweep, with their values (a
    config group's choice as its name), and its seed; empty outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    out: dict[str, Any] = {}
    if HydraConfig.initialized():
        for override in HydraConfig.get().overrides.task:
            key, _, text = override.lstrip("+~").partition("=")
            if key in ("cell_seeds", "seed") or key.startswith("hydra"):
                continue
            value = OmegaConf.select(cfg, key, default=text) if "/" not in key else text
            out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    out["seed"] = int(cfg.seed)
    return out


def run_name(job_type: str, cell_id: str, seed: int) -> str:
    return f"{job_type}-{cell_id[:8]}-seed{seed}"


def build_loggers(cfg: DictConfig, run_dir: Path, cell_id: str, job_type: str) -> list[Any]:
    """Lightning loggers for one cell: CSV always (unless disabled), W&B when enabled."""
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    loggers: list[Any] = []
    if OmegaConf.select(cfg, "logger.csv.enabled", default=True):
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    settings = wandb_settings(cfg)
    if settings is not None:
        config = OmegaConf.to_container(cfg, resolve=True)
        config["cell_id"] = cell_id
        # The settings this cell was launched with, as top-level keys (`aeria.pricing.core.c`, `seed`):
        # W&B's run table and "group by" offer them directly, among the hundreds of nested ones.
        swept = launched_with(cfg)
        config.update(swept)
        config["swept"] = sorted(swept)
        loggers.append(
            WandbLogger(
                save_dir=str(run_dir),
                name=run_name(job_type, cell_id, int(cfg.seed)),
                job_type=job_type,
                config=config,
                reinit="finish_previous",
                **settings,
            )
        )
    return loggers


def finish_wandb() -> None:
    """Close the W&B run of this process, if any (one W&B run per cell)."""
    import sys

    if "wandb" in sys.modules:
        wandb = sys.modules["wandb"]
        if wandb.run is not None:
            wandb.finish()


def _project_key(settings: dict) -> str:
    return f"{settings.get('entity') or '-'}/{settings['project']}"


def summary_of(result: dict) -> dict[str, float]:
    """A cell's result metrics as W&B summary keys: `metric`, or `method/metric` when the cell holds
    several methods (an AERIA cell compares every approach on the same markets)."""
    records = result.get("records", [])
    out = {}
    for rec in records:
        prefix = f"{rec['method']}/" if len(records) > 1 and "method" in rec else ""
        out.update(
            {
                f"{prefix}{k}": float(v)
                for k, v in rec.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed"
            }
        )
    return out


def published(store_folder: Path, settings: dict) -> bool:
    try:
        return _project_key(settings) in json.loads((store_folder / "wandb.json").read_text())
    except (OSError, ValueError):
        return False


def mark_published(store_folder: Path, settings: dict, run_id: str) -> None:
    from edgeai_repro.core.files import atomic_write_json

    path = store_folder / "wandb.json"
    try:
        marks = json.loads(path.read_text())
    except (OSError, ValueError):
        marks = {}
    marks[_project_key(settings)] = {"run_id": run_id, "mode": settings["mode"]}
    atomic_write_json(path, marks)


def finish_cell_run(result: dict, store_folder: Path, cfg: DictConfig) -> None:
    """Put a freshly computed cell's result metrics in its W&B run's summary and mark it published."""
    import sys

    settings = wandb_settings(cfg)
    wandb = sys.modules.get("wandb")
    if settings is None or wandb is None or wandb.run is None:
        return
    wandb.run.summary.update(summary_of(result))
    mark_published(store_folder, settings, wandb.run.id)


def publish_cached(record: dict, job_type: str, cfg: DictConfig, store_folder: Path, directory: Path) -> bool:
    """One W&B run for a cell computed earlier, from its stored record and curves (no recomputation).
    Returns False when the cell is already published to this project."""
    settings = wandb_settings(cfg)
    if settings is None or published(store_folder, settings):
        return False
    import wandb

    config = {**record.get("config", {}), "cell_id": record["cell_id"], "cached": True}
    run = wandb.init(
        name=run_name(job_type, record["cell_id"], int(record["seed"])),
        job_type=job_type,
        config=config,
        dir=str(directory),
        reinit="finish_previous",
        **settings,
    )
    for point in sorted(record.get("curves", []), key=lambda c: c["step"]):
        key = f"{point['method']}/{point['curve']}" if "method" in point else point["curve"]
        run.log({key: point["value"]}, step=int(point["step"]))
    run.summary.update(summary_of(record))
    run_id = run.id
    run.finish()
    mark_published(store_folder, settings, run_id)
    return True
