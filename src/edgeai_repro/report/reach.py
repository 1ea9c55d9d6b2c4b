"""Whether each claim's check can reach both verdicts at the seeds and points a sweep runs.

A check that can only come out one way is not a test: a rate at level 0.9 needs 36 runs, all of them
successes, before its interval can clear 0.9; a sampled estimate needs two seeds for an interval.
`reachable` proves it the direct way: it builds two synthetic result tables on the sweep's own grid
(its points and seeds, every method the claim's check names), one where the claim is true by a wide
margin and one where it is false by a wide margin, and runs the check on each. The sweeper calls
`check_reachable` before any cell runs (not at scale=smoke, whose runs check the plumbing and judge
nothing); tests/test_reach.py runs it on every experiment at its configured scales.

A property's held side depends on the trials its cells find, known only after the run: its check
reports too few trials itself (inconclusive, with the seeds that would bound the rate).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pandas as pd

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.report import claims as claim_checks
from edgeai_repro.report.paper import ClaimSpec
from edgeai_repro.report.table import panel_keys

BIG = 10.0  # how far past every boundary a synthetic world puts its values, in units of the boundary


def _noise(seed: int, point: int, salt: int) -> float:
    """A small deterministic spread, different per seed, point and series, so every estimate has a
    t-interval (a zero spread over sampled seeds has none below 6)."""
    return 1e-6 * (((seed + 1) * 7 + point * 3 + salt * 5) % 11 - 5 + 0.1 * seed)


def _name(pattern: str) -> str:
    """A method name that a baseline pattern matches ("edge_only+*" -> "edge_only+synthetic")."""
    return re.sub(r"[*?]|\[[^\]]*\]", "synthetic", pattern)


def _world(
    entry: dict, claim: ClaimSpec, side: str
) -> tuple[list[str], Callable[[str, str, int, int], float]]:
    """The methods and a value per (method, metric, point, seed) making the claim clearly `side`."""
    check = entry["check"]
    good = side == "held"
    if check == "compare":
        ours = entry["ours"]
        bases = [_name(b) for b in entry["baselines"] if not b.startswith("!")]
        specs = claim_checks.metric_specs(
            entry.get("metric"),
            entry.get("metrics"),
            bool(entry.get("lower_is_better")),
            entry.get("panel_metrics"),
        )
        lower = {m: lo for m, lo, _ in specs}
        m_units = claim.margin.units(100.0) if claim.margin else 0.0
        delta = {
            "superiority": BIG if good else -BIG,
            "non_inferiority": 0.0 if good else -(2 * m_units + BIG),
            "equivalence": 0.0 if good else 2 * m_units + BIG,
        }[claim.kind]

        def value(method: str, metric: str, point: int, seed: int) -> float:
            base = 100.0 + _noise(seed, point, 0)
            if method != ours:
                return base
            return base + (-delta if lower.get(metric) else delta) + _noise(seed, point, 1)

        return [ours, *bases], value
    if check == "threshold":
        bound = (
            claim.level
            if claim.level is not None
            else (claim.at_least if claim.at_least is not None else claim.at_most)
        )
        above = claim.at_most is None
        shift = BIG * max(1.0, abs(bound)) * (1 if above == good else -1)
        chance, best = (
            (entry.get("normalise") or {}).get("chance"),
            (entry.get("normalise") or {}).get("best"),
        )

        def value(method: str, metric: str, point: int, seed: int) -> float:
            if metric == chance:
                return 0.0
            if metric == best:
                return 1.0
            return bound + shift + _noise(seed, point, 2)

        return [entry["ours"]], value
    if check == "target":
        tol = claim.margin.units(claim.target)
        level = claim.target if good else claim.target + BIG * max(tol, 1.0)
        return [entry["method"]], lambda method, metric, point, seed: level + _noise(seed, point, 3)
    if check == "gain_target":
        tol = claim.margin.units(claim.target)
        gain = (
            claim.target
            if good
            else (claim.target + BIG * tol if claim.target + BIG * tol < 100 else claim.target - BIG * tol)
        )
        ours = entry["ours"]

        def value(method: str, metric: str, point: int, seed: int) -> float:
            base = 1.0 + _noise(seed, point, 4)
            return base + math.log(1 - gain / 100) + _noise(seed, point, 5) if method == ours else base

        return [ours, *entry["baselines"]], value
    if check == "success_rate":
        return [entry["ours"]], lambda method, metric, point, seed: 1.0 if good else 0.0
    raise KeyError(check)


def reachable(
    claim: ClaimSpec, entry: dict, points: list[dict], seeds: list[int], x: str | None, panel
) -> dict[str, str]:
    """The verdict `entry`'s check gives on each synthetic world (held, not_held) built on the sweep's
    points (their report coordinates) and seeds; both equal to their world's name when reachable."""
    out = {}
    for side in ("held", "not_held"):
        methods, value = _world(entry, claim, side)
        metrics = claim_checks.metrics_of(entry)
        rows = [
            {**coords, "seed": seed, "method": method, **{m: value(method, m, i, seed) for m in metrics}}
            for i, coords in enumerate(points)
            for seed in seeds
            for method in methods
        ]
        ev = claim_checks.Evidence.from_rows(pd.DataFrame(rows), x, panel, metrics)
        spec = {k: v for k, v in entry.items() if k != "setting"}
        out[side] = claim_checks.evaluate([claim], {claim.id: spec}, ev)[0].verdict
    return out


