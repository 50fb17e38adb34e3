"""What a finished training says about itself beyond its epochs: its best epoch, its share of
the fit's time, and the single-value MLflow metrics every run gets (trained or recorded from
another training alike).

- The best epoch is judged by the monitored metric: a sweep trial's objective (its metric and
  goal), else the job's ``fit.early_stopping.monitor``, else ``val_loss`` when the job holds
  data out and ``loss`` when it does not.
- A trial's fit time is its own share of the training it came from: each epoch's time divided
  among the towers that trained in that epoch (one, unless a pack trained several at once),
  summed over the trial's epochs. A trial recorded at epoch 10 of a 50-epoch training gets the
  first 10 epochs' time; a tower of a pack of 3 gets a third of each epoch it trained in.
"""

from __future__ import annotations

import math

# Metrics where higher is better (the rest, losses and errors, are lower-is-better).
HIGHER_IS_BETTER = ("accuracy", "auc", "precision", "recall")


def goal_of(metric: str) -> str:
    """``maximize`` for accuracy, AUC, precision and recall (and their val_ twins), else
    ``minimize``."""
    return "maximize" if metric.removeprefix("val_") in HIGHER_IS_BETTER else "minimize"


def monitored(spec, plan, ctx=None) -> tuple[str, str]:
    """(metric, goal) that picks a run's best epoch: the sweep's objective for a trial
    (``ctx``: its :class:`~service.worker_api.TrialContext`), else what the job monitors."""
    if ctx is not None:
        objective = ctx.sweep_spec["objective"]
        return objective["metric"], objective.get("goal", "minimize")
    stopping = spec.fit.early_stopping
    metric = stopping.monitor if stopping is not None else \
        ("val_loss" if plan.n_val else "loss")
    return metric, goal_of(metric)


def best_epoch(history: list[dict], metric: str, goal: str) -> dict | None:
    """``{"metric", "goal", "epoch", "value"}``: the epoch (1-based) with the best finite
    value of ``metric``, the earliest on a tie; None when no epoch has one."""
    values = [(h.get(metric), e) for e, h in enumerate(history, start=1)]
    values = [(float(v), e) for v, e in values
              if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return None
    sign = 1.0 if goal == "minimize" else -1.0
    value, epoch = min(values, key=lambda ve: (sign * ve[0], ve[1]))
    return {"metric": metric, "goal": goal, "epoch": epoch, "value": value}


def fit_share(history: list[dict], active: list[int] | None = None) -> float:
    """Seconds: each epoch's ``epoch_time_s`` divided by the towers trained in it
    (``active[i]`` for epoch i + 1; one each when None), summed."""
    return sum(h.get("epoch_time_s", 0.0) / max(1, active[i] if active and i < len(active)
                                                else 1)
               for i, h in enumerate(history))


def run_metrics(summary: dict, chance: dict[str, float] | None = None) -> dict[str, float]:
    """The single-value metrics of a run from its job's summary: ``best_epoch`` and
    ``best_<metric>``, ``fit_time_s`` and, given ``chance``, ``chance_loss`` and
    ``chance_accuracy``."""
    out: dict[str, float] = {}
    best = summary.get("best_epoch")
    if best:
        out["best_epoch"] = float(best["epoch"])
        out[f"best_{best['metric']}"] = float(best["value"])
    if summary.get("fit_time_s") is not None:
        out["fit_time_s"] = float(summary["fit_time_s"])
    out.update({f"chance_{k}": float(v) for k, v in (chance or {}).items()})
    return out
