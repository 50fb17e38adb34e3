"""/api/v1/models: upload a ``.keras`` model (an ``application/x-keras`` body, or the multipart
field 'file'), list the models, show one."""

from __future__ import annotations

from flask import Blueprint, request

from service.api.body import int_arg
from service.api.context import settings_of
from service.errors import ApiError
from service.uploads import models

bp = Blueprint("models", __name__, url_prefix="/api/v1/models")

BODY_TYPES = ("application/x-keras", "application/octet-stream")


def _upload() -> tuple[bytes, str | None]:
    """The file and the client's name for it, from either form of the request."""
    if request.files or (request.mimetype or "").lower() == "multipart/form-data":
        file = request.files.get("file")
        if file is None:
            raise ApiError(400, "bad_request", "send the .keras file in the multipart field "
                           "'file'", [{"loc": "file", "msg": "field required"}])
        # The client's file name is only shown back; PostgreSQL cannot store a NUL in it.
        return file.read(), (file.filename or "").replace("\x00", "\ufffd")[:300] or None
    ctype = (request.mimetype or "").lower()
    if ctype not in BODY_TYPES:
        given = f"Content-Type {ctype[:80]!r}" if ctype else "no Content-Type"
        raise ApiError(415, "unsupported_media_type", f"{given}: send the .keras file as "
                       "'Content-Type: application/x-keras' or in the multipart field 'file'",
                       [{"loc": "Content-Type", "msg": "expected application/x-keras or "
                         "multipart/form-data", "value": ctype[:80]}])
    return request.get_data(), None


@bp.post("")
def upload():
    form_name = request.form.get("name")
    if form_name and "\x00" in form_name:
        raise ApiError(400, "bad_request", "the form field 'name' contains a NUL character; "
                       "remove it", [{"loc": "name", "msg": "contains a NUL character"}])
    content, filename = _upload()
    if not content:
        raise ApiError(400, "bad_request", "no .keras file received; POST it as an "
                       "application/x-keras body or as the multipart field 'file'")
    name = (request.args.get("name") or form_name or None)
    return models.store_model(settings_of(), content, name and name[:200], filename), 201


@bp.get("")
def list_all():
    return models.list_models(settings_of(), int_arg("limit", 100, 1, 1000))


@bp.get("/<model_id>")
def get_one(model_id: str):
    return models.get_model(settings_of(), model_id)
