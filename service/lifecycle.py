"""A job's lifecycle: every change of a job's state goes through this module.

    queued --claim--> running --finish--> succeeded | failed | cancelled | pruned
      ^                  |
      +----requeue-------+   (its worker went silent)

- :func:`claim` takes a job for one worker and gives it a :class:`Fence`: a new attempt
  number. Every later write of that worker (heartbeat, epochs, progress, its MLflow run id,
  the final status, the trials recorded from its training) goes through a function here that
  is conditional on the job still being ``running`` on that attempt. A worker that has been
  superseded (its job requeued or taken over after a stale heartbeat) writes nothing: its
  calls answer :data:`SUPERSEDED` and it stops at the next epoch boundary.
- :func:`end` is the one place a row becomes terminal; the API's cancel, the sweep scheduler
  and the fenced :func:`finish` all call it. :data:`MLFLOW_RUN_STATUS` says how each end shows
  in MLflow.
- Per-epoch rows are written idempotently (a row that is there already is kept).

Nothing here talks to MLflow or Celery: a claim that takes over a dead worker's job returns
that attempt's MLflow run for the caller to end after the transaction (never under the row
lock).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import os
import socket
from typing import Any, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.store.db import session_scope
from service.store.models import TERMINAL, Job, JobEpoch, JobStatus, as_utc, utcnow

# How each end of a job shows in MLflow. A pruned trial did what it was asked until its
# pruner stopped it: FINISHED, and tagged so (MLflow has no PRUNED status).
MLFLOW_RUN_STATUS = {
    JobStatus.succeeded: "FINISHED",
    JobStatus.pruned: "FINISHED",
    JobStatus.cancelled: "KILLED",
    JobStatus.failed: "FAILED",
}


def initial_progress(epochs: int | None) -> dict:
    return {"epoch": 0, "epochs": epochs, "metrics": {}}


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Ownership(enum.Enum):
    """What a fenced write found."""

    OWNED = "owned"  # written; the job is still ours
    CANCEL = "cancel"  # written; and the user asked to cancel
    SUPERSEDED = "superseded"  # nothing written: another attempt owns the job, or it ended


OWNED, CANCEL, SUPERSEDED = Ownership.OWNED, Ownership.CANCEL, Ownership.SUPERSEDED


@dataclasses.dataclass(frozen=True)
class Fence:
    """A worker's claim on a job: valid while the job is running on this attempt."""

    job_id: str
    attempt: int


@dataclasses.dataclass(frozen=True)
class StaleRun:
    """The MLflow run of an attempt whose worker died: the new owner ends it."""

    run_id: str
    status: str  # an MLflow run status
    reason: str


@dataclasses.dataclass(frozen=True)
class Claim:
    fence: Fence
    name: str
    spec: dict
    sweep_id: str | None
    stale_run: StaleRun | None = None


@dataclasses.dataclass(frozen=True)
class Skip:
    """No training for this delivery; ``stale_run`` may still need ending."""

    reason: str
    stale_run: StaleRun | None = None


# --- rows in a transaction -------------------------------------------------------------------


def end(job: Job, status: JobStatus, now: dt.datetime | None = None, *,
        error: dict | None = None, summary: dict | None = None) -> None:
    """Make a row terminal (inside the caller's transaction, on a row it has loaded)."""
    assert status in TERMINAL, status
    job.status, job.finished_at = status, now or utcnow()
    if error is not None:
        job.error = error
    if summary is not None:
        job.summary = summary


def start(job: Job, now: dt.datetime, worker: str) -> None:
    """A row starts running (a training's claim, or a trial recorded from a training)."""
    job.status, job.started_at, job.worker = JobStatus.running, now, worker
    job.progress = initial_progress(job.plan.get("epochs") if job.plan else None)


