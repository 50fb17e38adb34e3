"""Flask app factory: one blueprint per resource, JSON errors, optional bearer-token auth."""

from __future__ import annotations

import hmac
import logging

from flask import Flask, request

from service.api.context import SETTINGS_KEY, settings_of
from service.api.errors import error_response, register_error_handlers
from service.config import Settings, check_api_token, get_settings, redact_url

PUBLIC_PATHS = {"/api/v1/health", "/api/v1/openapi.json", "/api/v1/docs", "/docs",
                "/openapi.json"}
PUBLIC_PREFIXES = ("/api/v1/docs/",)  # the docs page's Swagger UI files


def create_app(settings: Settings | None = None, *, redispatch_interval: float | None = None
               ) -> Flask:
    """Build the API. ``redispatch_interval`` > 0 starts :mod:`service.background`'s thread
    (re-sends lost jobs, advances sweeps; the run command and gunicorn turn it on)."""
    settings = settings or get_settings()
    check_api_token(settings.api_token)  # refuses to start with a short token
    app = Flask(__name__)
    app.extensions[SETTINGS_KEY] = settings
    # Uploads are capped at max_upload_bytes; leave room for multipart framing.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + 64 * 1024
    app.json.sort_keys = False
    register_error_handlers(app)

    from service.api.datasets import bp as datasets_bp
    from service.api.docs import bp as docs_bp
    from service.api.health import bp as health_bp
    from service.api.jobs import bp as jobs_bp
    from service.api.models import bp as models_bp
    from service.api.sweeps import bp as sweeps_bp

    for bp in (jobs_bp, sweeps_bp, datasets_bp, models_bp, health_bp, docs_bp):
        app.register_blueprint(bp)

    # Auth first: a request without the token learns nothing else about itself.
    app.before_request(_require_token)
    app.before_request(_refuse_nul)
    if redispatch_interval:
        from service.background import BackgroundRounds

        thread = BackgroundRounds(settings, redispatch_interval)
        thread.start()
        app.extensions["kerasyard.background"] = thread
    logging.getLogger(__name__).info("kerasyard API ready (db=%s)",
                                     redact_url(settings.database_url))
    return app


def _require_token():
    """401 for an /api/ request without ``Authorization: Bearer <KERASYARD_API_TOKEN>``, when
    the token is set (the public paths never ask for it)."""
    token = settings_of().api_token
    if (not token or request.path in PUBLIC_PATHS or not request.path.startswith("/api/")
            or request.path.startswith(PUBLIC_PREFIXES)):
        return None
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        return error_response(401, "unauthorized", "missing or wrong API token; send "
                              "'Authorization: Bearer <KERASYARD_API_TOKEN>'")
    return None


def _refuse_nul():
    """PostgreSQL's text cannot hold a NUL character: a query with one in an id or a filter
    fails in the driver (a 500) rather than matching nothing. No id has one (bodies with one
    are refused, body.py), so such a path names nothing (404); a query parameter with one is
    malformed (400; the document's string parameters say so with a pattern)."""
    if "\x00" in request.path:
        return error_response(404, "not_found", "no resource has a NUL character "
                              "(%00) in its path")
    for name, value in request.args.items(multi=True):
        if "\x00" in name or "\x00" in value:
            return error_response(400, "bad_request", f"query parameter {name!r} contains "
                                  "a NUL character (%00); remove it",
                                  [{"loc": name, "msg": "contains a NUL character",
                                    "value": value}])
    return None
