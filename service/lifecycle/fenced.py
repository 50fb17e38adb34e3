"""The writes of the worker that holds a job's claim, each fenced on it: nothing is written
once another attempt owns the job or it has ended (the call answers :data:`SUPERSEDED`).

Also the trials recorded from a training (the epochs axis of a sweep, a pack's towers),
fenced on the training's claim.

Every function here opens its own transaction and raises the database's error
(``sqlalchemy.exc.OperationalError`` and the like) when it does not answer: the worker
retries what must not be lost (:func:`worker.recording.dbretry.retry_db`).
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.lifecycle.rows import OWNED, SUPERSEDED, Fence, Ownership, asked, end, start
from service.store.db import session_scope
from service.store.models import TERMINAL, Job, JobEpoch, JobStatus, utcnow


def _holding(fence: Fence):
    """The fence: the job is still running on this attempt."""
    return (Job.id == fence.job_id) & (Job.attempts == fence.attempt) & \
        (Job.status == JobStatus.running)


def _owned(s: Session, fence: Fence) -> Job | None:
    return s.scalars(select(Job).where(_holding(fence)).with_for_update()).first()


def heartbeat(settings: Settings, fence: Fence) -> Ownership:
    """One row update, nothing else: whatever else the worker waits on, this goes through.

    Args:
        settings (Settings): The database.
        fence (Fence): The worker's claim.

    Returns:
        Ownership: OWNED; CANCEL when the user asked to cancel; PAUSE when the user asked to
        pause (and not to cancel); SUPERSEDED (nothing written) when the claim no longer
        holds.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        # No RETURNING: SQLite before 3.35 (still on some laptops) has none.
        n = s.execute(update(Job).where(_holding(fence)).values(heartbeat_at=utcnow())).rowcount
        if n != 1:
            return SUPERSEDED
        cancel, pause = s.execute(select(Job.cancel_requested, Job.pause_requested)
                                  .where(Job.id == fence.job_id)).one()
    return asked(cancel, pause)


def record_epochs(settings: Settings, fence: Fence, epochs: list[tuple[int, dict]],
                  progress: dict | None) -> Ownership:
    """The epochs a worker finished since its last call, and its progress, in one fenced
    transaction (it counts as a heartbeat too).

    Args:
        settings (Settings): The database.
        fence (Fence): The worker's claim.
        epochs (list[tuple[int, dict]]): ``(epoch, metrics)`` pairs; epochs stored already
            are kept as they are (idempotent).
        progress (dict | None): The job's progress, when it changed.

    Returns:
        Ownership: As :func:`heartbeat`.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        job = _owned(s, fence)
        if job is None:
            return SUPERSEDED
        insert_epochs(s, fence.job_id, epochs)
        if progress is not None:
            job.progress = progress
        job.heartbeat_at = utcnow()
        return asked(job.cancel_requested, job.pause_requested)


def insert_epochs(s: Session, job_id: str, epochs: list[tuple[int, dict]]) -> None:
    """Epoch rows that are not there yet, in the caller's transaction (one executemany).

    Args:
        s (Session): The caller's session.
        job_id (str): The job.
        epochs (list[tuple[int, dict]]): ``(epoch, metrics)`` pairs; those stored already
            are kept as they are.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    if not epochs:
        return
    have = set(s.scalars(select(JobEpoch.epoch).where(JobEpoch.job_id == job_id)
                         .where(JobEpoch.epoch.in_([e for e, _ in epochs]))).all())
    rows = [{"job_id": job_id, "epoch": e, "metrics": m} for e, m in epochs if e not in have]
    if rows:  # one executemany, not an ORM object per epoch
        s.execute(JobEpoch.__table__.insert(), rows)


