"""Figures regenerated from the aggregated table (never from a run's memory)."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from edgeai_repro.report.table import SERIES, paper_series

# Problems found in the figures drawn by this process, by file (layout_problems): the report records
# them in run.json ("figure_problems"), and the smoke tests require none.
PROBLEMS: dict[str, list[str]] = {}
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # legends sit outside the axes: "tight" grows the canvas to hold them instead of cutting them off
    fig.savefig(path, dpi=120, bbox_inches="tight")
    PROBLEMS[path.name] = layout_problems(fig)
    plt.close(fig)
    return path


def series_styles(methods: list[str], featured: list[str] | None = None) -> dict[str, dict]:
    """A distinct (colour, line style, marker) per series. Names of the form `a+b` (AERIA's service
    model + pricing rule) are coloured by b and styled by a, so one factor reads off the colour and
    the other off the line; otherwise colours cycle and the style changes every 10 series. The
    `featured` series (the claims' methods: the paper's and its named baselines) are drawn strongest
    and listed first; the rest lighter."""
    featured = [m for m in featured or [] if m in methods]
    pairs = [m.split("+", 1) for m in methods]
    styles = {}
    if methods and all(len(p) == 2 for p in pairs):
        colours = list(dict.fromkeys(p[1] for p in pairs))
        kinds = list(dict.fromkeys(p[0] for p in pairs))
        for m, (a, b) in zip(methods, pairs):
            i, j = colours.index(b), kinds.index(a)
            styles[m] = {
                "color": _colour(i),
                "linestyle": LINESTYLES[j % 4],
                "marker": MARKERS[j % len(MARKERS)],
            }
    else:
        for i, m in enumerate(methods):
            styles[m] = {
                "color": _colour(i % 10 + 10 * (i // 40)),
                "linestyle": LINESTYLES[(i // 10) % 4],
                "marker": MARKERS[(i // 10) % len(MARKERS)],
            }
    for m, st in styles.items():
        strong = not featured or m in featured
        st.update(
            lw=2.0 if featured and strong else 1.4, alpha=1.0 if strong else 0.4, zorder=3 if strong else 1
        )
    return styles


def _colour(i: int) -> tuple:
    return plt.get_cmap("tab10")(i % 10) if i < 10 else plt.get_cmap("tab20b")((i - 10) % 20)


def ordered(methods: list[str], featured: list[str] | None) -> list[str]:
    """The featured series first (in the claims' order), then the rest as they came."""
    first = [m for m in featured or [] if m in methods]
    return first + [m for m in methods if m not in first]


def _outside_legend(fig: plt.Figure, handles: list, labels: list[str]) -> None:
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


def layout_problems(fig: plt.Figure) -> list[str]:
    """What a reader would trip over, read from matplotlib's own artists: a legend that covers a
    data point or bar, and two labelled series that look the same (colour, line style and marker,
    or colour and hatch for bars) in one axes."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    boxes = [lg.get_window_extent(renderer) for lg in legends]
    problems = []
    for ax in fig.axes:
        title = ax.get_title() or "the figure"
        points = []
        for line in ax.get_lines():
            xy = ax.transData.transform(line.get_xydata())
            if len(xy) == 1:
                points.extend(xy)
            for a, b in itertools.pairwise(xy):  # the segments too, not only the markers
                points.extend(a + (b - a) * t for t in np.linspace(0, 1, 25))
        patches = [p.get_window_extent(renderer) for p in ax.patches if p.get_height() != 0]
        for box in boxes:
            if any(box.contains(px, py) for px, py in points) or any(box.overlaps(b) for b in patches):
                problems.append(f"{title}: the legend covers data")
                break
        seen: dict[tuple, str] = {}
        for line in ax.get_lines():
            label = line.get_label()
            if label.startswith("_"):
                continue
            look = (matplotlib.colors.to_hex(line.get_color()), line.get_linestyle(), line.get_marker())
            if look in seen and seen[look] != label:
                problems.append(f"{title}: {seen[look]} and {label} look the same")
            seen.setdefault(look, label)
        bars: dict[tuple, str] = {}
        for container in ax.containers:
            label = container.get_label()
            if label.startswith("_") or not len(container.patches):
                continue
            p = container.patches[0]
            look = (matplotlib.colors.to_hex(p.get_facecolor()), p.get_hatch())
            if look in bars and bars[look] != label:
                problems.append(f"{title}: bars {bars[look]} and {label} look the same")
            bars.setdefault(look, label)
    return problems


def _numeric(values: pd.Series) -> bool:
    return bool(pd.to_numeric(values, errors="coerce").notna().all())


def line_figure(
    agg: pd.DataFrame,
    metric: str,
    path: Path,
    x_label: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
    scale_label: str = "",
    featured: list[str] | None = None,
) -> Path:
    """One panel per `panel` value (titled with its keys); one line per method with a ±1 std band
    over seeds, the claims' methods strongest; one legend, outside the axes."""
    sel = agg[agg["metric"] == metric]
    panels = list(dict.fromkeys(sel["panel"])) or [""]
    titles = _panel_titles(sel)
    methods = ordered(list(dict.fromkeys(sel[SERIES])), featured)
    styles = series_styles(methods, featured)
    cols = min(len(panels), 4)
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    legend: dict[str, object] = {}
    for ax, panel in zip(axes.flat, panels):
        part = sel[sel["panel"] == panel]
        numeric = _numeric(part["x"])
        ticks = list(dict.fromkeys(part["x"].astype(str)))
        for method in methods:
            grp = part[part[SERIES] == method]
            if grp.empty:
                continue
            xs = pd.to_numeric(grp["x"]) if numeric else grp["x"].astype(str).map(ticks.index)
            mean, std = grp["mean"].to_numpy(float), grp["std"].fillna(0).to_numpy(float)
            st = styles[method]
            if len(grp) == 1 and not numeric:
                bar = ax.bar([f"{method}"], mean, yerr=std, capsize=3, color=st["color"], alpha=st["alpha"])
                legend.setdefault(method, bar)
                continue
            (line,) = ax.plot(xs, mean, ms=3, label=str(method), **st)
            ax.fill_between(xs, mean - std, mean + std, color=st["color"], alpha=0.12 * st["alpha"], lw=0)
            legend.setdefault(method, line)
        if not numeric and len(ticks) > 1:
            ax.set_xticks(range(len(ticks)), ticks, rotation=20, fontsize=8)
        if logx and numeric:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_title(titles.get(panel) or title, fontsize=10)
        ax.set_xlabel(x_label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"{title}{f' ({scale_label} scale)' if scale_label else ''}", fontsize=11)
    fig.tight_layout()
    _outside_legend(fig, list(legend.values()), list(legend))
    return _save(fig, path)


def _panel_titles(sel: pd.DataFrame) -> dict[str, str]:
    """Each panel's title: every key named ("workload = alexnet, c = 1.5") where the table has them."""
    if "panel_title" not in sel:
        return {p: str(p) for p in sel["panel"]}
    return {
        p: str(t) if isinstance(t, str) and t else str(p) for p, t in zip(sel["panel"], sel["panel_title"])
    }


def bar_figure(
    agg: pd.DataFrame, metrics: list[str], path: Path, title: str, scale_label: str = "", stat: str = "total"
) -> Path:
    """One group of bars per method: totals over seeds (counts) or means with ±1 std (stat="mean")."""
    sel = agg[agg["metric"].isin(metrics)]
    methods = list(dict.fromkeys(sel[SERIES]))
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(methods) * len(metrics) / 2), 3.6))
    width = 0.8 / max(len(metrics), 1)
    for j, metric in enumerate(metrics):
        part = sel[sel["metric"] == metric].groupby(SERIES, sort=False)
        heights = part[stat].sum() if stat == "total" else part["mean"].first()
        errors = None if stat == "total" else part["std"].first().fillna(0)
        ax.bar(
            [i + j * width for i in range(len(methods))],
            [heights.get(m, 0) for m in methods],
            width,
            label=metric,
            yerr=None if errors is None else [errors.get(m, 0) for m in methods],
            capsize=2,
        )
    ax.set_xticks(
        [i + width * (len(metrics) - 1) / 2 for i in range(len(methods))], methods, rotation=25, fontsize=8
    )
    ax.set_ylabel("count (total over seeds)" if stat == "total" else "mean over seeds")
    ax.axhline(0, color="black", lw=0.6)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(f"{title}{f' ({scale_label} scale)' if scale_label else ''}", fontsize=11)
    fig.tight_layout()
    _outside_legend(fig, *ax.get_legend_handles_labels())
    return _save(fig, path)


