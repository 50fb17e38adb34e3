"""Thin tasks: take an id, call the training code, let it record the outcome."""

from __future__ import annotations

from service.config import get_settings
from worker.celery_app import app

# Seconds before Celery delivers a train task again whose claim found no database (after
# the claim's own retries, settings.db_retry_s).
CLAIM_RETRY_COUNTDOWN_S = 30


@app.task(name="worker.train", bind=True, max_retries=None)
def train(self, job_id: str) -> str:
    from worker.jobs.claim import ClaimUnavailable
    from worker.jobs.run import run_job

    try:
        return run_job(job_id, get_settings())
    except ClaimUnavailable as exc:
        # Not acked away with the job left queued: a new delivery comes later. Should the
        # broker refuse that too, Celery rejects this one and the API's re-send of unclaimed
        # jobs (resend_unclaimed_s) is the last resort.
        raise self.retry(exc=exc, countdown=CLAIM_RETRY_COUNTDOWN_S) from exc


@app.task(name="worker.advance_sweep")
def advance_sweep(sweep_id: str) -> bool:
    """Tell Optuna about the trials that ended, send the next ones, end the sweep when it is
    done (sent by a training when its trial ends, worker/recording/sender.py); False when
    another caller held the sweep's lease or advancing failed (the API's background round
    advances it then)."""
    from service import worker_api
    from worker.recording.sender import WorkerSender

    settings = get_settings()
    return worker_api.advance_sweep(settings, sweep_id, WorkerSender(settings))


@app.task(name="worker.sweep_report")
def sweep_report(sweep_id: str) -> str:
    from worker.sweeps.report.write import write_report

    return write_report(sweep_id, get_settings())


# An out-of-memory death of the training child fails the job instead of retrying it.
train.Request = "worker.oom:TrainRequest"


@app.task(name="worker.reconcile_runs")
def reconcile_runs() -> dict:
    """End the MLflow runs left RUNNING by jobs that have ended (sent by the API's background
    round every KERASYARD_RECONCILE_S)."""
    from worker.jobs.reconcile import reconcile

    return reconcile(get_settings())
