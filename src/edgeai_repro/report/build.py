"""Build results/<paper>/<name>/ from a sweep: table.csv, table.md, figures, claims.json."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from edgeai_repro.core.store import CellStore
from edgeai_repro.report import claims as claim_checks
from edgeai_repro.report.gather import Gathered, gather
from edgeai_repro.report.paper import load_claims, load_table
from edgeai_repro.report.plots import bar_figure, curve_figure, line_figure, paper_bar_figure
from edgeai_repro.report.table import aggregate, join_paper, render_markdown, with_points


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
    metric is a log), from our means and, where printed, from the paper's values."""

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
    lines = [
        "",
        f"## Improvement of {spec['ours']} in {what}, % (positive: {spec['ours']} is better)",
        "",
        "| panel | x | vs | ours | paper |",
        "|---|---|---|---|---|",
    ]
    for _, r in gains.iterrows():
        paper = "n/a" if pd.isna(r.get("paper_pct", math.nan)) else f"{r['paper_pct']:+.2f}"
        lines.append(f"| {r['panel']} | {r['x']} | {r['baseline']} | {r['ours_pct']:+.2f} | {paper} |")
    return "\n".join(lines) + "\n"


def build_report(config: DictConfig, manifest: dict, store: CellStore, paper: str) -> tuple[Path, Gathered]:
    spec = OmegaConf.to_container(config.report, resolve=True)
    name = config.experiment_name.split("/", 1)[-1]
    g = gather(manifest, store)
    metrics = list(spec["metrics"])
    agg = aggregate(g.rows, spec.get("x"), spec.get("panel"), metrics)
    paper_root = Path(config.paths.paper_results)
    agg = join_paper(agg, load_table(paper_root, paper, name))
    paper_claims = load_claims(paper_root, paper)
    per_seed = with_points(g.rows, spec.get("x"), spec.get("panel")) if not g.rows.empty else None
    scale = ", ".join(sorted(g.scales))
    verdicts = claim_checks.evaluate(
        paper_claims, spec.get("claims") or {}, agg, per_seed, scale=scale or "paper"
    )

    final = Path(config.paths.results) / paper / name
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{name}."))
    figures = []
    title = spec.get("title") or config.experiment_name
    for fig in spec.get("figures") or ([spec["figure"]] if spec.get("figure") else []):
        file = fig.get("file", f"{fig['metric'] if fig.get('kind', 'line') == 'line' else 'properties'}.png")
        if fig.get("kind") == "bar_x":
            paper_bar_figure(
                agg,
                fig["metric"],
                staging / file,
                spec.get("x_label") or "x",
                fig.get("ylabel", fig["metric"]),
                title,
                scale,
            )
        elif fig.get("kind", "line") in {"bar", "bar_mean"}:
            bar_figure(
                agg,
                fig["metrics"],
                staging / file,
                title,
                scale,
                stat="mean" if fig["kind"] == "bar_mean" else "total",
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
            )
        figures.append(file)
    for fig in spec.get("curve_figures") or []:
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
    if not g.curves.empty:
        g.curves.to_csv(staging / "curves.csv", index=False)
    agg.to_csv(staging / "table.csv", index=False)
    printed = "printed" in set(agg["provenance"]) or "read-off-from-chart" in set(agg["provenance"])
    note = (
        "Paper values are shown in [brackets] with their provenance in table.csv."
        if printed
        else f"The paper prints no numbers for this experiment: only its claims (claim-only provenance, "
        f"paper_results/{paper}/claims.yaml) are compared, below."
    )
    command = "edgeai-repro " + " ".join(manifest.get("arguments", []))
    text = render_markdown(title, command, agg, spec, g, verdicts, figures, note)
    if spec.get("improvement"):
        gains = improvement_table(agg, **spec["improvement"])
        gains.to_csv(staging / "improvement.csv", index=False)
        text += improvement_markdown(gains, spec["improvement"])
    (staging / "table.md").write_text(text)
    (staging / "claims.json").write_text(
        json.dumps(
            [{"claim": v["claim"], "verdict": v["verdict"], "evidence": v["evidence"]} for v in verdicts],
            indent=2,
        )
        + "\n"
    )
    _publish(staging, final)
    return final, g
