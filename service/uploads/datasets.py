"""Uploaded datasets (CSV here; .npz in :mod:`.npz`): parsing, column profile, and the shape a
job spec checks against.

Pure Python (csv module), so the API image needs neither pandas nor TensorFlow.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import math
from typing import Any

from service.jobspec import DatasetInfo, ErrorDetail, SpecError

MAX_CLASSES = 50


class CsvError(ValueError):
    pass


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# A column profile is stored and returned with the dataset: a 6 MB CSV of 500,000 one-digit
# columns would otherwise answer 31 MB and weigh on every listing. MLPs on uploaded tables
# rarely want more features than this; reduce the columns first.
MAX_COLUMNS = 1000


def read_rows(content: bytes) -> tuple[list[str], list[list[str]]]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvError(f"the file is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") \
            from None
    nul = content.find(b"\x00")
    if nul >= 0:  # not text; and PostgreSQL could not store a column name with one
        raise CsvError(f"the file has a NUL character (byte {nul}); save it as UTF-8 CSV text")
    reader = csv.reader(io.StringIO(text))
    try:
        rows = [row for row in reader if row and any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise CsvError(f"not a valid CSV: {exc}") from None
    if len(rows) < 3:
        raise CsvError("a dataset needs a header row and at least 2 data rows")
    header = [h.strip() for h in rows[0]]
    if len(header) > MAX_COLUMNS:
        raise CsvError(f"the CSV has {len(header)} columns; at most {MAX_COLUMNS} are "
                       "accepted: keep the features you train on and the target")
    if any(len(h) > 200 for h in header):
        raise CsvError("a column name is longer than 200 characters; shorten it")
    if len(set(header)) != len(header) or any(not h for h in header):
        raise CsvError("the header row must name every column once; "
                       f"got {header!r}")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise CsvError(f"line {i} has {len(row)} fields, the header has {len(header)}")
    return header, rows[1:]


def profile(content: bytes) -> dict[str, Any]:
    """Row count and one entry per column: numeric?, integer?, distinct values (capped)."""
    header, rows = read_rows(content)
    columns = []
    for j, name in enumerate(header):
        values = [row[j].strip() for row in rows]
        numbers = [_number(v) for v in values]
        numeric = all(n is not None for n in numbers)
        distinct = set(values)
        columns.append({
            "name": name,
            "numeric": numeric,
            "integer": numeric and all(float(n).is_integer() for n in numbers),
            "n_unique": len(distinct) if len(distinct) <= 1000 else None,
        })
    return {"n_rows": len(rows), "columns": columns,
            "sha256": hashlib.sha256(content).hexdigest()}


def infer_task(column: dict, task: str | None) -> str:
    if task:
        return task
    if not column["numeric"]:
        return "classification"
    if column["integer"] and column["n_unique"] is not None and column["n_unique"] <= MAX_CLASSES:
        return "classification"
    return "regression"


def upload_info(columns: list[dict], n_rows: int, target: str, task: str | None) -> DatasetInfo:
    """The DatasetInfo of an uploaded set for a given target column; SpecError names the field."""
    names = [c["name"] for c in columns]
    by_name = {c["name"]: c for c in columns}
    if target not in by_name:
        raise SpecError([ErrorDetail("dataset.target", f"no column {target!r} in the dataset; "
                                     f"its columns are {names}", target)])
    features = [c for c in columns if c["name"] != target]
    bad = [c["name"] for c in features if not c["numeric"]]
    if bad:
        raise SpecError([ErrorDetail("dataset.target", f"feature columns must be numeric; "
                                     f"{bad} are not. Encode them or choose another target",
                                     target)])
    if not features:
        raise SpecError([ErrorDetail("dataset.target", "the dataset has no feature columns")])
    col = by_name[target]
    kind = infer_task(col, task)
    if kind == "regression":
        if not col["numeric"]:
            raise SpecError([ErrorDetail("dataset.task", f"column {target!r} is not numeric, so "
                                         "it cannot be a regression target", task)])
        return DatasetInfo(n_rows, len(features), "regression")
    n_classes = col["n_unique"]
    if n_classes is None or n_classes > MAX_CLASSES:
        raise SpecError([ErrorDetail("dataset.task", f"column {target!r} has more than "
                                     f"{MAX_CLASSES} distinct values; use task 'regression'",
                                     task)])
    if n_classes < 2:
        raise SpecError([ErrorDetail("dataset.target", f"column {target!r} has a single value; "
                                     "a classifier needs at least 2 classes", target)])
    return DatasetInfo(n_rows, len(features), "classification", n_classes)


def load_arrays(content: bytes, target: str, task: str):
    """An uploaded CSV as arrays for training.

    Args:
        content (bytes): The CSV (checked at upload: a header, numeric features).
        target (str): The target column's name.
        task (str): ``classification`` or ``regression``.

    Returns:
        tuple: ``(x, y, classes)``: x float32 ``[n, d]`` (every column but the target, in
        order); y float32 for regression, else int32 class indices, the classes mapped to
        0..k-1 in sorted order (numerically when they are all numbers); classes None for
        regression.

    Raises:
        ValueError: ``target`` is not a column, or a feature is not a number (the spec's
            validation rules both out before training).
    """
    import numpy as np

    header, rows = read_rows(content)
    t = header.index(target)
    feats = [j for j in range(len(header)) if j != t]
    x = np.array([[float(row[j]) for j in feats] for row in rows], dtype="float32")
    raw = [row[t].strip() for row in rows]
    if task == "regression":
        y = np.array([float(v) for v in raw], dtype="float32")
        classes = None
    else:
        numeric = all(_number(v) is not None for v in raw)
        classes = sorted(set(raw), key=(lambda v: float(v)) if numeric else None)
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[v] for v in raw], dtype="int32")
    return x, y, classes


# --- commands behind /api/v1/datasets -------------------------------------------------------


def _arrays(row) -> dict | None:
    """An .npz's arrays as the API shows them (shapes and dtypes); None for a CSV."""
    prof = row.profile if getattr(row, "format", "csv") == "npz" else None
    if not prof:
        return None
    y = {k: prof["y"].get(k) for k in ("dtype", "n_unique", "min", "max", "mapped")}
    return {"x": dict(prof["x"]), "y": y}