def owner_alive(worker: str | None, beat: dt.datetime | None, now: dt.datetime,
                stale_after_s: float) -> bool:
    """Is the process that claimed a running job still at it?

    On this host a dead pid answers at once (a child killed by the OOM killer is re-delivered
    within seconds). A live pid is not enough: after a container restart the hostname is the
    same and the old pid may belong to another process, so the heartbeat must be fresh too.
    For another host only the heartbeat can tell.
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


# --- claim -------------------------------------------------------------------------------------


def claim(settings: Settings, job_id: str, worker: str | None = None) -> Claim | Skip:
    """Take the job for this worker, or say why not.

    The row lock serialises two deliveries of the same id. A delivery for a job another live
    worker is training (fresh heartbeat) or that has ended is skipped. A running job whose
    worker is gone is taken over: the attempt number moves on (fencing the old worker off),
    its epoch rows are cleared, and its MLflow run is handed back for ending.
    """
    worker = worker or worker_id()
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            return Skip(f"job {job_id} not found")
        if job.status in TERMINAL:
            return Skip(f"job {job_id} already {job.status.value}")
        now = utcnow()
        stale = None
        if job.status == JobStatus.running:
            if owner_alive(job.worker, job.heartbeat_at or job.started_at, now,
                           settings.stale_heartbeat_s):
                return Skip(f"job {job_id} is being trained by {job.worker}")
            stale = _stale_run(job, cancelled=job.cancel_requested)
        elif job.mlflow_run_id:  # requeued: its last attempt's run was not ended
            stale = _stale_run(job, cancelled=job.cancel_requested)
        if job.cancel_requested:
            end(job, JobStatus.cancelled, now)
            return Skip(f"job {job_id} was cancelled", stale)
        if job.attempts >= settings.max_attempts:
            end(job, JobStatus.failed, now, error={
                "type": "WorkerLost", "message":
                f"the worker training this job died {job.attempts} times; giving up (see "
                "the worker logs; memory is the usual cause)"})
            return Skip(f"job {job_id} failed: its worker died {job.attempts} times", stale)
        if job.attempts:
            s.execute(delete(JobEpoch).where(JobEpoch.job_id == job_id))
        start(job, now, worker)
        job.attempts += 1
        job.heartbeat_at = now
        job.error = None
        job.mlflow_run_id = job.mlflow_experiment_id = None
        return Claim(Fence(job.id, job.attempts), job.name, job.spec, job.sweep_id, stale)


def _stale_run(job: Job, cancelled: bool) -> StaleRun | None:
    if not job.mlflow_run_id:
        return None
    return StaleRun(job.mlflow_run_id, "KILLED" if cancelled else "FAILED",
                    f"attempt {job.attempts} of this job ended without finishing: its worker "
                    "died or stopped answering, and the job was handed to another")


def requeue_stale(settings: Settings, job_id: str) -> bool:
    """A running job whose worker went silent goes back to ``queued`` (its worker is fenced
    off at once); True when it did. The caller sends its id again."""
    stale = utcnow() - dt.timedelta(seconds=settings.stale_heartbeat_s)
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.status != JobStatus.running or job.heartbeat_at is None or \
                as_utc(job.heartbeat_at) >= stale:
            return False
        job.status = JobStatus.queued
        job.dispatched_at = None
        return True


# --- fenced writes of the worker that holds the claim ------------------------------------------


def _holding(fence: Fence):
    """The fence: the job is still running on this attempt."""
    return (Job.id == fence.job_id) & (Job.attempts == fence.attempt) & \
        (Job.status == JobStatus.running)


def _owned(s: Session, fence: Fence) -> Job | None:
    return s.scalars(select(Job).where(_holding(fence)).with_for_update()).first()


def heartbeat(settings: Settings, fence: Fence) -> Ownership:
    """One row update, nothing else: whatever else the worker waits on, this goes through."""
    with session_scope(settings.database_url) as s:
        # No RETURNING: SQLite before 3.35 (still on some laptops) has none.
        n = s.execute(update(Job).where(_holding(fence)).values(heartbeat_at=utcnow())).rowcount
        cancel = n == 1 and s.scalar(select(Job.cancel_requested)
                                     .where(Job.id == fence.job_id))
    if n != 1:
        return SUPERSEDED
    return CANCEL if cancel else OWNED


def record_epochs(settings: Settings, fence: Fence, epochs: list[tuple[int, dict]],
                  progress: dict | None) -> Ownership:
    """The epochs a worker finished since its last call, and its progress, in one fenced
    transaction. Epochs already stored are kept as they are (idempotent)."""
    with session_scope(settings.database_url) as s:
        job = _owned(s, fence)
        if job is None:
            return SUPERSEDED
        insert_epochs(s, fence.job_id, epochs)
        if progress is not None:
            job.progress = progress
        job.heartbeat_at = utcnow()
        return CANCEL if job.cancel_requested else OWNED


def insert_epochs(s: Session, job_id: str, epochs: list[tuple[int, dict]]) -> None:
    if not epochs:
        return
    have = set(s.scalars(select(JobEpoch.epoch).where(JobEpoch.job_id == job_id)
                         .where(JobEpoch.epoch.in_([e for e, _ in epochs]))).all())
    rows = [{"job_id": job_id, "epoch": e, "metrics": m} for e, m in epochs if e not in have]
    if rows:  # one executemany, not an ORM object per epoch
        s.execute(JobEpoch.__table__.insert(), rows)


def set_run(settings: Settings, fence: Fence, run_id: str, experiment_id: str) -> Ownership:
    with session_scope(settings.database_url) as s:
        job = _owned(s, fence)
        if job is None:
            return SUPERSEDED
        job.mlflow_run_id, job.mlflow_experiment_id = run_id, experiment_id
        return OWNED


def finish(settings: Settings, fence: Fence, status: JobStatus, *, summary: dict | None = None,
           error: dict | None = None, progress: dict | None = None) -> Ownership:
    """The worker's last write: the job ends ``status`` if this attempt still owns it."""
    with session_scope(settings.database_url) as s:
        job = _owned(s, fence)
        if job is None:
            return SUPERSEDED
        if progress is not None:
            job.progress = progress
        end(job, status, summary=summary, error=error)
        return OWNED


