"""/api/v1/datasets: CSV or .npz upload (multipart field 'file', or a text/csv or
application/x-npz body) and listing."""

from __future__ import annotations

from flask import Blueprint, request

from service.api.body import int_arg
from service.api.context import settings_of
from service.errors import ApiError
from service.uploads import datasets

bp = Blueprint("datasets", __name__, url_prefix="/api/v1/datasets")


@bp.post("")
def upload():
    form_name = request.form.get("name")
    # The form's name is refused with a NUL even where the query's name wins: a request the
    # document calls invalid is never accepted.
    if form_name and "\x00" in form_name:
        raise ApiError(400, "bad_request", "the form field 'name' contains a NUL character; "
                       "remove it", [{"loc": "name", "msg": "contains a NUL character"}])
    name = request.args.get("name") or form_name
    if request.files:
        file = request.files.get("file")
        if file is None:
            raise ApiError(400, "bad_request", "send the CSV or .npz in the multipart field "
                           "'file'", [{"loc": "file", "msg": "field required"}])
        # The client's file name is only shown back; PostgreSQL cannot store a NUL in it.
        content, filename = file.read(), (file.filename or "").replace("\x00", "\ufffd") or None
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
