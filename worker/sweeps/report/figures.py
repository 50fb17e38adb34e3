"""The sweep report's figures (matplotlib, Agg): the overview heatmaps, each factor's effect,
which factor matters and the learning curves on three clocks. Each ``build_*`` takes what
:mod:`.insight`, :mod:`.curves` and :mod:`.importance` computed and returns the figure (the
tests read its artists); the function of the same name without ``build_`` writes it as a PNG.

What a reader can trust in every figure:

- legends list the values in their order (bs=1, 5, 40, 200), as the tables do;
- every series is told apart by more than its colour when there are more series than the
  palette's 10 colours: :func:`series_styles` gives each series a colour by its first factor
  and a line style and marker by the next, so no two series look alike;
- legends sit outside the axes, beside the panels, never over a curve or a label;
- the heatmaps share one colour scale (the same value is the same colour in each), with chance
  marked on the colour bar; the best configuration's cell is framed and starred in each;
- chance is labelled with how it is computed.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from service.jobspec.sweep import fmt_value, short_name
from worker.sweeps.report.curves import CurvePanel
from worker.sweeps.report.importance import Importance
from worker.sweeps.report.insight import CLOCKS, MAX_LEVELS, FactorEffect, PairGrid, grid_title
from worker.sweeps.report.words import Chance
from worker.training.plots import _pyplot

DPI = 90
# matplotlib's default cycle ("tab10"), then the styles that tell series of one colour apart.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]
BEST_STAR = {"marker": "*", "ms": 13, "mec": "black", "mew": 0.8, "ls": "none"}


def direction(goal: str) -> str:
    return "lower is better" if goal == "minimize" else "higher is better"


def series_styles(levels: list[tuple]) -> list[dict]:
    """A distinct look for each series, from the level indices of the factors it holds
    (``(bs index, act index)``): colour by the first factor, line style and marker by the
    second, marker by the third. When a factor has more levels than there are colours or
    styles (or no levels are given), the series are numbered instead: colour ``i % 10``, line
    style and marker by ``i // 10``. Either way no two series share colour, line style and
    marker."""
    n = len(levels)
    dims = max((len(k) for k in levels), default=0)
    sizes = [max(k[d] for k in levels) + 1 for d in range(dims)] if n else []
    fits = dims >= 1 and sizes[0] <= len(PALETTE) and (dims < 2 or sizes[1] <= len(
        LINESTYLES)) and (dims < 3 or sizes[2] <= len(MARKERS)) and dims <= 3 and len(
        set(levels)) == n
    out = []
    for i, k in enumerate(levels):
        if fits:
            style = k[1] if dims >= 2 else 0
            marker = k[2] if dims >= 3 else style
            out.append({"color": PALETTE[k[0]], "ls": LINESTYLES[style],
                        "marker": MARKERS[marker]})
        else:
            out.append({"color": PALETTE[i % len(PALETTE)],
                        "ls": LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)],
                        "marker": MARKERS[(i // len(PALETTE)) % len(MARKERS)]})
    return out


def chance_lines(ax, chance: Chance | None) -> None:
    """Chance as a dashed line labelled with how it is computed; for accuracy, the majority
    class as a second, dotted, labelled line."""
    if chance is None:
        return
    ax.axhline(chance.value, color="0.35", ls="--", lw=1, label=textwrap.fill(chance.label, 32))
    if chance.majority is not None:
        ax.axhline(chance.majority, color="0.35", ls=":", lw=1.2,
                   label=textwrap.fill(chance.majority_label, 32))


def legend_outside(ax, **kwargs) -> None:
    """The axes' legend to the right of it, outside the plotting area."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  fontsize=8, **kwargs)


# --- the overview ------------------------------------------------------------------------------


def build_overview(grids: list[PairGrid], metric: str, goal: str, chance: Chance | None):
    """One heatmap per pair of factors on one colour scale, the objective written in each cell,
    the best configuration's cell framed and starred; green is better whatever the goal."""
    from matplotlib.colors import Normalize

    plt = _pyplot()
    n = len(grids)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols + 1.2, 4.4 * rows),
                             squeeze=False, layout="constrained")
    cmap = "RdYlGn_r" if goal == "minimize" else "RdYlGn"
    finite = [v for g in grids for row in g.values for v in row if v is not None]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    norm = Normalize(lo, hi if hi > lo else lo + 1e-9)
    im = None
    for ax, g in zip(axes.flat, grids):
        data = np.array([[np.nan if v is None else v for v in row] for row in g.values])
        im = ax.imshow(data, cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(range(len(g.col_values)), [fmt_value(v) for v in g.col_values])
        ax.set_yticks(range(len(g.row_values)), [fmt_value(v) for v in g.row_values])
        ax.set_xlabel(g.cols)
        ax.set_ylabel(g.rows)
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                v = data[i, j]
                star = g.best_cell == [i, j]
                text = "–" if not np.isfinite(v) else f"{'★ ' if star else ''}{v:.3g}"
                dark = np.isfinite(v) and abs(norm(v) - 0.5) > 0.35
                ax.text(j, i, text, ha="center", va="center", fontsize=10,
                        fontweight="bold" if star else "normal",
                        color="white" if dark else "black")
        if g.best_cell:
            bi, bj = g.best_cell
            ax.add_patch(plt.Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, lw=2.5,
                                       ec="black"))
        ax.set_title(wrap(grid_title(g.as_dict(), metric), 48), fontsize=9.5)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    bar = fig.colorbar(im, ax=axes[:, :n].ravel().tolist(), shrink=0.85,
                       label=f"{metric} ({direction(goal)}), one scale for every heatmap")
    _chance_on_bar(bar, chance, lo, hi)
    fig.suptitle(wrap(f"{metric} ({direction(goal)}); ★ and frame: the best configuration"
                      + (f"; on the colour bar, {chance.label}" if chance else ""), 110),
                 fontsize=11)
    return fig


