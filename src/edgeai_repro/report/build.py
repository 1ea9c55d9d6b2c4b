"""Build results/<paper>/<name>/ from a sweep: table.csv, table.md, figures, claims.json, run.json."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from edgeai_repro.core.provenance import differing, provenance, version_sets
from edgeai_repro.core.store import CellStore
from edgeai_repro.report import claims as claim_checks
from edgeai_repro.report.gather import Gathered, gather
from edgeai_repro.report.paper import load_claims, load_table, setting_of
from edgeai_repro.report.table import (
    aggregate,
    join_paper,
    panel_keys,
    paper_beside_markdown,
    render_markdown,
    unshown_keys,
)


def _publish(staging: Path, final: Path) -> None:
    """Move finished files into place one rename at a time; readers never see a half table."""
    final.mkdir(parents=True, exist_ok=True)
    for item in staging.iterdir():
        os.replace(item, final / item.name)
    shutil.rmtree(staging, ignore_errors=True)


def improvement_table(
    agg: pd.DataFrame, metric: str, ours: str, exp: bool = True, paper: bool = True
) -> pd.DataFrame:
    """Per panel, x and baseline: ours' improvement in % (in perplexity space when `exp`: the
    metric is a log), from our means and, where printed and comparable, from the paper's values."""

    def gain(a: float, b: float) -> float:
        return 100 * (1 - math.exp(a) / math.exp(b)) if exp else 100 * (1 - a / b)

    sel = agg[agg["metric"] == metric]
    out = []
    for (p, x), grp in sel.groupby(["panel", "x"], sort=False):
        by = grp.set_index("method")
        if ours not in by.index:
            continue
        for base in by.index.drop(ours):
            row = {
                "panel": p,
                "x": x,
                "baseline": base,
                "ours_pct": gain(by.loc[ours, "mean"], by.loc[base, "mean"]),
            }
            if paper and "paper_value" in by:
                row["paper_pct"] = gain(by.loc[ours, "paper_value"], by.loc[base, "paper_value"])
            out.append(row)
    return pd.DataFrame(out)


