"""Aggregate cell rows over seeds, join the paper's printed values, write CSV and Markdown."""

from __future__ import annotations

import contextlib
import math
import re

import pandas as pd

from edgeai_repro.core.provenance import provenance, short
from edgeai_repro.report.gather import Gathered

SERIES = "method"


def panel_keys(panel: str | list[str] | None) -> list[str]:
    """The keys a report's `panel` names (one key, several, or none)."""
    return [panel] if isinstance(panel, str) else list(panel or [])


def key_name(key: str, keys: list[str]) -> str:
    """A swept key as a reader names it: its shortest dotted suffix that no other of `keys` shares
    (`aeria.pricing.core.c` -> `c`, `deepfusion/method` -> `method`)."""
    parts = key.replace("/", ".").split(".")
    for i in range(len(parts) - 1, -1, -1):
        name = ".".join(parts[i:])
        if not any(
            k != key and k.replace("/", ".").split(".")[-(len(parts) - i) :] == parts[i:] for k in keys
        ):
            return name
    return key


def with_points(rows: pd.DataFrame, x: str | None, panel: str | list[str] | None) -> pd.DataFrame:
    """The per-seed rows with the table's `panel` and `x` columns added. A panel of several keys is
    labelled by its first key's value and then `name = value` for each other key ("alexnet, c = 1.5");
    `panel_title` names every key ("workload = alexnet, c = 1.5"), for the figures' panel titles."""
    frame = rows.copy()
    keys = panel_keys(panel)
    if keys:
        names = [key_name(k, keys) for k in keys]
        values = frame[keys].astype(str).to_numpy()
        frame["panel"] = [
            ", ".join([v[0], *(f"{n} = {w}" for n, w in zip(names[1:], v[1:]))]) for v in values
        ]
        frame["panel_title"] = [", ".join(f"{n} = {w}" for n, w in zip(names, v)) for v in values]
    else:
        frame["panel"] = frame["panel_title"] = ""
    frame["x"] = frame[x] if x else ""
    return frame


def unshown_keys(
    rows: pd.DataFrame, swept: list[str], x: str | None, panel: str | list[str] | None
) -> list[str]:
    """Swept keys that neither the x axis nor the panel names but which split the cells of one
    (panel, x, method, seed): averaging over them would mix settings as if they were seeds."""
    if rows.empty:
        return []
    shown = {x, "seed", *panel_keys(panel)}
    group = [k for k in shown if k and k in rows] + [SERIES]
    extra = []
    for key in swept:
        if key in shown or key not in rows:
            continue
        frame = rows[group].astype(str).assign(_v=rows[key].astype(str))
        if frame.groupby(group, sort=False)["_v"].nunique().max() > 1:
            extra.append(key)
    return extra


