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


def plotted_metrics(history: dict[str, list[float]]) -> list[str]:
    """The metrics a learning curve has a panel for: each training metric (its ``val_``
    twin drawn in the same panel), not the learning rate or the epoch's time."""
    return [k for k in history if not k.startswith("val_")
            and k not in ("learning_rate", "epoch_time_s")]


def learning_curve(history: dict[str, list[float]], path: Path, title: str,
                   chance: dict[str, float] | None = None) -> Path:
    """One panel per metric, training and validation lines; ``chance`` (metric -> value, for
    classification) drawn as a dashed line: what guessing scores."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    names = plotted_metrics(history)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], label=f"train {name}")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label=f"validation {name}")
        if chance and name in chance:
            ax.axhline(chance[name], color="0.45", ls="--", lw=1,
                       label=f"chance ({chance[name]:.3g})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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
