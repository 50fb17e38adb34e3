"""What a sweep's report says, computed from its trials, before anything is drawn: the
objective for each pair of swept factors, each factor's effect with its seed spread, which
factor matters most, and the learning curves on the lecture's three clocks (epochs, updates,
seconds). Plain data, so a test (and the report's JSON block) can read it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from typing import Any

import numpy as np

from service.jobspec.sweep import fmt_value, short_name
from service.worker_api import Job, Trial

EPOCHS = "fit.epochs"
# A factor with more distinct values than this (a sampled range) is not a grid axis: no
# overview table for it, and the other factors' plots do not split by it.
MAX_LEVELS = 10
BATCH = "fit.batch_size"
CLOCKS = ("epochs", "updates", "seconds")


def is_numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def log_axis(path: str, values: list) -> bool:
    """Batch sizes and learning rates are read on a log scale (1, 5, 40, 160 are a factor
    apart, not a distance); so is any positive numeric factor that spans a decade."""
    if not is_numeric(values) or not values or min(values) <= 0:
        return False
    return path == BATCH or path.endswith("learning_rate") or max(values) / min(values) >= 10


def values_of(trials: list[Trial], path: str) -> list:
    seen: list = []
    for t in trials:
        v = t.params.get(path)
        if v not in seen:
            seen.append(v)
    return sorted(seen) if is_numeric(seen) else seen


def finished(trials: list[Trial]) -> list[Trial]:
    """The trials with an objective to compare (succeeded, every seed's mean)."""
    return [t for t in trials if t.state == "succeeded" and t.objective is not None]


def chance_level(jobs: list[Job], metric: str) -> float | None:
    """What guessing scores on the objective (classification, loss or accuracy objectives):
    read from the jobs' summaries (worker/training/chance.py)."""
    base = metric[4:] if metric.startswith("val_") else metric
    for j in jobs:
        value = ((j.summary or {}).get("chance") or {}).get(base)
        if isinstance(value, (int, float)):
            return float(value)
    return None


# --- the overview: one grid per pair of factors ------------------------------------------------


@dataclasses.dataclass
class PairGrid:
    rows: str  # parameter path on the rows
    cols: str
    row_values: list
    col_values: list
    values: list[list[float | None]]  # mean objective per cell
    fixed: dict  # parameters held at one value (the largest epochs)
    averaged_over: list[str]  # parameters each cell averages over

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def pair_grids(trials: list[Trial], params: list[str]) -> list[PairGrid]:
    """The objective for each pair of swept factors. Pairs of non-epoch factors are read at the
    largest epochs (the question is "which batch size and activation", not "how long"); pairs
    with epochs are read over every epochs value. Other factors are averaged over."""
    done = finished(trials)
    swept = [p for p in params if len(values_of(trials, p)) > 1]
    others = [p for p in swept if p != EPOCHS and len(values_of(trials, p)) <= MAX_LEVELS]
    pairs = list(itertools.combinations(others, 2))
    if EPOCHS in swept:
        pairs += [(p, EPOCHS) for p in others]
    grids = []
    for rows, cols in pairs:
        fixed = {}
        pool = done
        if EPOCHS in swept and EPOCHS not in (rows, cols):
            fixed[EPOCHS] = max(values_of(trials, EPOCHS))
            pool = [t for t in done if t.params.get(EPOCHS) == fixed[EPOCHS]]
        rv, cv = values_of(trials, rows), values_of(trials, cols)
        cells = [[_mean([t.objective for t in pool if t.params.get(rows) == r
                         and t.params.get(cols) == c]) for c in cv] for r in rv]
        grids.append(PairGrid(rows, cols, rv, cv, cells, fixed,
                              [p for p in swept if p not in (rows, cols) and p not in fixed]))
    return grids


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


# --- each factor's effect ----------------------------------------------------------------------


@dataclasses.dataclass
class FactorSeries:
    label: str  # the other factors' values, "act=relu"
    x: list  # this factor's values
    y: list[float]  # the trial's objective (mean over seeds)
    sd: list[float | None]  # spread over seeds only; None with one seed


@dataclasses.dataclass
class FactorEffect:
    param: str
    values: list
    numeric: bool
    log: bool
    fixed: dict
    series: list[FactorSeries]
    seeds: int  # most seeds any trial has
    joined: bool  # one series per combination of the others, points joined along x


def factor_effects(trials: list[Trial], params: list[str]) -> list[FactorEffect]:
    """For each swept factor, the objective at each of its values, one series per combination of
    the other factors (never averaged over them, so error bars are seed spread only); factors
    other than epochs at the largest epochs."""
    done = finished(trials)
    swept = [p for p in params if len(values_of(trials, p)) > 1]
    out = []
    for p in swept:
        vals = values_of(trials, p)
        fixed = {}
        pool = done
        if p != EPOCHS and EPOCHS in swept:
            fixed[EPOCHS] = max(values_of(trials, EPOCHS))
            pool = [t for t in done if t.params.get(EPOCHS) == fixed[EPOCHS]]
        rest = [q for q in swept if q != p and q not in fixed]
        # Split by the other factors when they form a grid; a sampled factor would make a
        # series of every trial: then one cloud of points, not joined.
        joined = all(len(values_of(trials, q)) <= MAX_LEVELS for q in rest)
        if not joined:
            rest = []
        groups: dict[tuple, list[Trial]] = {}
        for t in pool:
            groups.setdefault(tuple(fmt_value(t.params.get(q)) for q in rest), []).append(t)
        series = []
        for key, members in groups.items():
            members.sort(key=lambda t: vals.index(t.params.get(p)))
            series.append(FactorSeries(
                " ".join(f"{short_name(q)}={v}" for q, v in zip(rest, key)) or "all",
                [t.params.get(p) for t in members], [t.objective for t in members],
                [t.objective_std if len(t.objective_values) > 1 else None for t in members]))
        series.sort(key=lambda s: s.label)
        out.append(FactorEffect(p, vals, is_numeric(vals), log_axis(p, vals), fixed, series,
                                max((len(t.objective_values) for t in done), default=0),
                                joined))
    return out


# --- which factor matters ----------------------------------------------------------------------


def importance(trials: list[Trial], params: list[str]) -> tuple[dict[str, float], str]:
    """Each swept factor's share of the objective's variance, largest first, and the method.

    A complete grid (every combination has an objective) is decomposed exactly: a factor's
    importance is the variance of the objective's mean at each of its levels (its main effect,
    averaged over every other factor), as a share of the sum over factors. That is the
    functional ANOVA that fANOVA estimates, computed on the grid itself; fANOVA's random forest
    adds nothing on a handful of grid points but noise (64 trees fitted to 8 points, a result
    that moves with the seed). Anything else (a sampled or unfinished sweep) goes to Optuna's
    FanovaImportanceEvaluator.
    """
    done = finished(trials)
    swept = [p for p in params if len(values_of(done, p)) > 1]
    if not swept or len(done) < 2:
        return {}, "none"
    levels = {p: values_of(done, p) for p in swept}
    cells = {tuple(fmt_value(t.params.get(p)) for p in swept) for t in done}
    if len(cells) == len(done) == math.prod(len(v) for v in levels.values()):
        y = np.array([t.objective for t in done])
        effects = {p: float(np.var([y[[t.params.get(p) == v for t in done]].mean()
                                    for v in levels[p]])) for p in swept}
        total = sum(effects.values())
        if total <= 0:
            return {p: 0.0 for p in swept}, "grid functional ANOVA (main effects)"
        ranked = {p: effects[p] / total for p in swept}
        method = "grid functional ANOVA (main effects)"
    else:
        ranked, method = _fanova(done, swept, levels), "Optuna fANOVA"
    return dict(sorted(ranked.items(), key=lambda kv: -kv[1])), method


def _fanova(done: list[Trial], swept: list[str], levels: dict[str, list]) -> dict[str, float]:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    dists = {}
    for p in swept:
        vals = levels[p]
        dists[p] = (FloatDistribution(float(min(vals)), float(max(vals)), log=log_axis(p, vals))
                    if is_numeric(vals) else CategoricalDistribution(
                        [fmt_value(v) for v in vals]))
    study = optuna.create_study()
    for t in done:
        study.add_trial(optuna.trial.create_trial(
            params={p: (float(t.params[p]) if is_numeric(levels[p]) else fmt_value(t.params[p]))
                    for p in swept}, distributions=dists, value=t.objective))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))