def curve_figure(
    curves: pd.DataFrame,
    names: list[str],
    path: Path,
    xlabel: str,
    ylabel: str,
    title: str,
    scale_label: str = "",
) -> Path:
    """Learning or convergence curves: mean ± std over seeds at each step, one line per curve and method."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    sel = curves[curves["curve"].isin(names)] if not curves.empty else curves
    for (method, name), grp in sel.groupby(["method", "curve"], sort=False) if not sel.empty else []:
        stats = grp.groupby("step")["value"].agg(["mean", "std"]).fillna(0)
        label = name if sel["method"].nunique() == 1 else f"{method}: {name}"
        i = len(ax.get_lines())
        ax.plot(
            stats.index,
            stats["mean"],
            label=label,
            lw=1.2,
            color=_colour(i % 10),
            linestyle=LINESTYLES[(i // 10) % 4],
        )
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(f"{title}{f' ({scale_label} scale)' if scale_label else ''}", fontsize=11)
    fig.tight_layout()
    _outside_legend(fig, *ax.get_legend_handles_labels())
    return _save(fig, path)


def paper_bar_figure(
    agg: pd.DataFrame, metric: str, path: Path, x_label: str, ylabel: str, title: str, scale_label: str = ""
) -> Path:
    """Grouped bars per x: each method's mean ± std, and beside it the paper's value where the paper
    has one (hatched, labelled with its provenance), one panel per `panel` value."""
    sel = agg[agg["metric"] == metric]
    panels = list(dict.fromkeys(sel["panel"])) or [""]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        part = sel[sel["panel"] == panel]
        ticks = list(dict.fromkeys(part["x"].astype(str)))
        methods = list(dict.fromkeys(part[SERIES]))
        has_paper = "paper_value" in part and part["paper_value"].notna().any()
        # A fitted series' paper bar is its paper series' bar (table.paper_series): drawn once.
        series = [(m, False) for m in methods] + (
            [(m, True) for m in methods if paper_series(m) == m] if has_paper else []
        )
        width = 0.8 / len(series)
        for j, (method, paper) in enumerate(series):
            grp = part[part[SERIES] == method].set_index(part[part[SERIES] == method]["x"].astype(str))
            col = "paper_value" if paper else "mean"
            heights = [float(grp[col].get(t, float("nan"))) for t in ticks]
            errors = None if paper else [float(grp["std"].fillna(0).get(t, 0)) for t in ticks]
            ax.bar(
                [i + j * width for i in range(len(ticks))],
                heights,
                width,
                yerr=errors,
                capsize=2,
                label=f"{method} (paper, read-off)"
                if paper
                else (f"{method} (ours)" if paper_series(method) == method else method),
                hatch="//" if paper else None,
                alpha=0.55 if paper else 0.9,
                color=_colour(methods.index(method)),
            )
        ax.set_xticks(
            [i + width * (len(series) - 1) / 2 for i in range(len(ticks))],
            ticks,
            rotation=20 if max(map(len, ticks)) > 6 else 0,
            fontsize=8,
        )
        ax.set_xlabel(x_label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
        ax.set_title(_panel_titles(sel).get(panel) or title, fontsize=10)
    fig.suptitle(f"{title}{f' ({scale_label} scale)' if scale_label else ''}", fontsize=11)
    fig.tight_layout()
    legend: dict[str, object] = {}
    for ax in axes.flat:  # one legend for every panel, outside them all
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    _outside_legend(fig, list(legend.values()), list(legend))
    return _save(fig, path)
