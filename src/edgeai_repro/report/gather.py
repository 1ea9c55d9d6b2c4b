"""Collect a sweep's cells (from its manifest and the cell store) into one long table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.store import CellStore


@dataclass
class Gathered:
    rows: pd.DataFrame  # one row per (cell, record)
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per (cell, curve, step)
    failed: list[dict] = field(default_factory=list)  # cells with a failure record
    missing: list[dict] = field(default_factory=list)  # cells with neither result nor failure
    total: int = 0
    scales: set[str] = field(default_factory=set)


def read_manifest(sweep_dir: Path) -> dict:
    path = sweep_dir / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path} does not exist; run the experiment with the caching sweeper "
            "(hydra/sweeper=caching, the default)."
        ) from None
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON; re-run the experiment to rewrite it.") from None


def gather(manifest: dict, store: CellStore) -> Gathered:
    rows, curves, failed, missing, scales = [], [], [], [], set()
    for cell in manifest["cells"]:
        cid = cell["cell_id"]
        result = store.load(cid)
        if result is None:
            failure = store.load_failure(cid)
            (failed if failure else missing).append({**cell, "error": (failure or {}).get("error")})
            continue
        scales.add(result.get("scale", "?"))
        coords = dict(cell["coords"])
        coords["seed"] = result["seed"]
        for record in result["records"]:
            rows.append({**coords, **record, "cell_id": cid})
        for point in result.get("curves", []):
            curves.append({**coords, **point})
    return Gathered(pd.DataFrame(rows), pd.DataFrame(curves), failed, missing, len(manifest["cells"]), scales)
