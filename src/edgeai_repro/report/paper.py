"""What the papers print: paper_results/<paper>/claims.yaml and one CSV per table or figure.

Each claim declares, before any run, how it is judged: its kind, and where the kind needs one a
margin (in the metric's units or as a fraction of the reference), the paper's figure, a bound or a
level, each with a one-line reason; and the scale at which it can be judged. A claims file with an
unknown kind, a missing margin or a margin of the wrong sign stops the report build (and the
sweep, before any cell) with one line naming the claim and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from edgeai_repro.core.errors import ConfigError

PROVENANCE = {"printed", "read-off-from-chart", "claim-only"}
KINDS = ("superiority", "non_inferiority", "equivalence", "magnitude", "property", "rate", "vague")


@dataclass(frozen=True)
class Margin:
    """How far from the boundary still counts: `value` in the metric's units, or as a fraction of
    the reference's value when `relative`."""

    value: float
    relative: bool = False
    why: str = ""

    def units(self, reference: float) -> float:
        return self.value * abs(reference) if self.relative else self.value

    def describe(self) -> str:
        return f"{100 * self.value:g}% of the reference" if self.relative else f"{self.value:g}"


@dataclass(frozen=True)
class ClaimSpec:
    """One claim of a paper, as claims.yaml declares it."""

    id: str
    text: str
    provenance: str
    kind: str
    margin: Margin | None = None  # non_inferiority, equivalence; a magnitude's tolerance
    target: float | None = None  # magnitude: the paper's figure ("up to 71%")
    range: tuple[float, float] | None = None  # magnitude: the paper's range ("3.3x to 9.3x")
    at_least: float | None = None  # magnitude: a bound the estimate must clear
    at_most: float | None = None  # magnitude: a bound; property: the violation rate it tolerates
    level: float | None = None  # rate: the share that must succeed; magnitude: a normalised level
    why: str = ""  # the reason for the target, bound or level
    judged_at: str = "any"  # the scale the claim can be judged at: any | paper
    tested_by: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _claim(raw: dict, path: Path) -> ClaimSpec:
    cid = raw.get("id")
    where = f"{path}: claim {cid!r}"
    if not {"id", "text", "provenance", "kind"} <= set(raw) or raw["provenance"] not in PROVENANCE:
        raise ConfigError(f"{where} needs id, text, kind and a provenance in {sorted(PROVENANCE)}.")
    kind = raw["kind"]
    if kind not in KINDS:
        raise ConfigError(f"{where} has kind {kind!r}; use one of: {', '.join(KINDS)}.")
    margin = None
    if "margin" in raw:
        m = raw["margin"]
        if not isinstance(m, dict) or "value" not in m or not m.get("why"):
            raise ConfigError(
                f"{where}: margin must be {{value: <number>, relative: <bool>, why: <one line>}}."
            )
        if not isinstance(m["value"], (int, float)) or m["value"] <= 0:
            raise ConfigError(
                f"{where}: margin.value={m['value']!r} must be a positive number (the distance "
                "from the boundary that still counts); give its size, not its sign."
            )
        margin = Margin(float(m["value"]), bool(m.get("relative", False)), str(m["why"]))
    if kind in {"non_inferiority", "equivalence"} and margin is None:
        raise ConfigError(
            f"{where} is a {kind} claim and needs a margin: add margin: {{value: ..., why: ...}}."
        )
    rng = raw.get("range")
    spec = ClaimSpec(
        id=cid,
        text=raw["text"],
        provenance=raw["provenance"],
        kind=kind,
        margin=margin,
        target=raw.get("target"),
        range=tuple(rng) if rng is not None else None,
        at_least=raw.get("at_least"),
        at_most=raw.get("at_most"),
        level=raw.get("level"),
        why=str(raw.get("why", "")),
        judged_at=raw.get("judged_at", "paper" if kind == "magnitude" else "any"),
        tested_by=str(raw.get("tested_by", "")),
    )
    if kind == "magnitude":
        forms = [
            spec.target is not None,
            spec.range is not None,
            spec.at_least is not None or spec.at_most is not None,
            spec.level is not None,
        ]
        if sum(forms) != 1:
            raise ConfigError(
                f"{where} is a magnitude claim and needs exactly one of target, range, at_least/at_most "
                "or level."
            )
        if (spec.target is not None or spec.range is not None) and margin is None:
            raise ConfigError(
                f"{where} compares with the paper's figure and needs a margin (its tolerance): add "
                "margin: {value: ..., why: ...}."
            )
        if not spec.why and spec.target is None and spec.range is None:
            raise ConfigError(
                f"{where} declares a bound or level and needs why: <one line> saying where it comes from."
            )
    if kind == "rate" and (spec.level is None or not 0 < spec.level < 1 or not spec.why):
        raise ConfigError(
            f"{where} is a rate claim and needs level: <a share in (0, 1)> and why: <one line>."
        )
    if kind == "property" and (
        spec.at_most is None or not 0 < spec.at_most < 1 or not spec.why
    ):  # zero violations in N trials only bounds the rate: the claim says below what it must lie
        raise ConfigError(
            f"{where} is a property claim and needs at_most: <the violation rate it tolerates, in (0, 1)> "
            "and why: <one line>; held needs enough trials without a violation to bound the rate below it."
        )
    if spec.judged_at not in {"any", "paper"}:
        raise ConfigError(f"{where} has judged_at={spec.judged_at!r}; use any or paper.")
    return spec


def load_claims(root: Path, paper: str) -> list[ClaimSpec]:
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
    return [_claim(c, path) for c in claims]


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


def setting_of(root: Path, paper: str) -> str:
    """The paper's own setting, in words (claims.yaml `setting:`), for labelling its printed tables."""
    path = root / paper / "claims.yaml"
    try:
        return str((yaml.safe_load(path.read_text()) or {}).get("setting", "the paper's setting"))
    except (OSError, yaml.YAMLError):
        return "the paper's setting"
