"""What the papers print: paper_results/<paper>/claims.yaml and one CSV per table or figure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from edgeai_repro.core.errors import ConfigError

PROVENANCE = {"printed", "read-off-from-chart", "claim-only"}


def load_claims(root: Path, paper: str) -> list[dict]:
    path = root / paper / "claims.yaml"
    if not path.exists():
        return []
    try:
        data = yaml.safe_load(path.read_text()) or {}
        claims = data["claims"]
    except (yaml.YAMLError, KeyError, TypeError):
        raise ConfigError(
            f"{path} is not a valid claims file; it needs a top-level `claims:` list."
        ) from None
    for c in claims:
        if not {"id", "text", "provenance"} <= set(c) or c["provenance"] not in PROVENANCE:
            raise ConfigError(
                f"{path}: claim {c.get('id')!r} needs id, text and a provenance in {sorted(PROVENANCE)}."
            )
    return claims


def load_table(root: Path, paper: str, name: str) -> pd.DataFrame | None:
    """The paper's printed values for one experiment, or None when the paper prints none."""
    path = root / paper / f"{name}.csv"
    if not path.exists():
        return None
    try:
        table = pd.read_csv(path, comment="#")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError):
        raise ConfigError(f"{path} is not a readable CSV; fix or restore it from git.") from None
    if not {"value", "provenance"} <= set(table.columns) or not set(table["provenance"]) <= PROVENANCE:
        raise ConfigError(
            f"{path} needs `value` and `provenance` columns with provenance in {sorted(PROVENANCE)}."
        )
    return table
