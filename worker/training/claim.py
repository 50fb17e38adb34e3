"""The worker's claim on a job: :func:`service.lifecycle.claim`, then the MLflow side of a
takeover outside the claim's transaction."""

from __future__ import annotations

import logging

from service import lifecycle
from service.config import Settings
from service.lifecycle import Claim, Skip, StaleRun

from . import tracking

log = logging.getLogger(__name__)


def claim(job_id: str, settings: Settings) -> Claim | None:
    """Take the job for this process; None when there is nothing to train (the reason is
    logged). A run left behind by an earlier attempt is ended in MLflow either way."""
    got = lifecycle.claim(settings, job_id)
    if got.stale_run is not None:
        end_stale_run(settings, got.stale_run)
    if isinstance(got, Skip):
        log.info("not training: %s", got.reason)
        return None
    log.info("job %s: claimed, attempt %d", got.fence.job_id, got.fence.attempt)
    return got


def end_stale_run(settings: Settings, stale: StaleRun) -> None:
    """Best effort: the job goes on whether or not MLflow answers."""
    if not settings.mlflow_logging:
        return
    try:
        cl = tracking.client(settings.mlflow_tracking_uri)
        cl.set_tag(stale.run_id, "kerasyard.error", stale.reason[:5000])
        cl.set_terminated(stale.run_id, stale.status)
    except Exception:
        log.warning("could not end the stale MLflow run %s %s", stale.run_id, stale.status,
                    exc_info=True)