# Checks whose verdicts a synthetic world can show before the run: the others depend on what the
# cells find (a property's trials) or compare computed rows by name (ratio_range, Fig. 7's models).
SYNTHETIC = ("compare", "threshold", "target", "gain_target", "success_rate")


def problems(
    spec: dict, declared: dict[str, ClaimSpec], cells: list[dict], seed_key: str | None, scale: str = "paper"
) -> list[str]:
    """One sentence per claim entry whose check cannot reach held or not_held on the sweep's cells
    (their `coords`, seed included) at `scale` (a claim judged at scale=paper only is not judged at
    another, by design)."""
    x, panel = spec.get("x"), spec.get("panel")
    keys = [*([x] if x else []), *panel_keys(panel)]
    points = list({tuple((k, c["coords"].get(k)) for k in keys): None for c in cells})
    seeds = sorted({int(c["coords"].get("seed", c.get("seed", 0))) for c in cells})
    out = []
    for key, entry in (spec.get("claims") or {}).items():
        claim = declared.get(key.split("@", 1)[0])
        if (
            claim is None
            or entry.get("check") not in SYNTHETIC
            or (claim.judged_at == "paper" and scale != "paper")
        ):
            continue
        got = reachable(claim, dict(entry), [dict(p) for p in points], seeds, x, panel)
        missing = [side for side, verdict in got.items() if verdict != side]
        if not missing:
            continue
        out.append(_sentence(key, claim, entry, missing, len(seeds), max(1, len(points)), seed_key))
    return out


def _sentence(
    key: str, claim: ClaimSpec, entry: dict, missing: list[str], seeds: int, points: int, seed_key: str | None
) -> str:
    from edgeai_repro.report.stats import runs_to_reach

    where = f"scale key {seed_key}" if seed_key else "the sweep's seed range"
    if entry["check"] == "success_rate":
        runs = max(runs_to_reach(claim.level, side) for side in missing)
        need = math.ceil(runs / points)
        return (
            f"report.claims.{key} cannot reach {' or '.join(missing)} at {seeds} seeds x {points} points: a rate at "
            f"level {claim.level:g} needs {runs} runs ({need} seeds); raise {where} to {need} or restate the "
            "claim's level"
        )
    return (
        f"report.claims.{key} cannot reach {' or '.join(missing)} at {seeds} seeds (an interval over sampled "
        f"seeds needs at least 2); raise {where}"
    )


def check_reachable(config, cells: list[dict]) -> None:
    """Raise ConfigError naming every claim of the sweep that cannot reach a verdict at its seeds."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from edgeai_repro.report.paper import load_claims

    if OmegaConf.select(config, "report.claims") is None or OmegaConf.select(config, "scale.name") == "smoke":
        return
    paper = str(config.experiment_name).split("/", 1)[0]
    declared = {c.id: c for c in load_claims(Path(config.paths.paper_results), paper)}
    spec = OmegaConf.to_container(config.report, resolve=True)
    bad = problems(spec, declared, cells, seed_key(config), str(OmegaConf.select(config, "scale.name")))
    if bad:
        raise ConfigError("; ".join(bad) + " (report.claims={} runs the sweep without judging claims).")


def seed_key(config) -> str | None:
    """The scale key that sets the sweep's seeds (`seed: range(0,${scale.incentive.seeds})`), if any."""
    from omegaconf import OmegaConf

    params = (
        OmegaConf.to_container(config.hydra.sweeper.params)
        if OmegaConf.select(config, "hydra.sweeper.params")
        else {}
    )
    found = re.search(r"\$\{(scale\.[^}]+)\}", str((params or {}).get("seed", "")))
    return found.group(1) if found else None


def grid_of(config) -> list[dict]:
    """The cells a composed experiment config would sweep (their swept coordinates, seed included),
    expanded by Hydra's own parser as the sweeper expands them, without composing any cell."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(config.hydra.sweeper.params, resolve=True) or {}
    parser = OverridesParser.create()
    jobs = BasicSweeper.split_arguments(
        parser.parse_overrides([f"{k}={v}" for k, v in params.items()]), None
    )[0]
    cells = []
    for job in jobs:
        coords = dict(o.split("=", 1) for o in job)
        coords["seed"] = int(coords.get("seed", OmegaConf.select(config, "seed", default=0)))
        cells.append({"coords": coords})
    return cells
