"""A job's newest checkpoint: written fenced by the attempt that trains it, read by the next
attempt, which goes on from it (a killed process, a lost worker, a takeover, a shutdown).

One row per job in ``checkpoints``, overwritten: only the newest is kept, and it goes when
the job ends (:func:`service.lifecycle.rows.end`). The bytes are the worker's
(``worker/training/checkpoint.py``); nothing here reads them.

It lives in the database rather than in MLflow's artifact store because the database is
what decides who owns the job: the write is fenced in the same transaction that checks the
attempt (a superseded worker cannot overwrite the checkpoint of the attempt that replaced
it), the claim that hands the job to the next attempt reads it under the job's row lock, and
every worker host reaches the database already. An artifact store would need its own fence,
keep every version (its runs' artifacts are append-only) and be another service a resume
waits on.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.lifecycle.fenced import _owned
from service.lifecycle.rows import CANCEL, OWNED, SUPERSEDED, Fence, Ownership, initial_progress
from service.store.db import session_scope
from service.store.models import Checkpoint, Job, JobEpoch, utcnow


@dataclasses.dataclass(frozen=True)
class StoredCheckpoint:
    """A job's newest checkpoint, and the MLflow run the job trains into (the attempt that
    saved it trained into that run; the next goes on in it)."""

    epoch: int
    state: bytes
    attempt: int
    mlflow_run_id: str | None
    mlflow_experiment_id: str | None


def save_checkpoint(settings: Settings, fence: Fence, epoch: int, state: bytes) -> Ownership:
    """Store the training's state at the end of ``epoch`` as the job's checkpoint, replacing
    the one before.

    Args:
        settings (Settings): The database.
        fence (Fence): The worker's claim.
        epoch (int): The epochs done (the next attempt goes on after it).
        state (bytes): The training's state (``worker/training/checkpoint.py``).

    Returns:
        Ownership: OWNED or CANCEL when stored; SUPERSEDED (nothing stored) when the claim no
        longer holds.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        job = _owned(s, fence)
        if job is None:
            return SUPERSEDED
        row = s.get(Checkpoint, fence.job_id)
        if row is None:
            row = Checkpoint(job_id=fence.job_id)
            s.add(row)
        row.attempt, row.epoch, row.state, row.size_bytes = \
            fence.attempt, epoch, state, len(state)
        row.created_at = utcnow()
        job.heartbeat_at = utcnow()
        return CANCEL if job.cancel_requested else OWNED


def load_checkpoint(settings: Settings, fence: Fence) -> StoredCheckpoint | None:
    """The job's checkpoint, for the attempt its claim resumed (``Claim.resumed_from_epoch``).

    Args:
        settings (Settings): The database.
        fence (Fence): The worker's claim.

    Returns:
        StoredCheckpoint | None: The checkpoint and the job's MLflow run; None when there is
        none, or the claim no longer holds.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        job = _owned(s, fence)
        row = None if job is None else s.get(Checkpoint, fence.job_id)
        if row is None:
            return None
        return StoredCheckpoint(row.epoch, row.state, row.attempt, job.mlflow_run_id,
                                job.mlflow_experiment_id)


def start_over(settings: Settings, fence: Fence) -> str | None:
    """A resumed attempt that cannot use its checkpoint (it does not fit the model: another
    Keras, a changed model) starts from scratch: the checkpoint, the epoch rows and
    ``resumed_from_epoch`` go, and the job's MLflow run is handed back for ending.

    Args:
        settings (Settings): The database.
        fence (Fence): The worker's claim.

    Returns:
        str | None: The MLflow run the job had trained into (the caller ends it); None when
        it had none or the claim no longer holds.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        job = _owned(s, fence)
        if job is None:
            return None
        s.execute(delete(Checkpoint).where(Checkpoint.job_id == fence.job_id))
        s.execute(delete(JobEpoch).where(JobEpoch.job_id == fence.job_id))
        run_id = job.mlflow_run_id
        job.mlflow_run_id = job.mlflow_experiment_id = None
        job.resumed_from_epoch = None
        job.progress = initial_progress(job.plan.get("epochs") if job.plan else None)
        return run_id


def carry_on(s: Session, job: Job) -> int | None:
    """In a claim's transaction (the job's row locked, started for the new attempt): what of
    the attempts before it the new one keeps. With a checkpoint (:func:`resume_point`), the
    epochs up to it and the MLflow run; without, nothing (its epoch rows go, and its run is
    not the job's any more). Returns the checkpoint's epoch, None: from scratch."""
    resumed = resume_point(s, job) if job.attempts else None
    if resumed is None:
        if job.attempts:
            s.execute(delete(JobEpoch).where(JobEpoch.job_id == job.id))
        job.mlflow_run_id = job.mlflow_experiment_id = None
    job.resumed_from_epoch = resumed
    return resumed


def resume_point(s: Session, job: Job) -> int | None:
    """In a claim's transaction (the job's row locked): the epoch of the job's checkpoint, the
    claim's attempt to go on after; its epoch rows after it are dropped (the new attempt
    trains them again) and its progress set back to it. None when it has no checkpoint."""
    epoch = s.scalar(select(Checkpoint.epoch).where(Checkpoint.job_id == job.id))
    if epoch is None:
        return None
    s.execute(delete(JobEpoch).where(JobEpoch.job_id == job.id).where(JobEpoch.epoch > epoch))
    last = s.scalar(select(JobEpoch.metrics).where(JobEpoch.job_id == job.id)
                    .where(JobEpoch.epoch == epoch))
    job.progress = {**initial_progress(job.plan.get("epochs") if job.plan else None),
                    "epoch": epoch, "metrics": last or {}}
    return epoch
