"""The ``workers`` table: the workers seen within the last heartbeats (/health), and the rows
each Celery worker's parent process writes (worker/presence.py), through
service.worker_api (:func:`publish`, :func:`withdraw`)."""

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


def publish(settings: Settings, hostname: str, *, queues: list[str], refused: dict[str, str],
            device: str | None, keras_backend: str, pid: int) -> None:
    """Write a worker's row (created at its first call): what /health lists.

    Args:
        settings (Settings): The database.
        hostname (str): The Celery worker's name (``celery@host``), the row's key.
        queues (list[str]): The queues it consumes.
        refused (dict[str, str]): The queues it refused, with why (a gpu worker that sees no
            GPU).
        device (str | None): Its device, described.
        keras_backend (str): Its Keras backend.
        pid (int): The Celery parent's pid (only that process may withdraw the row).

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer (or is not migrated).
    """
    with session_scope(settings.database_url) as s:
        row = s.get(WorkerNode, hostname)
        if row is None:
            row = WorkerNode(hostname=hostname, started_at=utcnow())
            s.add(row)
        row.queues, row.refused = list(queues), dict(refused)
        row.device, row.keras_backend = device, keras_backend
        row.pid, row.last_seen = pid, utcnow()


def withdraw(settings: Settings, hostname: str, pid: int) -> None:
    """Delete a worker's row at a clean stop, when ``pid`` wrote it last (a newer process of
    the same name keeps its row).

    Args:
        settings (Settings): The database.
        hostname (str): The Celery worker's name.
        pid (int): The stopping process.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    with session_scope(settings.database_url) as s:
        row = s.get(WorkerNode, hostname)
        if row is not None and row.pid == pid:
            s.delete(row)
