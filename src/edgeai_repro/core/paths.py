"""Where the project's config folder is (the launcher, tests and packaged defaults all read it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def conf_dir() -> Path:
    """The repo's conf/ folder (the project is installed in editable mode by scripts/setup.sh)."""
    path = Path(os.environ.get("EDGEAI_REPRO_CONF", Path(__file__).resolve().parents[3] / "conf"))
    if not (path / "config.yaml").exists():
        sys.exit(
            f"error: no config.yaml in {path}; install the project with `pip install -e .` from the "
            "repo root or set EDGEAI_REPRO_CONF to its conf/ folder."
        )
    return path
