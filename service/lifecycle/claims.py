"""Who holds a job: sent (:func:`dispatch`), taken by one worker (:func:`claim`), taken back
from a worker that went silent (:func:`requeue_stale`)."""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Protocol

from sqlalchemy import update

from service.config import Settings
from service.lifecycle import pausing
from service.lifecycle.checkpoints import carry_on
from service.lifecycle.rows import Claim, Fence, Skip, StaleRun, end, start, worker_id
from service.store.db import session_scope
from service.store.models import TERMINAL, Job, JobStatus, as_utc, utcnow


class Sender(Protocol):
    """Publishes tasks by id (the API's Celery sender, or the worker's own app)."""

    def train(self, job_id: str, queue: str) -> bool: ...

    def report(self, sweep_id: str) -> bool: ...


def dispatch(settings: Settings, sender: Sender, job_id: str, queue: str) -> bool:
    """Send a committed job's id; ``dispatched_at`` records that the broker has it.

    Args:
        settings (Settings): The database to write to.
        sender (Sender): What publishes the train task.
        job_id (str): The job, committed already.
        queue (str): The queue to send it to.

    Returns:
        bool: True when sent; False when the broker is down (the job stays queued and the
        re-dispatcher of :mod:`service.background` sends it later).

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer after the send.
    """
    if not sender.train(job_id, queue):
        return False
    mark_dispatched(settings, job_id)
    return True


def mark_dispatched(settings: Settings, job_id: str) -> None:
    """Record that the broker has a queued job's id (nothing when it is not queued any more).

    Args:
        settings (Settings): The database to write to.
        job_id (str): The job.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        s.execute(update(Job).where(Job.id == job_id).where(Job.status == JobStatus.queued)
                  .values(dispatched_at=utcnow()))


def owner_alive(worker: str | None, beat: dt.datetime | None, now: dt.datetime,
                stale_after_s: float) -> bool:
    """Is the process that claimed a running job still at it?

    On this host a dead pid answers at once (a child killed by the OOM killer is re-delivered
    within seconds). A live pid is not enough: after a container restart the hostname is the
    same and the old pid may belong to another process, so the heartbeat must be fresh too.
    For another host only the heartbeat can tell.

    Args:
        worker (str | None): The job's ``host:pid``.
        beat (datetime | None): Its last heartbeat (or start).
        now (datetime): The time to judge at.
        stale_after_s (float): How old a heartbeat may be and still count as alive.

    Returns:
        bool: True when the owner is alive.
    """
    fresh = beat is not None and (now - as_utc(beat)).total_seconds() < stale_after_s
    host, _, pid = (worker or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return fresh
        return int(pid) != os.getpid() and fresh
    return fresh


def claim(settings: Settings, job_id: str, worker: str | None = None) -> Claim | Skip:
    """Take the job for this worker, or say why not.

    The row lock serialises two deliveries of the same id. A delivery for a job another live
    worker is training (fresh heartbeat) or that has ended is skipped. A running job whose
    worker is gone is taken over: the attempt number moves on (fencing the old worker off).
    A job with a checkpoint (:mod:`.checkpoints`) goes on from it: its epoch rows after the
    checkpoint are cleared, and its MLflow run stays the job's for the new attempt to train
    on in; without one its epoch rows are cleared and its MLflow run is handed back for
    ending. A job whose worker died ``max_attempts`` times fails instead (attempts that
    stopped on purpose, a pause or a worker's shutdown, do not count). A paused job is
    skipped, and one asked to pause while its worker was lost is paused.

    Args:
        settings (Settings): The database, ``stale_heartbeat_s`` and ``max_attempts``.
        job_id (str): The job the task names.
        worker (str): Who claims (default: this process, ``host:pid``).

    Returns:
        Claim | Skip: The claim, with the fence every later write carries; or why there is
        nothing to train. Either may carry a :class:`StaleRun` for the caller to end.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer (the worker retries,
            :func:`worker.recording.dbretry.retry_db`).
    """
    worker = worker or worker_id()
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            return Skip(f"job {job_id} not found")
        if job.status in TERMINAL:
            return Skip(f"job {job_id} already {job.status.value}")
        if job.status == JobStatus.paused:
            return Skip(f"job {job_id} is paused (POST /api/v1/jobs/{job_id}/resume queues it "
                        "again)")
        now = utcnow()
        stale = None
        if job.status == JobStatus.running:
            if owner_alive(job.worker, job.heartbeat_at or job.started_at, now,
                           settings.stale_heartbeat_s):
                return Skip(f"job {job_id} is being trained by {job.worker}")
            stale = _stale_run(job, cancelled=job.cancel_requested)
        elif job.mlflow_run_id:  # requeued: its last attempt's run was not ended
            stale = _stale_run(job, cancelled=job.cancel_requested)
        why_not = _not_to_train(s, settings, job, now)
        if why_not is not None:
            return Skip(why_not, stale)
        start(job, now, worker)
        resumed = carry_on(s, job)
        if resumed is not None:
            stale = None  # the run goes on: this attempt trains on in it from the checkpoint
        job.attempts += 1
        job.heartbeat_at = now
        job.error = None
        return Claim(Fence(job.id, job.attempts), job.name, job.spec, job.sweep_id, stale,
                     queue=job.queue, resumed_from_epoch=resumed)


def _not_to_train(s, settings: Settings, job: Job, now: dt.datetime) -> str | None:
    """Why a job about to be claimed ends (cancelled, its worker lost too often) or pauses
    instead, saying so; None: it trains."""
    if job.cancel_requested:
        end(job, JobStatus.cancelled, now)
        return f"job {job.id} was cancelled"
    if job.pause_requested:  # asked to pause while its worker was lost
        pausing.paused(s, job)
        return f"job {job.id} was paused"
    # Attempts that stopped on purpose (a pause, a worker's shutdown) are not lost ones.
    lost = job.attempts - (job.stopped_attempts or 0)
    if lost >= settings.max_attempts:
        end(job, JobStatus.failed, now, error={
            "type": "WorkerLost", "message":
            f"the worker training this job died {lost} times; giving up (see "
            "the worker logs; memory is the usual cause)"})
        return f"job {job.id} failed: its worker died {lost} times"
    return None


def _stale_run(job: Job, cancelled: bool) -> StaleRun | None:
    if not job.mlflow_run_id:
        return None
    return StaleRun(job.mlflow_run_id, bool(cancelled),
                    f"attempt {job.attempts} of this job ended without finishing: its worker "
                    "died or stopped answering, and the job was handed to another")


def requeue_stale(settings: Settings, job_id: str) -> bool:
    """A running job whose worker went silent goes back to ``queued`` (its worker is fenced
    off at once); the caller sends its id again.

    Args:
        settings (Settings): The database and ``stale_heartbeat_s``.
        job_id (str): The job.

    Returns:
        bool: True when it was requeued; False when it is not running or its heartbeat is
        fresh.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    stale = utcnow() - dt.timedelta(seconds=settings.stale_heartbeat_s)
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.status != JobStatus.running or job.heartbeat_at is None or \
                as_utc(job.heartbeat_at) >= stale:
            return False
        job.status = JobStatus.queued
        job.dispatched_at = None
        return True
