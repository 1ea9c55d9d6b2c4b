"""A Hydra sweeper that validates the whole grid up front and skips finished cells.

It is Hydra's basic sweeper with two additions, both needed before any job starts:
- every cell's config is composed and validated, so a bad override stops the sweep with one
  sentence and leaves existing results untouched;
- cells whose result is already in the store are not launched, so re-running a finished table
  costs only config composition, and a killed sweep resumes where it stopped.
It also writes `manifest.json` in the sweep folder: the list of every cell of the grid, which the
report callback reads to build the table (cached cells included). Launching stays with Hydra's
launchers (basic, joblib, submitit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from edgeai_repro.core.errors import ConfigError, composition_message
from edgeai_repro.core.files import atomic_write_json
from edgeai_repro.core.gpus import is_gpu, joblib_width
from edgeai_repro.core.runner import check_seed, validate
from edgeai_repro.core.store import cell_id_of, section_of, store_for
from edgeai_repro.report.reach import check_reachable
from edgeai_repro.report.schema import validate_report

log = logging.getLogger(__name__)


@dataclass
class CachingSweeperConf:
    _target_: str = "hydra_plugins.edgeai_repro_sweeper.caching_sweeper.CachingSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="caching", node=CachingSweeperConf)


def _coords(cfg: Any, keys: list[str]) -> dict[str, Any]:
    return {k: OmegaConf.select(cfg, k) for k in keys}


class CachingSweeper(BasicSweeper):
    def _full(self, job: list[str]) -> DictConfig:
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(job))

    def _composer(self, parser: OverridesParser, jobs: list[list[str]]) -> Callable[[list[str]], DictConfig]:
        """Compose cell configs; grids take a fast path checked against Hydra's own.

        Full composition costs ~0.3 s a cell, which would make re-running a finished 400-cell
        table slow. A cell is composed by Hydra once per distinct combination of config-group
        choices (the method of a DeepFusion table, say); its plain values are then set on a copy.
        The first cell of each combination is also composed by Hydra and the fast path is used for
        that combination only if the two agree; a structural override (+key, ~key, @package, a
        value replacing a node) always goes to Hydra.
        """
        if not jobs:
            return self._full
        choices = OmegaConf.to_container(self.config.hydra.runtime.choices)
        plain = lambda cfg: OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        bases: dict[
            tuple[str, ...], DictConfig | None
        ] = {}  # group choices -> composed base (None: use Hydra)

        def split(job: list[str]):
            """(the job's config-group overrides, its value overrides), or None if one is structural."""
            groups, values = [], []
            for o, text in zip(parser.parse_overrides(list(job)), job):
                key = o.get_key_element()
                if key in choices or "/" in key:  # a config-group choice: part of the base's identity
                    groups.append(text)
                    continue
                if o.is_delete() or o.is_add() or o.is_force_add() or o.package:
                    return None
                values.append(o)
            return tuple(groups), values

        def apply(base: DictConfig, values) -> DictConfig | None:
            cfg = base.copy()
            for o in values:
                key = o.get_key_element()
                if isinstance(OmegaConf.select(cfg, key, default=None), DictConfig):
                    return None  # a value replacing a node: only Hydra can compose it
                OmegaConf.update(cfg, key, o.value(), merge=False)
            return cfg

        def fast(job: list[str]) -> DictConfig:
            parts = split(job)
            if parts is None:
                return self._full(job)
            groups, values = parts
            if groups not in bases:
                try:
                    base = plain(self._full(list(groups)))
                    probe = apply(base, values)
                    same = probe is not None and OmegaConf.to_container(probe, resolve=True) == (
                        OmegaConf.to_container(plain(self._full(job)), resolve=True)
                    )
                except Exception:
                    same = False
                bases[groups] = base if same else None
                log.debug(
                    "composing cells with %s by %s",
                    groups or "the sweep's groups",
                    "setting swept values" if same else "Hydra",
                )
            base = bases[groups]
            cfg = apply(base, values) if base is not None else None
            return cfg if cfg is not None else self._full(job)

        log.info("composing cells once per config-group choice, setting swept values (checked on each)")
        return fast

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        started = time.time()
        try:
            check_folders(self.config)
        except ConfigError as exc:
            raise SystemExit(f"error: {exc}") from None
        params = self._parse_config() + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs = self.split_arguments(parser.parse_overrides(params), None)[0]
        swept = [o.split("=", 1)[0] for o in jobs[0]] if jobs else []
        report_keys = [k for k in swept if not k.startswith("hydra")]

        cells, todo, queued = [], [], set()
        compose = self._composer(parser, jobs)
        # Cells that differ only by their seed share everything else: their config is composed and
        # validated once, and each seed's cell id follows from the shared section (the seed is a
        # key of its own in the hash). A 400-cell table of 20 seeds composes 20 configs.
        seen: dict[tuple[str, ...], tuple] = {}
        dry_run = bool(OmegaConf.select(self.config, "dry_run", default=False))
        planned: dict[
            tuple[str, ...], list
        ] = {}  # dry run: a config per cell without its seed, and its seeds
        for i, job in enumerate(jobs):
            rest = tuple(o for o in job if o.split("=", 1)[0] != "seed")
            seeds = [o.split("=", 1)[1] for o in job if o.split("=", 1)[0] == "seed"]
            try:
                if rest not in seen or not seeds:
                    cfg = compose(job)
                    if i == 0:  # one report block per sweep: checked once, before any cell runs
                        validate_report(cfg)
                    validate(cfg)
                    task, section = section_of(cfg)
                    seen[rest] = (task, section, _coords(cfg, report_keys), bool(cfg.force), store_for(cfg))
                    if dry_run:
                        planned[rest] = [cfg, 0]
                    seed = int(cfg.seed)
                else:
                    seed = check_seed(seeds[-1])
            except ConfigError as exc:
                raise SystemExit(f"error: {exc}") from None
            except Exception as exc:
                message = composition_message(exc)
                if message is None:
                    raise
                raise SystemExit(f"error: {message}") from None
            task, section, coords, force, store = seen[rest]
            if dry_run:
                planned[rest][1] += 1
            cid = cell_id_of(task, section, seed)
            status = store.status(cid)
            cells.append(
                {
                    "cell_id": cid,
                    "overrides": list(job),
                    "coords": {**coords, **({"seed": seed} if "seed" in coords else {})},
                    "status_at_start": status,
                }
            )
            if (status != "done" or force) and cid not in queued:
                queued.add(cid)  # two grid points with one identity are one computation
                todo.append(list(job))

        try:  # every claim's check must be able to come out either way at these seeds (report/reach.py)
            check_reachable(self.config, cells)
        except ConfigError as exc:
            if not dry_run:
                raise SystemExit(f"error: {exc}") from None
            log.warning("a run of this sweep would be refused: %s", exc)  # a dry run plans; it judges nothing
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        atomic_write_json(
            sweep_dir / "manifest.json",
            {
                "experiment": self.config.experiment_name,
                "arguments": list(arguments),
                "swept_keys": report_keys,
                "started": started,
                "to_run": len(todo),
                "cells": cells,
                **({"dry_run": True} if dry_run else {}),
            },
        )
        if dry_run:
            print_plan(self.config, [tuple(v) for v in planned.values()], len(cells), len(todo), sweep_dir)
            return []
        log.info("%d cells: %d to run, the rest already done", len(cells), len(todo))
        return self._launch(todo, cached=len(cells) - len(todo))

    def _jobs(self, todo: list[list[str]], workers: int) -> list[tuple[list[str], int]]:
        """The launcher's jobs and how many cells each runs. On a local launcher (basic, joblib) the
        cells that differ only by their seed run in one job, one after another, on the config
        composed once (`cell_seeds`): Hydra composes every job afresh, which cost more than a
        simulation cell itself. A group is split so that every worker stays busy. On a cluster
        (submitit) every cell stays one job."""
        if workers > 64:
            return [(job, 1) for job in todo]
        groups: dict[tuple[str, ...], list[str]] = {}
        for job in todo:
            rest = tuple(o for o in job if o.split("=", 1)[0] != "seed")
            seed = next((o.split("=", 1)[1] for o in job if o.split("=", 1)[0] == "seed"), None)
            groups.setdefault(rest, []).append(seed)
        chunk = max(1, -(-len(todo) // (4 * workers))) if workers > 1 else len(todo)
        jobs = []
        for rest, seeds in groups.items():
            if None in seeds:
                jobs += [(list(rest), 1)]
                continue
            for start in range(0, len(seeds), chunk):
                part = seeds[start : start + chunk]
                extra = [f"cell_seeds=[{','.join(part)}]"] if len(part) > 1 else []
                jobs.append(([*rest, f"seed={part[0]}", *extra], len(part)))
        return jobs

    def _launch(self, todo: list[list[str]], cached: int) -> list[Any]:
        """Launch the cells to run through Hydra's launcher, a few at a time, under one progress bar
        (done / cached / failed / to run, with an ETA) instead of one log line per job.

        The basic launcher runs one cell per launch; a parallel launcher gets batches of
        `max_batch_size` cells (default: 4 per worker), so its workers stay busy.
        """
        check_launcher(self.config)
        verbose = bool(OmegaConf.select(self.config, "verbose", default=False))
        quiet_launchers(not verbose)
        workers = launcher_workers(self.config)
        jobs = self._jobs(todo, workers)
        size = self.max_batch_size or (1 if workers == 1 else 4 * workers)
        counts = {"done": 0, "cached": cached, "failed": 0}
        bar = progress_bar(
            len(todo), cached, enabled=bool(OmegaConf.select(self.config, "progress", default=True))
        )
        started, returns = time.perf_counter(), []
        try:
            for start in range(0, len(jobs), size):
                # Failures are recorded per cell by the runner; they do not stop the other cells.
                part = jobs[start : start + size]
                batch = self.launcher.launch([job for job, _ in part], initial_job_idx=start)
                returns.append(batch)
                for ret, (_, n_cells) in zip(batch, part):
                    for status in _statuses(ret, n_cells):
                        counts[status if status in counts else "failed"] += 1
                if bar is not None:
                    bar.update(sum(n for _, n in part))
                    bar.set_postfix_str(
                        f"done {counts['done']}, cached {counts['cached']}, failed {counts['failed']}"
                    )
        finally:
            if bar is not None:
                bar.close()
        log.info(
            "%d cells computed, %d cached, %d failed in %.1f s",
            counts["done"],
            counts["cached"],
            counts["failed"],
            time.perf_counter() - started,
        )
        return returns


def check_folders(config: DictConfig) -> None:
    """The folders a sweep writes (run folders, the cell store, the results) must be creatable and
    writable: refused here, in one sentence, before any cell is composed or run, and without
    creating anything (a refused sweep leaves no trace)."""
    for key in ("paths.outputs", "paths.cache", "paths.results"):
        folder = Path(str(OmegaConf.select(config, key))).absolute()
        created = [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"{key}={str(folder)!r} cannot be created or written ({exc.strerror or exc}); point "
                f"{key} at a writable folder."
            ) from None
        finally:
            for p in created:  # leave no trace: the folders are made again when something is written
                with contextlib.suppress(OSError):
                    p.rmdir()


def _statuses(ret: Any, n_cells: int) -> list[str]:
    """The status of each cell a job ran (a job runs one cell, or a group: a list of outcomes)."""
    try:
        value = ret.return_value  # raises when the job itself raised
    except Exception:
        return ["failed"] * n_cells
    values = value if isinstance(value, list) else [value]
    return [v.get("status", "failed") if isinstance(v, dict) else "failed" for v in values]


LAUNCHER_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
)


def quiet_launchers(quiet: bool) -> None:
    """Hydra's launchers log one line per job; `verbose=true` keeps them."""
    for name in LAUNCHER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.INFO)


def launcher_workers(config: DictConfig) -> int:
    """How many cells the configured launcher runs at once (1 for the basic launcher)."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="basic")).lower()
    if "submitit" in target:
        return 1 << 20  # a cluster queue: submit every cell at once
    n = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
    if n is None:
        return 1 if "basic" in target else 8
    return joblib_width(n)


def check_launcher(config: DictConfig) -> None:
    """Settings the launcher would reject with a traceback, refused in one sentence first; and a GPU
    launch that would put more cells on a GPU than the user asked for (core/gpus.py)."""
    n = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
    if n is not None and (not isinstance(n, int) or n == 0):
        raise SystemExit(
            f"error: hydra.launcher.n_jobs={n!r} is not a number of parallel cells; use a positive number "
            "(2 runs two cells at a time) or -1 for one per core."
        )
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="basic")).lower()
    if is_gpu(OmegaConf.select(config, "trainer.accelerator", default="cpu")) and "submitit" not in target:
        from edgeai_repro.core.gpus import visible

        per_gpu = int(OmegaConf.select(config, "trainer.cells_per_gpu", default=1) or 1)
        gpus = max(1, visible())
        workers = launcher_workers(config)
        if workers > gpus * per_gpu:
            raise SystemExit(
                f"error: hydra.launcher.n_jobs={n} would run {workers} cells at once on {gpus} GPU(s) "
                f"({per_gpu} per GPU); leave hydra.launcher.n_jobs unset (one cell per GPU) or ask for sharing with "
                f"trainer.cells_per_gpu={-(-workers // gpus)}."
            )


def print_plan(config: DictConfig, planned: list[tuple], total: int, to_run: int, sweep_dir: Path) -> None:
    """`dry_run=true`: the cells and where they would run, and each task's run plan (a task's `plan`
    hook, e.g. DeepFusion's memory and GPU-hours), printed and written to plan.md and plan.json in the
    sweep folder; no cell is computed and no result written."""
    from edgeai_repro.core import tasks

    accelerator = str(OmegaConf.select(config, "trainer.accelerator", default="cpu"))
    workers = launcher_workers(config)
    if is_gpu(accelerator):
        from edgeai_repro.core.gpus import visible

        n = visible()
        placement = (
            f", each pinned to its own GPU ({n} visible)"
            if n
            else " (no GPU visible here: planned for the GPU named by trainer.gpu_memory_gb)"
        )
    else:
        placement = " on the CPU cores"
    machine = {
        "parallel": workers
        if "submitit" not in str(OmegaConf.select(config, "hydra.launcher._target_", default="")).lower()
        else "every",
        "placement": placement,
    }
    head = [
        f"dry run of {config.experiment_name} (scale={config.scale.name}): {total} cells, {to_run} to run, "
        f"{total - to_run} already done; nothing is computed.",
        f"Cells run on {accelerator}: {machine['parallel']} at a time{placement}.",
        "",
    ]
    body, data = (
        [],
        {"experiment": config.experiment_name, "cells": total, "to_run": to_run, "machine": machine},
    )
    by_task: dict[str, list] = {}
    for cfg, n_seeds in planned:
        by_task.setdefault(str(cfg.task.name), []).append((cfg, n_seeds))
    for name, cells in by_task.items():
        task = tasks.get(name)
        if task.plan_target is None:
            body.append(f"{name}: no plan beyond the cells (it needs no accelerator memory planning).")
            continue
        try:
            text, plan = task.plan(cells, machine)
        except ConfigError as exc:
            raise SystemExit(f"error: {exc}") from None
        body += [text, ""]
        data[name] = plan
    (sweep_dir / "plan.md").write_text("\n".join(head + body) + "\n")
    atomic_write_json(sweep_dir / "plan.json", data)
    print("\n".join(head + body), flush=True)
    print(f"(written to {sweep_dir / 'plan.md'} and plan.json)", flush=True)


def progress_bar(todo: int, cached: int, enabled: bool):
    """A tqdm bar over the cells to run, on a terminal only (quiet in logs and CI)."""
    if not enabled or not todo or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(
        total=todo,
        desc="cells",
        unit="cell",
        dynamic_ncols=True,
        postfix=f"done 0, cached {cached}, failed 0",
    )
