"""Thin tasks: take an id, call the training code, let it record the outcome."""

from __future__ import annotations

from service.config import get_settings

from .celery_app import app


@app.task(name="worker.train")
def train(job_id: str) -> str:
    from .training.runner import run_job

    return run_job(job_id, get_settings())
