"""Ends a worker records for a process it lost: a training child the kernel killed for
memory (:func:`fail_out_of_memory`, fenced on that child), and what the worker's MLflow
reconciler reads about jobs that ended (:func:`job_ends`)."""

from __future__ import annotations

import dataclasses

from sqlalchemy import select

from service.config import Settings
from service.lifecycle.rows import end
from service.store.db import session_scope
from service.store.models import TERMINAL, Job, JobStatus


def fail_out_of_memory(settings: Settings, job_id: str, worker: str, message: str) -> bool:
    """The training child ``worker`` was killed by the out-of-memory killer while it held the
    job: the job fails saying so instead of going to another attempt (it would die the same
    way). The redelivered message is then dropped by the claim.

    Args:
        settings (Settings): The database.
        job_id (str): The job the dead child trained.
        worker (str): That child, ``host:pid`` (the fence: the job must still be running on
            it).
        message (str): What happened; the plan's memory estimate and the fixes are added.

    Returns:
        bool: True when written; False when the job is not running on that child.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
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


# --- what jobs that ended should show (read by the worker's reconciler) -----------------------


@dataclasses.dataclass(frozen=True)
class JobEnd:
    """A job's state as the reconciler (``worker.reconcile_runs``) reads it."""

    job_id: str
    status: JobStatus
    attempts: int
    mlflow_run_id: str | None
    error: dict | None

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL


def job_ends(settings: Settings, job_ids: list[str]) -> dict[str, JobEnd]:
    """The state of these jobs; nothing is written.

    Args:
        settings (Settings): The database.
        job_ids (list[str]): The jobs (repeats allowed).

    Returns:
        dict[str, JobEnd]: By job id; ids the database does not know are left out.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    if not job_ids:
        return {}
    with session_scope(settings.database_url) as s:
        rows = s.execute(select(Job.id, Job.status, Job.attempts, Job.mlflow_run_id, Job.error)
                         .where(Job.id.in_(sorted(set(job_ids))))).all()
    return {r[0]: JobEnd(r[0], r[1], r[2] or 0, r[3], r[4]) for r in rows}