def _chance_on_bar(bar, chance: Chance | None, lo: float, hi: float) -> None:
    """Chance on the colour bar: a dashed line and a tick labelled "chance" at its value, or a
    note at the end it lies beyond."""
    if chance is None:
        return
    if lo <= chance.value <= hi:
        bar.ax.axhline(chance.value, color="black", lw=2, ls="--")
        ticks = [t for t in bar.get_ticks() if lo <= t <= hi
                 and abs(t - chance.value) > 0.06 * (hi - lo)]
        bar.set_ticks(ticks + [chance.value],
                      labels=[f"{t:g}" for t in ticks] + [f"chance {chance.value:.3g}"])
    else:
        above = chance.value > hi
        bar.ax.text(0.5, 1.02 if above else -0.02, f"chance {chance.value:.3g}\n"
                    f"({'above' if above else 'below'} the scale)", ha="center",
                    va="bottom" if above else "top", fontsize=8, transform=bar.ax.transAxes)


# --- each factor's effect ----------------------------------------------------------------------


def build_factor_effects(effects: list[FactorEffect], metric: str, goal: str,
                         chance: Chance | None):
    """One panel per factor: the objective at each value, one series per combination of the
    other factors, in their order and each with its own look; error bars are the spread over
    seeds only; categories are not joined."""
    plt = _pyplot()
    n = len(effects)
    fig, axes = plt.subplots(1, n, figsize=(7.2 * n, 4.6), squeeze=False, layout="constrained")
    for ax, e in zip(axes[0], effects):
        k = len(e.series)
        looks = series_styles([s.levels for s in e.series])
        for i, (s, look) in enumerate(zip(e.series, looks)):
            if e.numeric:
                xs = [float(x) for x in s.x]
            else:
                # Categories sit at 0..n-1, each series nudged sideways so none hides another.
                off = (i - (k - 1) / 2) * min(0.6 / max(k, 1), 0.15)
                xs = [e.values.index(x) + off for x in s.x]
            err = [v or 0.0 for v in s.sd] if any(v for v in s.sd) else None
            ax.errorbar(xs, s.y, yerr=err, color=look["color"], marker=look["marker"],
                        ls=look["ls"] if e.numeric and e.joined else "none", capsize=4, ms=5,
                        lw=1.2, label=s.label if s.label != "all" else None)
        _factor_axes(ax, e, metric, goal)
        chance_lines(ax, chance)
        legend_outside(ax, ncol=2 if k > 12 else 1)
    return fig


def _factor_axes(ax, e: FactorEffect, metric: str, goal: str) -> None:
    if e.numeric:
        if e.log:
            ax.set_xscale("log")
        if len(e.values) <= MAX_LEVELS:
            ax.set_xticks([float(v) for v in e.values], [fmt_value(v) for v in e.values])
            ax.minorticks_off()
    else:
        ax.set_xticks(range(len(e.values)), [fmt_value(v) for v in e.values])
        ax.set_xlim(-0.5, len(e.values) - 0.5)
    ax.set_xlabel(e.param + (" (log scale)" if e.log else ""))
    ax.set_ylabel(f"{metric} ({direction(goal)})")
    bars = (f"error bars: sd over {e.seeds} seeds" if e.seeds > 1
            else "one seed: no error bars")
    at = ", ".join(f"{short_name(k)}={fmt_value(v)}" for k, v in e.fixed.items())
    ax.set_title(wrap(f"{metric} by {short_name(e.param)}" + (f" at {at}" if at else "")
                      + f"\n{bars}", 50), fontsize=10)
    ax.grid(alpha=0.3)


# --- which factor matters ----------------------------------------------------------------------

MAIN_COLOR, INTERACTION_COLOR = "#4c72b0", "#dd8452"


