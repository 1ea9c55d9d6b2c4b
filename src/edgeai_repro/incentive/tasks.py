"""The incentive task a cell runs: one ASOSA run (or a baseline) for one seed."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.tasks import CellContext
from edgeai_repro.incentive import asosa
from edgeai_repro.incentive.config import settings

log = logging.getLogger(__name__)


def run_incentive(cfg: DictConfig, ctx: CellContext) -> dict:
    conf = settings(cfg)
    # The networks are small: one thread per cell, and cells in parallel (joblib launcher), is faster.
    torch.set_num_threads(1)
    try:
        return asosa.run(
            conf,
            int(cfg.seed),
            ctx.trainers,
            checkpoint_dir=ctx.run_dir / "checkpoints",
            progress=log.debug,
            store=Path(cfg.paths.cache),
        )  # per-iteration lines at debug level; the curves go to CSV/W&B
    except ConfigError as exc:
        # The settings passed validation, so this is one seed's random instance: a failed cell with
        # a clear record, while the other seeds still run.
        raise RuntimeError(f"seed {cfg.seed} drew an instance without an equilibrium: {exc}") from None
