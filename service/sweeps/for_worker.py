"""The sweep layer's one entry point for the worker.

A training process that runs a sweep trial needs five things from the sweep layer, and gets
them here and nowhere else (an import-linter contract holds the worker to it):

- :func:`trial_context`: after its claim, what the trial is (sweep, number, seed, swept
  values, Optuna trial) and the trials recorded from this training: with ``share_epochs``
  a configuration trains once to its largest epoch count and the trials that differ from it
  only in ``fit.epochs`` (:class:`SharedTrial`) are recorded from that training, each with
  ``trained_by`` set to its job. They start running with it here.
- :func:`parent_run` / :func:`adopt_parent_run`: the sweep's MLflow parent run, created by
  whichever trial gets there first.
- :func:`pruner`: reports each epoch's objective to Optuna and says when to stop.
- :func:`trial_ended`: advances the scheduler with the worker's own sender.
- :func:`report_data` / :func:`save_report`: what the sweep's report is written from.

The worker never imports the service's Celery sender, the routes' commands or the
scheduler's internals; state changes of job rows go through :mod:`service.lifecycle`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable

from sqlalchemy import select, update

from service import lifecycle
from service.config import Settings
from service.jobspec.sweep import ordered, trial_name
from service.lifecycle import Claim, Sender
from service.store.db import session_scope
from service.store.models import Job, JobEpoch, Sweep
from service.sweeps import scheduler, studies
from service.sweeps.trials import Trial, best_trial, job_objective, trials_of  # noqa: F401 (for the report)

log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class SharedTrial:
    """A trial recorded from this training at its own epoch count (``trained_by`` it)."""

    id: str
    name: str  # the job's name (its MLflow run name)
    spec: dict
    epochs: int
    number: int
    params: dict
    optuna_trial_id: int | None = None

    @property
    def trial_name(self) -> str:
        return trial_name(self.params)


@dataclasses.dataclass(frozen=True)
class TrialContext:
    sweep_id: str
    sweep_name: str
    study_name: str
    sweep_spec: dict
    number: int
    repeat: int
    params: dict
    optuna_trial_id: int
    shared: list[SharedTrial]

    @property
    def name(self) -> str:
        return trial_name(self.params)

    @property
    def early_stopping(self) -> str | None:
        return (self.sweep_spec["early_stopping"] or {}).get("type")


def dispose_connections() -> None:
    """A forked worker child must not reuse its parent's Optuna storage connections."""
    studies.dispose_storages()


def trial_context(settings: Settings, claim: Claim) -> TrialContext | None:
    """The claimed job's trial, or None for a plain job. Marks the trials recorded from this
    training running (fenced on the claim)."""
    if not claim.sweep_id:
        return None
    with session_scope(settings.database_url) as s:
        sweep = s.get(Sweep, claim.sweep_id)
        job = s.get(Job, claim.fence.job_id)
        if sweep is None or job is None:
            return None
        order = sweep.plan["param_order"]
        ctx = {"sweep_id": sweep.id, "sweep_name": sweep.name, "study_name": sweep.study_name,
               "sweep_spec": sweep.spec, "number": job.trial_number,
               "repeat": job.repeat or 0, "params": ordered(job.trial_params or {}, order),
               "optuna_trial_id": job.optuna_trial_id}
    shared = [SharedTrial(id=r.id, name=r.name, spec=r.spec, epochs=r.plan["epochs"],
                          number=r.trial_number, params=ordered(r.trial_params or {}, order),
                          optuna_trial_id=r.optuna_trial_id)
              for r in lifecycle.start_recorded(settings, claim.fence)]
    return TrialContext(**ctx, shared=shared)


def child_tags(ctx: TrialContext, parent_run_id: str, shared: SharedTrial | None = None
               ) -> dict[str, str]:
    """The MLflow tags of a trial's child run (this training's, or a shared trial's)."""
    number, params = (shared.number, shared.params) if shared else (ctx.number, ctx.params)
    return {"mlflow.parentRunId": parent_run_id,
            "kerasyard.trial_number": str(number),
            "kerasyard.trial": trial_name(params),
            "kerasyard.repeat": str(ctx.repeat)}


# --- the MLflow parent run ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParentRun:
    run_id: str | None  # None until a trial has created it
    experiment_id: str | None
    run_name: str
    experiment: str
    params: dict[str, str]
    tags: dict[str, str]


