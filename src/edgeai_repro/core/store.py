"""The cell store: config-hash cell ids, atomic writes, failure records, corrupt-file quarantine.

A cell's identity is the hash of its task, task version, seed and resolved config section, so the
same cell shared by two experiments is computed once, and a re-run skips what is done.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

from omegaconf import DictConfig, OmegaConf

from edgeai_repro.core import tasks
from edgeai_repro.core.files import atomic_write_json, content_key

Status = Literal["done", "failed", "missing"]


def section_of(cfg: DictConfig) -> tuple[tasks.Task, dict | None]:
    """The cell's task and its result-relevant config section, resolved to plain values."""
    task = tasks.get(OmegaConf.select(cfg, "task.name"))
    section = OmegaConf.select(cfg, task.section)
    if section is None:
        return task, None
    plain = OmegaConf.to_container(section, resolve=True)
    for dotted, value in task.neutral:  # (core/tasks.py: Task.neutral)
        *parents, leaf = dotted.split(".")
        node = plain
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node and node[leaf] == value:
            del node[leaf]
    if task.files_target:
        from edgeai_repro.core.files import path_key

        files = tasks.resolve(task.files_target)(plain)
        if files:  # absent without local files: the ids of every other cell are as before
            plain["file_contents"] = {k: path_key(p) if Path(p).exists() else None for k, p in files.items()}
    return task, plain


def cell_id_of(task: tasks.Task, section: dict | None, seed: int) -> str:
    """A cell's identity from its task, resolved section and seed (no config needed), and the
    versions of the caches its task reads (core/cache.py), so that bumping one recomputes the cells
    computed from it."""
    from edgeai_repro.core.cache import versions

    blob = {"task": task.name, "version": task.version, "seed": int(seed), "config": section}
    if task.reads:
        blob["caches"] = versions(task.reads)
    return content_key(blob)


def cell_id(cfg: DictConfig) -> str:
    task, section = section_of(cfg)
    return cell_id_of(task, section, int(cfg.seed))


class CellStore:
    """Results of finished cells under <root>/<paper>/<cell_id>/{result,failure}.json."""

    def __init__(self, root: str | Path, paper: str) -> None:
        self.root = Path(root) / paper

    def folder(self, cid: str) -> Path:
        return self.root / cid

    def _read(self, path: Path) -> dict | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return data
        except (ValueError, OSError):
            # Keep the bad bytes for inspection instead of deleting them; the cell is recomputed.
            path.rename(path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"))
            return None

    def load(self, cid: str) -> dict | None:
        return self._read(self.folder(cid) / "result.json")

    def load_failure(self, cid: str) -> dict | None:
        return self._read(self.folder(cid) / "failure.json")

    def status(self, cid: str) -> Status:
        if self.load(cid) is not None:
            return "done"
        if (self.folder(cid) / "failure.json").exists():
            return "failed"
        return "missing"

    def save(self, cid: str, result: dict) -> None:
        atomic_write_json(self.folder(cid) / "result.json", result)
        (self.folder(cid) / "failure.json").unlink(missing_ok=True)

    def save_failure(self, cid: str, failure: dict) -> None:
        atomic_write_json(self.folder(cid) / "failure.json", failure)


def store_for(cfg: DictConfig) -> CellStore:
    return CellStore(cfg.paths.cache, tasks.get(cfg.task.name).paper)