# --- learning curves on three clocks -----------------------------------------------------------


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


@dataclasses.dataclass
class CurvePanel:
    fixed: dict  # the other factors' values this panel holds
    curves: list[Curve]

    @property
    def title(self) -> str:
        return " ".join(f"{short_name(k)}={fmt_value(v)}" for k, v in self.fixed.items()) \
            or "all trials"


def curve_panels(trials: list[Trial], jobs: list[Job], params: list[str],
                 curves: dict[str, list[dict]], metric: str) -> tuple[str | None, list[CurvePanel]]:
    """One panel per combination of the factors other than the line factor and epochs, one
    line per value of the line factor (the batch size when it is swept). Each line is the
    longest training of that configuration (mean over its seeds); shorter trials of the same
    configuration are the same training stopped earlier (shared, or trained alike with the
    same seed), so they are marks on that line rather than lines under it."""
    swept = [p for p in params if len(values_of(trials, p)) > 1]
    others = [p for p in swept if p != EPOCHS]
    by_id = {j.id: j for j in jobs}
    if any(len(values_of(trials, p)) > MAX_LEVELS for p in others):
        return None, _sampled_panel(trials, by_id, curves, metric)
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
    for key in sorted(panels, key=lambda k: [_order_key(trials, p, v)
                                            for p, v in zip(panel_by, k)]):
        lines = []
        for value in [v for v in order if v in panels[key]]:
            members = panels[key][value]
            longest = max(members, key=lambda t: (t.params.get(EPOCHS) or 0, t.number))
            curve = _curve(longest, by_id, curves, metric)
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
                   metric: str) -> list[CurvePanel]:
    """A sampled sweep (no grid to split by): one panel, one line per trial, the best
    SAMPLED_LINES by objective (trials without one last)."""
    done = [t for t in trials if t.state in ("succeeded", "pruned")]
    done.sort(key=lambda t: (t.objective is None, t.objective or 0.0))
    lines = []
    for t in done[:SAMPLED_LINES]:
        curve = _curve(t, by_id, curves, metric)
        if curve is not None:
            curve.label = t.name
            lines.append(curve)
    return [CurvePanel({}, lines)] if lines else []


def _order_key(trials: list[Trial], path: str, shown: str) -> int:
    vals = [fmt_value(v) for v in values_of(trials, path)]
    return vals.index(shown) if shown in vals else len(vals)


def _curve(trial: Trial, by_id: dict[str, Job], curves: dict[str, list[dict]],
           metric: str) -> Curve | None:
    """The trial's mean curve over its seeds, on the three clocks."""
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
    y = np.nanmean(np.stack([r[0][:n] for r in runs]), axis=0)
    secs = np.mean(np.stack([r[1][:n] for r in runs]), axis=0)
    epochs = list(range(1, n + 1))
    return Curve("", epochs, [e * runs[0][2] for e in epochs], [float(s) for s in secs],
                 [None if math.isnan(v) else float(v) for v in y], [], len(runs))

