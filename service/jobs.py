"""Job commands: the work behind the /jobs routes, with no Flask inside."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from service import lifecycle
from service.config import Settings, mlflow_run_url
from service.errors import ApiError
from service.queue import CelerySender
from service.store.db import session_scope
from service.store.ids import full_id
from service.store.models import Job, JobEpoch, JobStatus, Sweep, SweepStatus
from service.store.paging import check_status, iso, keyset_page, next_cursor
from service.validation import validate

STATUSES = [s.value for s in JobStatus]


def submit_job(settings: Settings, data: Any) -> dict:
    """Validate, store (commit), then queue. Nothing is queued for an invalid spec."""
    spec, plan = validate(settings, data)
    queue = spec.resources.queue or settings.default_queue
    with session_scope(settings.database_url) as s:
        job = Job(name=spec.name, experiment=spec.experiment, queue=queue,
                  spec=spec.model_dump(mode="json"), plan=plan.as_dict(),
                  progress=lifecycle.initial_progress(plan.epochs))
        s.add(job)
    # The row is committed: a worker that picks the id up will find it.
    lifecycle.dispatch(settings, CelerySender(settings), job.id, queue)
    return get_job(settings, job.id)


def _load(s, job_id: str, lock: bool = False) -> Job:
    """The job by id or unique id prefix (service.store.ids); 404 when there is none."""
    job = s.get(Job, full_id(s, Job, job_id, "job", "job_id"), with_for_update=lock)
    if job is None:
        raise ApiError(404, "not_found", f"no job with id {job_id!r}")
    return job


def get_job(settings: Settings, job_id: str) -> dict:
    with session_scope(settings.database_url) as s:
        return serialize(settings, _load(s, job_id))


def cancel_job(settings: Settings, job_id: str) -> dict:
    with session_scope(settings.database_url) as s:
        job = _load(s, job_id, lock=True)  # a claim of the same row waits for us, or we for it
        if job.status.terminal:
            raise ApiError(409, "illegal_state", f"job {job.id} is already {job.status.value}; "
                           "only queued, running or paused jobs can be cancelled")
        lifecycle.cancel(s, job)
        s.flush()
        return serialize(settings, job)


def pause_job(settings: Settings, job_id: str) -> tuple[dict, int]:
    """Pause a queued job now, a running one at its next epoch boundary.

    Returns:
        tuple[dict, int]: The job, and 202 (the pause was asked for, or done now), or 200
        when it was paused already (nothing changed).

    Raises:
        ApiError: 404 no such job; 409 it has ended, or it is a trial recorded from another
            job's training (pause that one).
    """
    with session_scope(settings.database_url) as s:
        job = _load(s, job_id, lock=True)
        if job.status == JobStatus.paused:
            return serialize(settings, job), 200
        if job.status.terminal:
            raise ApiError(409, "illegal_state", f"job {job.id} is already {job.status.value}; "
                           "only queued or running jobs can be paused")
        if job.trained_by:
            raise ApiError(409, "illegal_state", f"job {job.id} is recorded from the training "
                           f"of job {job.trained_by}; pause that job instead")
        lifecycle.pause(s, job)
        s.flush()
        return serialize(settings, job), 202


def resume_job(settings: Settings, job_id: str) -> dict:
    """Queue a paused job again and send it; or withdraw the pending pause of a running job
    (its worker has not stopped yet).

    Raises:
        ApiError: 404 no such job; 409 it is not paused (the message names its status), it
            is a trial recorded from another job's training (resume that one), or a trial of
            a paused sweep (resume the sweep).
    """
    with session_scope(settings.database_url) as s:
        job = _load(s, job_id, lock=True)
        if not lifecycle.resumable(job):
            raise ApiError(409, "illegal_state", f"job {job.id} is {job.status.value}; only a "
                           "paused job (or a running one whose pause is pending) can be "
                           "resumed")
        if job.trained_by:
            raise ApiError(409, "illegal_state", f"job {job.id} is recorded from the training "
                           f"of job {job.trained_by}; resume that job instead")
        sweep = s.get(Sweep, job.sweep_id) if job.sweep_id else None
        if sweep is not None and sweep.status == SweepStatus.paused:
            raise ApiError(409, "illegal_state", f"job {job.id} is a trial of sweep {sweep.id}, "
                           "which is paused; resume the sweep (POST /api/v1/sweeps/"
                           f"{sweep.id}/resume)")
        send = lifecycle.resume(s, job)
        job_id, queue = job.id, job.queue
    if send:  # committed: a worker that picks the id up finds it queued. A broker that is
        # down leaves it to the background round's re-send (a sweep trial: its scheduler's).
        lifecycle.dispatch(settings, CelerySender(settings), job_id, queue)
    return get_job(settings, job_id)


def history(settings: Settings, job_id: str) -> dict:
    with session_scope(settings.database_url) as s:
        job = _load(s, job_id)
        rows = s.scalars(select(JobEpoch).where(JobEpoch.job_id == job.id)
                         .order_by(JobEpoch.epoch)).all()
        return {"job_id": job.id, "status": job.status.value,
                "epochs": [{"epoch": r.epoch, **r.metrics} for r in rows]}


def list_jobs(settings: Settings, status: str | None = None, experiment: str | None = None,
              sweep_id: str | None = None, limit: int = 50, cursor: str | None = None,
              standalone: bool | None = None) -> dict:
    """Newest first, keyset-paginated on (created_at, id). ``standalone``: True, only the jobs
    submitted on their own; False, only sweeps' trials; None, both. Filters combine (AND), so
    ``standalone`` True with a ``sweep_id`` lists nothing."""
    check_status(status, STATUSES)
    query = select(Job)
    if status:
        query = query.where(Job.status == status)
    if experiment:
        query = query.where(Job.experiment == experiment)
    if standalone is not None:
        query = query.where(Job.sweep_id.is_(None) if standalone else Job.sweep_id.isnot(None))
    with session_scope(settings.database_url) as s:
        if sweep_id:
            sweep_id = full_id(s, Sweep, sweep_id, "sweep", "sweep_id")
            query = query.where(Job.sweep_id == sweep_id)
        rows = s.scalars(keyset_page(query, Job, cursor, limit)).all()
        return {"jobs": [serialize(settings, j) for j in rows[:limit]],
                "next_cursor": next_cursor(rows, limit)}


def mlflow_ref(settings: Settings, experiment_id: str | None, run_id: str | None) -> dict:
    """A job's or a sweep's MLflow run as the API shows it, with a link into the UI."""
    url = mlflow_run_url(settings.mlflow_ui_url, experiment_id, run_id) \
        if experiment_id and run_id else None
    return {"run_id": run_id, "experiment_id": experiment_id, "url": url}


def serialize(settings: Settings, job: Job) -> dict:
    return {
        "id": job.id,
        "name": job.name,
        "experiment": job.experiment,
        "status": job.status.value,
        "queue": job.queue,
        "spec": job.spec,
        "plan": job.plan,
        "progress": job.progress or lifecycle.initial_progress(job.plan.get("epochs")),
        "summary": job.summary,
        # A job without held-out data reports how well it fits its training set, not how
        # well it generalizes: say so beside the numbers.
        "metrics_on": "validation" if (job.plan or {}).get("n_val") else "training",
        "mlflow": mlflow_ref(settings, job.mlflow_experiment_id, job.mlflow_run_id),
        "error": job.error,
        "attempts": job.attempts,
        "resumed_from_epoch": job.resumed_from_epoch,
        "cancel_requested": job.cancel_requested,
        "pause_requested": bool(job.pause_requested),
        "sweep_id": job.sweep_id,
        "trial_number": job.trial_number,
        "repeat": job.repeat,
        "trial_params": job.trial_params,
        "trained_by": job.trained_by,
        "worker": job.worker,
        "created_at": iso(job.created_at),
        # None while the broker was unreachable; the API re-sends it when the broker is back.
        "dispatched_at": iso(job.dispatched_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }
