"""Task registry: a task is what one cell runs (one simulation, one training, one check).

Paper packages register their tasks at import time; the launcher imports them. A task names the
config section that defines its cells, so the cell id hashes exactly the result-relevant settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from edgeai_repro.core.errors import ConfigError


@dataclass
class CellContext:
    """What the runner hands a task: where to write, and the loggers to log through."""

    run_dir: Path
    cell_id: str
    loggers: list[Any] = field(default_factory=list)
    accelerator: str = "cpu"
    progress: bool = False


TaskFn = Callable[[DictConfig, CellContext], dict]
ValidateFn = Callable[[DictConfig], None]


@dataclass(frozen=True)
class Task:
    name: str
    paper: str
    section: str  # config node holding every result-relevant setting of a cell
    run: TaskFn
    validate: ValidateFn
    version: int = 1  # bump when the task's semantics change, so cached cells are recomputed
    method_key: str | None = None  # config key naming the cell's method, for W&B job_type


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in _TASKS and _TASKS[task.name] is not task:
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
