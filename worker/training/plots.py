"""Learning-curve and confusion-matrix PNGs (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    # Names and class labels are user text: "cost $x$" must print as written, not be parsed
    # as math text (a stray "$" would fail the job after training).
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def learning_curve(history: dict[str, list[float]], path: Path, title: str) -> Path:
    plt = _pyplot()
    names = [k for k in history if not k.startswith("val_")
             and k not in ("learning_rate", "epoch_time_s")]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], label=f"train {name}")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label=f"validation {name}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(counts, (y_true.astype(int), y_pred.astype(int)), 1)
    return counts


def confusion_matrix(counts: np.ndarray, class_names: list[str], path: Path, title: str) -> Path:
    plt = _pyplot()
    n = len(class_names)
    size = max(3.5, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = counts.max() if counts.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                    color="white" if counts[i, j] > top / 2 else "black", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def objective_vs_param(labels: list[str], means: list[float | None], spreads: list[float | None],
                       path: Path, param: str, metric: str, numeric: bool) -> Path:
    """One point per trial value (mean over the trials and seeds that had it), error bars of
    one standard deviation; a log x axis for positive numeric values spanning a decade."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ok = [i for i, m in enumerate(means) if m is not None]
    xs = [float(labels[i]) for i in ok] if numeric else [labels[i] for i in ok]
    ax.errorbar(xs, [means[i] for i in ok], yerr=[spreads[i] or 0.0 for i in ok],
                fmt="o-" if numeric else "o", capsize=4)
    if numeric and xs and min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    return _finish(plt, fig, ax, path, param, metric,
                   f"{metric} by {param} (mean ± sd over trials and seeds)")


def curves_by_value(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, param: str,
                    metric: str) -> Path:
    """One learning curve per value of ``param`` (the mean over the trials with that value),
    with a band of one standard deviation."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (mean, sd) in curves.items():
        epochs = np.arange(1, len(mean) + 1)
        line, = ax.plot(epochs, mean, label=f"{param}={label}")
        ax.fill_between(epochs, mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
    ax.legend(fontsize=8)
    return _finish(plt, fig, ax, path, "epoch", metric, f"{metric} per epoch by {param}")


def _finish(plt, fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
