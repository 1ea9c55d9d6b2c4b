"""Figures regenerated from the aggregated table (never from a run's memory)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from edgeai_repro.report.table import SERIES, paper_series


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
) -> Path:
    """One panel per `panel` value; one line per method with a ±1 std band over seeds."""
    sel = agg[agg["metric"] == metric]
    panels = list(dict.fromkeys(sel["panel"])) or [""]
    cols = min(len(panels), 4)
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        part = sel[sel["panel"] == panel]
        numeric = _numeric(part["x"])
        ticks = list(dict.fromkeys(part["x"].astype(str)))
        for method, grp in part.groupby(SERIES, sort=False):
            xs = pd.to_numeric(grp["x"]) if numeric else grp["x"].astype(str).map(ticks.index)
            mean, std = grp["mean"].to_numpy(float), grp["std"].fillna(0).to_numpy(float)
            if len(grp) == 1 and not numeric:
                ax.bar([f"{method}"], mean, yerr=std, capsize=3)
                continue
            ax.plot(xs, mean, marker="o", ms=3, label=str(method))
            ax.fill_between(xs, mean - std, mean + std, alpha=0.15)
        if not numeric and len(ticks) > 1:
            ax.set_xticks(range(len(ticks)), ticks, rotation=20, fontsize=8)
        if logx and numeric:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_title(str(panel) if panel else title, fontsize=10)
        ax.set_xlabel(x_label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    fig.suptitle(f"{title}{f' ({scale_label} scale)' if scale_label else ''}", fontsize=11)
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 0.95))
    return _save(fig, path)


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
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(f"{title}{f' ({scale_label} scale)' if scale_label else ''}", fontsize=11)
    fig.tight_layout()
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
        ax.plot(stats.index, stats["mean"], label=label, lw=1.2)
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title(f"{title}{f' ({scale_label} scale)' if scale_label else ''}", fontsize=11)
    fig.tight_layout()
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
                color=f"C{methods.index(method)}",
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
        ax.set_title(str(panel) if panel else title, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}{f' ({scale_label} scale)' if scale_label else ''}", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
