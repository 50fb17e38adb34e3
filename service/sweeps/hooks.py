"""The sweep layer's hooks for a training, reached only through :mod:`service.worker_api`.

A training process that runs a sweep trial needs these from the sweep layer:

- :func:`trial_context`: after its claim, what the trial is (sweep, number, seed, swept
  values, Optuna trial) and the trials recorded from this training: with ``share_epochs``
  a configuration trains once to its largest epoch count and the trials that differ from it
  only in ``fit.epochs`` (:class:`SharedTrial`) are recorded from that training, each with
  ``trained_by`` set to its job. They start running with it here.
- :func:`parent_run` / :func:`adopt_parent_run`: the sweep's MLflow parent run, created by
  whichever trial gets there first (the worker builds its tags and params from the sweep's
  spec and plan: MLflow's terms are the worker's).
- :func:`pruner`: reports each epoch's objective to Optuna and says when to stop.
- :func:`advance`: the scheduler's :func:`~service.sweeps.scheduler.advance` with the
  worker's own sender (the ``worker.advance_sweep`` task, sent when a trial ends).
- :func:`report_data` / :func:`save_report`: what the sweep's report is written from.

State changes of job rows go through :mod:`service.lifecycle`.
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
from service.sweeps.trials import Trial, best_trial, trials_of

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
    """The sweep trial a training runs (plain data, read at its claim)."""

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


def trial_context(settings: Settings, claim: Claim) -> TrialContext | None:
    """The claimed job's trial; the trials recorded from this training start running with it
    (fenced on the claim).

    Args:
        settings (Settings): The database.
        claim (Claim): The training's claim.

    Returns:
        TrialContext | None: The trial, with its shared trials; None for a job outside a
        sweep (or a sweep or job deleted meanwhile).

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
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


# --- the MLflow parent run ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SweepParent:
    """What the worker builds the sweep's MLflow parent run from (plain data: the worker
    decides what MLflow sees)."""

    sweep_id: str
    run_id: str | None  # None until a trial has created it
    experiment_id: str | None
    name: str  # the sweep's name
    experiment: str  # the MLflow experiment's name
    spec: dict  # the sweep's spec, as stored
    plan: dict  # its plan (``total``, ``share_epochs``, ``pack``, ``param_order``, ...)


def parent_run(settings: Settings, sweep_id: str) -> SweepParent:
    """The sweep's parent run as stored, and what a new one is built from.

    Args:
        settings (Settings): The database.
        sweep_id (str): The sweep.

    Returns:
        SweepParent: The stored run (``run_id`` None until a trial created it), the sweep's
        name, experiment, spec and plan.

    Raises:
        AttributeError: The sweep does not exist (a caller holds one of its jobs, so it
            does).
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        sweep = s.get(Sweep, sweep_id)
        return SweepParent(sweep.id, sweep.mlflow_run_id, sweep.mlflow_experiment_id,
                           sweep.name, sweep.experiment, sweep.spec, sweep.plan)


def adopt_parent_run(settings: Settings, sweep_id: str, run_id: str, experiment_id: str
                     ) -> tuple[str, str, bool]:
    """Store the run a trial created as the sweep's parent unless another trial's got there
    first.

    Args:
        settings (Settings): The database.
        sweep_id (str): The sweep.
        run_id (str): The parent run this caller created.
        experiment_id (str): Its experiment.

    Returns:
        tuple[str, str, bool]: The parent's run id and experiment id, and whether this
        caller's run won (the loser deletes its run).

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
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
    """A callable that reports each new epoch's objective to the trial's Optuna trial and
    answers True once its pruner says stop. With ``objective.at`` ``best`` it reports the
    best value so far, the value the trial would score if it ended at that epoch.

    With several seeds per configuration the first seed's curve decides for all of them.

    Args:
        settings (Settings): The database (Optuna's study lives there).
        ctx (TrialContext | None): The trial this training runs.
        shared (SharedTrial): A tower of a pack: report to its trial instead of the
            training's own.

    Returns:
        Callable | None: ``report(epochs) -> bool`` taking ``(epoch, metrics)`` pairs; None
        when the sweep does not prune, for a seed after the first, or outside a sweep.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer (loading the study, or
            later from ``report``).
    """
    if ctx is None or not ctx.early_stopping or ctx.repeat > 0:
        return None
    import optuna

    study = studies.load_study(settings.database_url, ctx.study_name, ctx.sweep_spec)
    trial = optuna.trial.Trial(study, shared.optuna_trial_id if shared else
                               ctx.optuna_trial_id)
    objective = ctx.sweep_spec["objective"]
    metric, at = objective["metric"], objective.get("at", "last")
    better = min if objective.get("goal", "minimize") == "minimize" else max
    best: list[float] = []  # at "best": the best value so far, what the trial would score now

    def report(epochs: list[tuple[int, dict]]) -> bool:
        reported = False
        for epoch, metrics in epochs:
            value = metrics.get(metric)
            if value is None:
                continue
            value = float(value) if math.isfinite(value) else float("inf")
            if at == "best":
                best[:] = [better(best[0], value) if best else value]
                value = best[0]
            trial.report(value, epoch)
            reported = True
        return reported and trial.should_prune()

    return report


def advance(settings: Settings, sweep_id: str, sender: Sender) -> bool:
    """Tell Optuna about finished trials, start the next ones, end the sweep when it is done.

    Args:
        settings (Settings): The database.
        sweep_id (str): The sweep.
        sender (Sender): What sends the new trials and the report (the worker's own).

    Returns:
        bool: True when this call advanced the sweep; False when another caller held its
        lease throughout, or advancing failed (logged; the API's background round advances
        it later).
    """
    try:
        return scheduler.advance(settings, sweep_id, sender)
    except Exception:
        log.warning("advancing sweep %s failed; the background round will", sweep_id,
                    exc_info=True)
        return False


# --- the report --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReportData:
    """What a sweep's report is written from (read-only: the rows are detached)."""

    sweep: Sweep  # detached
    jobs: list[Job]  # detached, by trial then seed
    trials: list[Trial]
    best: dict | None
    curves: dict[str, list[dict]]  # job id -> its epochs' metrics


def report_data(settings: Settings, sweep_id: str) -> ReportData | None:
    """The sweep, its jobs, trials, best trial and learning curves.

    Args:
        settings (Settings): The database.
        sweep_id (str): The sweep.

    Returns:
        ReportData | None: None when the sweep is gone or its report is written already.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
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
    """Store the report's outcome on the sweep (what GET /sweeps/{id} shows as ``report``).

    Args:
        settings (Settings): The database.
        sweep_id (str): The sweep.
        report (dict): ``state`` (``done`` or ``failed``), ``artifacts`` or ``error``,
            ``finished_at``.

    Raises:
        AttributeError: The sweep no longer exists.
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        s.get(Sweep, sweep_id).report = report
