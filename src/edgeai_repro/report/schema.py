"""Typed schema of an experiment's `report:` block, and its validation at sweep start.

The block's own keys are checked against `ReportSpec` (an unknown key is an error, not silence);
each `claims:` entry names a claim of the paper's claims.yaml and a check whose keyword-only
parameters are that entry's schema (see report/claims.py).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from edgeai_repro.core.errors import ConfigError, require
from edgeai_repro.report.choice import ChoiceSpec


@dataclass
class FigureSpec:
    kind: str = "line"  # line | bar | bar_mean | bar_x
    metric: str | None = None
    metrics: list[str] | None = None
    file: str | None = None
    ylabel: str | None = None
    logx: bool = False
    logy: bool = False


@dataclass
class CurveFigureSpec:
    curves: list[str] = field(default_factory=list)
    file: str = "curves.png"
    xlabel: str = "step"
    ylabel: str = "value"


@dataclass
class ImprovementSpec:
    metric: str = "log_ppl"
    ours: str = "deepfusion"
    exp: bool = True


@dataclass
class ReportSpec:
    title: str | None = None
    x: str | None = None
    x_label: str | None = None
    panel: Any = None  # a swept key, a list of keys (combined), or null
    metrics: list[str] = field(default_factory=list)
    show_total: bool = False
    figure: FigureSpec | None = None
    figures: list[FigureSpec] = field(default_factory=list)
    curve_figures: list[CurveFigureSpec] = field(default_factory=list)
    improvement: ImprovementSpec | None = None
    worst_panel: str | None = None  # a metric: a table of the panel (profile) where each method is lowest
    choice: ChoiceSpec | None = None  # a setting chosen by a stated rule from the cells (report/choice.py)
    claims: dict[str, Any] = field(default_factory=dict)
    lower_is_better: list[str] = field(default_factory=list)  # metrics ranked low-first (orderings, figures)
    notes: list[str] = field(
        default_factory=list
    )  # printed under the command in table.md (what the data holds, ...)


FIGURE_KINDS = ("line", "bar", "bar_mean", "bar_x")


def validate_report(cfg: DictConfig) -> None:
    """Raise ConfigError with one sentence for an unknown key, figure kind, claim id, check or check
    argument, a check that cannot judge its claim's kind, or a claims.yaml entry without the kind,
    margin, figure or level its kind needs (paper.load_claims)."""
    from edgeai_repro.report.claims import CHECKS
    from edgeai_repro.report.paper import load_claims

    block = OmegaConf.select(cfg, "report")
    if block is None:
        return
    try:
        # resolved in the whole config first: a claim's `setting` may name the run's own keys
        block = OmegaConf.to_container(block, resolve=True)
        spec = OmegaConf.merge(OmegaConf.structured(ReportSpec), block)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "report"
        raise ConfigError(
            f"report.{key.removeprefix('report.')} is not a valid report setting ({exc.msg.splitlines()[0]}); "
            f"allowed keys: {', '.join(ReportSpec.__dataclass_fields__)}."
        ) from None
    require(bool(spec.metrics), "report.metrics is empty; list the result metrics the table shows.")
    if spec.choice is not None:
        ChoiceSpec(**OmegaConf.to_container(spec.choice, resolve=True)).check()
    for fig in list(spec.figures) + ([spec.figure] if spec.figure is not None else []):
        require(
            fig.kind in FIGURE_KINDS,
            f"report figure kind {fig.kind!r} is unknown; use one of {', '.join(FIGURE_KINDS)}.",
        )
    paper = OmegaConf.select(cfg, "task.paper")
    declared = {c.id: c for c in load_claims(Path(cfg.paths.paper_results), paper)} if paper else {}
    known = set(declared)
    for claim_id, entry in (OmegaConf.to_container(spec.claims, resolve=True) or {}).items():
        require(
            claim_id.split("@", 1)[0] in known,
            f"report.claims.{claim_id} is not a claim of paper_results/{paper}/claims.yaml; "
            f"use one of: {', '.join(sorted(known))}.",
        )
        require(
            isinstance(entry, dict) and "check" in entry,
            f"report.claims.{claim_id} needs a `check:` naming one of: {', '.join(sorted(CHECKS))}.",
        )
        args = dict(entry)
        name = args.pop("check")
        require(
            isinstance(args.pop("setting", None) or {}, dict),
            f"report.claims.{claim_id}.setting must be a mapping of what the reading fixes, e.g. {{c: 2}}.",
        )
        require(
            name in CHECKS,
            f"report.claims.{claim_id}.check={name!r} is unknown; use one of: {', '.join(sorted(CHECKS))}.",
        )
        kind = declared[claim_id.split("@", 1)[0]].kind
        fits = sorted(n for n, c in CHECKS.items() if kind in c.kinds)
        require(
            kind in CHECKS[name].kinds,
            f"report.claims.{claim_id}.check={name} cannot judge a {kind} claim (paper_results/{paper}/claims.yaml "
            f"declares its kind); use one of: {', '.join(fits)}.",
        )
        params = {
            k: p for k, p in inspect.signature(CHECKS[name].fn).parameters.items() if p.kind == p.KEYWORD_ONLY
        }
        unknown = sorted(set(args) - set(params))
        require(
            not unknown,
            f"report.claims.{claim_id} passes {', '.join(unknown)} to check {name}, which takes only: "
            f"{', '.join(params)}.",
        )
        missing = sorted(k for k, p in params.items() if p.default is p.empty and k not in args)
        require(
            not missing, f"report.claims.{claim_id} (check {name}) is missing {', '.join(missing)}; add it."
        )
