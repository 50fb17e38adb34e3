"""What a lifecycle write finds and hands back, and the changes made to a job row inside the
caller's transaction (no session of its own here)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import os
import socket
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session, object_session

from service.store.models import TERMINAL, Checkpoint, Job, JobStatus, utcnow


class Ownership(enum.Enum):
    """What a fenced write found."""

    OWNED = "owned"  # written; the job is still ours
    CANCEL = "cancel"  # written; and the user asked to cancel
    PAUSE = "pause"  # written; and the user asked to pause (stop at an epoch boundary)
    SUPERSEDED = "superseded"  # nothing written: another attempt owns the job, or it ended


OWNED, CANCEL, PAUSE, SUPERSEDED = (Ownership.OWNED, Ownership.CANCEL, Ownership.PAUSE,
                                    Ownership.SUPERSEDED)


def asked(cancel_requested: bool, pause_requested: bool) -> Ownership:
    """What a fenced write that went through answers, from the job's two flags: a cancel
    beats a pause."""
    if cancel_requested:
        return CANCEL
    return PAUSE if pause_requested else OWNED


@dataclasses.dataclass(frozen=True)
class Fence:
    """A worker's claim on a job: valid while the job is running on this attempt."""

    job_id: str
    attempt: int


@dataclasses.dataclass(frozen=True)
class StaleRun:
    """The MLflow run of an attempt whose worker died: the new owner ends it (``cancelled``:
    the user had asked to cancel the job; otherwise the attempt failed)."""

    run_id: str
    cancelled: bool
    reason: str


@dataclasses.dataclass(frozen=True)
class Claim:
    """A job taken for one worker: what it trains, and the fence its writes carry."""

    fence: Fence
    name: str
    spec: dict
    sweep_id: str | None
    stale_run: StaleRun | None = None
    queue: str | None = None  # the queue the job was sent to (the trial's next steps go there)
    # The epoch of the job's checkpoint this attempt goes on after; None: from scratch.
    resumed_from_epoch: int | None = None


@dataclasses.dataclass(frozen=True)
class Skip:
    """No training for this delivery; ``stale_run`` may still need ending."""

    reason: str
    stale_run: StaleRun | None = None


def initial_progress(epochs: int | None) -> dict:
    """A job's progress before its first epoch.

    Args:
        epochs (int | None): The epochs the job's plan trains for (None when unknown).

    Returns:
        dict: ``{"epoch": 0, "epochs": epochs, "metrics": {}}``.
    """
    return {"epoch": 0, "epochs": epochs, "metrics": {}}


def worker_id() -> str:
    """This process as a job row records its worker.

    Returns:
        str: ``host:pid``.
    """
    return f"{socket.gethostname()}:{os.getpid()}"


def end(job: Job, status: JobStatus, now: dt.datetime | None = None, *,
        error: dict | None = None, summary: dict | None = None) -> None:
    """Make a row terminal: the one place a job ends.

    Inside the caller's transaction, on a row it has loaded (and locked where another writer
    may race it). The job's checkpoint goes with it: nothing resumes an ended job.

    Args:
        job (Job): The row.
        status (JobStatus): A terminal status.
        now (datetime): When it ended (default: now).
        error (dict): Stored as the job's error when given (``type``, ``message``).
        summary (dict): Stored as the job's summary when given.

    Raises:
        AssertionError: ``status`` is not terminal (a bug of the caller).
    """
    assert status in TERMINAL, status
    job.status, job.finished_at = status, now or utcnow()
    job.pause_requested = False  # nothing left to pause
    if error is not None:
        job.error = error
    if summary is not None:
        job.summary = summary
    s = object_session(job)
    if s is not None:
        s.execute(delete(Checkpoint).where(Checkpoint.job_id == job.id))


def start(job: Job, now: dt.datetime, worker: str) -> None:
    """A row starts running (a training's claim, or a trial recorded from a training).

    Args:
        job (Job): The row, loaded in the caller's transaction.
        now (datetime): Its start time.
        worker (str): The ``host:pid`` that trains it.
    """
    job.status, job.started_at, job.worker = JobStatus.running, now, worker
    job.progress = initial_progress(job.plan.get("epochs") if job.plan else None)


def cancel(s: Session, job: Job, queued_ends: JobStatus = JobStatus.cancelled) -> None:
    """Ask a job to stop (the API's cancel, the sweep scheduler's).

    A queued or paused job ends now; a running one ends at its worker's next epoch boundary
    (its next fenced write answers :data:`CANCEL`).

    Args:
        s (Session): The caller's session (the row is locked by the caller).
        job (Job): The row.
        queued_ends (JobStatus): How a queued (or paused) job ends: ``cancelled``, or
            ``pruned`` for the other seeds of a pruned trial.
    """
    job.cancel_requested = True
    if job.status in (JobStatus.queued, JobStatus.paused):
        end(job, queued_ends)


def fail_unstarted(job: Job, error: dict[str, Any]) -> None:
    """A job row that can never start (a sampled trial whose spec is invalid) fails.

    Args:
        job (Job): The row, in the caller's transaction.
        error (dict): Why (``type``, ``message``).
    """
    end(job, JobStatus.failed, error=error)
