"""/api/v1/datasets: CSV or .npz upload (multipart field 'file', or a text/csv or
application/x-npz body) and listing."""

from __future__ import annotations

from flask import Blueprint, request

from service.api.body import int_arg, multipart_file, upload_name
from service.api.context import settings_of
from service.errors import ApiError
from service.uploads import datasets

bp = Blueprint("datasets", __name__, url_prefix="/api/v1/datasets")


@bp.post("")
def upload():
    name = upload_name()
    if request.files:
        file, filename = multipart_file("CSV or .npz")
        content, filename = file.read(), filename or None
        ctype = (file.mimetype or "").lower()
    else:
        content, filename = request.get_data(), None
        ctype = (request.mimetype or "").lower()
    if not content:
        raise ApiError(400, "bad_request", "no file received; POST it as multipart field "
                       "'file', as a text/csv body or as an application/x-npz body")
    return datasets.store_upload(settings_of(), content, name, filename, ctype), 201


@bp.get("")
def list_all():
    return datasets.list_datasets(settings_of(), int_arg("limit", 100, 1, 1000))


@bp.get("/<dataset_id>")
def get_one(dataset_id: str):
    return datasets.get_dataset(settings_of(), dataset_id)
