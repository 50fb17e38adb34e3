"""WSGI entry point for gunicorn: ``gunicorn 'service.wsgi:app'``.

Each gunicorn worker runs a re-dispatcher thread; a job sent twice is harmless, since the
worker's claim drops a delivery for a job that is running or has ended.
"""

from __future__ import annotations

from .api import create_app
from .config import get_settings

app = create_app(get_settings(), redispatch_interval=max(5, get_settings().redispatch_after_s))
