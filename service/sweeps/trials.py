"""The trials of a sweep as its users see them: a read model over the sweep's job rows.

A trial is one configuration of the swept parameters; with ``repeats`` it has one job per
seed, folded here into the mean and standard deviation of the objective.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

from service.jobspec.sweep import ordered, trial_name
from service.store.models import Job, JobStatus, Sweep

ENDED_WITH_OBJECTIVE = (JobStatus.succeeded, JobStatus.pruned)


@dataclasses.dataclass(frozen=True)
class TrialJob:
    """One seed of a trial."""

    id: str
    status: str
    seed: int | None
    repeat: int | None
    epoch: int | None
    epochs: int | None
    objective: float | None
    error: str | None
    mlflow_run_id: str | None


@dataclasses.dataclass(frozen=True)
class Trial:
    number: int
    name: str
    params: dict
    state: str  # pending, queued, running, paused, succeeded, failed, cancelled, pruned
    objective: float | None
    objective_std: float | None
    objective_values: list[float]
    trained_by: str | None  # the job whose training this trial was recorded from
    jobs: list[TrialJob]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def job_objective(job: Job, metric: str, at: str = "last") -> float | None:
    """A job's value of the sweep's objective.

    Args:
        job (Job): One seed of a trial (a row, possibly detached).
        metric (str): The objective's metric (``val_loss``, ...).
        at (str): ``last``: its value at the job's last epoch; ``best``: at its best epoch
            (the summary's ``best_epoch``, which the worker finds by the sweep's objective:
            its metric and goal). A job recorded before best epochs were, or whose best epoch
            is of another metric, gives its last value.

    Returns:
        float | None: The value; None unless the job succeeded or was pruned with that
        metric in its summary.
    """
    if job.status not in ENDED_WITH_OBJECTIVE:
        return None
    summary = job.summary or {}
    best = summary.get("best_epoch") or {}
    if at == "best" and best.get("metric") == metric:
        value = best.get("value")
    else:
        value = (summary.get("final_metrics") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def objective_of(sweep: Sweep) -> tuple[str, str, str]:
    """The sweep's objective: (metric, goal, at); ``at`` is ``last`` for a sweep stored
    before it could be chosen."""
    objective = sweep.spec["objective"]
    return objective["metric"], objective.get("goal", "minimize"), objective.get("at", "last")


def seed_values(group: list[Job], metric: str, at: str = "last") -> list[float]:
    """The objective of each seed of a trial that succeeded."""
    return [v for v in (job_objective(j, metric, at) for j in group
                        if j.status == JobStatus.succeeded) if v is not None]


def trial_state(jobs: list[Job]) -> JobStatus:
    states = {j.status for j in jobs}
    if JobStatus.pruned in states:
        return JobStatus.pruned
    if JobStatus.running in states:
        return JobStatus.running
    if JobStatus.paused in states:
        return JobStatus.paused
    if states == {JobStatus.queued}:
        return JobStatus.queued
    if not all(s.terminal for s in states):
        return JobStatus.running  # some seeds done, others queued
    if JobStatus.succeeded in states:
        return JobStatus.succeeded
    if states == {JobStatus.cancelled}:
        return JobStatus.cancelled
    return JobStatus.failed


def by_trial(jobs: list[Job]) -> dict[int, list[Job]]:
    out: dict[int, list[Job]] = {}
    for j in sorted(jobs, key=lambda j: (j.trial_number, j.repeat or 0)):
        out.setdefault(j.trial_number, []).append(j)
    return out


def _trial_job(j: Job, metric: str, at: str) -> TrialJob:
    return TrialJob(id=j.id, status=j.status.value, seed=(j.spec.get("fit") or {}).get("seed"),
                    repeat=j.repeat, epoch=(j.progress or {}).get("epoch"),
                    epochs=(j.plan or {}).get("epochs"), objective=job_objective(j, metric, at),
                    error=(j.error or {}).get("message"), mlflow_run_id=j.mlflow_run_id)


def trials_of(sweep: Sweep, jobs: list[Job]) -> list[Trial]:
    """One entry per trial (configuration), seeds folded into mean and spread."""
    metric, _, at = objective_of(sweep)
    out = []
    for number, group in sorted(by_trial(jobs).items()):
        values = seed_values(group, metric, at)
        params = ordered(group[0].trial_params or {}, sweep.plan["param_order"])
        state = trial_state(group)
        pruned = [job_objective(j, metric, at) for j in group if j.status == JobStatus.pruned]
        objective = statistics.fmean(values) if values and state == JobStatus.succeeded else \
            (pruned[0] if pruned and pruned[0] is not None else None)
        out.append(Trial(
            number=number, name=trial_name(params), params=params, state=state.value,
            objective=objective,
            objective_std=statistics.stdev(values) if len(values) > 1 else None,
            objective_values=values, trained_by=group[0].trained_by,
            jobs=[_trial_job(j, metric, at) for j in group]))
    return out


def pending_grid_trials(sweep: Sweep, trials: list[Trial]) -> list[Trial]:
    """Grid configurations the scheduler has not created yet."""
    configs = sweep.plan["configs"]
    if not configs:
        return []
    seen = {t.number for t in trials}
    order = sweep.plan["param_order"]
    state = "cancelled" if sweep.cancel_requested else "pending"
    return [Trial(number=i, name=trial_name(configs[i], order),
                  params=ordered(configs[i], order), state=state, objective=None,
                  objective_std=None, objective_values=[], trained_by=None, jobs=[])
            for i in range(sweep.plan["total"]) if i not in seen]


# Two-sided 5 % critical values of Student's t by degrees of freedom (1..30, then 40, 60,
# 120); from 1,000 on, the normal's 1.96.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
         16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
         23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045,
         30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_critical(df: float) -> float:
    """Student's t at 0.975 for ``df`` degrees of freedom, rounded down to a tabled df (the
    stricter value)."""
    if df >= 1000:
        return 1.96
    tabled = [d for d in T_975 if d <= max(df, 1.0)]
    return T_975[max(tabled)]


def clear_winner(best: Trial, runner_up: Trial | None) -> bool:
    """Whether ``best`` beats ``runner_up`` by more than the seeds' noise.

    Welch's t-test at the 5 % level, two-sided: clear when the difference of the two means
    exceeds ``t(0.975, df) * sqrt(s1²/n1 + s2²/n2)``, ``s`` each trial's standard deviation
    over its ``n`` seeds and ``df`` Welch-Satterthwaite's degrees of freedom (rounded down).
    A trial with fewer than 2 seeds has no measured spread, so its difference is always
    within noise; equal means are too. With no runner-up (one trial with an objective) the
    best is clear: there is nothing it could be confused with.
    """
    if runner_up is None:
        return True
    values = (best.objective_values, runner_up.objective_values)
    if min(len(v) for v in values) < 2 or best.objective == runner_up.objective:
        return False
    diff = abs(best.objective - runner_up.objective)
    parts = [statistics.variance(v) / len(v) for v in values]
    se2 = sum(parts)
    if se2 == 0.0:
        return diff > 0.0  # every seed agrees exactly within each trial, and they differ
    df = se2 ** 2 / sum(p ** 2 / (len(v) - 1) for p, v in zip(parts, values))
    return diff > t_critical(df) * math.sqrt(se2)


def ranked(sweep: Sweep, trials: list[Trial]) -> list[Trial]:
    """The trials that succeeded with an objective, best first by the mean over seeds; a
    tie goes to the lower trial number."""
    _, goal, _ = objective_of(sweep)
    sign = 1.0 if goal == "minimize" else -1.0
    done = [t for t in trials if t.state == "succeeded" and t.objective is not None]
    return sorted(done, key=lambda t: (sign * t.objective, t.number))


def best_trial(sweep: Sweep, trials: list[Trial]) -> dict | None:
    """The best trial by the mean of its seeds, the runner-up, and whether the gap between
    them is clear of the seeds' noise (:func:`clear_winner`).

    Returns:
        dict | None: ``number``, ``name``, ``params``, ``objective`` (the mean over seeds),
        ``objective_std``, ``n_seeds`` (the seeds that mean is over), ``job_ids``,
        ``runner_up`` (``number``, ``name``, ``params``, ``objective``, ``objective_std``,
        ``n_seeds``; None with a single trial) and ``clear``; None until a trial succeeded.
    """
    order = ranked(sweep, trials)
    if not order:
        return None
    best = order[0]
    second = order[1] if len(order) > 1 else None
    runner_up = None if second is None else {
        "number": second.number, "name": second.name, "params": second.params,
        "objective": second.objective, "objective_std": second.objective_std,
        "n_seeds": len(second.objective_values)}
    return {"number": best.number, "name": best.name, "params": best.params,
            "objective": best.objective, "objective_std": best.objective_std,
            "n_seeds": len(best.objective_values), "job_ids": [j.id for j in best.jobs],
            "runner_up": runner_up, "clear": clear_winner(best, second)}
