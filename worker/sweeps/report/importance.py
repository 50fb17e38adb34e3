"""Which factor matters, in shares that add up: the variance of the sweep's objective over its
trials (each trial's mean over seeds), split into each factor's main effect and the share left
to interactions.

On a complete grid the split is exact: a two-way (and higher) analysis of variance of the
trials' table, one value per cell. With ``y`` the objective of each cell and ``m`` the grand
mean, the total is ``SS = Σ (y - m)²``; factor A's main effect is ``SS_A = Σ (m_A - m)²``
summed over the cells, ``m_A`` the mean of the cells at the cell's level of A; the two-way
interaction of A and B is ``SS_AB = Σ (m_AB - m_A - m_B + m)²``; what is left
(``SS - ΣSS_A - ΣSS_AB``) is the three-way and higher interactions. On a complete grid the
terms are orthogonal, so the shares ``SS_A / SS`` and ``SS_AB / SS`` add up to 1 with the rest.
That is the functional ANOVA that fANOVA estimates, computed on the grid itself (a random forest
fitted to 8 or 36 grid points adds only seed-dependent noise).

A sampled or unfinished sweep goes to Optuna's ``FanovaImportanceEvaluator`` (seed 0) without
normalising: its main effects are fractions of the variance of the forest's fitted function, and
the share they leave is that function's interactions.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from service.jobspec.sweep import fmt_value, short_name
from service.worker_api import Trial
from worker.sweeps.report.insight import finished, is_numeric, log_axis, values_of

GRID = "ANOVA over the grid"
FANOVA = "Optuna fANOVA"


@dataclasses.dataclass
class Importance:
    method: str
    main: dict[str, float]  # factor -> its main effect's share of the variance, largest first
    interactions: float  # the share left to interactions: 1 - sum(main)
    # The interactions split (a complete grid only): each pair's two-way share, largest first,
    # and what is left to three-way and higher.
    pairs: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)
    higher: float | None = None

    def as_dict(self) -> dict:
        return {"method": self.method, "main": [[p, v] for p, v in self.main.items()],
                "interactions": self.interactions,
                "pairs": [[a, b, v] for (a, b), v in self.pairs.items()],
                "higher_order": self.higher}

    def metrics(self) -> dict[str, float]:
        """The parent run's metrics: ``importance.<factor>`` (short names) and
        ``importance.interactions``."""
        if not self.main:
            return {}
        return {**{f"importance.{short_name(p)}": v for p, v in self.main.items()},
                "importance.interactions": self.interactions}


NONE = Importance("none", {}, 0.0)


def importance(trials: list[Trial], params: list[str]) -> Importance:
    """Each swept factor's main effect and the interactions, as shares of the variance of the
    objective over the finished trials (see the module's docstring for the method)."""
    done = finished(trials)
    swept = [p for p in params if len(values_of(done, p)) > 1]
    if not swept or len(done) < 2:
        return NONE
    levels = {p: values_of(done, p) for p in swept}
    cells = {tuple(fmt_value(t.params.get(p)) for p in swept) for t in done}
    if len(cells) == len(done) == math.prod(len(v) for v in levels.values()):
        keys = [tuple(fmt_value(t.params.get(p)) for p in swept) for t in done]
        return grid_anova(keys, [t.objective for t in done], swept)
    main = _fanova(done, swept, levels)
    main = dict(sorted(main.items(), key=lambda kv: -kv[1]))
    return Importance(FANOVA, main, max(0.0, 1.0 - sum(main.values())))


def grid_anova(keys: list[tuple], y: list[float], factors: list[str]) -> Importance:
    """The decomposition of ``y`` over a complete grid: ``keys[i]`` is cell i's level of each
    of ``factors``, one cell per combination."""
    y = np.asarray(y, dtype=float)
    m = float(y.mean())
    total = float(((y - m) ** 2).sum())

    def cell_means(idx: tuple[int, ...]) -> np.ndarray:
        """Each cell's mean over the cells sharing its levels of the factors ``idx``."""
        groups: dict[tuple, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(tuple(k[j] for j in idx), []).append(i)
        out = np.empty_like(y)
        for members in groups.values():
            out[members] = y[members].mean()
        return out

    one = {j: cell_means((j,)) for j in range(len(factors))}
    ss_main = {factors[j]: float(((one[j] - m) ** 2).sum()) for j in one}
    ss_pair = {}
    for a, b in itertools.combinations(range(len(factors)), 2):
        ab = cell_means((a, b))
        ss_pair[(factors[a], factors[b])] = float(((ab - one[a] - one[b] + m) ** 2).sum())
    if total <= 1e-15 * max(1.0, float((y ** 2).sum())):
        return Importance(GRID, {p: 0.0 for p in factors}, 0.0,
                          {k: 0.0 for k in ss_pair}, 0.0 if len(factors) > 2 else None)
    main = dict(sorted(((p, v / total) for p, v in ss_main.items()), key=lambda kv: -kv[1]))
    pairs = dict(sorted(((k, v / total) for k, v in ss_pair.items()), key=lambda kv: -kv[1]))
    interactions = max(0.0, 1.0 - sum(main.values()))
    higher = max(0.0, interactions - sum(pairs.values())) if len(factors) > 2 else None
    return Importance(GRID, main, interactions, pairs, higher)


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
    # evaluate(), not get_param_importances(): its shares unnormalised (fractions of the
    # variance), without the experimental-argument warning of normalize=False.
    return {p: float(v) for p, v in evaluator.evaluate(study).items()}
