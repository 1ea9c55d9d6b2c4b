"""Task registry: a task is what one cell runs (one simulation, one training, one check).

Each paper's light `registry` module registers its tasks; the launcher imports those. A task names
its run and validate functions as "module:function" strings, imported on first use, so a sweep
whose cells are all cached never imports a paper's heavy dependencies (Lightning, transformers,
scikit-learn), and an AERIA table never imports DeepFusion's. A task names the config section that
defines its cells, so the cell id hashes exactly the result-relevant settings.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from edgeai_repro.core.errors import ConfigError


@dataclass
class CellContext:
    """What the runner hands a task: where to write, the loggers, and the Trainer factory
    (core/trainer.py) that builds every Lightning Trainer of the cell from conf/trainer."""

    run_dir: Path
    cell_id: str
    loggers: list[Any] = field(default_factory=list)
    trainers: Any = None
    progress: bool = False

    @property
    def accelerator(self) -> str:
        return self.trainers.accelerator if self.trainers is not None else "cpu"


TaskFn = Callable[[DictConfig, CellContext], dict]
ValidateFn = Callable[[DictConfig], None]


def resolve(target: str | Callable) -> Callable:
    """A callable, or the function a "package.module:function" string names (imported now)."""
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Task:
    name: str
    paper: str
    section: str  # config node holding every result-relevant setting of a cell
    run_target: str | TaskFn  # "module:function" (imported when a cell computes) or a callable
    validate_target: str | ValidateFn
    method_key: str | None = None  # config key naming the cell's method, for W&B job_type
    reads: tuple[str, ...] = ()  # the caches (core/cache.py) its cells read: their versions join the cell id
    # Settings added after cells were stored, each with the value that does what the code did before
    # the setting existed: at that value the key is left out of the cell id, so adding a setting does
    # not recompute (or orphan) stored cells; any other value is part of the identity as usual.
    neutral: tuple[tuple[str, Any], ...] = ()
    # "module:function" naming, from a cell's plain section, the local files it reads ({name: path}):
    # their contents' hashes join the cell id (core/files.path_key), so editing a file recomputes.
    files_target: str | None = None
    # "module:function" giving a dry run's plan of the task's cells (`dry_run=true`); None: no plan.
    plan_target: str | None = None

    @property
    def version(self) -> int:
        """The version of the task's cells: the cache "cells/<name>" of core/cache.py's table."""
        from edgeai_repro.core.cache import get

        return get(f"cells/{self.name}").version

    def run(self, cfg: DictConfig, ctx: CellContext) -> dict:
        return resolve(self.run_target)(cfg, ctx)

    def validate(self, cfg: DictConfig) -> None:
        resolve(self.validate_target)(cfg)

    def plan(self, cells: list[tuple[DictConfig, int]], machine: dict) -> tuple[str, dict]:
        """The run plan of (config, seeds) cells: markdown and data (see plan_target)."""
        return resolve(self.plan_target)(cells, machine)


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in _TASKS and _TASKS[task.name] != task:
        raise RuntimeError(f"task {task.name!r} registered twice")
    _TASKS[task.name] = task
    return task


def get(name: str | None) -> Task:
    if not name or name not in _TASKS:
        known = ", ".join(sorted(_TASKS)) or "none registered"
        raise ConfigError(
            f"task.name={name!r} is not a known task; pick an experiment=<paper>/<name> or set "
            f"task to one of: {known}."
        )
    return _TASKS[name]


def names() -> list[str]:
    return sorted(_TASKS)
