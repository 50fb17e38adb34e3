"""/api/v1/health: database, broker and MLflow reachability."""

from __future__ import annotations

import urllib.request

from flask import Blueprint
from sqlalchemy import text

from ..config import Settings
from ..db import get_engine
from ..queue import broker_ok
from . import settings_of

bp = Blueprint("health", __name__, url_prefix="/api/v1")


def _database(settings: Settings) -> tuple[bool, str]:
    try:
        with get_engine(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        return True, "ok"
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def _mlflow(settings: Settings) -> tuple[bool, str]:
    url = settings.mlflow_tracking_uri.rstrip("/")
    if not url.startswith("http"):
        return True, f"local tracking store {url}"
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=3) as resp:
            return resp.status == 200, "ok" if resp.status == 200 else f"HTTP {resp.status}"
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


@bp.get("/health")
def health():
    settings = settings_of()
    checks = {"database": _database(settings), "broker": broker_ok(settings),
              "mlflow": _mlflow(settings)}
    ok = all(good for good, _ in checks.values())
    body = {"status": "ok" if ok else "degraded",
            "components": {name: {"ok": good, "detail": detail}
                           for name, (good, detail) in checks.items()},
            "mlflow_ui": settings.mlflow_ui_url}
    return body, 200 if ok else 503
