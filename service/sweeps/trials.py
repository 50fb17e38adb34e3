"""The trials of a sweep as its users see them: a read model over the sweep's job rows.

A trial is one configuration of the swept parameters; with ``repeats`` it has one job per
seed, folded here into the mean and standard deviation of the objective.
"""

from __future__ import annotations

import dataclasses
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


def job_objective(job: Job, metric: str) -> float | None:
    """A job's value of the sweep's objective.

    Args:
        job (Job): One seed of a trial (a row, possibly detached).
        metric (str): The objective's metric (``val_loss``, ...).

    Returns:
        float | None: Its final value; None unless the job succeeded or was pruned with that
        metric in its summary.
    """
    if job.status not in ENDED_WITH_OBJECTIVE:
        return None
    value = ((job.summary or {}).get("final_metrics") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def seed_values(group: list[Job], metric: str) -> list[float]:
    """The objective of each seed of a trial that succeeded."""
    return [v for v in (job_objective(j, metric) for j in group
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


def _trial_job(j: Job, metric: str) -> TrialJob:
    return TrialJob(id=j.id, status=j.status.value, seed=(j.spec.get("fit") or {}).get("seed"),
                    repeat=j.repeat, epoch=(j.progress or {}).get("epoch"),
                    epochs=(j.plan or {}).get("epochs"), objective=job_objective(j, metric),
                    error=(j.error or {}).get("message"), mlflow_run_id=j.mlflow_run_id)


def trials_of(sweep: Sweep, jobs: list[Job]) -> list[Trial]:
    """One entry per trial (configuration), seeds folded into mean and spread."""
    metric = sweep.spec["objective"]["metric"]
    out = []
    for number, group in sorted(by_trial(jobs).items()):
        values = seed_values(group, metric)
        params = ordered(group[0].trial_params or {}, sweep.plan["param_order"])
        state = trial_state(group)
        pruned = [job_objective(j, metric) for j in group if j.status == JobStatus.pruned]
        objective = statistics.fmean(values) if values and state == JobStatus.succeeded else \
            (pruned[0] if pruned and pruned[0] is not None else None)
        out.append(Trial(
            number=number, name=trial_name(params), params=params, state=state.value,
            objective=objective,
            objective_std=statistics.stdev(values) if len(values) > 1 else None,
            objective_values=values, trained_by=group[0].trained_by,
            jobs=[_trial_job(j, metric) for j in group]))
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


def best_trial(sweep: Sweep, trials: list[Trial]) -> dict | None:
    goal = sweep.spec["objective"]["goal"]
    done = [t for t in trials if t.state == "succeeded" and t.objective is not None]
    if not done:
        return None
    best = (min if goal == "minimize" else max)(done, key=lambda t: t.objective)
    return {"number": best.number, "name": best.name, "params": best.params,
            "objective": best.objective, "objective_std": best.objective_std,
            "job_ids": [j.id for j in best.jobs]}