def improvement_markdown(gains: pd.DataFrame, spec: dict) -> str:
    if gains.empty:
        return ""
    what = "perplexity (exp of the log values)" if spec.get("exp", True) else spec["metric"]
    paper = "paper_pct" in gains and gains["paper_pct"].notna().any()
    lines = [
        "",
        f"## Improvement of {spec['ours']} in {what}, % (positive: {spec['ours']} is better)",
        "",
        "| panel | x | vs | ours |" + (" paper |" if paper else ""),
        "|---|---|---|---|" + ("---|" if paper else ""),
    ]
    for _, r in gains.iterrows():
        cells = [str(r["panel"]), str(r["x"]), str(r["baseline"]), f"{r['ours_pct']:+.2f}"]
        if paper:
            cells.append("n/a" if pd.isna(r.get("paper_pct", math.nan)) else f"{r['paper_pct']:+.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evidence_of(g: Gathered, agg: pd.DataFrame, spec: dict) -> claim_checks.Evidence:
    """What the claim checks read, from the gathered cells."""
    rows = claim_checks.point_rows(g.rows, spec.get("x"), spec.get("panel")) if not g.rows.empty else None
    scale = ", ".join(sorted(g.scales)) or "paper"
    seeds = len(g.seed_wall_s)
    setting = {"scale": scale, "inputs": ", ".join(sorted(g.sources)) or "none"}
    return claim_checks.Evidence(
        agg, rows, scale, setting, sum(g.seed_wall_s.values()) / seeds if seeds else None, g.counterexamples
    )


SEEDS_FILE = "seeds.csv.gz"  # the per-seed rows every verdict reads: re-judged without the cells


def save_evidence(ev: claim_checks.Evidence, spec: dict, folder: Path) -> dict:
    """Write the per-seed rows the claims read (point label, method, seed and every metric the table
    or a claim names) to `folder`/seeds.csv.gz; return the rest of the evidence (scale, setting, wall
    time per seed, counterexamples) for run.json. `rejudge` reads both back."""
    if ev.rows is not None and not ev.rows.empty:
        named = set(spec["metrics"])
        for entry in (spec.get("claims") or {}).values():
            named |= set(claim_checks.metrics_of(entry))
        keep = ["_point", "seed", "method", *sorted(m for m in named if m in ev.rows.columns)]
        ev.rows[keep].to_csv(folder / SEEDS_FILE, index=False)
    return {
        "scale": ev.scale,
        "setting": ev.setting,
        "seed_wall_s": ev.seed_wall_s,
        "counterexamples": ev.counterexamples,
    }


def rejudge(folder: Path, spec: dict, paper_root: Path, paper: str) -> list[dict]:
    """The claims.json of a results folder judged again from its own files (table.csv, seeds.csv.gz,
    run.json's evidence) under today's claims.yaml, report block and verdict engine: no cell needed."""
    record = json.loads((folder / "run.json").read_text())
    saved = record.get("evidence")
    if saved is None or not (folder / SEEDS_FILE).exists():
        raise FileNotFoundError(f"{folder} has no {SEEDS_FILE} or evidence record; rebuild it from its cells")
    # panel and x as the text the report wrote (not table.read_table, which parses numbers for the
    # figures: an x of 16 in a column with empty cells would come back as "16.0", not the "16" that
    # seeds.csv.gz's point labels say)
    agg = pd.read_csv(
        folder / "table.csv", keep_default_na=False, na_values={"mean": [""], "std": [""], "total": [""]}
    )
    agg["panel"], agg["x"] = agg["panel"].astype(str), agg["x"].astype(str)
    rows = pd.read_csv(
        folder / SEEDS_FILE, keep_default_na=False, na_values=[""], dtype={"_point": str, "method": str}
    )
    ev = claim_checks.Evidence(
        agg,
        rows,
        saved["scale"],
        saved["setting"],
        saved.get("seed_wall_s"),
        saved.get("counterexamples") or {},
    )
    verdicts = claim_checks.evaluate(load_claims(paper_root, paper), spec.get("claims") or {}, ev)
    entries = [v.as_json() for v in verdicts]
    for entry in entries:
        claim_checks.check_entry(entry)
    return entries


def inputs_digest(config: DictConfig, manifest: dict, store: CellStore, paper: str) -> str | None:
    """Everything a table is built from: each cell's stored result (by id, size and time), the
    report block, the paper's files and the report code. None when a cell is not finished."""
    from edgeai_repro.core.files import content_key

    cells = []
    for cid in dict.fromkeys(c["cell_id"] for c in manifest["cells"]):
        path = store.folder(cid) / "result.json"
        try:
            stat = path.stat()
        except OSError:
            return None
        cells.append((cid, stat.st_size, stat.st_mtime_ns))
    name = config.experiment_name.split("/", 1)[-1]
    paper_files = sorted((Path(config.paths.paper_results) / paper).glob("*"))
    code = sorted(Path(__file__).parent.glob("*.py"))
    return content_key(
        {
            "cells": cells,
            "report": OmegaConf.to_container(config.report, resolve=True),
            "name": name,
            "paper": [(p.name, content_key(p.read_text())) for p in paper_files if p.is_file()],
            "code": [(p.name, content_key(p.read_text())) for p in code],
            "arguments": manifest.get("arguments", []),
        }
    )


def unchanged(folder: Path, digest: str | None) -> bool:
    """Whether `folder` already holds the report of exactly these inputs."""
    try:
        previous = json.loads((folder / "run.json").read_text()).get("inputs")
    except (OSError, ValueError):
        return False
    return (
        digest is not None
        and previous == digest
        and all((folder / f).exists() for f in ("table.csv", "table.md", "claims.json"))
    )


def build_report(
    config: DictConfig, manifest: dict, store: CellStore, paper: str
) -> tuple[Path, Gathered | None]:
    """Build the experiment's results folder; (folder, None) when it already holds the report of
    the same inputs (a finished table re-run: nothing to rebuild)."""
    name = config.experiment_name.split("/", 1)[-1]
    final = Path(config.paths.results) / paper / name
    digest = inputs_digest(config, manifest, store, paper)
    if unchanged(final, digest):
        return final, None
    spec = OmegaConf.to_container(config.report, resolve=True)
    g = gather(manifest, store)
    swept = list(dict.fromkeys(k for cell in manifest["cells"] for k in cell["coords"]))
    extra = unshown_keys(g.rows, swept, spec.get("x"), spec.get("panel"))
    if extra:
        spec["panel"] = [*panel_keys(spec.get("panel")), *extra]
        g.notes.append(
            f"The sweep varies {', '.join(extra)}, which neither report.x nor report.panel names: "
            "the table panels by it instead of averaging its settings as if they were seeds "
            "(set report.panel or report.x to choose)."
        )
    metrics = list(spec["metrics"])
    agg = aggregate(g.rows, spec.get("x"), spec.get("panel"), metrics)
    paper_root = Path(config.paths.paper_results)
    printed_table = load_table(paper_root, paper, name)
    # The paper's numbers go beside ours only when our cells ran in the paper's setting (its scale and
    # its data); otherwise its table is shown apart, labelled with its setting.
    agg = join_paper(agg, printed_table if g.paper_setting else None)
    ev = evidence_of(g, agg, spec)
    verdicts = claim_checks.evaluate(load_claims(paper_root, paper), spec.get("claims") or {}, ev)
    entries = [v.as_json() for v in verdicts]
    for entry in entries:
        claim_checks.check_entry(entry)

    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{name}."))
    scale = ev.scale
    figures = draw_figures(spec, agg, g, staging, spec.get("title") or config.experiment_name, scale)
    problems = figure_problems(figures)
    if not g.curves.empty:
        g.curves.to_csv(staging / "curves.csv", index=False)
    agg.to_csv(staging / "table.csv", index=False)
    saved = save_evidence(ev, spec, staging)
    beside = ""
    if printed_table is not None and not g.paper_setting:
        beside = paper_beside_markdown(
            agg, printed_table, setting_of(paper_root, paper), ev.setting, spec.get("lower_is_better") or []
        )
        note = (
            f"These cells ran at {scale} scale on {ev.setting['inputs']}, not in the paper's setting, so no "
            "paper value is printed beside ours; the paper's table follows ours, labelled with its setting."
        )
    elif "printed" in set(agg["provenance"]) or "read-off-from-chart" in set(agg["provenance"]):
        note = "Paper values are shown in [brackets] (this is the paper's setting), with their provenance in table.csv."
    else:
        note = (
            f"The paper prints no numbers for this experiment: only its claims (paper_results/{paper}/claims.yaml) "
            "are compared, below."
        )
    mixed = differing(version_sets(g.provenance))
    note = " ".join([note, *g.notes, *([mixed] if mixed else [])])
    command = "edgeai-repro " + " ".join(manifest.get("arguments", []))
    text = render_markdown(
        spec.get("title") or config.experiment_name, command, agg, spec, g, entries, figures, note
    )
    text += beside
    if spec.get("improvement"):
        gains = improvement_table(agg, **spec["improvement"], paper=g.paper_setting)
        gains.to_csv(staging / "improvement.csv", index=False)
        text += improvement_markdown(gains, spec["improvement"])
    if spec.get("choice"):
        from edgeai_repro.report.choice import ChoiceSpec, choice_markdown, choose

        rule = ChoiceSpec(**spec["choice"])
        picked = choose(agg, rule)
        (staging / "choice.json").write_text(json.dumps(picked, indent=2) + "\n")
        text += choice_markdown(picked, rule)
    (staging / "table.md").write_text(text)
    (staging / "claims.json").write_text(json.dumps(entries, indent=2) + "\n")
    (staging / "run.json").write_text(
        json.dumps(
            {
                **run_record(manifest, g, command),
                "figure_problems": problems,
                "evidence": saved,
                "inputs": digest,
            },
            indent=2,
        )
        + "\n"
    )
    _publish(staging, final)
    return final, g


def run_record(manifest: dict, g: Gathered, command: str) -> dict:
    """When, where, how long and with what: the sweep's wall time (from the sweeper's start to this
    report), how many cells it computed and reused, the compute time of every cell, the machine, the
    commit, lock and package versions of this report (`provenance`) and those the cells were
    computed under (`cell_environments`, one entry per distinct set, with its count of cells)."""
    started = manifest.get("started")
    return {
        "command": command,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "sweep_wall_s": round(time.time() - started, 1) if started else None,
        "cells": g.total,
        "computed": manifest.get("to_run"),
        "cached": (g.total - manifest["to_run"]) if manifest.get("to_run") is not None else None,
        "failed": len(g.failed),
        "missing": len(g.missing),
        "cells_compute_s": round(sum(g.seed_wall_s.values()), 1),
        "scale": ", ".join(sorted(g.scales)),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(terse=True)},
        "provenance": provenance(),
        "cell_environments": version_sets(g.provenance),
    }


