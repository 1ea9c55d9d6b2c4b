#!/usr/bin/env python
"""Run every experiment of one paper (or all): a thin loop over the launcher.

.venv/bin/python scripts/reproduce.py aeria [scale=tiny] [extra overrides ...]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def experiments(paper: str) -> list[str]:
    base = ROOT / "conf" / "experiment"
    papers = [p.name for p in base.iterdir() if p.is_dir()] if paper == "all" else [paper]
    found = sorted(f"{p}/{f.stem}" for p in papers for f in (base / p).glob("*.yaml"))
    if not found:
        sys.exit(
            f"error: no experiments for paper {paper!r}; use one of "
            f"{', '.join(sorted(p.name for p in base.iterdir()))} or all."
        )
    return found


def main(argv: list[str]) -> int:
    if not argv:
        sys.exit(__doc__)
    paper, extra = argv[0], argv[1:]
    launcher = [sys.executable, "-m", "edgeai_repro"]
    status = 0
    for name in experiments(paper):
        start = time.perf_counter()
        rc = subprocess.call([*launcher, f"experiment={name}", *extra], cwd=ROOT)
        print(
            f"reproduce: {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
