"""What a sweep's report says, computed from its trials, before anything is drawn: the
objective for each pair of swept factors and each factor's effect with its seed spread (the
learning curves are :mod:`.curves`, which factor matters :mod:`.importance`). Plain data, so a
test (and the report's JSON block) can read it.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics

from service.jobspec.sweep import fmt_value, short_name
from service.worker_api import Trial

EPOCHS = "fit.epochs"
# A factor with more distinct values than this (a sampled range) is not a grid axis: no
# overview table for it, and the other factors' plots do not split by it.
MAX_LEVELS = 10
BATCH = "fit.batch_size"
CLOCKS = ("epochs", "updates", "seconds")


def is_numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def log_axis(path: str, values: list) -> bool:
    """Batch sizes and learning rates are read on a log scale (1, 5, 40, 200 are a factor
    apart, not a distance); so is any positive numeric factor that spans a decade."""
    if not is_numeric(values) or not values or min(values) <= 0:
        return False
    return path == BATCH or path.endswith("learning_rate") or max(values) / min(values) >= 10


def values_of(trials: list[Trial], path: str) -> list:
    """The distinct values of ``path`` among ``trials``: numbers in numeric order (1, 5, 40,
    200, never the string order 1, 200, 40, 5), anything else in the order first met."""
    seen: list = []
    for t in trials:
        v = t.params.get(path)
        if v not in seen:
            seen.append(v)
    return sorted(seen) if is_numeric(seen) else seen


def level_index(trials: list[Trial], path: str, value) -> int:
    """Where ``value`` (a value or its printed form) stands among :func:`values_of`."""
    vals = values_of(trials, path)
    if value in vals:
        return vals.index(value)
    shown = [fmt_value(v) for v in vals]
    return shown.index(value) if value in shown else len(vals)


def finished(trials: list[Trial]) -> list[Trial]:
    """The trials with an objective to compare (succeeded, every seed's mean)."""
    return [t for t in trials if t.state == "succeeded" and t.objective is not None]


def seeds_of(trials: list[Trial]) -> int:
    """The most seeds any finished trial's objective averages over."""
    return max((len(t.objective_values) for t in finished(trials)), default=0)


def focus_epochs(trials: list[Trial], best: dict | None) -> int | None:
    """The epochs the other factors are compared at when ``fit.epochs`` is swept: the best
    trial's, so the configuration the headline names is in those grids and panels (the largest
    when there is no best); None when epochs are not swept."""
    levels = values_of(trials, EPOCHS)
    if len(levels) < 2:
        return None
    chosen = ((best or {}).get("params") or {}).get(EPOCHS)
    return chosen if chosen in levels else max(levels)


def swept_of(trials: list[Trial], params: list[str]) -> list[str]:
    return [p for p in params if len(values_of(trials, p)) > 1]


# --- the overview: one grid per pair of factors ------------------------------------------------


@dataclasses.dataclass
class PairGrid:
    rows: str  # parameter path on the rows
    cols: str
    row_values: list
    col_values: list
    values: list[list[float | None]]  # mean objective per cell
    fixed: dict  # parameters held at one value (the best trial's epochs)
    averaged_over: list[str]  # parameters each cell averages over (besides the seeds)
    seeds: int = 1  # seeds each trial's objective averages over
    best_cell: list[int] | None = None  # [row, col] of the cell holding the best trial

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def pair_grids(trials: list[Trial], params: list[str], best: dict | None = None
               ) -> list[PairGrid]:
    """The objective for each pair of swept factors. Pairs of non-epoch factors are read at the
    best trial's epochs (:func:`focus_epochs`; the question is "which batch size and
    activation", not "how long"); pairs with epochs are read over every epochs value. Other
    factors are averaged over. Every grid marks the cell that holds the best trial."""
    done = finished(trials)
    swept = swept_of(trials, params)
    others = [p for p in swept if p != EPOCHS and len(values_of(trials, p)) <= MAX_LEVELS]
    pairs = list(itertools.combinations(others, 2))
    if EPOCHS in swept:
        pairs += [(p, EPOCHS) for p in others]
    focus = focus_epochs(trials, best)
    best_params = (best or {}).get("params") or {}
    grids = []
    for rows, cols in pairs:
        fixed = {}
        pool = done
        if EPOCHS in swept and EPOCHS not in (rows, cols):
            fixed[EPOCHS] = focus
            pool = [t for t in done if t.params.get(EPOCHS) == focus]
        rv, cv = values_of(trials, rows), values_of(trials, cols)
        cells = [[_mean([t.objective for t in pool if t.params.get(rows) == r
                         and t.params.get(cols) == c]) for c in cv] for r in rv]
        cell = None
        if best_params.get(rows) in rv and best_params.get(cols) in cv and all(
                best_params.get(k) == v for k, v in fixed.items()):
            cell = [rv.index(best_params[rows]), cv.index(best_params[cols])]
        grids.append(PairGrid(rows, cols, rv, cv, cells, fixed,
                              [p for p in swept if p not in (rows, cols) and p not in fixed],
                              max(seeds_of(trials), 1), cell))
    return grids


def grid_title(g: dict, metric: str) -> str:
    """What a grid shows and what each cell averages over, in words (the heatmap's title and
    the table's caption say the same)."""
    seeds = f"{g['seeds']} seeds" if g["seeds"] > 1 else "one seed"
    over = " and ".join(short_name(p) for p in g["averaged_over"])
    at = ", ".join(f"{short_name(k)}={fmt_value(v)}" for k, v in g["fixed"].items())
    what = f"{metric}: {short_name(g['rows'])} × {short_name(g['cols'])}" + (
        f" at {at}" if at else "")
    if over:
        each = f"each cell: mean over {over}" + (f" and {seeds}" if g["seeds"] > 1
                                                 else ", one seed each")
    else:
        each = "each cell: one configuration, " + (f"mean over {seeds}" if g["seeds"] > 1
                                                   else seeds)
    return f"{what}; {each}"


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
    levels: tuple = ()  # the other factors' level indices (ordering and styling)


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


def factor_effects(trials: list[Trial], params: list[str], best: dict | None = None
                   ) -> list[FactorEffect]:
    """For each swept factor, the objective at each of its values, one series per combination of
    the other factors (never averaged over them, so error bars are seed spread only), in the
    others' value order (bs=1, 5, 40, 200); factors other than epochs at the best trial's
    epochs."""
    done = finished(trials)
    swept = swept_of(trials, params)
    focus = focus_epochs(trials, best)
    out = []
    for p in swept:
        vals = values_of(trials, p)
        fixed = {}
        pool = done
        if p != EPOCHS and EPOCHS in swept:
            fixed[EPOCHS] = focus
            pool = [t for t in done if t.params.get(EPOCHS) == focus]
        rest = [q for q in swept if q != p and q not in fixed]
        # Split by the other factors when they form a grid; a sampled factor would make a
        # series of every trial: then one cloud of points, not joined.
        joined = all(len(values_of(trials, q)) <= MAX_LEVELS for q in rest)
        if not joined:
            rest = []
        groups: dict[tuple, list[Trial]] = {}
        for t in pool:
            groups.setdefault(tuple(level_index(trials, q, t.params.get(q)) for q in rest),
                              []).append(t)
        series = []
        for key in sorted(groups):
            members = sorted(groups[key], key=lambda t: vals.index(t.params.get(p)))
            label = " ".join(f"{short_name(q)}={fmt_value(members[0].params.get(q))}"
                             for q in rest)
            series.append(FactorSeries(
                label or "all", [t.params.get(p) for t in members],
                [t.objective for t in members],
                [t.objective_std if len(t.objective_values) > 1 else None for t in members],
                key))
        out.append(FactorEffect(p, vals, is_numeric(vals), log_axis(p, vals), fixed, series,
                                seeds_of(trials), joined))
    return out
