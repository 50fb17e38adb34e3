"""Thin tasks: take an id, call the training code, let it record the outcome."""

from __future__ import annotations

from service.config import get_settings

from .celery_app import app


@app.task(name="worker.train")
def train(job_id: str) -> str:
    from .training.run import run_job

    return run_job(job_id, get_settings())


@app.task(name="worker.sweep_report")
def sweep_report(sweep_id: str) -> str:
    from .training.sweep_report import write_report

    return write_report(sweep_id, get_settings())


# An out-of-memory death of the training child fails the job instead of retrying it.
train.Request = "worker.oom:TrainRequest"


@app.task(name="worker.reconcile_runs")
def reconcile_runs() -> dict:
    """End the MLflow runs left RUNNING by jobs that have ended (sent by the API's background
    round every KERASYARD_RECONCILE_S)."""
    from .training.reconcile import reconcile

    return reconcile(get_settings())
