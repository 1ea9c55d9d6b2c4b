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
    sources: set[str] = field(default_factory=set)  # where each cell's data came from (setting_of)
    seed_wall_s: dict[int, float] = field(default_factory=dict)  # compute seconds of each seed's cells
    counterexamples: dict[str, dict[str, str]] = field(default_factory=dict)  # method -> metric -> the first
    notes: list[str] = field(default_factory=list)  # what the cells say their figures are (each once)
    provenance: list[dict | None] = field(default_factory=list)  # each finished cell's commit and versions

    @property
    def paper_setting(self) -> bool:
        """Whether every cell ran in the paper's own setting (its scale and its data): only then is a
        paper's printed number put beside ours."""
        return self.scales == {"paper"} and self.sources <= {"paper", "simulation"}


def setting_of(result: dict) -> str:
    """Where a cell's inputs came from: `paper` (the paper's models and datasets), `simulation` (a
    task without a dataset), else what differs from the paper's: the data source (synthetic, local)
    or the model scale (tiny)."""
    if result.get("inputs"):  # the task says what it computed from
        return str(result["inputs"])
    section = (result.get("config") or {}).get(result.get("paper", ""), {}) or {}
    data = section.get("data")
    if not isinstance(data, dict):
        return "simulation"
    if section.get("models") not in (None, "paper"):
        return f"{section['models']} models, {data.get('source')} data"
    return "paper" if data.get("source") == "hub" else f"{data.get('source')} data"


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
    rows, curves, failed, missing, scales, sources = [], [], [], [], set(), set()
    walls: dict[int, float] = {}
    examples: dict[str, dict[str, str]] = {}
    notes: list[str] = []
    made_by: list[dict | None] = []
    for cell in manifest["cells"]:
        cid = cell["cell_id"]
        result = store.load(cid)
        if result is None:
            failure = store.load_failure(cid)
            (failed if failure else missing).append({**cell, "error": (failure or {}).get("error")})
            continue
        scales.add(result.get("scale", "?"))
        made_by.append(result.get("provenance"))
        sources.add(setting_of(result))
        walls[int(result["seed"])] = walls.get(int(result["seed"]), 0.0) + float(result.get("wall_s") or 0.0)
        notes.extend(n for n in result.get("notes") or [] if n not in notes)
        for method, found in (result.get("counterexamples") or {}).items():
            for metric, text in found.items():
                examples.setdefault(method, {}).setdefault(metric, text)
        coords = dict(cell["coords"])
        coords["seed"] = result["seed"]
        for record in result["records"]:
            rows.append({**coords, **record, "cell_id": cid})
        for point in result.get("curves", []):
            curves.append({**coords, **point})
    return Gathered(
        pd.DataFrame(rows),
        pd.DataFrame(curves),
        failed,
        missing,
        len(manifest["cells"]),
        scales,
        sources,
        walls,
        examples,
        notes,
        made_by,
    )
