"""One JSON error shape for every failure:
{"error": {"code": ..., "message": ..., "details": [{"loc": ..., "msg": ..., "value": ...}]}}
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from service.errors import ApiError
from service.jobspec import SpecError

log = logging.getLogger(__name__)


MAX_MESSAGE = 2000
MAX_VALUE = 80
MAX_DETAILS = 50


def short_value(value: Any) -> Any:
    """What an error may echo of a submitted value: scalars as they are (non-finite numbers
    as strings, since JSON has none), anything long or nested as a truncated JSON text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        text = str(value)
        return value if len(text) <= 20 else text[:20] + "…"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= MAX_VALUE else value[:MAX_VALUE] + "…"
    try:
        text = json.dumps(value, default=str, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE] + "…"


def _detail(d: dict) -> dict:
    out = {"loc": str(d.get("loc", ""))[:200], "msg": str(d.get("msg", ""))[:500]}
    if "value" in d:
        out["value"] = short_value(d["value"])
    return out


def error_response(status: int, code: str, message: str, details: list[dict] | None = None,
                   headers: dict | None = None):
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "…"
    shown = [_detail(d) for d in (details or [])[:MAX_DETAILS]]
    body = {"error": {"code": code, "message": message, "details": shown}}
    return jsonify(body), status, headers or {}


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type"}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(SpecError)
    def _spec_error(exc: SpecError):
        what = "sweep spec" if request.path.startswith("/api/v1/sweeps") else "job spec"
        return error_response(422, "invalid_spec", f"the {what} is invalid: {exc}",
                              [d.as_dict() for d in exc.details])

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"the request body is larger than the {limit} byte limit"
        headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
        if status == 405 and "Allow" in headers:
            message = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
        return error_response(status, _HTTP_CODES.get(status, "http_error"), message,
                              headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error",
                              f"unexpected server error ({type(exc).__name__}); see the API log")
