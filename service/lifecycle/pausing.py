"""Pausing and resuming a job, and the end of an attempt that stopped on purpose.

    queued  --pause-->  paused  --resume-->  queued (sent again)
    running --pause-->  (pause_requested) --its worker stops at an epoch boundary--> paused
    running --its worker is asked to shut down (SIGTERM)--> queued (sent again)
    paused  --cancel--> cancelled

A running job's worker learns of a pause from its next fenced write, which answers
:data:`~.rows.PAUSE`; a worker asked to shut down sets the same stop itself. Either way its
training stops at the next epoch boundary with a checkpoint, and the worker's last write is
:func:`stop`, fenced like :func:`~.fenced.finish`: the job becomes ``paused`` when a pause
was asked for, ``queued`` otherwise (the worker sends it again for the next worker). Such an
attempt counts in ``stopped_attempts``, not against ``max_attempts`` (which counts workers
lost). The trials recorded from a training (``trained_by`` it) follow it: paused with it,
queued again with it, started again by its next claim.

:func:`pause` and :func:`resume` change a row inside the caller's transaction (the API's
commands, the sweep scheduler's), on a row the caller has locked.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import Settings
from service.lifecycle.rows import Fence, end
from service.store.db import session_scope
from service.store.models import Job, JobStatus

# What a pause applies to; a paused job is paused already (the command is idempotent).
PAUSABLE = (JobStatus.queued, JobStatus.running)


def pause(s: Session, job: Job) -> None:
    """Ask a job to pause: a queued one is paused now (a delivery of its id is then skipped
    by the claim); a running one at its worker's next epoch boundary.

    Args:
        s (Session): The caller's session (the row is locked by the caller).
        job (Job): The row; queued or running (nothing happens otherwise).
    """
    if job.status == JobStatus.queued:
        paused(s, job)
    elif job.status == JobStatus.running:
        job.pause_requested = True


def paused(s: Session, job: Job) -> None:
    """The row is paused now, and the trials recorded from its training with it.

    Args:
        s (Session): The caller's session.
        job (Job): The row, locked by the caller.
    """
    job.status, job.pause_requested, job.dispatched_at = JobStatus.paused, False, None
    _carried_follow(s, job, JobStatus.paused)


def resumable(job: Job) -> bool:
    """Whether :func:`resume` applies: the job is paused, or running with a pause asked for
    that its worker has not acted on yet."""
    return job.status == JobStatus.paused or (job.status == JobStatus.running
                                              and bool(job.pause_requested))


def resume(s: Session, job: Job) -> bool:
    """Undo a pause: a paused job is queued again (the trials recorded from its training with
    it); a running job's pending pause is withdrawn (a worker that has already stopped for it
    writes ``queued`` and sends the job again, :func:`stop`).

    Args:
        s (Session): The caller's session.
        job (Job): The row, :func:`resumable`, locked by the caller.

    Returns:
        bool: True when the job was queued: the caller sends its id once this commits.
    """
    assert resumable(job), job.status
    job.pause_requested = False
    if job.status != JobStatus.paused:
        return False
    job.status, job.dispatched_at = JobStatus.queued, None
    _carried_follow(s, job, JobStatus.queued)
    return True


def _carried_follow(s: Session, job: Job, status: JobStatus) -> None:
    for row in s.scalars(select(Job).where(Job.trained_by == job.id)
                         .with_for_update()).all():
        if not row.status.terminal:
            row.status = status


def stop(settings: Settings, fence: Fence, progress: dict | None = None) -> JobStatus | None:
    """The last write of an attempt whose training stopped at an epoch boundary on purpose
    (a pause, or its worker asked to shut down), fenced on its claim.

    Args:
        settings (Settings): The database.
        fence (Fence): The worker's claim.
        progress (dict): Its last progress (kept: the job shows how far it got).

    Returns:
        JobStatus | None: ``paused`` when a pause was asked for; ``queued`` when not (the
        worker sends the id again); ``cancelled`` when a cancel was asked for meanwhile (the
        trials recorded from the training end cancelled with it); None when the claim no
        longer held (nothing written; on a retry after a failed try ask :func:`stopped_as`).

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        job = s.scalars(select(Job).where(Job.id == fence.job_id)
                        .where(Job.attempts == fence.attempt)
                        .where(Job.status == JobStatus.running).with_for_update()).first()
        if job is None:
            return None
        if progress is not None:
            job.progress = progress
        job.stopped_attempts = (job.stopped_attempts or 0) + 1
        if job.cancel_requested:
            end(job, JobStatus.cancelled)
            for row in s.scalars(select(Job).where(Job.trained_by == job.id)
                                 .with_for_update()).all():
                if not row.status.terminal:
                    end(row, JobStatus.cancelled, error={
                        "type": "Cancelled", "message": f"its training (job {job.id}) was "
                        "cancelled before reaching this trial's epochs"})
        elif job.pause_requested:
            paused(s, job)
        else:
            job.status, job.dispatched_at = JobStatus.queued, None
            _carried_follow(s, job, JobStatus.queued)
        return job.status


def stopped_as(settings: Settings, fence: Fence) -> JobStatus | None:
    """What this attempt's :func:`stop` wrote, when a try whose answer was lost landed.

    Args:
        settings (Settings): The database.
        fence (Fence): The worker's claim.

    Returns:
        JobStatus | None: The job's status when it is still at this attempt and no longer
        running (the stop landed); None otherwise.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        job = s.get(Job, fence.job_id)
        if job is None or job.attempts != fence.attempt or job.status not in (
                JobStatus.paused, JobStatus.queued, JobStatus.cancelled):
            return None
        return job.status
