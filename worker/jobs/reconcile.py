"""End the MLflow runs that nobody else will: ``worker.reconcile_runs``.

A run stays RUNNING when its job ended but MLflow did not hear of it: MLflow was down at the
end of the run (past the retry bound), the training child was killed (out of memory), or an
attempt was superseded and its run never handed to the new owner. The API's background round
sends this task every ``KERASYARD_RECONCILE_S``; it reads the jobs through
:func:`service.worker_api.job_ends` and, for every RUNNING run tagged ``kerasyard.job_id``:

- the job's run of record, job ended: the job's end
  (:data:`worker.recording.tracking.MLFLOW_RUN_STATUS`), with ``kerasyard.error`` for a
  failure or cancel;
- a run of an earlier attempt (``kerasyard.attempt`` below the job's attempts), or any run
  of an ended job that is not its run of record: FAILED (KILLED when the job was cancelled),
  saying why;
- anything else (the job still runs this run, a run being recorded, a job this database does
  not know): left alone.

Every run it ends gets ``kerasyard.reconciled``. Only RUNNING runs are touched, re-read
just before: a FINISHED run is never relabelled.
"""

from __future__ import annotations

import dataclasses
import logging

from service import worker_api as api
from service.config import Settings
from service.worker_api import JobEnd, JobStatus
from worker.recording import tracking
from worker.recording.tracking import MLFLOW_RUN_STATUS

log = logging.getLogger(__name__)

PAGE = 1000
EXPERIMENTS_PER_SEARCH = 100


@dataclasses.dataclass(frozen=True)
class Verdict:
    status: str  # an MLflow run status
    reason: str
    error: str | None = None


def decide(run_id: str, tags: dict[str, str], job: JobEnd | None) -> Verdict | None:
    """How a RUNNING run should end, or None to leave it."""
    if job is None:
        return None  # not this database's job (another deployment sharing the server?)
    attempt = tags.get("kerasyard.attempt")
    attempt = int(attempt) if attempt and attempt.isdigit() else None
    job_error = (job.error or {}).get("message")
    if job.mlflow_run_id == run_id:
        if not job.ended:
            return None  # its worker is at it
        status = MLFLOW_RUN_STATUS[job.status]
        reason = f"job {job.job_id} ended {job.status.value}; its run was left RUNNING"
        error = job_error if status != "FINISHED" else None
        if error is None and job.status == JobStatus.cancelled:
            error = "cancelled"
        return Verdict(status, reason, error)
    if attempt is not None and attempt < job.attempts:
        reason = (f"attempt {attempt} of job {job.job_id} was superseded by attempt "
                  f"{job.attempts}: its worker died or stopped answering")
        return Verdict("FAILED", reason, reason)
    if job.ended:
        status = "KILLED" if job.status == JobStatus.cancelled else "FAILED"
        reason = (f"job {job.job_id} ended {job.status.value} without this run as its run "
                  "(it was never recorded on the job)")
        return Verdict(status, reason, job_error or reason)
    return None


def running_runs(cl) -> list:
    """Every active RUNNING run of every active experiment tagged with a kerasyard job."""
    from mlflow.entities import ViewType

    exp_ids, token = [], None
    while True:
        page = cl.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=PAGE,
                                     page_token=token)
        exp_ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            break
    out = []
    for i in range(0, len(exp_ids), EXPERIMENTS_PER_SEARCH):
        token = None
        while True:
            page = cl.search_runs(exp_ids[i:i + EXPERIMENTS_PER_SEARCH],
                                  filter_string="attributes.status = 'RUNNING'",
                                  run_view_type=ViewType.ACTIVE_ONLY, max_results=PAGE,
                                  page_token=token)
            out += [r for r in page if "kerasyard.job_id" in r.data.tags]
            token = page.token
            if not token:
                break
    return out


def reconcile(settings: Settings) -> dict[str, int]:
    """End what :func:`decide` says; returns counts by MLflow status (and ``left``)."""
    if not settings.mlflow_logging:
        return {}
    cl = tracking.client(settings.mlflow_tracking_uri)
    runs = running_runs(cl)
    jobs = api.job_ends(settings, [r.data.tags["kerasyard.job_id"] for r in runs])
    counts: dict[str, int] = {}
    for run in runs:
        run_id, tags = run.info.run_id, run.data.tags
        verdict = decide(run_id, tags, jobs.get(tags["kerasyard.job_id"]))
        if verdict is None:
            counts["left"] = counts.get("left", 0) + 1
            continue
        try:
            if cl.get_run(run_id).info.status != "RUNNING":
                continue  # ended in the meantime (by its worker): never relabelled
            cl.set_tag(run_id, "kerasyard.reconciled", verdict.reason[:5000])
            if verdict.error:
                cl.set_tag(run_id, "kerasyard.error", verdict.error[:5000])
            cl.set_terminated(run_id, verdict.status)
        except Exception:
            log.warning("could not end MLflow run %s", run_id, exc_info=True)
            continue
        log.info("MLflow run %s ended %s: %s", run_id, verdict.status, verdict.reason)
        counts[verdict.status] = counts.get(verdict.status, 0) + 1
    return counts