def serialize_dataset(row, with_columns: bool = True) -> dict:
    """One dataset; listings leave the column profiles out (``n_columns`` says how many).

    An .npz (``format`` "npz") has no columns; ``arrays`` gives x's shape, dtype and range and
    y's dtype and distinct values."""
    fmt = getattr(row, "format", None) or "csv"
    out = {"id": row.id, "name": row.name, "filename": row.filename, "format": fmt,
           "size_bytes": row.size_bytes, "sha256": row.sha256, "n_rows": row.n_rows,
           "n_columns": len(row.columns), "arrays": _arrays(row)}
    if with_columns:
        out["columns"] = row.columns
    out["created_at"] = row.created_at.isoformat() if row.created_at else None
    use = {"kind": "upload", "id": row.id}
    out["use"] = {"dataset": use if fmt == "npz" else {**use, "target": "<column name>"}}
    return out


def _profiled(settings, content: bytes, filename: str | None,
              content_type: str | None) -> tuple[str, dict]:
    """(format, profile) of an upload; ApiError 422 naming what is wrong."""
    from service.errors import ApiError
    from service.uploads import npz

    if npz.is_npz(content, filename, content_type):
        try:
            return "npz", npz.profile(content, settings.max_upload_bytes)
        except npz.NpzError as exc:
            detail = {"loc": exc.loc, "msg": str(exc)}
            if exc.value is not None:
                detail["value"] = exc.value
            raise ApiError(422, "invalid_dataset", str(exc), [detail]) from None
    try:
        return "csv", profile(content)
    except CsvError as exc:
        raise ApiError(422, "invalid_dataset", str(exc), [{"loc": "file", "msg": str(exc)}]) \
            from None


def store_upload(settings, content: bytes, name: str | None, filename: str | None,
                 content_type: str | None = None) -> dict:
    """Check, profile and store an upload: a CSV, or an .npz (its content type
    ``application/x-npz``, a ``.npz`` file name, or the zip magic).

    Raises:
        ApiError: 413 over KERASYARD_MAX_UPLOAD_BYTES; 422 ``invalid_dataset`` naming what is
            wrong (nothing is stored).
    """
    from service.errors import ApiError
    from service.store.db import session_scope
    from service.store.models import Dataset

    if len(content) > settings.max_upload_bytes:
        raise ApiError(413, "payload_too_large", f"the upload is {len(content)} bytes; the "
                       f"limit is {settings.max_upload_bytes} (KERASYARD_MAX_UPLOAD_BYTES)")
    fmt, prof = _profiled(settings, content, filename, content_type)
    npz = fmt == "npz"
    with session_scope(settings.database_url) as s:
        row = Dataset(name=name or filename or "upload", filename=filename,
                      size_bytes=len(content), sha256=prof["sha256"],
                      n_rows=prof["x"]["shape"][0] if npz else prof["n_rows"],
                      columns=[] if npz else prof["columns"], content=content, format=fmt,
                      profile=prof if npz else None)
        s.add(row)
        s.flush()
        return serialize_dataset(row)


def get_dataset(settings, dataset_id: str) -> dict:
    from service.errors import ApiError
    from service.store.db import session_scope
    from service.store.models import Dataset

    with session_scope(settings.database_url) as s:
        row = s.get(Dataset, dataset_id)
        if row is None:
            raise ApiError(404, "not_found", f"no dataset with id {dataset_id!r}")
        return serialize_dataset(row)


@dataclasses.dataclass(frozen=True)
class Upload:
    """An uploaded dataset as the worker reads it: its bytes, ``format`` ("csv" or "npz"),
    a CSV's column profiles and an .npz's profile (service/uploads/npz.py)."""

    content: bytes
    format: str
    columns: list
    profile: dict | None


def upload_content(settings, dataset_id: str) -> Upload | None:
    """An uploaded dataset, for the worker that trains on it.

    Args:
        settings (Settings): The database.
        dataset_id (str): The dataset (``dataset.id`` of an upload spec).

    Returns:
        Upload | None: Its bytes, format and profile; None when the dataset no longer exists.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    from service.store.db import session_scope
    from service.store.models import Dataset

    with session_scope(settings.database_url) as s:
        row = s.get(Dataset, dataset_id)
        return None if row is None else Upload(row.content, row.format or "csv", row.columns,
                                               row.profile)


def list_datasets(settings, limit: int) -> dict:
    from sqlalchemy import select
    from sqlalchemy.orm import defer

    from service.store.db import session_scope
    from service.store.models import Dataset

    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(Dataset).options(defer(Dataset.content))
                         .order_by(Dataset.created_at.desc()).limit(limit)).all()
        return {"datasets": [serialize_dataset(r, with_columns=False) for r in rows]}