def figure_problems(files: list[str]) -> dict[str, list[str]]:
    """What plots.layout_problems found in this report's figures (a legend over data, two series
    alike), by file; empty when every figure reads cleanly. Recorded in run.json."""
    if not files:
        return {}
    from edgeai_repro.report.plots import PROBLEMS

    return {f: PROBLEMS[f] for f in files if PROBLEMS.get(f)}


def featured_methods(spec: dict) -> list[str]:
    """The methods the experiment's claims are about (each claim's `ours`, then its named
    baselines, patterns left out): the figures draw them first and strongest."""
    out: list[str] = []
    for entry in (spec.get("claims") or {}).values():
        for m in [entry.get("ours"), *(entry.get("baselines") or [])]:
            if isinstance(m, str) and m and not any(ch in m for ch in "*?[!") and m not in out:
                out.append(m)
    return out


def draw_figures(
    spec: dict, agg: pd.DataFrame, g: Gathered, staging: Path, title: str, scale: str
) -> list[str]:
    figures = []
    if agg.empty:  # no cell finished: the table says why; there is nothing to draw
        return figures
    # matplotlib costs ~1 s to import; a cached re-run that draws nothing should not pay it
    from edgeai_repro.report.plots import bar_figure, curve_figure, line_figure, paper_bar_figure

    for fig in spec.get("figures") or ([spec["figure"]] if spec.get("figure") else []):
        file = fig.get("file", f"{fig['metric'] if fig.get('kind', 'line') == 'line' else 'properties'}.png")
        kind = fig.get("kind", "line")
        if kind == "bar_x":
            paper_bar_figure(
                agg,
                fig["metric"],
                staging / file,
                spec.get("x_label") or "x",
                fig.get("ylabel", fig["metric"]),
                title,
                scale,
            )
        elif kind in {"bar", "bar_mean"}:
            bar_figure(
                agg,
                fig["metrics"],
                staging / file,
                title,
                scale,
                stat="mean" if kind == "bar_mean" else "total",
            )
        else:
            line_figure(
                agg,
                fig["metric"],
                staging / file,
                spec.get("x_label") or "x",
                fig.get("ylabel", fig["metric"]),
                title,
                bool(fig.get("logx")),
                bool(fig.get("logy")),
                scale,
                featured=featured_methods(spec),
            )
        figures.append(file)
    for fig in spec.get("curve_figures") or []:
        if g.curves.empty:
            continue
        curve_figure(
            g.curves,
            fig["curves"],
            staging / fig["file"],
            fig.get("xlabel", "step"),
            fig.get("ylabel", "value"),
            title,
            scale,
        )
        figures.append(fig["file"])
    return figures
