"""One JSON error shape for every failure:
{"error": {"code": ..., "message": ..., "details": [{"loc": ..., "msg": ..., "value": ...}]}}
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import ApiError
from ..spec import SpecError

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, details: list[dict] | None = None):
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return jsonify(body), status


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type"}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details)

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
        return error_response(status, _HTTP_CODES.get(status, "http_error"), message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error",
                              f"unexpected server error ({type(exc).__name__}); see the API log")
