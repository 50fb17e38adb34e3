"""/api/v1/health: database, broker and MLflow reachability, and the workers.

``components`` (database, broker, MLflow) make the status and the HTTP code: they are what the
API needs to serve. ``workers`` lists the Celery workers seen in the last heartbeats (the
``workers`` table, worker/presence.py): their queues, their device, and the queues a worker
refused with the reason (a gpu worker that sees no GPU); ``workers.ok`` is false then.

Public (no token), so it says what is down and never why in detail: exception texts carry
hosts, user names and, for some drivers, passwords. The detail goes to the API's log.
"""

from __future__ import annotations

import logging
import urllib.request

from flask import Blueprint
from sqlalchemy import text

from service.api.context import settings_of
from service.config import Settings
from service.queue import broker_ok
from service.store.db import get_engine
from service.store.models import as_utc
from service.workers import live_workers

bp = Blueprint("health", __name__, url_prefix="/api/v1")
log = logging.getLogger(__name__)


def _down(component: str, exc: BaseException) -> tuple[bool, str]:
    log.warning("health: %s is unreachable: %s", component, type(exc).__name__)
    return False, f"unreachable ({type(exc).__name__})"


def _database(settings: Settings) -> tuple[bool, str]:
    try:
        with get_engine(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        return True, "ok"
    except Exception as exc:
        return _down("database", exc)


def _mlflow(settings: Settings) -> tuple[bool, str]:
    url = settings.mlflow_tracking_uri.rstrip("/")
    if not url.startswith("http"):
        return True, "local tracking store"
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=3) as resp:
            return resp.status == 200, "ok" if resp.status == 200 else f"HTTP {resp.status}"
    except Exception as exc:
        return _down("mlflow", exc)


def _workers(settings: Settings) -> dict:
    try:
        rows = live_workers(settings)
    except Exception as exc:  # the table is not there yet (migrate has not run)
        log.warning("health: workers table unreadable: %s", type(exc).__name__)
        return {"ok": None, "detail": "unknown (workers table unreadable)", "list": []}
    problems = [f"{r.hostname} refuses the {q} queue: {why[:300]}"
                for r in rows for q, why in sorted((r.refused or {}).items())]
    consumed = sorted({q for r in rows for q in r.queues or []})
    detail = "; ".join(problems) if problems else (
        f"{len(rows)} worker(s) on {', '.join(consumed) or 'no queue'}" if rows else
        "no worker seen in the last heartbeats")
    return {"ok": not problems, "detail": detail, "list": [
        {"hostname": r.hostname, "queues": r.queues, "refused": r.refused, "device": r.device,
         "keras_backend": r.keras_backend, "last_seen": as_utc(r.last_seen).isoformat()}
        for r in rows]}


@bp.get("/health")
def health():
    settings = settings_of()
    broker = broker_ok(settings)
    if not broker[0]:
        log.warning("health: broker is unreachable: %s", broker[1])
        broker = (False, "unreachable")
    checks = {"database": _database(settings), "broker": broker, "mlflow": _mlflow(settings)}
    ok = all(good for good, _ in checks.values())
    body = {"status": "ok" if ok else "degraded",
            "components": {name: {"ok": good, "detail": detail}
                           for name, (good, detail) in checks.items()},
            "workers": _workers(settings),
            "mlflow_ui": settings.mlflow_ui_url}
    return body, 200 if ok else 503
