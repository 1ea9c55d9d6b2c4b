"""CSV and W&B loggers, built from the `logger` config group.

W&B is optional: without an API key it runs offline and writes under the run folder, so the runs
can be synced later with `wandb sync`.
"""
from __future__ import annotations

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
    return {
        "project": wb.project,
        "entity": wb.get("entity"),
        "group": cfg.experiment_name,
        "mode": wandb_mode(wb.get("mode")),
        "tags": list(wb.get("tags") or []) + [f"scale={cfg.scale.name}"],
    }


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
        loggers.append(
            WandbLogger(
                save_dir=str(run_dir),
                name=f"{job_type}-{cell_id[:8]}-seed{cfg.seed}",
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