def finished_by(settings: Settings, fence: Fence, status: JobStatus) -> bool:
    """Whether this attempt's final write went through: the job is at this attempt and ended
    ``status``. Asked when :func:`finish` answered SUPERSEDED on a retry after a failed try,
    whose commit may have landed with its answer lost to the connection."""
    with session_scope(settings.database_url) as s:
        job = s.get(Job, fence.job_id)
        return job is not None and job.attempts == fence.attempt and job.status == status


def still_owned(settings: Settings, fence: Fence) -> bool:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(Job.id).where(_holding(fence))) is not None


# --- trials recorded from a training (the epochs axis), fenced on the training's claim --------


def start_recorded(settings: Settings, fence: Fence) -> list[Job]:
    """The trials this training records (``trained_by`` it) that have not ended start
    running with it; returns them (detached rows)."""
    with session_scope(settings.database_url) as s:
        trainer = _owned(s, fence)
        if trainer is None:
            return []
        rows = s.scalars(select(Job).where(Job.trained_by == fence.job_id)
                         .order_by(Job.trial_number)).all()
        out = []
        for row in rows:
            if row.status in TERMINAL:
                continue
            start(row, utcnow(), trainer.worker)
            row.attempts = fence.attempt
            out.append(row)
        s.flush()
        return out


def finish_recorded(settings: Settings, fence: Fence, job_id: str, *, epochs: list[dict],
                    summary: dict, progress: dict, run_id: str | None,
                    experiment_id: str | None,
                    status: JobStatus = JobStatus.succeeded) -> Ownership:
    """A trial recorded from this training ends ``succeeded`` (or ``pruned``: a pack's tower
    its pruner stopped) with its own epoch rows."""
    with session_scope(settings.database_url) as s:
        if _owned(s, fence) is None:
            return SUPERSEDED
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.status != JobStatus.running or job.trained_by != fence.job_id:
            return SUPERSEDED
        insert_epochs(s, job_id, list(enumerate(epochs, start=1)))
        job.progress = progress
        job.mlflow_run_id, job.mlflow_experiment_id = run_id, experiment_id
        end(job, status, summary=summary)
        return OWNED


def recorded_progress(settings: Settings, fence: Fence, progress: dict[str, dict]
                      ) -> set[str] | None:
    """Live progress of trials recorded from this training (a pack's towers), fenced on its
    claim; returns those of them asked to cancel, None when the claim no longer holds."""
    with session_scope(settings.database_url) as s:
        if _owned(s, fence) is None:
            return None
        cancelled = set()
        for job in s.scalars(select(Job).where(Job.trained_by == fence.job_id)
                             .where(Job.status == JobStatus.running)).all():
            if job.id in progress:
                job.progress = progress[job.id]
            if job.cancel_requested:
                cancelled.add(job.id)
        return cancelled


