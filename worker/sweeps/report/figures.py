"""The sweep report's figures (matplotlib, Agg): the overview heatmaps, each factor's effect,
parameter importance and the learning curves on three clocks. Each takes what
:mod:`.sweep_insight` computed and writes one PNG."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from service.jobspec.sweep import fmt_value, short_name
from worker.sweeps.report.insight import CLOCKS, MAX_LEVELS, CurvePanel, FactorEffect, PairGrid
from worker.training.plots import _pyplot

DPI = 90


def direction(goal: str) -> str:
    return "lower is better" if goal == "minimize" else "higher is better"


def _chance_line(ax, chance: float | None, metric: str) -> None:
    if chance is None:
        return
    label = f"chance ({chance:.3g})"
    ax.axhline(chance, color="0.45", ls="--", lw=1, label=label)


def overview(grids: list[PairGrid], metric: str, goal: str, chance: float | None,
             path: Path) -> Path:
    """One heatmap per pair of factors, the objective written in each cell, the best cell
    framed; green is better whatever the goal."""
    plt = _pyplot()
    n = len(grids)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 4.2 * rows), squeeze=False)
    cmap = "RdYlGn_r" if goal == "minimize" else "RdYlGn"
    for ax, g in zip(axes.flat, grids):
        data = np.array([[np.nan if v is None else v for v in row] for row in g.values])
        im = ax.imshow(data, cmap=cmap, aspect="auto")
        ax.set_xticks(range(len(g.col_values)), [fmt_value(v) for v in g.col_values])
        ax.set_yticks(range(len(g.row_values)), [fmt_value(v) for v in g.row_values])
        ax.set_xlabel(g.cols)
        ax.set_ylabel(g.rows)
        finite = data[np.isfinite(data)]
        if finite.size:
            best = np.nanargmin(data) if goal == "minimize" else np.nanargmax(data)
            bi, bj = np.unravel_index(best, data.shape)
            ax.add_patch(plt.Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, lw=2.5,
                                       ec="black"))
            mid = (finite.min() + finite.max()) / 2
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                v = data[i, j]
                ax.text(j, i, "–" if not np.isfinite(v) else f"{v:.3g}", ha="center",
                        va="center", fontsize=10,
                        color="black" if not np.isfinite(v) or abs(v - mid) < 0.35 * (
                            finite.max() - finite.min() + 1e-12) else "white")
        sub = []
        if g.fixed:
            sub.append("at " + ", ".join(f"{short_name(k)}={fmt_value(v)}"
                                         for k, v in g.fixed.items()))
        if g.averaged_over:
            sub.append("mean over " + ", ".join(short_name(p) for p in g.averaged_over))
        ax.set_title(_wrap(f"{metric}: {short_name(g.rows)} × {short_name(g.cols)}"
                           + (f"\n({'; '.join(sub)})" if sub else ""), 45), fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    note = f"{metric} ({direction(goal)}; best cell framed)"
    if chance is not None:
        note += f"; chance level {chance:.3g}"
    fig.suptitle(note, fontsize=11)
    return _save(plt, fig, path)


def factor_effects(effects: list[FactorEffect], metric: str, goal: str, chance: float | None,
                   path: Path) -> Path:
    """One panel per factor: the objective at each value, one series per combination of the
    other factors; error bars are the spread over seeds only; categories are not joined."""
    plt = _pyplot()
    n = len(effects)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.2), squeeze=False)
    for ax, e in zip(axes[0], effects):
        k = len(e.series)
        for i, s in enumerate(e.series):
            if e.numeric:
                xs = [float(x) for x in s.x]
                fmt = "o-" if e.joined else "o"
            else:
                # Categories sit at 0..n-1, each series nudged sideways so none hides another.
                off = (i - (k - 1) / 2) * min(0.6 / max(k, 1), 0.15)
                xs = [e.values.index(x) + off for x in s.x]
                fmt = "o"
            err = [v or 0.0 for v in s.sd] if any(v for v in s.sd) else None
            ax.errorbar(xs, s.y, yerr=err, fmt=fmt, capsize=4, ms=5, lw=1.2,
                        label=s.label if s.label != "all" else None)
        if e.numeric:
            if e.log:
                ax.set_xscale("log")
            if len(e.values) <= MAX_LEVELS:
                ax.set_xticks([float(v) for v in e.values], [fmt_value(v) for v in e.values])
                ax.minorticks_off()
        else:
            ax.set_xticks(range(len(e.values)), [fmt_value(v) for v in e.values])
            ax.set_xlim(-0.5, len(e.values) - 0.5)
        _chance_line(ax, chance, metric)
        ax.set_xlabel(e.param + (" (log scale)" if e.log else ""))
        ax.set_ylabel(f"{metric} ({direction(goal)})")
        bars = (f"error bars: sd over {e.seeds} seeds" if e.seeds > 1
                else "one seed: no error bars")
        at = ", ".join(f"{short_name(k)}={fmt_value(v)}" for k, v in e.fixed.items())
        ax.set_title(_wrap(f"{metric} by {short_name(e.param)}" + (f" at {at}" if at else "")
                           + f"\n{bars}", 50), fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            many = len(e.series) > 6
            ax.legend(fontsize=7, ncol=2 if many else 1,
                      **({"loc": "upper center", "bbox_to_anchor": (0.5, -0.22)} if many else {}))
    return _save(plt, fig, path)


def importance(ranked: dict[str, float], method: str, metric: str, path: Path) -> Path:
    plt = _pyplot()
    names = list(ranked)[::-1]  # the most important on top
    fig, ax = plt.subplots(figsize=(6, 0.55 * len(names) + 1.6))
    bars = ax.barh([short_name(p) for p in names], [ranked[p] for p in names], color="#4c72b0")
    for bar, p in zip(bars, names):
        ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, f"{ranked[p]:.2f}",
                va="center", fontsize=9)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(f"share of {metric}'s variance explained")
    ax.set_title(_wrap(f"which factor matters for {metric} ({method})", 60), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _save(plt, fig, path)


def clocks(panels: list[CurvePanel], line_by: str | None, metric: str, goal: str,
           chance: float | None, path: Path) -> Path:
    """Rows: one panel per combination of the other factors; columns: the objective against
    epochs, updates (epochs x steps per epoch) and wall-clock seconds; one line per value of
    ``line_by``, shorter trials marked on their line."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    rows = len(panels)
    fig, axes = plt.subplots(rows, 3, figsize=(15, 3.6 * rows + 0.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = []
    for panel in panels:
        for c in panel.curves:
            if c.label not in labels:
                labels.append(c.label)
    for r, panel in enumerate(panels):
        for col, clock in enumerate(CLOCKS):
            ax = axes[r][col]
            for c in panel.curves:
                color = colors[labels.index(c.label) % len(colors)]
                xs = getattr(c, clock)
                name = f"{short_name(line_by)}={c.label}" if line_by else c.label
                ax.plot(xs, [np.nan if v is None else v for v in c.y], color=color, lw=1.6,
                        label=name)
                for epoch, value, _ in c.marks:
                    if 1 <= epoch <= len(xs) and value is not None:
                        ax.plot(xs[epoch - 1], value, marker="o", ms=7, mfc="white",
                                mec=color, mew=2, ls="none")
            if clock != "epochs" and _spans_decades(panel, clock):
                ax.set_xscale("log")
                # Plain numbers: mathtext (10^{3}) is off for user text (plots._pyplot).
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            if clock == "epochs":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            _chance_line(ax, chance, metric)
            ax.set_xlabel({"epochs": "epoch", "updates": "updates (weight steps, log scale)"
                           if ax.get_xscale() == "log" else "updates (weight steps)",
                           "seconds": "wall-clock seconds of training"}[clock])
            ax.set_ylabel(f"{metric} ({direction(goal)})")
            ax.set_title(f"{panel.title}: per {clock[:-1] if clock != 'epochs' else 'epoch'}",
                         fontsize=10)
            ax.grid(alpha=0.3)
            if r == 0 and col == 0:
                ax.legend(fontsize=8)
    fig.suptitle(_wrap(f"{metric} on three clocks, one line per "
                       f"{short_name(line_by) if line_by else 'trial'}; open circles: shorter "
                       "trials of the same training", 120), fontsize=11)
    return _save(plt, fig, path)


def _spans_decades(panel: CurvePanel, clock: str) -> bool:
    xs = [x for c in panel.curves for x in getattr(c, clock) if x and x > 0]
    return bool(xs) and max(xs) / min(xs) >= 100


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