def build_importance(imp: Importance, metric: str):
    """The main effects and the interactions as bars that add up to 1, labelled "main effect"
    and "interactions" (each pair's two-way share and the rest, when the grid gives them)."""
    plt = _pyplot()
    bars = [(short_name(p), v, "main effect") for p, v in imp.main.items()]
    if imp.pairs:
        bars += [(f"{short_name(a)} × {short_name(b)}", v, "interactions")
                 for (a, b), v in imp.pairs.items()]
        if imp.higher is not None:
            names = [short_name(p) for p in imp.main]
            bars.append((" × ".join(names) if len(names) == 3 else "higher-order",
                         imp.higher, "interactions"))
    else:
        bars.append(("interactions", imp.interactions, "interactions"))
    bars = bars[::-1]  # the first on top
    fig, ax = plt.subplots(figsize=(7.6, 0.45 * len(bars) + 1.9), layout="constrained")
    colors = [MAIN_COLOR if kind == "main effect" else INTERACTION_COLOR for _, _, kind in bars]
    drawn = ax.barh([b[0] for b in bars], [b[1] for b in bars], color=colors)
    for bar, (_, v, _) in zip(drawn, bars):
        ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, f"{v:.0%}",
                va="center", fontsize=9)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=MAIN_COLOR, label="main effect"),
                       Patch(color=INTERACTION_COLOR, label="interactions")],
              loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    ax.set_xlim(0, 1.1)
    main = sum(imp.main.values())
    ax.set_xlabel(f"share of the variance of {metric} across the trials "
                  f"(main effects {main:.0%} + interactions {imp.interactions:.0%} = 100%)")
    ax.set_title(wrap(f"which factor matters for {metric}: {imp.method}", 70), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


# --- the learning curves -----------------------------------------------------------------------


def build_clocks(panels: list[CurvePanel], line_by: str | None, metric: str, goal: str,
                 chance: Chance | None):
    """Rows: one panel per combination of the other factors; columns: the objective against
    epochs, updates (epochs x steps per epoch) and wall-clock seconds; one line per value of
    ``line_by`` in order, its best epoch starred, shorter trials marked on their line. One
    legend for the figure, to the right of the panels."""
    plt = _pyplot()
    rows = len(panels)
    fig, axes = plt.subplots(rows, 3, figsize=(16.5, 3.6 * rows + 0.8), squeeze=False,
                             layout="constrained")
    labels: list[str] = []
    for panel in panels:
        labels += [c.label for c in panel.curves if c.label not in labels]
    looks = dict(zip(labels, series_styles([(i,) for i in range(len(labels))])))
    for r, panel in enumerate(panels):
        for col, clock in enumerate(CLOCKS):
            _clock_panel(axes[r][col], panel, clock, line_by, looks)
            chance_lines(axes[r][col], chance)
            axes[r][col].set_ylabel(f"{metric} ({direction(goal)})")
    handles, names = axes[0][0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles.append(Line2D([], [], color="0.3", **BEST_STAR))
    names.append("best epoch")
    handles.append(Line2D([], [], color="0.3", marker="o", mfc="white", ls="none", ms=7))
    names.append("shorter trial of the same training")
    fig.legend(handles, names, loc="outside right upper", fontsize=8)
    fig.suptitle(wrap(f"{metric} on three clocks, one line per "
                      f"{short_name(line_by) if line_by else 'trial'} (mean over seeds); ★ its "
                      "best epoch", 120), fontsize=11)
    return fig


def _clock_panel(ax, panel: CurvePanel, clock: str, line_by: str | None,
                 looks: dict[str, dict]) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    for c in panel.curves:
        look = looks[c.label]
        xs = getattr(c, clock)
        name = f"{short_name(line_by)}={c.label}" if line_by else c.label
        ax.plot(xs, [np.nan if v is None else v for v in c.y], color=look["color"],
                ls=look["ls"], lw=1.6, label=name)
        if c.best_epoch:
            ax.plot(xs[c.best_epoch - 1], c.best_value, color=look["color"], **BEST_STAR)
        for epoch, value, _ in c.marks:
            if 1 <= epoch <= len(xs) and value is not None:
                ax.plot(xs[epoch - 1], value, marker="o", ms=7, mfc="white",
                        mec=look["color"], mew=2, ls="none")
    if clock != "epochs" and _spans_decades(panel, clock):
        ax.set_xscale("log")
        # Plain numbers: mathtext (10^{3}) is off for user text (plots._pyplot).
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if clock == "epochs":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    log = " (log scale)" if ax.get_xscale() == "log" else ""
    ax.set_xlabel({"epochs": "epoch", "updates": f"updates (weight steps){log}",
                   "seconds": f"wall-clock seconds of training{log}"}[clock])
    ax.set_title(f"{panel.title}: per {clock[:-1] if clock != 'epochs' else 'epoch'}",
                 fontsize=10)
    ax.grid(alpha=0.3)


def _spans_decades(panel: CurvePanel, clock: str) -> bool:
    xs = [x for c in panel.curves for x in getattr(c, clock) if x and x > 0]
    return bool(xs) and max(xs) / min(xs) >= 100


# --- writing them ------------------------------------------------------------------------------


def overview(grids, metric, goal, chance, path: Path) -> Path:
    return save(build_overview(grids, metric, goal, chance), path)


def factor_effects(effects, metric, goal, chance, path: Path) -> Path:
    return save(build_factor_effects(effects, metric, goal, chance), path)


def importance(imp: Importance, metric: str, path: Path) -> Path:
    return save(build_importance(imp, metric), path)


def clocks(panels, line_by, metric, goal, chance, path: Path) -> Path:
    return save(build_clocks(panels, line_by, metric, goal, chance), path)


def wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
