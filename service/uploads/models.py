"""The commands behind /api/v1/models: store an uploaded ``.keras`` model once
:mod:`.keras_file` accepted it, list and show the models, and hand one to the worker
(:func:`model_content`); the door's checks look models up with
:func:`service.validation.model_resolver`.

A refused upload stores nothing. An uploaded model's weights are the starting weights of every
job that trains it (the job's seed does not re-initialise them).
"""

from __future__ import annotations

import hashlib

from service.uploads.keras_file import KerasFileError, read_keras_file

WEIGHTS_NOTE = ("the uploaded weights are the starting weights of every job that trains this "
                "model; the job's dataset, compile and fit come from its spec")


def serialize_model(row, with_layers: bool = True) -> dict:
    """One model; listings leave its layers out (``n_layers`` says how many)."""
    out = {"id": row.id, "name": row.name, "filename": row.filename,
           "size_bytes": row.size_bytes, "sha256": row.sha256,
           "keras_version": row.keras_version, "input_shape": row.input_shape,
           "input_dtype": row.input_dtype, "n_params": row.n_params,
           "n_layers": len(row.layers)}
    if with_layers:
        out["layers"] = row.layers
    out["created_at"] = row.created_at.isoformat() if row.created_at else None
    out["use"] = {"model": {"uploaded": row.id}}
    out["weights"] = WEIGHTS_NOTE
    return out


def store_model(settings, content: bytes, name: str | None, filename: str | None) -> dict:
    """Check an uploaded ``.keras`` file and store it.

    Args:
        settings (Settings): The database and the upload cap (``max_upload_bytes``).
        content (bytes): The file.
        name (str | None): The model's name; default the file's name, else ``"model"``.
        filename (str | None): The client's file name, shown back.

    Returns:
        dict: The stored model (:func:`serialize_model`).

    Raises:
        ApiError: 413 over the cap; 422 ``invalid_model`` naming each problem (nothing is
            stored).
    """
    from service.errors import ApiError
    from service.store.db import session_scope
    from service.store.models import KerasModel

    if len(content) > settings.max_upload_bytes:
        raise ApiError(413, "payload_too_large", f"the model is {len(content)} bytes; the "
                       f"limit is {settings.max_upload_bytes} (KERASYARD_MAX_UPLOAD_BYTES)")
    try:
        keras_file = read_keras_file(content, settings.max_upload_bytes)
    except KerasFileError as exc:
        raise ApiError(422, "invalid_model", f"the .keras file is refused: {exc}",
                       exc.details) from None
    model = keras_file.model
    with session_scope(settings.database_url) as s:
        row = KerasModel(name=name or filename or "model", filename=filename,
                         size_bytes=len(content), sha256=hashlib.sha256(content).hexdigest(),
                         keras_version=keras_file.keras_version,
                         input_shape=list(model.input_shape), input_dtype=model.input_dtype,
                         n_params=keras_file.n_params, layers=keras_file.layers_json,
                         content=content)
        s.add(row)
        s.flush()
        return serialize_model(row)


def get_model(settings, model_id: str) -> dict:
    from service.errors import ApiError
    from service.store.db import session_scope
    from service.store.models import KerasModel

    with session_scope(settings.database_url) as s:
        row = s.get(KerasModel, model_id)
        if row is None:
            raise ApiError(404, "not_found", f"no uploaded model with id {model_id!r}")
        return serialize_model(row)


def list_models(settings, limit: int) -> dict:
    from sqlalchemy import select
    from sqlalchemy.orm import defer

    from service.store.db import session_scope
    from service.store.models import KerasModel

    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(KerasModel).options(defer(KerasModel.content))
                         .order_by(KerasModel.created_at.desc(), KerasModel.id.desc())
                         .limit(limit)).all()
        return {"models": [serialize_model(r, with_layers=False) for r in rows]}


def model_content(settings, model_id: str) -> tuple[str, bytes] | None:
    """An uploaded model's name and ``.keras`` bytes, for the worker that trains it.

    Args:
        settings (Settings): The database.
        model_id (str): The model (``model.uploaded`` of a spec).

    Returns:
        tuple[str, bytes] | None: The model's name and file; None when it no longer exists.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    from service.store.db import session_scope
    from service.store.models import KerasModel

    with session_scope(settings.database_url) as s:
        row = s.get(KerasModel, model_id)
        return None if row is None else (row.name, row.content)
