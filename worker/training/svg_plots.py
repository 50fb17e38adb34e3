"""The learning curve and the confusion matrix as SVG, written as text without matplotlib.

The same figures as :mod:`.plots` draws (a panel per metric with its training and validation
lines and the chance level dashed; a matrix of counts shaded by size) in a few milliseconds:
matplotlib took 0.35 s per figure on the project's 2-core machine, the largest part of a
one-epoch job's cost. MLflow's artifact view shows ``.svg`` files as images.

Every piece of user text (a job's name, class names, metric names) is escaped: a name is
printed as written, never read as markup.
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from worker.training.plots import plotted_metrics

TRAIN, VAL, CHANCE = "#1f77b4", "#ff7f0e", "#737373"
PANEL_W, PANEL_H = 380, 270
# Plot area inside a panel: left margin for the y tick labels, bottom for the x ticks.
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 12, 46
FONT = "font-family='DejaVu Sans, Arial, sans-serif'"


def _text(x: float, y: float, text: str, size: int = 11, anchor: str = "middle",
          extra: str = "") -> str:
    return (f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' "
            f"{extra}>{escape(str(text))}</text>")


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About ``n`` round values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten;
    whole numbers only when ``integer``)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step - 1e-9) * step
    ticks, v = [], first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    return ticks


def _polyline(xs: list[float], ys: list[float], colour: str, dash: str = "") -> str:
    """One line, broken where a value is not finite (a NaN epoch is a gap, not a zero)."""
    parts, run = [], []
    for x, y in zip(xs, ys):
        if math.isfinite(y):
            run.append(f"{x:.1f},{y:.1f}")
        elif run:
            parts.append(run)
            run = []
    if run:
        parts.append(run)
    style = f" stroke-dasharray='{dash}'" if dash else ""
    out = []
    for pts in parts:
        if len(pts) == 1:  # a single epoch: a dot, not an invisible line
            x, y = pts[0].split(",")
            out.append(f"<circle cx='{x}' cy='{y}' r='2.5' fill='{colour}'/>")
        else:
            out.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.5'{style} "
                       f"points='{' '.join(pts)}'/>")
    return "".join(out)


def _panel(ox: float, oy: float, name: str, train: list[float], val: list[float] | None,
           chance: float | None) -> list[str]:
    """One metric's panel at (ox, oy): axes, ticks, grid, lines and legend."""
    n = len(train)
    values = [v for v in train + (val or []) + ([chance] if chance is not None else [])
              if math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    x0, x1 = ox + LEFT, ox + PANEL_W - RIGHT
    y0, y1 = oy + TOP, oy + PANEL_H - BOTTOM
    xmax = max(n, 2)

    def px(epoch: float) -> float:
        return x0 + (epoch - 1) / (xmax - 1) * (x1 - x0)

    def py(v: float) -> float:
        return y1 - (v - lo) / (hi - lo) * (y1 - y0)

    out = [f"<rect x='{x0}' y='{y0}' width='{x1 - x0}' height='{y1 - y0}' fill='none' "
           "stroke='#444'/>"]
    for t in nice_ticks(lo, hi):
        out.append(f"<line x1='{x0}' x2='{x1}' y1='{py(t):.1f}' y2='{py(t):.1f}' "
                   "stroke='#000' stroke-opacity='0.08'/>")
        out.append(_text(x0 - 5, py(t) + 4, _fmt(t), 10, "end"))
    for t in nice_ticks(1, xmax, 6, integer=True):
        out.append(f"<line x1='{px(t):.1f}' x2='{px(t):.1f}' y1='{y0}' y2='{y1}' "
                   "stroke='#000' stroke-opacity='0.08'/>")
        out.append(_text(px(t), y1 + 15, f"{int(t)}", 10))
    out.append(_text((x0 + x1) / 2, y1 + 32, "epoch"))
    out.append(_text(ox + 14, (y0 + y1) / 2, name, 11, "middle",
                     f"transform='rotate(-90 {ox + 14} {(y0 + y1) / 2:.1f})'"))
    epochs = [px(i) for i in range(1, n + 1)]
    legend = [(TRAIN, f"train {name}", "")]
    out.append(_polyline(epochs, [py(v) if math.isfinite(v) else math.nan for v in train],
                         TRAIN))
    if val is not None:
        out.append(_polyline(epochs, [py(v) if math.isfinite(v) else math.nan for v in val],
                             VAL))
        legend.append((VAL, f"validation {name}", ""))
    if chance is not None and math.isfinite(chance):
        out.append(f"<line x1='{x0}' x2='{x1}' y1='{py(chance):.1f}' y2='{py(chance):.1f}' "
                   f"stroke='{CHANCE}' stroke-dasharray='5,4'/>")
        legend.append((CHANCE, f"chance ({chance:.3g})", "5,4"))
    # The legend on a white ground: it is read over the lines it names.
    out.append(f"<rect x='{x1 - 156}' y='{y0 + 3}' width='152' height='{15 * len(legend) + 5}' "
               "fill='white' fill-opacity='0.85'/>")
    for i, (colour, label, dash) in enumerate(legend):
        ly = y0 + 14 + 15 * i
        style = f" stroke-dasharray='{dash}'" if dash else ""
        out.append(f"<line x1='{x1 - 150}' x2='{x1 - 128}' y1='{ly - 4}' y2='{ly - 4}' "
                   f"stroke='{colour}' stroke-width='1.5'{style}/>")
        out.append(_text(x1 - 124, ly, label, 10, "start"))
    return out


def _svg(width: float, height: float, body: list[str]) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' "
            f"viewBox='0 0 {width:.0f} {height:.0f}' {FONT}>"
            f"<rect width='100%' height='100%' fill='white'/>" + "".join(body) + "</svg>\n")


