"""The worker's claim on a job: :func:`service.worker_api.claim`, then the MLflow side of a
takeover outside the claim's transaction."""

from __future__ import annotations

import logging

from service import worker_api as api
from service.config import Settings
from service.worker_api import Claim, Skip, StaleRun
from worker.recording import tracking
from worker.recording.dbretry import is_transient, retry_db

log = logging.getLogger(__name__)


class ClaimUnavailable(Exception):
    """The database did not answer the claim for ``db_retry_s``: the task is retried later
    (never acked away with the job left queued)."""


def claim(job_id: str, settings: Settings) -> Claim | None:
    """Take the job for this process; None when there is nothing to train (the reason is
    logged). A run left behind by an earlier attempt is ended in MLflow either way.

    A database that does not answer is retried with backoff for ``settings.db_retry_s``;
    then :class:`ClaimUnavailable` (the task asks Celery to deliver it again later)."""
    try:
        got = retry_db(settings, f"claim of job {job_id}",
                       lambda: api.claim(settings, job_id))
    except Exception as exc:
        if is_transient(exc):
            raise ClaimUnavailable(f"the database did not answer the claim of job {job_id} "
                                   f"for {settings.db_retry_s:.0f} s") from exc
        raise
    if got.stale_run is not None:
        end_stale_run(settings, got.stale_run)
    if isinstance(got, Skip):
        log.info("not training: %s", got.reason)
        return None
    log.info("job %s: claimed, attempt %d", got.fence.job_id, got.fence.attempt)
    return got


def end_stale_run(settings: Settings, stale: StaleRun) -> None:
    """Best effort: the job goes on whether or not MLflow answers. A run that already
    ended FINISHED is left as it is: a run that succeeded is never relabelled; so is one that
    ended KILLED (its attempt stopped on purpose: a pause, its worker's shutdown). It ends
    KILLED when the job had been asked to cancel, FAILED otherwise."""
    if not settings.mlflow_logging:
        return
    status = "KILLED" if stale.cancelled else "FAILED"
    try:
        cl = tracking.client(settings.mlflow_tracking_uri)
        ended = cl.get_run(stale.run_id).info.status
        if ended in ("FINISHED", "KILLED"):
            log.info("the MLflow run %s of an earlier attempt ended %s already; leaving it as "
                     "it is", stale.run_id, ended)
            return
        cl.set_tag(stale.run_id, "kerasyard.error", stale.reason[:5000])
        cl.set_terminated(stale.run_id, status)
    except Exception:
        log.warning("could not end the stale MLflow run %s %s", stale.run_id, status,
                    exc_info=True)