def set_run(settings: Settings, fence: Fence, run_id: str, experiment_id: str) -> Ownership:
    """Record the MLflow run this attempt trains into.

    Args:
        settings (Settings): The database.
        fence (Fence): The worker's claim.
        run_id (str): The MLflow run.
        experiment_id (str): Its experiment.

    Returns:
        Ownership: OWNED, or SUPERSEDED (nothing written: nobody else will end that run).

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        job = _owned(s, fence)
        if job is None:
            return SUPERSEDED
        job.mlflow_run_id, job.mlflow_experiment_id = run_id, experiment_id
        return OWNED


def finish(settings: Settings, fence: Fence, status: JobStatus, *, summary: dict | None = None,
           error: dict | None = None, progress: dict | None = None) -> Ownership:
    """The worker's last write: the job ends ``status`` if this attempt still owns it.

    Args:
        settings (Settings): The database.
        fence (Fence): The worker's claim.
        status (JobStatus): A terminal status.
        summary (dict): The job's summary (epochs, final metrics, timings, device).
        error (dict): Why it failed or was cancelled (``type``, ``message``).
        progress (dict): Its last progress.

    Returns:
        Ownership: OWNED when the job ended so; SUPERSEDED when the claim no longer held (on
        a retry after a failed try, ask :func:`finished_by` whether that try landed).

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        job = _owned(s, fence)
        if job is None:
            return SUPERSEDED
        if progress is not None:
            job.progress = progress
        end(job, status, summary=summary, error=error)
        return OWNED


def finished_by(settings: Settings, fence: Fence, status: JobStatus) -> bool:
    """Whether this attempt's final write went through: asked when :func:`finish` answered
    SUPERSEDED on a retry after a failed try, whose commit may have landed with its answer
    lost to the connection.

    Args:
        settings (Settings): The database.
        fence (Fence): The worker's claim.
        status (JobStatus): The status its :func:`finish` wrote.

    Returns:
        bool: True when the job is at this attempt and ended ``status``.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        job = s.get(Job, fence.job_id)
        return job is not None and job.attempts == fence.attempt and job.status == status


def still_owned(settings: Settings, fence: Fence) -> bool:
    """Whether the claim still holds (nothing written).

    Args:
        settings (Settings): The database.
        fence (Fence): The worker's claim.

    Returns:
        bool: True while the job is running on this attempt.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        return s.scalar(select(Job.id).where(_holding(fence))) is not None


# --- trials recorded from a training, fenced on the training's claim --------------------------


def start_recorded(settings: Settings, fence: Fence) -> list[Job]:
    """The trials this training records (``trained_by`` it) that have not ended start
    running with it.

    Args:
        settings (Settings): The database.
        fence (Fence): The training's claim.

    Returns:
        list[Job]: Those trials (detached rows, by trial number); empty when the claim no
        longer holds.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
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
    """A trial recorded from this training ends with its own epoch rows.

    Args:
        settings (Settings): The database.
        fence (Fence): The training's claim.
        job_id (str): The recorded trial's job.
        epochs (list[dict]): Its epochs' metrics, from epoch 1.
        summary (dict): Its summary.
        progress (dict): Its last progress.
        run_id (str | None): Its MLflow run.
        experiment_id (str | None): That run's experiment.
        status (JobStatus): ``succeeded``, or ``pruned`` (a pack's tower its pruner stopped).

    Returns:
        Ownership: OWNED when written; SUPERSEDED when the training's claim no longer holds or
        the trial is not running from this training.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
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
    """Live progress of trials recorded from this training (a pack's towers).

    Args:
        settings (Settings): The database.
        fence (Fence): The training's claim.
        progress (dict[str, dict]): Job id -> its progress.

    Returns:
        set[str] | None: The ids of those running trials asked to cancel; None when the claim
        no longer holds.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
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
    """Trials recorded from a training that did not reach them end with it.

    Args:
        settings (Settings): The database.
        job_ids (list[str]): The trials; those ended already are left as they are.
        status (JobStatus): How they end (failed, cancelled or pruned).
        error (dict | None): Why (``type``, ``message``).
        fence (Fence): The training's claim: only while it holds. None: unconditionally (the
            sweep scheduler ending an orphan).

    Returns:
        int: How many ended.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
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