def _title(lines: list[str], width: float) -> list[str]:
    return [_text(width / 2, 18 + 16 * i, line, 13) for i, line in enumerate(lines)]


def learning_curve(history: dict[str, list[float]], path: Path, title: str,
                   chance: dict[str, float] | None = None) -> Path:
    """One panel per metric, training and validation lines; ``chance`` (metric -> value, for
    classification) drawn as a dashed line: what guessing scores. Same arguments as
    :func:`.plots.learning_curve`."""
    names = plotted_metrics(history)
    lines = str(title).split("\n")
    head = 10 + 16 * len(lines)
    width, height = PANEL_W * max(len(names), 1), head + PANEL_H
    body = _title(lines, width)
    for i, name in enumerate(names):
        train = [float(v) for v in history[name]]
        val = [float(v) for v in history[f"val_{name}"]] if f"val_{name}" in history else None
        body += _panel(PANEL_W * i, head, name, train, val, (chance or {}).get(name))
    Path(path).write_text(_svg(width, height, body))
    return Path(path)


def _blue(share: float) -> str:
    """Matplotlib's "Blues" ends, interpolated: white-ish for 0, dark blue for the top."""
    lo, hi = np.array([247, 251, 255]), np.array([8, 48, 107])
    r, g, b = (lo + (hi - lo) * min(max(share, 0.0), 1.0)).round().astype(int)
    return f"#{r:02x}{g:02x}{b:02x}"


def confusion_matrix(counts: np.ndarray, class_names: list[str], path: Path, title: str) -> Path:
    """Counts of (true, predicted) pairs, a cell per pair shaded by its count. Same arguments
    as :func:`.plots.confusion_matrix`."""
    n = len(class_names)
    cell = 34 if n <= 12 else 22
    label_w = 12 + 7 * max((len(str(c)) for c in class_names), default=1)
    x0, y0 = label_w + 30, 40
    width = x0 + cell * n + 20
    height = y0 + cell * n + 0.75 * label_w + 36  # the predicted labels run at 45 degrees
    top = counts.max() if counts.size else 0
    body = _title([title], width)
    for i in range(n):
        for j in range(n):
            c = int(counts[i, j])
            share = c / top if top else 0.0
            x, y = x0 + j * cell, y0 + i * cell
            body.append(f"<rect x='{x}' y='{y}' width='{cell}' height='{cell}' "
                        f"fill='{_blue(share)}'/>")
            body.append(_text(x + cell / 2, y + cell / 2 + 4, str(c), 10, "middle",
                              f"fill='{'white' if c > top / 2 else 'black'}'"))
    for k, name in enumerate(class_names):
        body.append(_text(x0 - 5, y0 + k * cell + cell / 2 + 4, name, 10, "end"))
        xk, yk = x0 + k * cell + cell / 2, y0 + n * cell + 8
        body.append(_text(xk, yk, name, 10, "end", f"transform='rotate(-45 {xk} {yk})'"))
    body.append(f"<rect x='{x0}' y='{y0}' width='{cell * n}' height='{cell * n}' fill='none' "
                "stroke='#444'/>")
    body.append(_text(x0 + cell * n / 2, height - 8, "predicted"))
    cy = y0 + cell * n / 2
    body.append(_text(14, cy, "true", 11, "middle", f"transform='rotate(-90 14 {cy})'"))
    Path(path).write_text(_svg(width, height, body))
    return Path(path)


__all__ = ["confusion_matrix", "learning_curve", "nice_ticks"]