def parent_run(settings: Settings, sweep_id: str) -> ParentRun:
    with session_scope(settings.database_url) as s:
        sweep = s.get(Sweep, sweep_id)
        spec, plan = sweep.spec, sweep.plan
        params = {"sweep.method": spec["method"],
                  "sweep.objective": f"{spec['objective']['goal']} {spec['objective']['metric']}",
                  "sweep.max_parallel": spec["max_parallel"],
                  "sweep.trials": plan["total"], "sweep.repeats": spec["repeats"],
                  "sweep.early_stopping": (spec["early_stopping"] or {}).get("type", "none"),
                  "sweep.share_epochs": plan["share_epochs"],
                  "sweep.pack": plan.get("pack", False)}
        for path, space in spec["parameters"].items():
            params[f"sweep.parameters.{path}"] = space
        tags = {"kerasyard.sweep_id": sweep_id, "kerasyard.kind": "sweep",
                "mlflow.note.content": f"Sweep **{sweep.name}**: one child run per trial."}
        return ParentRun(sweep.mlflow_run_id, sweep.mlflow_experiment_id, f"sweep: {sweep.name}",
                         sweep.experiment, {k: str(v)[:6000] for k, v in params.items()}, tags)


def adopt_parent_run(settings: Settings, sweep_id: str, run_id: str, experiment_id: str
                     ) -> tuple[str, str, bool]:
    """Store the run a trial created as the sweep's parent unless another trial's got there
    first; returns the parent's (run id, experiment id) and whether this one won (the loser
    deletes its run)."""
    with session_scope(settings.database_url) as s:
        won = s.execute(update(Sweep).where(Sweep.id == sweep_id)
                        .where(Sweep.mlflow_run_id.is_(None))
                        .values(mlflow_run_id=run_id, mlflow_experiment_id=experiment_id)
                        ).rowcount == 1
        if won:
            return run_id, experiment_id, True
        sweep = s.get(Sweep, sweep_id)
        return sweep.mlflow_run_id, sweep.mlflow_experiment_id, False


# --- pruning -----------------------------------------------------------------------------------


def pruner(settings: Settings, ctx: TrialContext | None, shared: SharedTrial | None = None
           ) -> Callable[[list[tuple[int, dict]]], bool] | None:
    """A callable that reports each new epoch's objective to the trial's Optuna trial (this
    training's, or ``shared``'s: a tower of a pack) and answers True once its pruner says stop.
    None when the sweep does not prune; with several seeds per configuration the first seed's
    curve decides for all of them."""
    if ctx is None or not ctx.early_stopping or ctx.repeat > 0:
        return None
    import optuna

    study = studies.load_study(settings.database_url, ctx.study_name, ctx.sweep_spec)
    trial = optuna.trial.Trial(study, shared.optuna_trial_id if shared else
                               ctx.optuna_trial_id)
    metric = ctx.sweep_spec["objective"]["metric"]

    def report(epochs: list[tuple[int, dict]]) -> bool:
        reported = False
        for epoch, metrics in epochs:
            value = metrics.get(metric)
            if value is None:
                continue
            trial.report(float(value) if math.isfinite(value) else float("inf"), epoch)
            reported = True
        return reported and trial.should_prune()

    return report


def trial_ended(settings: Settings, sweep_id: str, sender: Sender) -> None:
    """Tell Optuna, start the next trials, end the sweep when it is done."""
    try:
        scheduler.advance(settings, sweep_id, sender)
    except Exception:
        log.warning("advancing sweep %s failed; the background round will", sweep_id,
                    exc_info=True)


# --- the report --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReportData:
    sweep: Sweep  # detached
    jobs: list[Job]  # detached, by trial then seed
    trials: list[Trial]
    best: dict | None
    curves: dict[str, list[dict]]  # job id -> its epochs' metrics


def report_data(settings: Settings, sweep_id: str) -> ReportData | None:
    """None when the sweep is gone or its report is written already."""
    with session_scope(settings.database_url) as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep is None or (sweep.report or {}).get("state") == "done":
            return None
        jobs = s.scalars(select(Job).where(Job.sweep_id == sweep_id)
                         .order_by(Job.trial_number, Job.repeat)).all()
        ids = [j.id for j in jobs]
        rows = s.scalars(select(JobEpoch).where(JobEpoch.job_id.in_(ids))
                         .order_by(JobEpoch.job_id, JobEpoch.epoch)).all() if ids else []
        trials = trials_of(sweep, jobs)
        curves: dict[str, list[dict]] = {}
        for row in rows:
            curves.setdefault(row.job_id, []).append(row.metrics)
        return ReportData(sweep, list(jobs), trials, best_trial(sweep, trials), curves)


def save_report(settings: Settings, sweep_id: str, report: dict) -> None:
    with session_scope(settings.database_url) as s:
        s.get(Sweep, sweep_id).report = report
