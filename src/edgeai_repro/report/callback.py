"""The Hydra callback that turns a finished sweep into its table, figure and claim verdicts."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from edgeai_repro.core import tasks
from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.loggers import publish_cached, wandb_settings
from edgeai_repro.core.store import CellStore
from edgeai_repro.report.build import build_report
from edgeai_repro.report.gather import Gathered, gather, read_manifest
from edgeai_repro.report.table import metric_rows, panel_columns, read_table

log = logging.getLogger(__name__)


def publish_cells(config: DictConfig, manifest: dict, store: CellStore) -> int:
    """One W&B run for every finished cell not yet published to this project (cached cells too,
    from their stored records). Returns how many were published now."""
    if wandb_settings(config) is None:
        return 0
    from omegaconf import OmegaConf

    from edgeai_repro.core.runner import job_type_of

    count = 0
    for cid in dict.fromkeys(c["cell_id"] for c in manifest["cells"]):
        record = store.load(cid)
        if record is None:
            continue
        task = tasks.get(record["task"])
        job_type = job_type_of(task, OmegaConf.create(record.get("config", {})))
        count += publish_cached(record, job_type, config, store.folder(cid), Path(config.hydra.sweep.dir))
    return count


def _log_to_wandb(config: DictConfig, folder: Path) -> None:
    settings = wandb_settings(config)
    if settings is None:
        return
    import pandas as pd
    import wandb

    run = wandb.init(
        job_type="report",
        name=f"report-{config.experiment_name.replace('/', '-')}",
        dir=str(Path(config.hydra.sweep.dir)),
        config={"experiment": config.experiment_name},
        **settings,
    )
    claims = json.loads((folder / "claims.json").read_text())
    agg = read_table(folder / "table.csv")
    spec = OmegaConf.to_container(config.report, resolve=True)
    tables = {}
    for metric in dict.fromkeys(agg["metric"]):
        # the same rows as table.md's table of this metric (report/table.py metric_rows)
        header, rows = metric_rows(
            agg,
            metric,
            spec.get("x_label") or "x",
            bool(spec.get("show_total")),
            keys=panel_columns(agg),
        )
        tables[f"table/{metric}"] = wandb.Table(columns=header, data=rows)
    run.log(
        {
            "table": wandb.Table(dataframe=agg),
            **tables,
            "claims": wandb.Table(
                dataframe=pd.DataFrame(
                    [
                        {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in c.items()}
                        for c in claims
                    ]
                )
            ),
            **{f"figure/{p.stem}": wandb.Image(str(p)) for p in folder.glob("*.png")},
        }
    )
    run.summary.update({f"claim/{c['id']}": c["verdict"] for c in claims})
    run.finish()


def _wandb_summary(config: DictConfig, manifest: dict, published: int) -> str | None:
    """One line for the sweep's W&B runs: how many, where, and the one command that syncs them."""
    settings = wandb_settings(config)
    if settings is None:
        return None
    sweep = Path(config.hydra.sweep.dir)
    computed = manifest.get("to_run") or 0
    where = f"project {settings['project']}"
    if settings["mode"] == "offline":
        return (
            f"W&B: {computed} computed and {published} cached cell runs and 1 report run, offline in {sweep}; "
            f"sync them with: wandb sync {sweep}/*/wandb/offline-run-* {sweep}/wandb/offline-run-*"
        )
    return f"W&B: {computed} computed and {published} cached cell runs and 1 report run in {where} ({settings['mode']})"


class ReportCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        broken, wandb_line = None, None
        try:
            manifest = read_manifest(Path(config.hydra.sweep.dir))
            if manifest.get("dry_run"):  # the plan is printed; no cell ran and no result is touched
                return
            paper = tasks.get(config.task.name).paper
            store = CellStore(config.paths.cache, paper)
            if config.report is None:
                g = gather(manifest, store)
                folder = None
            else:
                try:
                    folder, g = build_report(config, manifest, store, paper)
                    if g is None:  # the table of these very cells is already there
                        g = Gathered(pd.DataFrame(), total=len(manifest["cells"]))
                    published = publish_cells(config, manifest, store)
                    _log_to_wandb(config, folder)
                    wandb_line = _wandb_summary(config, manifest, published)
                except ConfigError:
                    raise
                except Exception as exc:
                    log.exception("the report could not be built")
                    broken, folder, g = exc, None, gather(manifest, store)
        except ConfigError as exc:
            raise SystemExit(f"error: {exc}") from None
        done = g.total - len(g.failed) - len(g.missing)
        print(
            f"{config.experiment_name}: {done}/{g.total} cells done"
            + (f"; table in {folder}/table.md" if folder else ""),
            flush=True,
        )
        if config.report is not None and broken is None and wandb_line:
            print(wandb_line, flush=True)
        if broken is not None and not (g.failed or g.missing):
            raise SystemExit(
                f"error: every cell finished but the report failed ({type(broken).__name__}: {broken}); "
                "the cells are stored, so re-running the same command only rebuilds the report."
            )
        if g.failed or g.missing:
            first = (g.failed or g.missing)[0]
            raise SystemExit(
                f"error: {len(g.failed)} cells failed and {len(g.missing)} are missing (first: {first['cell_id']}: "
                f"{(first.get('error') or 'no result').splitlines()[0]}); re-run the same command to retry only those."
            )