def end_unrecorded(settings: Settings, job_ids: list[str], status: JobStatus,
                   error: dict | None, fence: Fence | None = None) -> int:
    """Trials recorded from a training that did not reach them end with it (failed or
    cancelled, saying why). With a fence, only while that training's claim holds."""
    if not job_ids:
        return 0
    n = 0
    with session_scope(settings.database_url) as s:
        if fence is not None and _owned(s, fence) is None:
            return 0
        for job in s.scalars(select(Job).where(Job.id.in_(job_ids))
                             .with_for_update()).all():
            if job.status in TERMINAL:
                continue
            end(job, status, error=error)
            n += 1
    return n


# --- commands from the API and the scheduler ---------------------------------------------------


def cancel(s: Session, job: Job, queued_ends: JobStatus = JobStatus.cancelled) -> None:
    """Ask a job to stop (its row locked by the caller). A queued job ends now (``cancelled``,
    or ``pruned`` for the other seeds of a pruned trial); a running one ends at its worker's
    next epoch boundary."""
    job.cancel_requested = True
    if job.status == JobStatus.queued:
        end(job, queued_ends)


class Sender(Protocol):
    """Publishes tasks by id (the API's Celery sender, or the worker's own app)."""

    def train(self, job_id: str, queue: str) -> bool: ...

    def report(self, sweep_id: str) -> bool: ...


def dispatch(settings: Settings, sender: Sender, job_id: str, queue: str) -> bool:
    """Send a committed job's id; ``dispatched_at`` records that the broker has it. False
    when the broker is down: the job stays queued and the re-dispatcher sends it later."""
    if not sender.train(job_id, queue):
        return False
    mark_dispatched(settings, job_id)
    return True


def mark_dispatched(settings: Settings, job_id: str) -> None:
    with session_scope(settings.database_url) as s:
        s.execute(update(Job).where(Job.id == job_id).where(Job.status == JobStatus.queued)
                  .values(dispatched_at=utcnow()))


def fail_unstarted(job: Job, error: dict[str, Any]) -> None:
    """A job row that can never start (a sampled trial whose spec is invalid)."""
    end(job, JobStatus.failed, error=error)


# --- the MLflow side of jobs that ended (read by the worker's reconciler) ---------------------


@dataclasses.dataclass(frozen=True)
class JobEnd:
    """What a job's MLflow runs should show: read by ``worker.reconcile_runs``."""

    job_id: str
    status: JobStatus
    attempts: int
    mlflow_run_id: str | None
    error: dict | None

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL


def job_ends(settings: Settings, job_ids: list[str]) -> dict[str, JobEnd]:
    """The state of these jobs (missing ids are left out); nothing is written."""
    if not job_ids:
        return {}
    with session_scope(settings.database_url) as s:
        rows = s.execute(select(Job.id, Job.status, Job.attempts, Job.mlflow_run_id, Job.error)
                         .where(Job.id.in_(sorted(set(job_ids))))).all()
    return {r[0]: JobEnd(r[0], r[1], r[2] or 0, r[3], r[4]) for r in rows}


# --- a training process the kernel killed for memory -------------------------------------------


def fail_out_of_memory(settings: Settings, job_id: str, worker: str, message: str) -> bool:
    """The training child ``worker`` (``host:pid``) was killed by the out-of-memory killer
    while it held the job: the job fails saying so instead of going to another attempt (it
    would die the same way). Only while the job is still running on that child; True when
    written. The redelivered message is then dropped by the claim."""
    with session_scope(settings.database_url) as s:
        job = s.scalars(select(Job).where(Job.id == job_id).where(Job.worker == worker)
                        .where(Job.status == JobStatus.running).with_for_update()).first()
        if job is None:
            return False
        memory_mb = (job.plan or {}).get("memory_mb")
        estimate = f"{memory_mb:.0f} MB" if isinstance(memory_mb, (int, float)) else "unknown"
        end(job, JobStatus.failed, error={
            "type": "OutOfMemory",
            "message": f"{message} (the plan's peak-memory estimate for this job: {estimate}; "
                       "lower the batch size, the model's width or the dataset's size, or "
                       "raise the worker's memory limit)"})
        return True