def aggregate(
    rows: pd.DataFrame, x: str | None, panel: str | list[str] | None, metrics: list[str]
) -> pd.DataFrame:
    """Long table: panel, x, method, metric, mean, std, n_seeds, total (one grouped pass, vectorised)."""
    columns = ["panel", "x", SERIES, "metric", "mean", "std", "n_seeds", "total"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    frame = with_points(rows, x, panel)
    keys = [k for k in panel_keys(panel) if k in frame]
    present = [m for m in metrics if m in frame]
    # A swept value can be a list (an uplink range): grouped by a hashable copy, shown as it was.
    frame["_xk"] = frame["x"].map(lambda v: tuple(v) if isinstance(v, list) else v)
    values = frame[present].apply(pd.to_numeric, errors="coerce")
    carried = ["x", "panel_title", *keys]  # one value per group: shown, not grouped by
    grouped = pd.concat([frame[["panel", "_xk", SERIES, "seed", *carried]], values], axis=1).groupby(
        ["panel", "_xk", SERIES], sort=False, dropna=False
    )
    first = grouped[carried].first().reset_index()
    seeds = grouped["seed"].nunique().to_numpy()
    stats = {k: getattr(grouped[present], k)().to_numpy() for k in ("mean", "sum")}
    stats["std"] = grouped[present].std(ddof=1).to_numpy()
    out = pd.DataFrame(
        {
            "panel": first["panel"].repeat(len(present)).to_numpy(),
            "x": first["x"].repeat(len(present)).to_numpy(),
            SERIES: first[SERIES].repeat(len(present)).to_numpy(),
            "metric": present * len(first),
            "mean": stats["mean"].ravel(),
            "std": stats["std"].ravel(),
            "n_seeds": seeds.repeat(len(present)).astype(int),
            "total": stats["sum"].ravel(),
            "panel_title": first["panel_title"].repeat(len(present)).to_numpy(),
            # one column per panel key (the CSV names every swept key the table panels by)
            **{k: first[k].repeat(len(present)).to_numpy() for k in keys},
        }
    )
    with contextlib.suppress(TypeError):  # mixed-type x (e.g. lists rendered as text): keep sweep order
        out = out.sort_values(["panel", "x"], kind="stable")
    return out.reset_index(drop=True)


# A series under a preset fitted to the paper ("fedjets (fitted to the paper's bars)") is compared
# with the paper's own series ("fedjets"): that comparison is the fit's error per bar.
FITTED = re.compile(r" \(fitted[^)]*\)$")


def paper_series(name: str) -> str:
    """The paper's series a series of ours is compared with (itself, unless it is a fitted variant)."""
    return FITTED.sub("", name)


def join_paper(agg: pd.DataFrame, paper_table: pd.DataFrame | None) -> pd.DataFrame:
    """Add paper_value and provenance columns where the paper prints a number for the cell."""
    agg = agg.copy()
    agg["paper_value"] = math.nan
    agg["provenance"] = "claim-only"
    if paper_table is None or paper_table.empty or agg.empty:
        return agg
    keys = [k for k in ("panel", "x", SERIES, "metric") if k in paper_table.columns]
    # Keys are compared as text so that 16 and "16" match.
    left = agg.drop(columns=["paper_value", "provenance"])
    right = paper_table[keys + ["value", "provenance"]].rename(columns={"value": "paper_value"})
    left_k = left.assign(
        **{
            f"_{k}": (left[k].astype(str).map(paper_series) if k == SERIES else left[k].astype(str))
            for k in keys
        }
    )
    right_k = right.assign(**{f"_{k}": right[k].astype(str) for k in keys}).drop(columns=keys)
    merged = left_k.merge(right_k, how="left", on=[f"_{k}" for k in keys]).drop(
        columns=[f"_{k}" for k in keys]
    )
    merged["provenance"] = merged["provenance"].fillna("not printed")
    return merged


def _fmt(mean: float, std: float) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    text = f"{mean:.4g}"
    if std is not None and not math.isnan(std):
        text += f" ± {std:.2g}"
    return text


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; a `|` inside a cell is escaped, so that every row has the header's cells."""

    def cell(value: object) -> str:
        return re.sub(r"(?<!\\)\|", r"\\|", str(value))

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


STANDARD = {
    "panel",
    "panel_title",
    "x",
    SERIES,
    "metric",
    "mean",
    "std",
    "n_seeds",
    "total",
    "paper_value",
    "provenance",
}


def read_table(path) -> pd.DataFrame:
    """A table.csv as the report wrote it: an empty panel, x or panel title is "" again, not NaN."""
    agg = pd.read_csv(path)
    for col in ("panel", "x", "panel_title"):
        if col in agg and agg[col].isna().any():
            agg[col] = agg[col].astype(object).where(agg[col].notna(), "")
    return agg


def panel_columns(agg: pd.DataFrame) -> list[str]:
    """The aggregated table's panel-key columns (every other column is one of STANDARD)."""
    return [c for c in agg.columns if c not in STANDARD]


def metric_rows(
    agg: pd.DataFrame,
    metric: str,
    x_label: str,
    show_total: bool,
    ratio: bool = True,
    keys: list[str] | None = None,
) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of one metric's table: one row per (panel, x), one column per method, and one
    named column per panel key (`keys`); the paper's value in brackets, with our ratio to it only
    when `ratio` (at paper scale: a tiny model's value says nothing about the size of the paper's)."""
    sel = agg[agg["metric"] == metric]
    methods = list(dict.fromkeys(sel[SERIES]))
    keys = [k for k in keys or [] if k in sel]
    has_panel = (sel["panel"] != "").any()
    has_x = (sel["x"].astype(str) != "").any()
    panel_head = [key_name(k, keys) for k in keys] if keys else (["panel"] if has_panel else [])
    header = panel_head + ([x_label] if has_x else []) + methods
    rows = []
    for (p, xv), grp in sel.groupby(["panel", "x"], sort=False):
        by = {r[SERIES]: r for _, r in grp.iterrows()}
        cells = []
        for m in methods:
            if m not in by:
                cells.append("—")
                continue
            r = by[m]
            text = _fmt(r["mean"], r["std"])
            if show_total:
                text += f" (total {r['total']:g})"
            if not math.isnan(r.get("paper_value", math.nan)):
                share = (
                    f", ours/paper {r['mean'] / r['paper_value']:.2f}" if r["paper_value"] and ratio else ""
                )
                text += f" [paper {r['paper_value']:g}{share}]"
            cells.append(text)
        first = grp.iloc[0]
        shown = [str(first[k]) for k in keys] if keys else ([str(p)] if has_panel else [])
        rows.append(shown + ([str(xv)] if has_x else []) + cells)
    return header, rows


def metric_table(
    agg: pd.DataFrame,
    metric: str,
    x_label: str,
    show_total: bool,
    ratio: bool = True,
    keys: list[str] | None = None,
) -> str:
    """One metric's Markdown table (metric_rows)."""
    return markdown_table(*metric_rows(agg, metric, x_label, show_total, ratio, keys))


def worst_panel_table(agg: pd.DataFrame, metric: str, x_label: str) -> str:
    """Per x and method, the panel (e.g. the bid profile) where the method's mean `metric` is lowest,
    with that value: the worst case found for each method at each size."""
    sel = agg[agg["metric"] == metric]
    if sel.empty:
        return ""
    methods = list(dict.fromkeys(sel[SERIES]))

    def lowest(frame: pd.DataFrame, method: str, where: bool = False) -> str:
        part = frame[(frame[SERIES] == method) & frame["mean"].notna()]
        if part.empty:
            return "—"
        low = part.loc[part["mean"].idxmin()]
        place = f"{low['panel']} at {low['x']}" if where else str(low["panel"])
        return f"{place}: {_fmt(low['mean'], low['std'])}"

    rows = [[str(xv), *(lowest(grp, m) for m in methods)] for xv, grp in sel.groupby("x", sort=False)]
    rows.append(["**all**", *(lowest(sel, m, where=True) for m in methods)])
    return "\n".join(
        [
            f"## Worst {metric} per method",
            "",
            f"The profile (panel) where each method's mean {metric} is lowest, at each {x_label} and over all.",
            "",
            markdown_table([x_label, *methods], rows),
            "",
        ]
    )


def render_markdown(
    title: str,
    command: str,
    agg: pd.DataFrame,
    spec,
    gathered: Gathered,
    claims: list[dict],
    figures: list[str],
    paper_note: str,
) -> str:
    """table.md: command, scale, one table per metric, failed cells, claim verdicts, figures."""
    seeds = int(agg["n_seeds"].max()) if not agg.empty else 0
    scale = ", ".join(sorted(gathered.scales)) or "n/a"
    parts = [
        f"# {title}",
        "",
        f"Command: `{command}`",
        "",
        f"Commit: `{short(provenance())}` (run.json lists the package versions of this report and of its cells).",
        "",
        f"Scale: **{scale}**. Cells: {gathered.total} ({len(gathered.failed)} failed, "
        f"{len(gathered.missing)} missing). Each entry is mean ± std over {seeds} seeds; "
        "— marks a method not run at that point (failed cells are listed below).",
        "",
        paper_note,
        "",
    ]
    parts += [line for note in spec.get("notes") or [] for line in (note, "")]
    for metric in spec["metrics"]:
        if (agg["metric"] == metric).any():
            parts += [
                f"## {metric}",
                "",
                metric_table(
                    agg,
                    metric,
                    spec.get("x_label") or "x",
                    bool(spec.get("show_total")),
                    ratio=scale == "paper",
                    keys=panel_columns(agg),
                ),
                "",
            ]
    if spec.get("worst_panel"):
        parts.append(worst_panel_table(agg, spec["worst_panel"], spec.get("x_label") or "x"))
    if gathered.failed or gathered.missing:
        parts += ["## Failed or missing cells", ""]
        parts += [
            f"- `{c['cell_id']}` {' '.join(c['overrides'])}: {c.get('error') or 'missing'}"
            for c in gathered.failed + gathered.missing
        ]
        parts.append("")
    parts += [
        "## Claims",
        "",
        "Each verdict follows from estimates and their 95% intervals over seeds (paper_results' claims.yaml "
        "declares each claim's kind and margin): held needs every cell of the claim good, not_held needs "
        "Holm's step-down over its cells to find one bad at family-wise 2.5%; inconclusive ones say about how "
        "many seeds would reach each verdict with 80% power at the estimated effects.",
        "",
        markdown_table(
            ["claim", "kind", "verdict", "estimate [95% CI]", "evidence"],
            [[c["claim"], c["kind"], f"**{c['verdict']}**", estimate_text(c), c["evidence"]] for c in claims],
        ),
        "",
    ]
    for fig in figures:
        parts += [f"![{fig}]({fig})", ""]
    return "\n".join(parts)


def estimate_text(entry: dict) -> str:
    """A claims.json entry's estimate and interval, or a dash."""
    est, ci = entry.get("estimate"), entry.get("ci")
    if est is None or (isinstance(est, float) and math.isnan(est)):
        return "—"
    if ci and all(v is not None for v in ci):
        return f"{est:.4g} [{ci[0]:.4g}, {ci[1]:.4g}]"
    return f"{est:.4g}"


def _order(values: dict[str, float], lower_is_better: bool) -> list[str]:
    return sorted(values, key=lambda m: values[m] if lower_is_better else -values[m])


def paper_beside_markdown(
    agg: pd.DataFrame, printed: pd.DataFrame, paper_setting: str, ours: dict, lower_is_better: list[str]
) -> str:
    """The paper's table shown beside ours when our cells ran in another setting (other data or
    scale): its values, labelled with its setting, and the ordering of the methods compared in
    words (which method is best at each point, and the rank agreement), never value by value."""
    from scipy import stats

    printed = printed.assign(**{k: printed.get(k, "") for k in ("panel", "x")})
    parts = [
        "",
        f"## The paper's values, in its own setting ({paper_setting})",
        "",
        f"Our cells ran at {ours.get('scale')} scale on {ours.get('inputs')}: the values below are not "
        "comparable with ours; the orderings are.",
        "",
    ]
    for metric, table in printed.groupby("metric", sort=False):
        lower = metric in lower_is_better
        methods = list(dict.fromkeys(table["method"]))
        rows, best_same, taus, points = [], 0, [], 0
        for (panel, x), grp in table.groupby(["panel", "x"], sort=False):
            theirs = dict(zip(grp["method"], grp["value"]))
            rows.append([str(panel), str(x)] + [f"{theirs[m]:g}" if m in theirs else "—" for m in methods])
            mine_sel = agg[
                (agg["metric"] == metric)
                & (agg["panel"].astype(str) == str(panel))
                & (agg["x"].astype(str) == str(x))
            ]
            mine = {m: float(v) for m, v in zip(mine_sel["method"], mine_sel["mean"]) if m in theirs}
            common = [m for m in theirs if m in mine]
            if len(common) >= 2:
                points += 1
                best_same += (
                    _order({m: mine[m] for m in common}, lower)[0]
                    == _order({m: theirs[m] for m in common}, lower)[0]
                )
                tau = stats.kendalltau([theirs[m] for m in common], [mine[m] for m in common]).statistic
                if not math.isnan(tau):
                    taus.append(tau)
        parts += [
            f"### {metric} ({'lower' if lower else 'higher'} is better)",
            "",
            markdown_table(["panel", "x", *methods], rows),
            "",
        ]
        if points:
            mean_tau = sum(taus) / len(taus) if taus else math.nan
            parts += [
                f"Ordering: our best method is the paper's at {best_same} of {points} points; the rank "
                f"correlation of the methods (Kendall's tau, ours vs the paper's, mean over points) is "
                f"{mean_tau:+.2f} (1: the same order, -1: reversed).",
                "",
            ]
    return "\n".join(parts) + "\n"
