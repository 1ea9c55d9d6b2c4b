#!/usr/bin/env python
"""Summarise finished experiments: each claim's verdict, and the main table beside the paper's.

    .venv/bin/python scripts/compare.py aeria [--results results] [--tables]

Reads results/<paper>/*/ only (never runs anything); exits 1 if an experiment has no results.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paper")
    parser.add_argument("--results", default="results")
    parser.add_argument("--tables", action="store_true", help="also print each experiment's first table")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    expected = sorted(p.stem for p in (root / "conf" / "experiment" / args.paper).glob("*.yaml"))
    if not expected:
        sys.exit(f"error: paper {args.paper!r} has no experiments in conf/experiment/.")
    missing = 0
    for name in expected:
        folder = Path(args.results) / args.paper / name
        print(f"## {args.paper}/{name}")
        if not (folder / "claims.json").exists():
            print(f"no results yet: run `edgeai-repro experiment={args.paper}/{name}`\n")
            missing += 1
            continue
        if args.tables:
            text = (folder / "table.md").read_text().split("\n## ")
            print("### " + text[1].strip() + "\n")
        for c in json.loads((folder / "claims.json").read_text()):
            if c["verdict"] != "not_testable":
                print(f"- **{c['verdict']}**: {c['claim']} {c['evidence']}")
        print()
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
