"""``kerasyard compare --plot FILE``: the runs' learning curves in one PNG, with matplotlib.

matplotlib is not a dependency of the command (it is in the ``plot`` and ``worker`` extras);
without it, :func:`curves_png` raises :class:`PlotUnavailable` saying how to install it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .format import TIMING_COLUMNS, history_columns, job_label


class PlotUnavailable(Exception):
    pass


def metrics_to_plot(histories: Sequence[list[dict]]) -> list[str]:
    """``loss`` first, then each other metric; the ``val_`` twins are drawn with them."""
    cols = history_columns([row for h in histories for row in h])[1:]
    return [c for c in cols if not c.startswith("val_") and c not in TIMING_COLUMNS] or \
        [c.removeprefix("val_") for c in cols if c.startswith("val_")][:1]


def _value(row: dict, key: str) -> float:
    v = row.get(key)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan


def curves_png(path: str, jobs: Sequence[dict], histories: Sequence[list[dict]]) -> list[str]:
    """One panel per metric, one colour per job (validation dashed); returns the metrics."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install matplotlib (or "
                              "pip install 'kerasyard[plot]')") from None
    metrics = metrics_to_plot(histories)
    if not metrics:
        raise PlotUnavailable("none of these jobs has recorded an epoch yet; nothing to plot")
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, (job, rows) in enumerate(zip(jobs, histories)):
            epochs = [r.get("epoch") for r in rows]
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                ys = [_value(r, key) for r in rows]
                if any(not math.isnan(y) for y in ys):
                    ax.plot(epochs, ys, style, color=f"C{i % 10}",
                            label=job_label(job) + (" (val)" if style == "--" else ""))
        ys_all = [y for line in ax.get_lines() for y in line.get_ydata() if not math.isnan(y)]
        if "loss" in metric and ys_all and min(ys_all) > 0:
            ax.set_yscale("log")
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return metrics
