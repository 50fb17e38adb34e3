"""One validation of a job spec for the API, the sweep scheduler and the worker: the caps
from the settings, and uploaded datasets looked up in the database."""

from __future__ import annotations

from typing import Any

from service.config import Settings
from service.datasets import upload_info
from service.jobspec import JobSpec, Limits, TrainingPlan, validate_job
from service.store.db import session_scope
from service.store.models import Dataset


def limits(settings: Settings) -> Limits:
    return Limits(settings.max_params, settings.max_epochs, settings.max_samples,
                  settings.max_job_memory_mb, settings.pack_max_towers,
                  settings.pack_max_towers_gpu)


def resolver(settings: Settings, data: Any):
    """Looks an uploaded dataset's columns up by id (for the spec's ``dataset.target``)."""
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
