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
