#!/usr/bin/env python
"""Print the README block of a finished experiment from its results (never runs anything):

    .venv/bin/python scripts/readme_section.py aeria/revenue_vs_users --metric revenue \
        --methods auto+core auto+rsop edge_only+rsop --wall "3 min 10 s" [--copy-figures]

The table is the aggregated `table.csv` (mean ± std over seeds) restricted to --methods when given;
the claims are `claims.json`; --copy-figures copies the figures to docs/figures/<paper>/<name>/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment")
    ap.add_argument("--metric", required=True)
    ap.add_argument("--methods", nargs="*")
    ap.add_argument("--wall", default=None)
    ap.add_argument("--results", default=str(ROOT / "results"))
    ap.add_argument("--copy-figures", action="store_true")
    args = ap.parse_args(argv)
    paper, name = args.experiment.split("/")
    folder = Path(args.results) / paper / name
    conf = (ROOT / "conf" / "experiment" / paper / f"{name}.yaml").read_text().splitlines()
    command = conf[1].lstrip("# ").strip()
    about = " ".join(ln.lstrip("# ").strip() for ln in conf[2:6] if ln.startswith("#"))
    table = pd.read_csv(folder / "table.csv")
    sel = table[table["metric"] == args.metric]
    if args.methods:
        sel = sel[sel["method"].isin(args.methods)]
    methods = args.methods or list(dict.fromkeys(sel["method"]))
    has_panel = sel["panel"].notna().any() and (sel["panel"].astype(str) != "").any()
    has_x = sel["x"].notna().any() and (sel["x"].astype(str) != "nan").any()
    from omegaconf import OmegaConf

    x_label = OmegaConf.select(
        OmegaConf.load(ROOT / "conf" / "experiment" / paper / f"{name}.yaml"), "report.x_label"
    )
    head = (["panel"] if has_panel else []) + ([x_label or "x"] if has_x else []) + methods
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (p, x), grp in sel.groupby(["panel", "x"], sort=False, dropna=False):
        by = grp.set_index("method")
        cells = [
            f"{by.loc[m, 'mean']:.4g} ± {by.loc[m, 'std']:.2g}" if m in by.index else "—" for m in methods
        ]
        lines.append(
            "| " + " | ".join(([str(p)] if has_panel else []) + ([str(x)] if has_x else []) + cells) + " |"
        )
    print(f"#### `{paper}/{name}`\n\n{about}\n\n```bash\n.venv/bin/{command}\n```\n")
    if args.wall:
        print(f"Wall time on 2 CPU cores: {args.wall}.\n")
    print(
        f"`{args.metric}` (mean ± std over seeds; every metric and approach in `results/{paper}/{name}/table.md`):\n"
    )
    print("\n".join(lines) + "\n")
    for c in json.loads((folder / "claims.json").read_text()):
        if not c["evidence"].startswith("not tested by this experiment"):
            print(f"- **{c['verdict']}**: {c['claim']} *{c['evidence']}*")
    print()
    for fig in sorted(folder.glob("*.png")):
        target = ROOT / "docs" / "figures" / paper / name / fig.name
        if args.copy_figures:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fig, target)
        print(f"![{paper}/{name}: {fig.name}](docs/figures/{paper}/{name}/{fig.name})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
