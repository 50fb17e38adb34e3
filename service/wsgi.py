"""WSGI entry point for gunicorn: ``gunicorn 'service.wsgi:app'``.

Each gunicorn worker runs a re-dispatcher thread; a job sent twice is harmless, since the
worker's claim drops a delivery for a job that is running or has ended.
"""

from __future__ import annotations

from service.api import create_app
from service.config import get_settings

settings = get_settings()
app = create_app(settings, redispatch_interval=settings.redispatch_interval_s)
