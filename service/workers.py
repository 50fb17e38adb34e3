"""The ``workers`` table read side: the workers seen within the last heartbeats (/health).
Written by worker/presence.py in each Celery worker's parent process."""

from __future__ import annotations

import datetime as dt

from service.config import Settings
from service.store.db import session_scope
from service.store.models import WorkerNode, as_utc, utcnow

HEARTBEAT_S = 30.0
# A row older than this belongs to a worker that stopped without deleting it (killed, host gone).
LIVE_S = 3 * HEARTBEAT_S


def live_workers(settings: Settings, now: dt.datetime | None = None) -> list[WorkerNode]:
    now = now or utcnow()
    with session_scope(settings.database_url) as s:
        rows = s.query(WorkerNode).order_by(WorkerNode.hostname).all()
    return [r for r in rows if (now - as_utc(r.last_seen)).total_seconds() <= LIVE_S]
