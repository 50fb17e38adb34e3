"""One validation of a job spec for the API, the sweep scheduler and the worker: the caps
from the settings, and uploaded datasets looked up in the database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.config import Settings
from service.jobspec import (
    DatasetInfo,
    ErrorDetail,
    JobSpec,
    Limits,
    SpecError,
    TrainingPlan,
    validate_job,
)
from service.jobspec.shapes import ModelResolver, UploadedModel
from service.store.db import session_scope
from service.store.models import Dataset
from service.uploads.datasets import upload_info
from service.uploads.npz import npz_info


def limits(settings: Settings) -> Limits:
    """The caps a spec is checked against, as this deployment sets them.

    Args:
        settings: the deployment's settings (their ``max_*`` and ``pack_max_towers*``).

    Returns:
        The :class:`~service.jobspec.Limits` that :func:`validate` and the sweep checks apply.
    """
    return Limits(max_params=settings.max_params, max_epochs=settings.max_epochs,
                  max_samples=settings.max_samples,
                  max_job_memory_mb=settings.max_job_memory_mb,
                  pack_max_towers=settings.pack_max_towers,
                  pack_max_towers_gpu=settings.pack_max_towers_gpu)


def resolver(settings: Settings, data: Any) -> Callable[[str], DatasetInfo | None]:
    """Looks an uploaded dataset's columns up by id (for the spec's ``dataset.target``).

    Args:
        settings: where the database is (``database_url``).
        data: the raw spec, before validation; its ``dataset.target`` and ``dataset.task``
            (when it has them) choose the target column and the task.

    Returns:
        A function of a dataset id that opens a session when called and returns the
        dataset's :class:`~service.jobspec.DatasetInfo`, or None when no upload has that id.
        It raises :class:`~service.jobspec.SpecError` naming ``dataset.target`` or
        ``dataset.task`` when the upload's columns do not fit them.
    """
    ds = data.get("dataset") if isinstance(data, dict) else None
    ds = ds if isinstance(ds, dict) else {}

    def resolve(dataset_id: str):
        with session_scope(settings.database_url) as s:
            row = s.get(Dataset, dataset_id)
            if row is None:
                return None
            if row.format == "npz":
                return _npz_info(row.profile, ds)
            return upload_info(row.columns, row.n_rows, ds.get("target", "target"),
                               ds.get("task"))

    return resolve


def _npz_info(profile: dict, ds: dict) -> DatasetInfo:
    """An .npz's arrays are x and y: ``dataset.target`` is left out or ``"y"``; ``task``
    may override what y's dtype says (integer: classification, float: regression)."""
    target = ds.get("target")
    # "target" is the field's default: a stored spec (every default filled in) carries it.
    if target not in (None, "target", "y"):
        raise SpecError([ErrorDetail("dataset.target", f"an .npz upload trains on its arrays x "
                                     f"and y; target {str(target)[:60]!r} is not one of them: "
                                     "leave target out (or write \"y\")", target)])
    return npz_info(profile, ds.get("task"))


def model_resolver(settings: Settings) -> ModelResolver:
    """Looks an uploaded model up by id, for the checks of a spec's ``model.uploaded``.

    Args:
        settings: where the database is (``database_url``).

    Returns:
        A function of a model id that opens a session when called and returns the model's
        :class:`~service.jobspec.shapes.UploadedModel` (the layer specs stored at upload,
        its input's shape and dtype), or None when no model has that id.
    """
    from sqlalchemy.orm import defer

    from service.store.models import KerasModel
    from service.uploads.keras_file import layers_from_json

    def resolve(model_id: str) -> UploadedModel | None:
        with session_scope(settings.database_url) as s:
            row = s.get(KerasModel, model_id, options=[defer(KerasModel.content)])
            if row is None:
                return None
            return UploadedModel(layers=layers_from_json(row.layers),
                                 input_shape=tuple(row.input_shape),
                                 input_dtype=row.input_dtype)

    return resolve


def validate(settings: Settings, data: Any,
             resolve_model: ModelResolver | None = None) -> tuple[JobSpec, TrainingPlan]:
    """Field validation and the cross-field rules of a job spec, under this deployment's caps.

    Args:
        settings: the caps (:func:`limits`) and the database uploads are looked up in.
        data: the spec as the request gave it (any JSON value).
        resolve_model: looks up the uploaded model a spec's ``model.uploaded`` names;
            default :func:`model_resolver`, the models uploaded to this deployment.

    Returns:
        The validated spec, every default filled in, and its
        :class:`~service.jobspec.TrainingPlan` (the lecture's quantities, the memory estimate).

    Raises:
        SpecError: naming every offending field (the API answers 422 invalid_spec), also
            when the spec names an upload that does not exist.
    """
    return validate_job(data, limits(settings), resolver(settings, data),
                        resolve_model or model_resolver(settings))
