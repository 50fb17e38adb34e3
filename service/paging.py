"""Keyset paging shared by the job and sweep listings, and ISO timestamps for responses."""

from __future__ import annotations

import base64
import datetime as dt
import json

from .errors import ApiError
from .models import as_utc


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


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat()
