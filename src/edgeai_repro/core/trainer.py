"""The one Trainer factory: every Lightning module of the three papers is run by a Trainer built
here from `conf/trainer` (instantiated through its `_target_`, as lightning-hydra-template does),
with the cell's loggers from `conf/logger`.

A cell may train several modules one after another (DeepFusion's devices, its distillations and
Phase III); each gets a fresh Trainer whose steps continue where the previous one stopped, so the
cell's curves reach CSV and W&B on one increasing step axis, each phase under its own names.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DEFAULT = {
    "_target_": "lightning.pytorch.Trainer",
    "accelerator": "cpu",
    "devices": 1,
    "strategy": "auto",
    "precision": "32-true",
}

PLANNING = ("gpu_memory_gb", "cells_per_gpu")


def _offset_logger(inner: Any, trainers: Trainers) -> Any:
    """A Lightning logger that shifts every step by the cell's steps so far, then delegates."""
    from lightning.pytorch.loggers import Logger

    class Offset(Logger):
        @property
        def name(self) -> str:
            return inner.name

        @property
        def version(self):
            return inner.version

        @property
        def save_dir(self):
            return inner.save_dir

        @property
        def experiment(self):
            return inner.experiment

        def log_metrics(self, metrics: dict, step: int | None = None) -> None:
            inner.log_metrics(metrics, None if step is None else step + trainers.offset)

        def log_hyperparams(self, params, *args, **kwargs) -> None:
            inner.log_hyperparams(params, *args, **kwargs)

        def save(self) -> None:
            inner.save()

        def finalize(self, status: str) -> None:
            inner.finalize(status)  # saves the CSV; a W&B run stays open for the cell's next phase

    return Offset()


class Trainers:
    """Builds the Trainers of one cell. `conf`: the resolved `trainer` config node."""

    def __init__(
        self,
        conf: Mapping[str, Any] | None = None,
        loggers: Iterable[Any] = (),
        progress: bool = False,
        root: Path | str = ".",
    ) -> None:
        conf = dict(conf or {})
        for key in PLANNING:  # conf/trainer/gpu.yaml's planning keys (core/gpus.py, planning/plan.py)
            conf.pop(key, None)
        self.conf = {**DEFAULT, **conf}
        self.loggers = list(loggers)
        self.progress = progress
        self.root = Path(root)
        self.offset = 0

    @property
    def accelerator(self) -> str:
        return str(self.conf["accelerator"])

    def __call__(self, **overrides: Any):
        from hydra.utils import instantiate

        # Lightning's per-Trainer banner (accelerators, tips) would otherwise be printed for every module.
        logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
        warnings.filterwarnings(
            "ignore", message=".*(LeafSpec|does not have many workers|num_workers|IterableDataset).*"
        )
        settings = {
            "logger": [_offset_logger(lg, self) for lg in self.loggers] or False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "enable_progress_bar": self.progress,
            "default_root_dir": str(self.root),
            "num_sanity_val_steps": 0,
            **overrides,
        }
        return instantiate(self.conf, **settings, _convert_="all")

    def close(self, status: str = "success") -> None:
        """Write out what the loggers still hold (the CSV logger buffers rows until it is saved, so
        values logged after the last Trainer, like ASOSA's last iteration, would be lost)."""
        for lg in self.loggers:
            lg.save()
            lg.finalize(status)

    def log(self, metrics: dict[str, float]) -> None:
        """Log values outside a Trainer (per-iteration or final results) at the cell's current step."""
        for lg in self.loggers:
            lg.log_metrics(metrics, step=self.offset)
        self.offset += 1

    def fit(
        self,
        module,
        data=None,
        steps: int = -1,
        callbacks: list | None = None,
        batches: int | None = None,
        **overrides: Any,
    ) -> None:
        """Train `module` for `steps` optimizer steps (epochs repeat as needed), or for exactly
        `batches` training steps whatever the number of optimizers a step uses (Lightning counts
        optimizer steps: a manual-optimisation step with two optimizers counts two); later modules
        of the same cell log after these steps."""
        if batches is not None:
            overrides = {"limit_train_batches": batches, "max_epochs": 1, **overrides}
        if data is not None and "log_every_n_steps" not in overrides:
            # Lightning warns (once per fit, on every device of a sweep) when an epoch has fewer
            # batches than the logging interval; log at least once per epoch instead. A loader
            # over an iterable dataset has no length (len raises TypeError): keep the default.
            with contextlib.suppress(TypeError):
                overrides["log_every_n_steps"] = max(1, min(50, len(data)))
        trainer = self(**{"max_steps": steps, "max_epochs": -1, "callbacks": callbacks or [], **overrides})
        trainer.fit(module, data) if data is not None else trainer.fit(module)
        self.offset += int(trainer.global_step)
