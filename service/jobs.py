"""Job commands: the work behind the /jobs routes, with no Flask inside."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from sqlalchemy import select, tuple_

from .config import Settings
from .datasets import upload_info
from .db import session_scope
from .errors import ApiError
from .models import TERMINAL, Dataset, Job, JobEpoch, JobStatus, as_utc, utcnow
from .queue import queue_training_job
from .spec import JobSpec, Limits, TrainingPlan, validate_job

STATUSES = [s.value for s in JobStatus]


def limits(settings: Settings) -> Limits:
    return Limits(settings.max_params, settings.max_epochs, settings.max_samples)


def resolver(settings: Settings, data: Any):
    ds = data.get("dataset") if isinstance(data, dict) else None
    ds = ds if isinstance(ds, dict) else {}

    def resolve(dataset_id: str):
        with session_scope(settings.database_url) as s:
            row = s.get(Dataset, dataset_id)
            if row is None:
                return None
            return upload_info(row.columns, row.n_rows, ds.get("target", "target"),
                               ds.get("task"))

    return resolve


def validate(settings: Settings, data: Any) -> tuple[JobSpec, TrainingPlan]:
    return validate_job(data, limits(settings), resolver(settings, data))


def submit_job(settings: Settings, data: Any, sweep_id: str | None = None) -> dict:
    """Validate, store (commit), then queue. Nothing is queued for an invalid spec."""
    spec, plan = validate(settings, data)
    queue = spec.resources.queue or settings.default_queue
    with session_scope(settings.database_url) as s:
        job = Job(name=spec.name, experiment=spec.experiment, queue=queue,
                  spec=spec.model_dump(mode="json"), plan=plan.as_dict(), sweep_id=sweep_id,
                  progress={"epoch": 0, "epochs": plan.epochs, "metrics": {}})
        s.add(job)
    # The row is committed: a worker that picks the id up will find it.
    queue_training_job(settings, job.id, queue)
    return get_job(settings, job.id)


def _load(s, job_id: str) -> Job:
    job = s.get(Job, job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job with id {job_id!r}")
    return job


def get_job(settings: Settings, job_id: str) -> dict:
    with session_scope(settings.database_url) as s:
        return serialize(settings, _load(s, job_id))


def cancel_job(settings: Settings, job_id: str) -> dict:
    with session_scope(settings.database_url) as s:
        job = _load(s, job_id)
        if JobStatus(job.status) in TERMINAL:
            raise ApiError(409, "illegal_state", f"job {job_id} is already {job.status}; only "
                           "queued or running jobs can be cancelled")
        job.cancel_requested = True
        if job.status == JobStatus.queued.value:
            # Not started: it ends now; a worker that later receives the id drops it.
            job.status, job.finished_at = JobStatus.cancelled.value, utcnow()
        s.flush()
        return serialize(settings, job)


def history(settings: Settings, job_id: str) -> dict:
    with session_scope(settings.database_url) as s:
        job = _load(s, job_id)
        rows = s.scalars(select(JobEpoch).where(JobEpoch.job_id == job_id)
                         .order_by(JobEpoch.epoch)).all()
        return {"job_id": job_id, "status": job.status,
                "epochs": [{"epoch": r.epoch, **r.metrics} for r in rows]}


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        return dt.datetime.fromisoformat(created), str(job_id)
    except Exception:
        raise ApiError(400, "bad_request", f"cursor {cursor!r} is not valid; pass the "
                       "next_cursor of a previous page", [{"loc": "cursor", "msg": "invalid",
                                                           "value": cursor}]) from None


def list_jobs(settings: Settings, status: str | None = None, experiment: str | None = None,
              sweep_id: str | None = None, limit: int = 50, cursor: str | None = None) -> dict:
    """Newest first, keyset-paginated on (created_at, id)."""
    if status is not None and status not in STATUSES:
        raise ApiError(400, "bad_request", f"status {status!r} is not one of {STATUSES}",
                       [{"loc": "status", "msg": f"expected one of {STATUSES}", "value": status}])
    query = select(Job)
    if status:
        query = query.where(Job.status == status)
    if experiment:
        query = query.where(Job.experiment == experiment)
    if sweep_id:
        query = query.where(Job.sweep_id == sweep_id)
    if cursor:
        created, job_id = _decode_cursor(cursor)
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(created, job_id))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    with session_scope(settings.database_url) as s:
        rows = s.scalars(query).all()
        page = rows[:limit]
        return {"jobs": [serialize(settings, j) for j in page],
                "next_cursor": _encode_cursor(page[-1]) if len(rows) > limit else None}


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat()


def mlflow_url(settings: Settings, experiment_id: str | None, run_id: str | None) -> str | None:
    if not (experiment_id and run_id):
        return None
    return f"{settings.mlflow_ui_url}/#/experiments/{experiment_id}/runs/{run_id}"


def serialize(settings: Settings, job: Job) -> dict:
    return {
        "id": job.id,
        "name": job.name,
        "experiment": job.experiment,
        "status": job.status,
        "queue": job.queue,
        "spec": job.spec,
        "plan": job.plan,
        "progress": job.progress or {"epoch": 0, "epochs": job.plan.get("epochs"),
                                     "metrics": {}},
        "summary": job.summary,
        "mlflow": {"run_id": job.mlflow_run_id, "experiment_id": job.mlflow_experiment_id,
                   "url": mlflow_url(settings, job.mlflow_experiment_id, job.mlflow_run_id)},
        "error": job.error,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "sweep_id": job.sweep_id,
        "trial_number": job.trial_number,
        "repeat": job.repeat,
        "trial_params": job.trial_params,
        "trained_by": job.trained_by,
        "worker": job.worker,
        "created_at": _iso(job.created_at),
        # None while the broker was unreachable; the API re-sends it when the broker is back.
        "dispatched_at": _iso(job.dispatched_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
    }
