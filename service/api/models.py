"""/api/v1/models: upload a ``.keras`` model (an ``application/x-keras`` body, or the multipart
field 'file'), list the models, show one."""

from __future__ import annotations

from flask import Blueprint, request

from service.api.body import int_arg, multipart_file, upload_name
from service.api.context import settings_of
from service.errors import ApiError
from service.uploads import models

bp = Blueprint("models", __name__, url_prefix="/api/v1/models")

BODY_TYPES = ("application/x-keras", "application/octet-stream")


def _upload() -> tuple[bytes, str | None]:
    """The file and the client's name for it, from either form of the request."""
    if request.files or (request.mimetype or "").lower() == "multipart/form-data":
        file, filename = multipart_file(".keras file")
        return file.read(), filename[:300] or None
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
    name = upload_name() or None
    content, filename = _upload()
    if not content:
        raise ApiError(400, "bad_request", "no .keras file received; POST it as an "
                       "application/x-keras body or as the multipart field 'file'")
    return models.store_model(settings_of(), content, name and name[:200], filename), 201


@bp.get("")
def list_all():
    return models.list_models(settings_of(), int_arg("limit", 100, 1, 1000))


@bp.get("/<model_id>")
def get_one(model_id: str):
    return models.get_model(settings_of(), model_id)
