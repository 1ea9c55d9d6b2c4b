#!/usr/bin/env python
"""The results sections of the manuals (docs/<paper>.md), generated from finished experiments.

    .venv/bin/python scripts/readme_section.py update aeria/revenue_vs_users [...]   # after running them
    .venv/bin/python scripts/readme_section.py render                               # rewrite every section
    .venv/bin/python scripts/readme_section.py check                                # exit 1 if one is stale
    .venv/bin/python scripts/readme_section.py refigure deepfusion/table1_2 [...]   # redraw a snapshot's figures
    .venv/bin/python scripts/readme_section.py rejudge [aeria/properties ...]        # re-judge snapshots' claims

`update` copies what an experiment left in results/<paper>/<name>/ (table.csv, claims.json, run.json,
seeds.csv.gz and its figures) to docs/results/<paper>/<name>/, the snapshot the manuals show, then re-renders
every section. A section is the text between a marker and its end in a manual:

    <!-- section: aeria/revenue_vs_users metric=revenue methods=auto+core,auto+rsop -->
    ... generated ...
    <!-- /section -->

with options `metric` (comma-separated: one table each), `methods` (the columns; default all),
`figures` (comma-separated file names; default all) and `worst` (a metric: the panel where each
method is lowest, as in table.md); an experiment that chose a setting (report.choice) shows its
rule and outcome (choice.json). `rejudge` judges the claims of snapshots (default: every one) again
from their own per-seed rows (seeds.csv.gz) under today's claims.yaml, report blocks and verdict
engine, prints every verdict that changed and rewrites claims.json: no cell is recomputed. Nothing
else of a manual is touched. The test
suite renders every section from the committed snapshot and fails when one differs
(tests/test_docs.py), so a table in the docs cannot drift from the results it claims to show.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SNAPSHOT = DOCS / "results"
MARKER = re.compile(r"<!-- section: (?P<name>\S+)(?P<opts>[^>]*)-->\n(?P<body>.*?)<!-- /section -->", re.S)


def _options(text: str) -> dict[str, list[str]]:
    return {k: v.split(",") for k, v in re.findall(r"(\w+)=(\S+)", text)}


def _fmt(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{mean:.4g}"
    return text + (f" ± {std:.2g}" if std is not None and not math.isnan(std) else "")


def _about(paper: str, name: str) -> tuple[str, str]:
    lines = (ROOT / "conf" / "experiment" / paper / f"{name}.yaml").read_text().splitlines()
    command = lines[1].lstrip("# ").strip()
    about = " ".join(ln.lstrip("# ").strip() for ln in lines[2:8] if ln.startswith("#"))
    return command, about


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def metric_table(table: pd.DataFrame, metric: str, methods: list[str] | None, x_label: str) -> str:
    sel = table[table["metric"] == metric]
    methods = methods or list(dict.fromkeys(sel["method"]))
    sel = sel[sel["method"].isin(methods)]
    has_panel = sel["panel"].notna().any() and (sel["panel"].astype(str) != "").any()
    has_x = sel["x"].notna().any() and (sel["x"].astype(str) != "nan").any()
    paper = "paper_value" in sel and sel["paper_value"].notna().any()
    head = (["panel"] if has_panel else []) + ([x_label] if has_x else []) + methods
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (p, x), grp in sel.groupby(["panel", "x"], sort=False, dropna=False):
        by = grp.set_index("method")
        cells = []
        for m in methods:
            if m not in by.index:
                cells.append("—")
                continue
            text = _fmt(by.loc[m, "mean"], by.loc[m, "std"])
            if paper and not pd.isna(by.loc[m, "paper_value"]):
                text += f" [paper {by.loc[m, 'paper_value']:g}]"
            cells.append(text)
        keys = ([str(p)] if has_panel else []) + ([str(x)] if has_x else [])
        # a panel may combine keys with " | ", which would split the Markdown cell
        lines.append("| " + " | ".join([k.replace("|", "\\|") for k in keys] + cells) + " |")
    return "\n".join(lines)


def render(name: str, opts: dict[str, list[str]], snapshot: Path = SNAPSHOT) -> str:
    """The generated text of one section, from the snapshot of its experiment's results."""
    from omegaconf import OmegaConf

    paper, short = name.split("/")
    folder = snapshot / paper / short
    table = pd.read_csv(folder / "table.csv")
    claims = json.loads((folder / "claims.json").read_text())
    run = json.loads((folder / "run.json").read_text())
    command, about = _about(paper, short)
    spec = OmegaConf.load(ROOT / "conf" / "experiment" / paper / f"{short}.yaml")
    x_label = OmegaConf.select(spec, "report.x_label") or "x"
    seeds = int(table["n_seeds"].max()) if len(table) else 0
    parts = [
        f"### `{name}`",
        "",
        about,
        "",
        "```bash",
        f".venv/bin/{command}",
        "```",
        "",
        f"Run {run['finished'][:10]} on {run['machine']['cpus']} CPU cores at scale {run['scale']}: "
        f"{run['cells']} cells ({run['computed'] if run.get('computed') is not None else 'n/a'} computed, the rest "
        f"reused from the cell store) in {_duration(run.get('sweep_wall_s'))}; {_duration(run['cells_compute_s'])} "
        "of cell compute time.",
        "",
    ]
    for metric in opts.get("metric") or list(dict.fromkeys(table["metric"]))[:1]:
        parts += [
            f"`{metric}` (mean ± std over {seeds} seeds; every metric and method in "
            f"`results/{name}/table.md`):",
            "",
            metric_table(table, metric, opts.get("methods"), x_label),
            "",
        ]
    if opts.get("worst"):
        from edgeai_repro.report.table import worst_panel_table

        body = worst_panel_table(table.assign(panel=table["panel"].fillna("")), opts["worst"][0], x_label)
        parts += [line for line in body.splitlines() if not line.startswith("## ")][1:] + [""]
    if (folder / "choice.json").exists():
        choice = json.loads((folder / "choice.json").read_text())
        parts += [f"Choice: {choice['rule']}. Outcome: **{choice['reason']}**.", ""]
    tested = [c for c in claims if not c["evidence"].startswith("not tested by this experiment")]
    if tested:
        parts += ["| claim | kind | verdict | estimate [95% CI] | evidence |", "|---|---|---|---|---|"]
        for c in tested:
            est = c.get("estimate")
            ci = c.get("ci")
            shown = (
                "—"
                if est is None
                else (f"{est:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci and None not in ci else ""))
            )
            parts.append(f"| {c['claim']} | {c['kind']} | **{c['verdict']}** | {shown} | {c['evidence']} |")
        parts.append("")
    figures = opts.get("figures") or sorted(p.name for p in folder.glob("*.png"))
    parts += [f"![{name}: {f}](results/{name}/{f})\n" for f in figures]
    return "\n".join(parts).rstrip() + "\n"


def sections(text: str) -> list[tuple[str, dict[str, list[str]], str]]:
    return [(m["name"], _options(m["opts"]), m["body"]) for m in MARKER.finditer(text)]


def rendered(text: str, snapshot: Path = SNAPSHOT) -> str:
    def replace(m: re.Match) -> str:
        return f"<!-- section: {m['name']}{m['opts']}-->\n{render(m['name'], _options(m['opts']), snapshot)}<!-- /section -->"

    return MARKER.sub(replace, text)


def update(names: list[str], results: Path) -> None:
    for name in names:
        source, target = results / name, SNAPSHOT / name
        if not (source / "claims.json").exists():
            sys.exit(
                f"error: {source} holds no finished experiment; run `edgeai-repro experiment={name}` first."
            )
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        extra = [f for f in ("choice.json", "seeds.csv.gz") if (source / f).exists()]
        for f in ["table.csv", "claims.json", "run.json", *extra, *[p.name for p in source.glob("*.png")]]:
            shutil.copyfile(source / f, target / f)


def refigure(names: list[str], snapshot: Path = SNAPSHOT) -> None:
    """Redraw the figures of committed snapshots from their own table.csv with today's plotting code
    (figures are drawn from the aggregated table only), without re-running their cells; curve
    figures need the cells' curves and are left as they are."""
    from omegaconf import OmegaConf

    from edgeai_repro.report.build import draw_figures
    from edgeai_repro.report.gather import Gathered
    from edgeai_repro.report.plots import PROBLEMS
    from edgeai_repro.report.table import read_table

    for name in names:
        paper, short = name.split("/")
        folder = snapshot / paper / short
        agg = read_table(folder / "table.csv")
        spec = OmegaConf.to_container(
            OmegaConf.load(ROOT / "conf" / "experiment" / paper / f"{short}.yaml").report
        )
        spec["curve_figures"] = []
        run = json.loads((folder / "run.json").read_text())
        for file in draw_figures(
            spec, agg, Gathered(pd.DataFrame()), folder, spec.get("title") or name, run["scale"]
        ):
            for problem in PROBLEMS.get(file, []):
                print(f"{name}/{file}: {problem}", file=sys.stderr)


def composed_report(name: str, scale: str) -> dict:
    """An experiment's report block as the launcher composes it at `scale` (claims may name the
    run's own keys, so the plain YAML is not enough)."""
    from omegaconf import OmegaConf

    from edgeai_repro.cli import compose_config

    cfg = compose_config([f"experiment={name}", f"scale={scale}"])
    return OmegaConf.to_container(cfg.report, resolve=True)


def rejudge_snapshots(names: list[str], snapshot: Path = SNAPSHOT) -> list[str]:
    """Re-judge the claims of the named snapshots (all when none is named) from their seeds.csv.gz;
    rewrite claims.json; return one line per verdict that changed."""
    from edgeai_repro.report.build import SEEDS_FILE, rejudge

    folders = [snapshot / n for n in names] or sorted(p.parent for p in snapshot.glob(f"*/*/{SEEDS_FILE}"))
    changes = []
    for folder in folders:
        name = f"{folder.parent.name}/{folder.name}"
        run = json.loads((folder / "run.json").read_text())
        old = {c["id"]: c["verdict"] for c in json.loads((folder / "claims.json").read_text())}
        entries = rejudge(
            folder, composed_report(name, run["scale"]), ROOT / "paper_results", folder.parent.name
        )
        for c in entries:
            if old.get(c["id"]) != c["verdict"]:
                changes.append(f"{name} {c['id']}: {old.get(c['id'])} -> {c['verdict']}")
        (folder / "claims.json").write_text(json.dumps(entries, indent=2) + "\n")
    return changes


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["update", "render", "check", "refigure", "rejudge"])
    ap.add_argument("experiments", nargs="*")
    ap.add_argument("--results", default=str(ROOT / "results"))
    args = ap.parse_args(argv)
    if args.action == "update":
        update(args.experiments, Path(args.results))
    if args.action == "refigure":
        refigure(args.experiments)
    if args.action == "rejudge":
        for line in rejudge_snapshots(args.experiments) or ["no verdict changed"]:
            print(line)
    stale = []
    for manual in sorted(DOCS.glob("*.md")):
        text = manual.read_text()
        new = rendered(text)
        if new != text:
            if args.action == "check":
                stale.append(manual.name)
            else:
                manual.write_text(new)
    if stale:
        print(
            f"stale generated sections in {', '.join(stale)}; run scripts/readme_section.py render",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
