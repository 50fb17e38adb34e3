"""Keyset paging shared by the job and sweep listings, and ISO timestamps for responses."""

from __future__ import annotations

import base64
import datetime as dt
import json

from sqlalchemy import tuple_

from service.errors import ApiError
from service.store.models import as_utc


def encode_cursor(created_at: dt.datetime, row_id: str) -> str:
    """The cursor of the page after the row (newest first on (created_at, id))."""
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, row_id = json.loads(raw)
        return dt.datetime.fromisoformat(created), str(row_id)
    except Exception:
        shown = cursor if len(cursor) <= 80 else cursor[:80] + "…"
        raise ApiError(400, "bad_request", f"cursor {shown!r} is not valid; pass the "
                       "next_cursor of a previous page", [{"loc": "cursor", "msg": "invalid",
                                                           "value": shown}]) from None


def check_status(status: str | None, allowed: list[str]) -> None:
    """A listing's ``status`` filter must be one of the statuses (400 otherwise)."""
    if status is not None and status not in allowed:
        raise ApiError(400, "bad_request", f"status {status!r} is not one of {allowed}",
                       [{"loc": "status", "msg": f"expected one of {allowed}", "value": status}])


def keyset_page(query, model, cursor: str | None, limit: int):
    """Newest first on (created_at, id), from after the cursor's row; one row more than the
    page so that :func:`next_cursor` knows whether there is another page."""
    if cursor:
        created, row_id = decode_cursor(cursor)
        query = query.where(tuple_(model.created_at, model.id) < tuple_(created, row_id))
    return query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)


def next_cursor(rows: list, limit: int) -> str | None:
    return encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) \
        if len(rows) > limit else None


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat()
