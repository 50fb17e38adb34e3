"""The learning curves of a sweep's report, on the lecture's three clocks (epochs, updates,
seconds), each with its best epoch: plain data for :func:`.figures.clocks` and the words
under it (:mod:`.words`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np

from service.jobspec.sweep import fmt_value, short_name
from service.worker_api import Job, Trial
from worker.sweeps.report.insight import BATCH, EPOCHS, MAX_LEVELS, level_index, swept_of, values_of


@dataclasses.dataclass
class Curve:
    label: str  # the line factor's value
    epochs: list[int]
    updates: list[int]
    seconds: list[float]
    y: list[float]
    # Shorter trials of the same configuration, marked on this line: (epoch, objective, name).
    marks: list[tuple[int, float | None, str]]
    seeds: int
    best_epoch: int | None = None  # the epoch with the best value (lowest for minimize)
    best_value: float | None = None
    noise: float | None = None  # how much the curve's value moves by chance (see best_epoch)
    worse: bool | None = None  # the last epoch worse than the best by more than the noise

    @property
    def last_value(self) -> float | None:
        return self.y[-1] if self.y else None


@dataclasses.dataclass
class CurvePanel:
    fixed: dict  # the other factors' values this panel holds
    curves: list[Curve]

    @property
    def title(self) -> str:
        return " ".join(f"{short_name(k)}={fmt_value(v)}" for k, v in self.fixed.items()) \
            or "all trials"


def curve_panels(trials: list[Trial], jobs: list[Job], params: list[str],
                 curves: dict[str, list[dict]], metric: str, goal: str = "minimize"
                 ) -> tuple[str | None, list[CurvePanel]]:
    """One panel per combination of the factors other than the line factor and epochs, one
    line per value of the line factor (the batch size when it is swept), in numeric order.
    Each line is the longest training of that configuration (mean over its seeds); shorter
    trials of the same configuration are the same training stopped earlier (shared, or trained
    alike with the same seed), so they are marks on that line rather than lines under it."""
    swept = swept_of(trials, params)
    others = [p for p in swept if p != EPOCHS]
    by_id = {j.id: j for j in jobs}
    if any(len(values_of(trials, p)) > MAX_LEVELS for p in others):
        return None, _sampled_panel(trials, by_id, curves, metric, goal)
    line_by = BATCH if BATCH in others else (others[0] if others else None)
    panel_by = [p for p in others if p != line_by]
    panels: dict[tuple, dict[Any, list[Trial]]] = {}
    for t in trials:
        if t.state not in ("succeeded", "pruned"):
            continue
        key = tuple(fmt_value(t.params.get(p)) for p in panel_by)
        value = t.params.get(line_by) if line_by else None
        panels.setdefault(key, {}).setdefault(value, []).append(t)
    order = values_of(trials, line_by) if line_by else [None]
    out = []
    for key in sorted(panels, key=lambda k: [level_index(trials, p, v)
                                            for p, v in zip(panel_by, k)]):
        lines = []
        for value in [v for v in order if v in panels[key]]:
            members = panels[key][value]
            longest = max(members, key=lambda t: (t.params.get(EPOCHS) or 0, t.number))
            curve = _curve(longest, by_id, curves, metric, goal)
            if curve is None:
                continue
            curve.label = fmt_value(value) if line_by else longest.name
            curve.marks = [(int(t.params.get(EPOCHS) or 0), t.objective, t.name)
                           for t in members if t is not longest]
            lines.append(curve)
        if lines:
            out.append(CurvePanel(dict(zip(panel_by, key)), lines))
    return line_by, out


SAMPLED_LINES = 10


def _sampled_panel(trials: list[Trial], by_id: dict[str, Job], curves: dict[str, list[dict]],
                   metric: str, goal: str) -> list[CurvePanel]:
    """A sampled sweep (no grid to split by): one panel, one line per trial, the best
    SAMPLED_LINES by objective (trials without one last)."""
    sign = 1.0 if goal == "minimize" else -1.0
    done = [t for t in trials if t.state in ("succeeded", "pruned")]
    done.sort(key=lambda t: (t.objective is None, sign * (t.objective or 0.0)))
    lines = []
    for t in done[:SAMPLED_LINES]:
        curve = _curve(t, by_id, curves, metric, goal)
        if curve is not None:
            curve.label = t.name
            lines.append(curve)
    return [CurvePanel({}, lines)] if lines else []


def _curve(trial: Trial, by_id: dict[str, Job], curves: dict[str, list[dict]],
           metric: str, goal: str) -> Curve | None:
    """The trial's mean curve over its seeds, on the three clocks, with its best epoch."""
    runs = []
    for tj in trial.jobs:
        job = by_id.get(tj.id)
        epochs = curves.get(tj.id) or []
        if job is None or not epochs:
            continue
        y = [e.get(metric) for e in epochs]
        t = [e.get("epoch_time_s") for e in epochs]
        if any(v is None for v in t):
            fit = (job.summary or {}).get("fit_time_s") or 0.0
            t = [fit / len(epochs)] * len(epochs)
        runs.append((np.array([np.nan if v is None else float(v) for v in y]),
                     np.cumsum(np.array(t, dtype=float)),
                     int((job.plan or {}).get("steps_per_epoch") or 1)))
    if not runs:
        return None
    n = min(len(r[0]) for r in runs)
    per_seed = np.stack([r[0][:n] for r in runs])
    with warnings.catch_warnings():  # an epoch no seed has a value for stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        y = np.nanmean(per_seed, axis=0)
    secs = np.mean(np.stack([r[1][:n] for r in runs]), axis=0)
    epochs = list(range(1, n + 1))
    curve = Curve("", epochs, [e * runs[0][2] for e in epochs], [float(s) for s in secs],
                  [None if math.isnan(v) else float(v) for v in y], [], len(runs))
    best_epoch(curve, per_seed, goal)
    return curve


def best_epoch(curve: Curve, per_seed: np.ndarray, goal: str) -> None:
    """Set the curve's best epoch (the lowest value of a minimized objective, the highest of a
    maximized one) and whether training on past it made it worse: the last epoch worse than
    the best by more than the noise.

    The noise: with several seeds, the larger of the seeds' standard deviations at the best and
    at the last epoch; with one seed, the curve's epoch-to-epoch jitter over its second half
    (the standard deviation of successive differences / sqrt 2, which is the noise's standard
    deviation when the noise is independent from epoch to epoch), none with fewer than 4
    differences to read it from, and then no claim is made.
    """
    y = np.array([np.nan if v is None else v for v in curve.y], dtype=float)
    if not np.isfinite(y).any():
        return
    i = int(np.nanargmin(y) if goal == "minimize" else np.nanargmax(y))
    curve.best_epoch, curve.best_value = i + 1, float(y[i])
    last = y[-1]
    with warnings.catch_warnings():  # one finite seed: no spread (NaN)
        warnings.simplefilter("ignore", RuntimeWarning)
        if per_seed.shape[0] > 1:
            noise = max(float(np.nanstd(per_seed[:, i], ddof=1)),
                        float(np.nanstd(per_seed[:, -1], ddof=1)))
        else:
            tail = np.diff(y[len(y) // 2:])
            tail = tail[np.isfinite(tail)]
            noise = float(np.std(tail, ddof=1) / math.sqrt(2)) if len(tail) >= 4 else math.nan
    curve.noise = None if math.isnan(noise) else noise
    if curve.noise is not None and np.isfinite(last):
        gap = (last - curve.best_value) if goal == "minimize" else (curve.best_value - last)
        curve.worse = bool(gap > curve.noise)
