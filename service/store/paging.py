"""Keyset paging shared by the job and sweep listings, and ISO timestamps for responses."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import tuple_

from service.errors import ApiError
from service.store.models import as_utc

# A cursor names the last row of a page: its created_at in microseconds since the Unix epoch,
# a dot, and its id. The OpenAPI document declares this pattern, and the listing takes exactly
# the strings that match it (any that does names a point in (created_at, id) order): the empty
# string is the first page. 17 digits reach the year 5138, within what datetime holds.
CURSOR_PATTERN = "^(?:[0-9]{1,17}\\.[^\\u0000]+)?$"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def encode_cursor(created_at: dt.datetime, row_id: str) -> str:
    """The cursor of the page after the row (newest first on (created_at, id))."""
    micros = (as_utc(created_at) - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{micros}.{row_id}"


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """The (created_at, id) a cursor names.

    Raises:
        ApiError: 400 naming the cursor, when it does not match :data:`CURSOR_PATTERN`.
    """
    if not cursor or not re.search(CURSOR_PATTERN, cursor):
        shown = cursor if len(cursor) <= 80 else cursor[:80] + "…"
        raise ApiError(400, "bad_request", f"cursor {shown!r} is not valid; pass the "
                       "next_cursor of a previous page", [{"loc": "cursor", "msg": "invalid",
                                                           "value": shown}])
    micros, row_id = cursor.split(".", 1)
    return _EPOCH + dt.timedelta(microseconds=int(micros)), row_id


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
